# frozen_string_literal: true

# Fails with PG::UniqueViolation while two projects share a path.
class AddUniqueIndexOnProjectPath < ActiveRecord::Migration[6.1]
  include Gitlab::Database::MigrationHelpers::RestrictGitlabSchema

  restrict_gitlab_migration gitlab_schema: :gitlab_main

  def change
    add_index :projects, :path, unique: true, name: 'index_projects_on_path'
  end
end
