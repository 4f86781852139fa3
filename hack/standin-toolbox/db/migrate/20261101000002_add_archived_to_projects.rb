# frozen_string_literal: true

class AddArchivedToProjects < Gitlab::Database::Migration[2.2]
  milestone '18.6'
  restrict_gitlab_migration gitlab_schema: :gitlab_main

  def change
    add_column :projects, :archived, :boolean, null: false, default: false
  end
end
