"""Liveness that notices a stalled watch.

A watch stream can stop delivering events without an error (a known failure
of long-lived HTTP streams, and of Kopf before 1.44). The process is then
alive, its /healthz answers, and nothing happens. So the audit compares
what the API holds with what the watches delivered: every ``interval`` it
lists the migrations and their Jobs, and an object whose resourceVersion in
the API differs from the last one a watch event brought, for longer than
``threshold``, means the watch of that resource has stalled. The liveness
probe then fails and Kubernetes restarts the operator, which lists
everything afresh.

A single late event is not a stall: the threshold (default 120 s) is far
above normal watch latency, and an object must stay out of step that long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pdm_operator import metrics
from pdm_operator.model import Body

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass
class WatchAudit:
    """Seen-versus-listed bookkeeping for one resource (pure but for the clock)."""

    resource: str
    threshold: float
    seen: dict[Key, str] = field(default_factory=dict)
    out_of_step_since: dict[Key, datetime] = field(default_factory=dict)
    stalled: bool = False

    def observed(self, body: Body, event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.seen.pop(key, None)
        else:
            self.seen[key] = str(meta.get("resourceVersion"))
        self.out_of_step_since.pop(key, None)

    def audit(self, listed: Iterable[Body], now: datetime) -> list[Key]:
        """Compare a fresh listing with what the watch delivered; returns the stalled keys."""
        current: set[Key] = set()
        for body in listed:
            meta = body.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            current.add(key)
            if self.seen.get(key) == str(meta.get("resourceVersion")):
                self.out_of_step_since.pop(key, None)
            else:
                self.out_of_step_since.setdefault(key, now)
        for key in list(self.out_of_step_since):
            if key not in current:  # deleted meanwhile; its DELETED event may be on the way
                del self.out_of_step_since[key]
        late = [
            k
            for k, since in self.out_of_step_since.items()
            if (now - since).total_seconds() >= self.threshold
        ]
        was = self.stalled
        self.stalled = bool(late)
        metrics.WATCH_STALLED.labels(self.resource).set(1 if late else 0)
        if late and not was:
            log.error(
                "the %s watch has stalled: %d object(s) changed with no event for %.0fs+",
                self.resource,
                len(late),
                self.threshold,
            )
        return late


class Health:
    """The audits of the operator's watches, run by a timer, read by the liveness probe."""

    def __init__(
        self,
        list_migrations: Callable[[], list[Body]],
        list_jobs: Callable[[], list[Body]],
        clock: Callable[[], datetime],
        threshold: float = 120.0,
    ) -> None:
        self.listers = {"postdeploymigrations": list_migrations, "jobs": list_jobs}
        self.audits = {r: WatchAudit(r, threshold) for r in self.listers}
        self.clock = clock

    def observed(self, resource: str, body: Body, event_type: str | None) -> None:
        self.audits[resource].observed(body, event_type)
        metrics.watch_event(resource)

    def run_audit(self) -> dict[str, int]:
        """List and compare (blocking calls); the number of stalled objects per resource."""
        now = self.clock()
        return {r: len(self.audits[r].audit(self.listers[r](), now)) for r in self.listers}

    def check(self) -> dict[str, str]:
        """For the liveness probe: raises when a watch has stalled."""
        stalled = [r for r, a in self.audits.items() if a.stalled]
        if stalled:
            raise RuntimeError(f"watch stalled: {', '.join(stalled)}")
        return dict.fromkeys(self.audits, "ok")
