# frozen_string_literal: true

class CreateProjects < Gitlab::Database::Migration[2.2]
  milestone '18.6'
  restrict_gitlab_migration gitlab_schema: :gitlab_main

  def change
    create_table :projects do |t|
      t.text :path, null: false
    end
  end
end
