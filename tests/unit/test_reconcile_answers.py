"""The answers of ``reconcile.Reconciler`` that need no API server to check."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pdm_operator.locks import Holder
from pdm_operator.reconcile import Reconciler

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
HOLDER = Holder("gitlab", "gstg-1100", "uid-1100")


class Reads:
    """A Kube that only counts migration reads."""

    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body = body
        self.reads = 0

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.body


def holder(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": HOLDER.name, "uid": HOLDER.uid}, "status": status}


def reconciler(read: Reads, seen: dict[str, Any] | None) -> Reconciler:
    r = Reconciler(read, "pdm-system", clock=lambda: NOW)  # type: ignore[arg-type]
    r.known = lambda namespace, name: seen
    return r


def test_a_holder_the_watch_shows_running_is_active_without_a_read() -> None:
    read = Reads(holder(jobName="gstg-1100-0a1b2c3d"))
    assert reconciler(read, holder(jobName="gstg-1100-0a1b2c3d"))._holder_active(HOLDER, NOW)
    assert read.reads == 0


def test_a_holder_the_watch_shows_ended_is_read_before_the_lock_is_taken_over() -> None:
    """The watch may lag: "ended" is confirmed by a read (here it still runs)."""
    read = Reads(holder(jobName="gstg-1100-0a1b2c3d"))
    ended = holder(jobName="gstg-1100-0a1b2c3d", jobOutcome="Succeeded")
    assert reconciler(read, ended)._holder_active(HOLDER, NOW)
    assert read.reads == 1


def test_a_holder_the_watch_has_not_seen_is_read() -> None:
    read = Reads(None)
    assert not reconciler(read, None)._holder_active(HOLDER, NOW)
    assert read.reads == 1


def test_another_migration_of_the_same_name_is_not_the_holder() -> None:
    read = Reads(None)
    other = {"metadata": {"name": HOLDER.name, "uid": "another"}, "status": {"jobName": "x"}}
    assert not reconciler(read, other)._holder_active(HOLDER, NOW)
    assert read.reads == 1
