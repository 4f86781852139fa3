# frozen_string_literal: true

# Migrations inherit from Gitlab::Database::Migration[2.2], as GitLab's do:
# each declares the schema it changes (`restrict_gitlab_migration`) and
# announces itself with its database's name (lib/gitlab/database/migration.rb).
require Rails.root.join('lib/gitlab/database/migration').to_s
