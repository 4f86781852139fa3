# frozen_string_literal: true

namespace :gitlab do
  namespace :db do
    # A small equivalent of GitLab's task (gitlabhq lib/tasks/gitlab/db.rake,
    # `configure` → `configure_pg_databases` → `configure_database`), which
    # CNG's /scripts/db-migrate runs: Rails' own db:migrate for each database
    # that has tasks, main first, announcing each as GitLab does. With a
    # single database, plain db:migrate (Rails defines no db:migrate:main then).
    #
    # Not kept: on a database with no tables GitLab loads db/structure.sql
    # (`db:schema:load`, marking every migration, post-deployment ones too, as
    # applied) and then seeds it; the stand-in has no structure.sql and
    # migrates from nothing, so a fresh test database goes through the same
    # path as an upgrade.
    desc 'GitLab | DB | Configures the database by running migrate'
    task configure: :environment do
      names = ActiveRecord::Base.configurations.configs_for(env_name: Rails.env).map(&:name)
      if names.size == 1
        next unless names.first == 'main'

        puts 'Running db:migrate rake task'
        Rake::Task['db:migrate'].invoke
      else
        names.sort_by { |name| [name == 'main' ? 0 : 1, name] }.each do |name|
          puts "Running db:migrate:#{name} rake task"
          Rake::Task["db:migrate:#{name}"].invoke
        end
      end
    end

    # GitLab's "Manually insert schema migration version on all configured
    # databases" (gitlabhq lib/tasks/gitlab/db.rake, `mark_migration_complete`),
    # in what a caller sees: a version that is not a non-zero integer exits 1
    # with "Must give a version argument that is a non-zero integer"; on each
    # database the version is inserted into schema_migrations and the task
    # prints "Successfully marked 'V' as complete on database NAME", or, when
    # the row is there already (ActiveRecord::RecordNotUnique), "Migration
    # version 'V' is already marked complete on database NAME". No colour:
    # Rainbow prints none to a pipe.
    desc 'GitLab | DB | Manually insert schema migration version on all configured databases'
    task :mark_migration_complete, [:version] => :environment do |_, args|
      version = args[:version]
      if version.to_i.zero?
        puts 'Must give a version argument that is a non-zero integer'
        exit 1
      end

      ActiveRecord::Base.configurations.configs_for(env_name: Rails.env).each do |db_config|
        ActiveRecord::Base.establish_connection(db_config)
        connection = ActiveRecord::Base.connection
        begin
          connection.execute("INSERT INTO schema_migrations (version) VALUES (#{connection.quote(version)})")
          puts "Successfully marked '#{version}' as complete on database #{db_config.name}"
        rescue ActiveRecord::RecordNotUnique
          puts "Migration version '#{version}' is already marked complete on database #{db_config.name}"
        end
      end
    end
  end
end
