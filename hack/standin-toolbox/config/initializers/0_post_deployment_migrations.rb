# frozen_string_literal: true

# Post-deployment migrations are part of every `db:migrate` unless
# SKIP_POST_DEPLOYMENT_MIGRATIONS is in the environment, whatever its value:
# "true", "false", "0" and "" all skip. That is GitLab's rule, in gitlabhq
# lib/gitlab/database.rb, `add_post_migrate_path_to_rails`
# (`return if ENV['SKIP_POST_DEPLOYMENT_MIGRATIONS'] && !force`), called from
# GitLab's config/initializers/0_post_deployment_migrations.rb; written here
# from that behaviour, not copied.
#
# The path is added to the application's `db/migrate` paths and to
# ActiveRecord::Migrator.migrations_paths: a database whose database.yml entry
# names no `migrations_paths` of its own (neither GitLab's nor the chart's
# does) migrates from those, so main and ci both get db/post_migrate. The
# initializer runs first (its name sorts first) because Rails remembers the
# migration list once it has read it.
unless ENV.key?('SKIP_POST_DEPLOYMENT_MIGRATIONS')
  Rails.application.config.paths['db'].each do |db|
    post_migrate = Rails.root.join(db, 'post_migrate').to_s
    migrate_paths = Rails.application.config.paths['db/migrate']
    next if migrate_paths.include?(post_migrate)

    migrate_paths << post_migrate
    ActiveRecord::Migrator.migrations_paths << post_migrate
  end
end
