# frozen_string_literal: true

# The stand-in GitLab's Rails application (a test fixture: see README.md at
# the root of hack/standin-toolbox). Only Active Record's railtie: no Action
# Pack, no views, no mailers, no jobs. It runs as the chart's uid 1000 on a
# root filesystem that may be read-only, so it writes nothing under its own
# directory: it logs to stdout, caches nothing on disk, dumps no schema after
# a migration and loads no bootsnap.
require 'rails'
require 'active_record/railtie'

require_relative '../lib/standin/databases'

# Unbuffered, as on a terminal: the kubelet keeps stdout and stderr as they
# arrive, and a buffered stdout would put a failed migration's "migrating"
# line after Rails' error (written unbuffered to stderr) in the pod's log.
$stdout.sync = true

module Gitlab
  class Application < Rails::Application
    config.load_defaults 6.1
    config.root = File.expand_path('..', __dir__)
    config.eager_load = false

    config.logger = ActiveSupport::Logger.new($stdout)
    config.log_level = :info
    config.cache_store = :null_store
    # db:migrate would write db/schema.rb (GitLab: db/structure.sql) after
    # every run: not in a container, and not on a read-only root.
    config.active_record.dump_schema_after_migration = false

    # The chart renders database.yml from its template into CONFIG_DIRECTORY
    # (the image ENTRYPOINT does, /entrypoint); that is where Rails reads it.
    config.paths['config/database'] = StandIn::Databases.path(config.root)

    # Rails 7 leaves a database with `database_tasks: false` out of its
    # tasks; GitLab relies on it (the chart renders `ci:` that way when CI
    # shares main's database). Rails 6.1 does not know the key, so the
    # stand-in drops such an entry itself.
    # database_configuration is what the application connects with,
    # load_database_yaml what defines the per-database tasks (db:migrate:ci).
    def config.database_configuration
      StandIn::Databases.without_disabled_tasks(super)
    end

    def config.load_database_yaml
      StandIn::Databases.without_disabled_tasks(super)
    end
  end
end
