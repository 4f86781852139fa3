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
  end
end
