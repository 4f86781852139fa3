# frozen_string_literal: true

# Migrations declare the schema they change (`restrict_gitlab_migration`),
# as GitLab's do: see lib/gitlab/database/restrict_gitlab_schema.rb.
require Rails.root.join('lib/gitlab/database/restrict_gitlab_schema').to_s
