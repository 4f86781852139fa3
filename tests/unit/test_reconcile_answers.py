"""The answers of ``reconcile.Reconciler`` that need no API server to check."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from pdm_operator import decide, errors, render
from pdm_operator.locks import Holder
from pdm_operator.reconcile import Accepted, Environments, Reconciler, _Answers

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
    return Reconciler(
        read,  # type: ignore[arg-type]
        "pdm-system",
        clock=lambda: NOW,
        known=lambda namespace, name: seen,
    )


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


# --- the dry run of a waiter's Job -----------------------------------------------------
class DryRuns:
    """A Kube that counts server-side dry-run creates and refuses the ones asked."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.refuse = refuse
        self.dry_runs: list[str] = []
        self.created: list[str] = []

    def create_job(
        self, namespace: str, job: dict[str, Any], dry_run: bool = False
    ) -> dict[str, Any]:
        (self.dry_runs if dry_run else self.created).append(job["metadata"]["name"])
        if self.refuse:
            raise self.refuse
        return job


def waiter(name: str, namespace: str = "gitlab") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"environment": "gstg", "image": {"reference": "toolbox:v17.5.0"}},
    }


def validate(r: Reconciler, migration: dict[str, Any], image: str = "toolbox:v17.5.0") -> Any:
    job = render.render_job(migration, image)
    return _Answers(r, migration)(decide.ValidateJob(job))


def test_waiters_with_identical_jobs_cost_one_dry_run_and_say_whose_it_was() -> None:
    kube, clock = DryRuns(), [100.0]
    r = Reconciler(kube, "pdm-system", clock=lambda: NOW)  # type: ignore[arg-type]
    r.accepted = Accepted(clock=lambda: clock[0])
    assert validate(r, waiter("gstg-1100")) is None
    first = kube.dry_runs[0]
    assert validate(r, waiter("gstg-1200")) == first
    assert len(kube.dry_runs) == 1
    # Another image, another namespace: another Job, checked on its own.
    assert validate(r, waiter("gstg-1300"), "toolbox:v17.6.0") is None
    assert validate(r, waiter("gstg-1100", "other")) is None
    assert len(kube.dry_runs) == 3
    # Remembered for a while only: an admission policy may have changed.
    clock[0] += Accepted.FOR
    assert validate(r, waiter("gstg-1400")) is None
    assert len(kube.dry_runs) == 4


def test_a_created_job_answers_for_the_identical_jobs_of_waiters_behind_it() -> None:
    """The first of a deployment's migrations creates its Job before the queued
    ones check theirs: the API server has accepted that spec, no dry run needed."""
    kube = DryRuns()
    r = Reconciler(kube, "pdm-system", clock=lambda: NOW)  # type: ignore[arg-type]
    first = waiter("gstg-1100")
    job = render.render_job(first, "toolbox:v17.5.0")
    _Answers(r, first)(decide.CreateJob(job))
    assert validate(r, waiter("gstg-1200")) == job["metadata"]["name"]
    assert kube.dry_runs == []
    # A Job of another image is still checked on its own.
    assert validate(r, waiter("gstg-1300"), "toolbox:v17.6.0") is None
    assert len(kube.dry_runs) == 1


def test_a_refused_create_answers_for_nothing() -> None:
    kube = DryRuns(errors.Invalid("spec.template: Invalid value", 422))
    r = Reconciler(kube, "pdm-system", clock=lambda: NOW)  # type: ignore[arg-type]
    first = waiter("gstg-1100")
    with pytest.raises(errors.Invalid):
        _Answers(r, first)(decide.CreateJob(render.render_job(first, "toolbox:v17.5.0")))
    behind = render.render_job(waiter("gstg-1200"), "toolbox:v17.5.0")
    assert r.accepted.get("gitlab", behind) is None


def test_a_refused_dry_run_is_not_remembered() -> None:
    kube = DryRuns(errors.Invalid("spec.template: Invalid value", 422))
    r = Reconciler(kube, "pdm-system", clock=lambda: NOW)  # type: ignore[arg-type]
    for name in ("gstg-1100", "gstg-1200"):
        with pytest.raises(errors.Invalid):
            validate(r, waiter(name))
    assert len(kube.dry_runs) == 2


def test_the_accepted_jobs_are_bounded() -> None:
    accepted = Accepted()
    for i in range(Accepted.SIZE + 1):
        accepted.add("gitlab", render.render_job(waiter(f"m-{i}"), f"toolbox:v{i}"))
    assert accepted.get("gitlab", render.render_job(waiter("m-0"), "toolbox:v0")) is None
    last = Accepted.SIZE
    assert accepted.get("gitlab", render.render_job(waiter("x"), f"toolbox:v{last}")) is not None


