# frozen_string_literal: true

# A table of the ci schema: created on the ci database; on main (when there is
# a separate ci database) the migration is skipped but still recorded.
class CreateCiBuilds < Gitlab::Database::Migration[2.2]
  milestone '18.6'
  restrict_gitlab_migration gitlab_schema: :gitlab_ci

  def change
    create_table :ci_builds do |t|
      t.bigint :project_id, null: false
      t.text :status, null: false, default: 'created'
    end
  end
end
