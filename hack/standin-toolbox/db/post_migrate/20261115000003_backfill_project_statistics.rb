# frozen_string_literal: true

# A batched backfill, in one batch: slow enough (3 s) for a test to kill the
# operator mid-run.
class BackfillProjectStatistics < Gitlab::Database::Migration[2.2]
  milestone '18.6'
  restrict_gitlab_migration gitlab_schema: :gitlab_main

  def up
    create_table :project_statistics, id: false do |t|
      t.bigint :project_id, null: false
      t.column :computed_at, :timestamptz, null: false, default: -> { 'now()' }
    end
    execute('SELECT pg_sleep(3)')
    execute('INSERT INTO project_statistics (project_id) SELECT id FROM projects')
  end

  def down
    drop_table :project_statistics
  end
end
