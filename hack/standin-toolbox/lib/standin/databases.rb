# frozen_string_literal: true

require 'erb'
require 'yaml'
require 'active_record'
require 'active_record/database_configurations'

# Where the stand-in's commands find the databases and the migrations. Shared
# by config/application.rb (Rails' own tasks) and the scripts that do not
# boot Rails (wait-for-deps, webservice), so all of them read the same
# database.yml the same way.
module StandIn
  module Databases
    module_function

    # $CONFIG_DIRECTORY/database.yml: where the image ENTRYPOINT renders the
    # chart's database.yml.erb (default: the application's config/).
    def path(root)
      File.join(ENV.fetch('CONFIG_DIRECTORY', File.join(root.to_s, 'config')), 'database.yml')
    end

    # database.yml without the entries whose `database_tasks` is false (what
    # Rails 7 leaves out of its tasks, and what the chart renders for a
    # database that shares main's).
    def without_disabled_tasks(configuration)
      configuration.transform_values do |env|
        next env unless env.is_a?(Hash) && env.values.all?(Hash)

        env.reject { |_, db| [false, 'false'].include?(db['database_tasks']) }
      end
    end

    # The environment's databases as Rails' tasks see them, `geo` aside
    # (CNG's wait-for-deps checks every production database but geo).
    def configs(root, env: ENV.fetch('RAILS_ENV', 'production'))
      file = path(root)
      raise "#{file} is missing: the configuration was never rendered (was the image ENTRYPOINT bypassed by a command?)" unless File.exist?(file)

      yaml = YAML.safe_load(ERB.new(File.read(file)).result, aliases: true)
      ActiveRecord::DatabaseConfigurations.new(without_disabled_tasks(yaml))
                                          .configs_for(env_name: env, include_replicas: false)
                                          .reject { |db| db.name == 'geo' }
    end

    # [version, name] of every migration file in `dirs` (under root/db), by version.
    def migrations(root, dirs)
      dirs.flat_map { |dir| Dir[File.join(root.to_s, 'db', dir, '*.rb')] }
          .filter_map { |file| File.basename(file).match(/\A(\d+)_(\w+)\.rb\z/)&.captures }
          .sort_by { |version, _| version.to_i }
    end

    # The versions recorded in the database's schema_migrations (nil: no table).
    def applied(db_config)
      ActiveRecord::Base.establish_connection(db_config)
      connection = ActiveRecord::Base.connection
      return nil unless connection.table_exists?('schema_migrations')

      connection.select_values('SELECT version FROM schema_migrations')
    ensure
      ActiveRecord::Base.remove_connection
    end
  end
end
