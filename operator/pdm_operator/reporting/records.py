"""The vocabulary of a report (pure): the states of a record in
``status.reports`` and the outcome of one delivery attempt. The outbox
decides with them; each sink answers with a ``Result``."""

from __future__ import annotations

from dataclasses import dataclass

PENDING, DELIVERED, FAILED, GAVE_UP, WAITING, SKIPPED, NO_MERGE_REQUESTS = (
    "Pending",
    "Delivered",
    "Failed",
    "GaveUp",
    "Waiting",
    "Skipped",
    "NoMergeRequests",
)
SETTLED = (DELIVERED, FAILED, GAVE_UP, SKIPPED, NO_MERGE_REQUESTS)
#: Settled without being delivered.
UNDELIVERED = (FAILED, GAVE_UP, NO_MERGE_REQUESTS)

#: The run's state a sink is asked about (``targets``) before its Job exists,
#: once the pre-flight has found the plan; then running, success or failed.
#: Only sinks that report a plan (IssueNote) want anything for it.
PLANNED = "planned"


@dataclass(frozen=True)
class Result:
    """The outcome of one delivery attempt."""

    delivered: bool = False
    remote_id: str | None = None
    error: str | None = None
    permanent: bool = False  # retrying cannot help (400, 403, 404)
    retry_after: float | None = None  # seconds the server asked us to wait
    waiting: bool = False  # depends on another record, or on GitLab, not ready yet
    note: str | None = None  # what it waits for
    conflict: str | None = None  # someone else's deployment that was left alone
    no_merge_requests: bool = False  # GitLab linked none to the deployment in time
