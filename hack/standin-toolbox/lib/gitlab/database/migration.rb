# frozen_string_literal: true

# What GitLab's migrations inherit from (gitlabhq lib/gitlab/database/
# migration.rb: `class V1_0 < ActiveRecord::Migration[6.1]` including
# `MigrationHelpers::AnnounceDatabase`, and `Gitlab::Database::Migration[2.x]`
# after it), written from its behaviour, with the two helpers the stand-in
# needs:
#
# - AnnounceDatabase (gitlabhq lib/gitlab/database/migration_helpers/
#   announce_database.rb): every non-empty line a migration writes starts
#   with its database's name, so db:migrate with main and ci prints
#   `main: == 20261115000001 AddUniqueIndexOnProjectPath: migrating ===`
#   (its spec expects /^main: == 1111 MyMigration: migrating/). This is what
#   the operator's reader of a failed run meets in a real GitLab pod.
# - RestrictGitlabSchema (restrict_gitlab_schema.rb beside this file).
# - MilestoneMixin (gitlabhq lib/gitlab/database/migrations/milestone_mixin.rb):
#   a migration names the milestone it ships in (`milestone '18.6'` in its
#   class); one that does not cannot be instantiated ("Milestone is not set
#   for NAME", MilestoneNotSetError).
require_relative 'restrict_gitlab_schema'

module Gitlab
  module Database
    module MigrationHelpers
      module AnnounceDatabase
        def write(text = '')
          return super if text.to_s.empty?

          super("#{connection.pool.db_config.name}: #{text}")
        end
      end
    end

    module Migrations
      module MilestoneMixin
        MilestoneNotSetError = Class.new(StandardError)

        def self.included(base)
          base.extend(ClassMethods)
        end

        module ClassMethods
          def milestone(milestone_str = nil)
            return @migration_milestone if milestone_str.nil?

            @migration_milestone = milestone_str
          end
        end

        def initialize(name = self.class.name, version = nil)
          raise MilestoneNotSetError, "Milestone is not set for #{name}" if self.class.milestone.nil?

          super(name, version)
        end
      end
    end

    class Migration
      class V2 < ActiveRecord::Migration[6.1]
        include MigrationHelpers::RestrictGitlabSchema
        include MigrationHelpers::AnnounceDatabase
        include Migrations::MilestoneMixin
      end

      # `Gitlab::Database::Migration[2.2]`, as GitLab's migrations name their base.
      def self.[](version)
        raise ArgumentError, "unknown migration version: #{version}" unless version.to_s.start_with?('2.')

        V2
      end
    end
  end
end
