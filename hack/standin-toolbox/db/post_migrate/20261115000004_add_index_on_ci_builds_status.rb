# frozen_string_literal: true

class AddIndexOnCiBuildsStatus < Gitlab::Database::Migration[2.2]
  milestone '18.6'
  restrict_gitlab_migration gitlab_schema: :gitlab_ci

  def change
    add_index :ci_builds, :status, name: 'index_ci_builds_on_status'
  end
end
