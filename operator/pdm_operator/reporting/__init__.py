"""Reporting a migration to GitLab and Sentry through a durable outbox.

``policy`` decides which sinks are required and blocking; ``outbox`` plans
the records (pure); ``sinks`` delivers one record (blocking I/O); ``reporter``
runs deliveries in the background, apart from the migration itself.
"""
