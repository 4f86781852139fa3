# frozen_string_literal: true

# Gives up after a short lock_timeout when another session holds a lock on
# projects: PG::LockNotAvailable ("canceling statement due to lock timeout"),
# raised by Rails as ActiveRecord::LockWaitTimeout. GitLab wraps such a change
# in `with_lock_retries` (lib/gitlab/database/with_lock_retries.rb), which sets
# `SET LOCAL lock_timeout` in the migration's transaction and retries with
# longer timeouts; the stand-in keeps the first attempt only, so a held lock
# fails the migration within a second instead of after the retries.
class RemoveArchivedFromProjects < Gitlab::Database::Migration[2.2]
  milestone '18.6'
  restrict_gitlab_migration gitlab_schema: :gitlab_main

  LOCK_TIMEOUT = '1s'

  def up
    execute("SET LOCAL lock_timeout TO '#{LOCK_TIMEOUT}'")
    remove_column :projects, :archived
  end

  def down
    add_column :projects, :archived, :boolean, null: false, default: false
  end
end
