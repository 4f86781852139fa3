# frozen_string_literal: true

class CreateProjects < ActiveRecord::Migration[6.1]
  include Gitlab::Database::MigrationHelpers::RestrictGitlabSchema

  restrict_gitlab_migration gitlab_schema: :gitlab_main

  def change
    create_table :projects do |t|
      t.text :path, null: false
    end
  end
end
