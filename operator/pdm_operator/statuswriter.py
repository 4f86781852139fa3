"""The one way a migration's status is written: the migration pass and the
reporter both come through here.

A write is a merge patch of the status guarded by the resourceVersion it was
computed from (``kube.Conflict`` otherwise: read again, compute again). Each
condition that changed with it gets one log line and one Event, whose kind
(Normal or Warning) and reason come from ``events``, so the two writers
never disagree on them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pdm_operator import conditions, events, metrics
from pdm_operator.kube import Kube
from pdm_operator.logs import for_migration
from pdm_operator.model import Body

log = logging.getLogger(__name__)

PROGRESS, REPORTS, STATE = "progress", "reports", "state"


def change_of(patch: Body) -> str:
    """What a status patch changes, for ``pdm_status_writes_total``: ``progress``
    when it holds status.progress alone (the pass's patch is the merge patch of
    what changed, ``decide.state.write``), ``reports`` when it holds the delivery
    records (and the condition they set), ``state`` otherwise."""
    keys = set(patch)
    if keys == {"progress"}:
        return PROGRESS
    if "reports" in keys and keys <= {"reports", "conditions"}:
        return REPORTS
    return STATE


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def write(
        self,
        migration: Body,
        patch: Body,
        before: list[Body] | None,
        after: list[Body],
        *,
        now: str,
        on_transition: Callable[[Body], None] | None = None,
    ) -> Body | None:
        """Patch ``patch`` into the status; the migration as written, or None if
        it is gone. ``before`` and ``after`` are the conditions without and
        with the patch: each announced transition is logged and posted as an
        Event, and handed to ``on_transition`` (metrics) once it is stored."""
        meta = migration["metadata"]
        metrics.status_write(change_of(patch))
        written = self.kube.patch_migration_status(
            meta["namespace"], meta["name"], patch, resource_version=meta.get("resourceVersion")
        )
        if written is None:
            return None
        changed = list(conditions.transitions(before, after))
        for cond in changed:
            if not events.announced(cond, after):
                continue
            for_migration(log, migration).info(
                "%s=%s %s: %s",
                cond["type"],
                cond["status"],
                cond["reason"],
                cond.get("message") or "",
            )
            if on_transition is not None:
                on_transition(cond)
            if events.told_by_another(cond, changed):
                continue
            self.kube.create_event(
                events.event_for(
                    migration,
                    events.kind_of(cond),
                    events.reason_of(cond),
                    cond.get("message") or "",
                    now,
                )
            )
        return written
