# frozen_string_literal: true

# A tiny equivalent of GitLab's `restrict_gitlab_migration gitlab_schema:`
# (gitlabhq lib/gitlab/database/migration_helpers/restrict_gitlab_schema.rb),
# written from its behaviour. GitLab's databases share db/migrate and
# db/post_migrate; each migration names the schema it changes, and on a
# database that does not hold that schema it does nothing but say so, while
# Rails still records its version there. So both databases list every
# migration in db:migrate:status, and both record every version.
#
# Which schemas a database holds (GitLab: Gitlab::Database
# .gitlab_schemas_for_connection, from db/database_connections): `ci` holds
# gitlab_ci; `main` holds gitlab_main, and gitlab_ci too when there is no
# separate `ci` database (a single-database installation). Both hold
# gitlab_shared. Not kept from GitLab: its query analyzers, which also
# reject a migration touching tables of a schema it did not declare.
module Gitlab
  module Database
    SCHEMAS = %i[gitlab_main gitlab_ci gitlab_shared].freeze

    def self.gitlab_schemas_for_connection(connection)
      name = connection.pool.db_config.name
      names = ActiveRecord::Base.configurations.configs_for(env_name: Rails.env).map(&:name)
      return %i[gitlab_ci gitlab_shared] if name == 'ci'
      return %i[gitlab_main gitlab_shared] if names.include?('ci')

      %i[gitlab_main gitlab_ci gitlab_shared]
    end

    module MigrationHelpers
      module RestrictGitlabSchema
        extend ActiveSupport::Concern

        included do
          class_attribute :allowed_gitlab_schemas
        end

        class_methods do
          def restrict_gitlab_migration(gitlab_schema:)
            raise ArgumentError, "Unknown gitlab_schema: #{gitlab_schema}" unless SCHEMAS.include?(gitlab_schema)

            self.allowed_gitlab_schemas = [gitlab_schema]
          end
        end

        # Rails calls this inside the migration's transaction, between its
        # "migrating" and "migrated" lines, and records the version after it.
        def exec_migration(conn, direction)
          held = Gitlab::Database.gitlab_schemas_for_connection(conn)
          unmatched = (allowed_gitlab_schemas || []) - held
          return super if unmatched.empty?

          say "The migration is skipped since it modifies the schemas: #{allowed_gitlab_schemas}."
          say "This database can only apply migrations in one of the following schemas: #{held}."
        end
      end
    end
  end
end
