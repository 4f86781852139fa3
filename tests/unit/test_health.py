"""The watch audit: objects changed in the API without an event mean a stalled watch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pdm_operator.health import Health, WatchAudit

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def obj(name: str, rv: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv}}


def test_objects_in_step_with_the_watch_are_healthy() -> None:
    audit = WatchAudit("jobs", threshold=120)
    audit.observed(obj("a", "1"), "ADDED")
    assert audit.audit([obj("a", "1")], T0) == []
    assert audit.stalled is False


def test_a_late_event_within_the_threshold_is_not_a_stall() -> None:
    audit = WatchAudit("jobs", threshold=120)
    audit.observed(obj("a", "1"), "ADDED")
    assert audit.audit([obj("a", "2")], T0) == []
    assert audit.audit([obj("a", "2")], T0 + timedelta(seconds=119)) == []
    audit.observed(obj("a", "2"), "MODIFIED")  # the event arrives
    assert audit.audit([obj("a", "2")], T0 + timedelta(seconds=500)) == []
    assert audit.stalled is False


def test_an_object_out_of_step_past_the_threshold_is_a_stall() -> None:
    audit = WatchAudit("postdeploymigrations", threshold=120)
    audit.observed(obj("a", "1"), None)
    audit.audit([obj("a", "2"), obj("new", "7")], T0)
    stalled = audit.audit([obj("a", "3"), obj("new", "7")], T0 + timedelta(seconds=121))
    assert sorted(stalled) == [("ns", "a"), ("ns", "new")]
    assert audit.stalled is True
    # Recovery: the watch catches up.
    audit.observed(obj("a", "3"), "MODIFIED")
    audit.observed(obj("new", "7"), "ADDED")
    assert audit.audit([obj("a", "3"), obj("new", "7")], T0 + timedelta(seconds=130)) == []
    assert audit.stalled is False


def test_deleted_objects_do_not_count() -> None:
    audit = WatchAudit("jobs", threshold=10)
    audit.observed(obj("a", "1"), "ADDED")
    audit.audit([obj("a", "2")], T0)
    assert audit.audit([], T0 + timedelta(seconds=60)) == []


def test_health_check_raises_only_while_stalled() -> None:
    listed = {"m": [obj("a", "5")], "j": []}
    now = [T0]
    health = Health(lambda: listed["m"], lambda: listed["j"], lambda: now[0], threshold=60)
    health.observed("postdeploymigrations", obj("a", "4"), "MODIFIED")
    assert health.run_audit() == {"postdeploymigrations": 0, "jobs": 0}
    assert health.check() == {"postdeploymigrations": "ok", "jobs": "ok"}
    now[0] = T0 + timedelta(seconds=61)
    assert health.run_audit() == {"postdeploymigrations": 1, "jobs": 0}
    with pytest.raises(RuntimeError, match="watch stalled: postdeploymigrations"):
        health.check()
