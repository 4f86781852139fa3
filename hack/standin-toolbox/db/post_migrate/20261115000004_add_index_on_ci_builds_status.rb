# frozen_string_literal: true

class AddIndexOnCiBuildsStatus < ActiveRecord::Migration[6.1]
  include Gitlab::Database::MigrationHelpers::RestrictGitlabSchema

  restrict_gitlab_migration gitlab_schema: :gitlab_ci

  def change
    add_index :ci_builds, :status, name: 'index_ci_builds_on_status'
  end
end