# --- the environment's Jobs listed while the Lease is taken ------------------------------
class Locking:
    """A Kube whose Lease create waits (up to 5 s) for the environment's Jobs to be listed."""

    def __init__(self) -> None:
        self.listed = threading.Event()
        self.calls: list[str] = []
        self.overlapped: bool | None = None

    def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create_lease")
        self.overlapped = self.listed.wait(5)
        return {**lease, "metadata": {**lease["metadata"], "uid": "lease-uid"}}

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get_lease")
        self.overlapped = self.listed.wait(5)
        holder = "gitlab/gstg-1100/uid-gstg-1100"
        return {"metadata": {"name": name, "uid": "lease-uid"}, "spec": {"holderIdentity": holder}}

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert (
            selector == "app.kubernetes.io/managed-by=pdm-operator,pdm-operator.io/environment=gstg"
        )
        self.calls.append("list_jobs")
        self.listed.set()
        return [{"metadata": {"name": "job"}}]


@pytest.mark.parametrize(
    ("first_in_line", "handed", "lease_call"),
    [(True, False, "create_lease"), (False, True, "get_lease")],
    ids=["the first in line creates the Lease", "one handed the lock reads it"],
)
def test_the_jobs_of_an_environment_probably_ours_are_listed_while_its_lease_is_taken(
    first_in_line: bool, handed: bool, lease_call: str
) -> None:
    kube = Locking()
    r = Reconciler(kube, "pdm-system", clock=lambda: NOW)  # type: ignore[arg-type]
    answers = _Answers(r, waiter("gstg-1100"), first_in_line=first_in_line, handed=handed)
    assert answers(decide.AcquireLock()) is not None
    assert kube.overlapped  # the Lease call saw the list made meanwhile
    assert answers(decide.EnvironmentJobs()) == [{"metadata": {"name": "job"}}]
    assert sorted(kube.calls) == sorted([lease_call, "list_jobs"])  # listed once


def test_a_migration_whose_preflight_runs_reads_the_lease_it_holds_and_never_creates_it() -> None:
    """Its passes (the pre-flight's end, its polls) hold the Lease: a create
    would be refused every time, a write for nothing before the read."""
    kube = Locking()
    kube.listed.set()
    r = Reconciler(kube, "pdm-system", clock=lambda: NOW)  # type: ignore[arg-type]
    running = waiter("gstg-1100")
    running["status"] = {"preflight": {"phase": "Running", "jobName": "gstg-1100-p0a1b2c3"}}
    answers = _Answers(r, running, first_in_line=True)
    assert answers(decide.AcquireLock()) is not None  # taken: the Lease names it
    assert "create_lease" not in kube.calls
    assert "get_lease" in kube.calls


def test_a_waiter_lists_nothing_ahead() -> None:
    # Most passes of a waiter find the Lease held: a list ahead would be wasted.
    kube = Locking()
    kube.listed.set()  # nothing to wait for
    r = Reconciler(kube, "pdm-system", clock=lambda: NOW)  # type: ignore[arg-type]
    answers = _Answers(r, waiter("gstg-1100"))
    answers(decide.AcquireLock())
    assert kube.calls == ["get_lease"]


# --- the environment a pass asks for first -----------------------------------------------
def test_an_environment_read_a_moment_ago_is_not_read_again() -> None:
    reads: list[str] = []
    now = [0.0]

    def read(name: str) -> dict[str, Any] | None:
        reads.append(name)
        return {"metadata": {"name": name}, "spec": {"namespaces": ["gitlab"]}}

    envs = Environments(read, lambda: now[0])
    envs.get("gprd")
    now[0] = Environments.FOR - 0.1
    envs.get("gprd")
    assert reads == ["gprd"]
    now[0] = Environments.FOR + 0.1  # an admin's edit is obeyed after this long
    envs.get("gprd")
    assert reads == ["gprd", "gprd"]


def test_an_undeclared_environment_is_read_again_at_every_pass() -> None:
    reads: list[str] = []

    def read(name: str) -> dict[str, Any] | None:
        reads.append(name)
        return None

    envs = Environments(read, lambda: 0.0)
    assert envs.get("gprd") is None
    assert envs.get("gprd") is None
    assert reads == ["gprd", "gprd"]  # its declaration is seen at once
