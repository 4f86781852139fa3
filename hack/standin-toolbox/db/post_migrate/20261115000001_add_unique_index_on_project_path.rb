# frozen_string_literal: true

# Fails with PG::UniqueViolation while two projects share a path.
class AddUniqueIndexOnProjectPath < Gitlab::Database::Migration[2.2]
  milestone '18.6'
  restrict_gitlab_migration gitlab_schema: :gitlab_main

  def change
    add_index :projects, :path, unique: true, name: 'index_projects_on_path'
  end
end
