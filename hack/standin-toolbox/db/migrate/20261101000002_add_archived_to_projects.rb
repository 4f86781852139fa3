# frozen_string_literal: true

class AddArchivedToProjects < ActiveRecord::Migration[6.1]
  include Gitlab::Database::MigrationHelpers::RestrictGitlabSchema

  restrict_gitlab_migration gitlab_schema: :gitlab_main

  def change
    add_column :projects, :archived, :boolean, null: false, default: false
  end
end
