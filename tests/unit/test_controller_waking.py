"""Whom the controller wakes: the first in an environment's line, the dependants
of a migration that ended, never a worker for its own write.

The reconciler is a stand-in that answers each pass from a table (this is
about routing events to workers; the passes themselves are tested against the
real API server in the integration tests).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from pdm_operator import controller as ctl
from pdm_operator.locks import Holder
from pdm_operator.reconcile import Step, Timing


class Reconciler:
    """Passes answered from ``states``: name -> (state, reason, requeue)."""

    def __init__(self) -> None:
        self.timing = Timing()
        self.kube = self
        self.bodies: dict[str, dict[str, Any]] = {}
        self.states: dict[str, tuple[str, str]] = {}
        self.passes: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.first_in_line: dict[str, list[bool]] = {}
        self.handed: dict[str, list[bool]] = {}
        self.errors: list[BaseException] = []
        #: The ``status.preflight`` each name's passes end with.
        self.preflights: dict[str, dict[str, Any]] = {}
        #: How soon every pass asks to be run again.
        self.requeue = self.timing.lock_poll
        #: The resourceVersions the next pass of a name writes.
        self.writes: dict[str, list[str]] = {}
        #: Names whose passes wait for ``release`` once they have set ``entered``.
        self.held: set[str] = set()
        self.entered = threading.Event()
        self.release = threading.Event()

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads[name] += 1
        body = self.bodies.get(name)
        return None if body is None else {**body, "metadata": dict(body["metadata"])}

    def reconcile(
        self,
        migration: dict[str, Any],
        *,
        first_in_line: bool = False,
        handed: bool = False,
        written: list[str] | None = None,
    ) -> Step:
        name = migration["metadata"]["name"]
        self.passes[name] += 1
        if name in self.held:
            # Held in its thread until the test has sent its watch events.
            self.entered.set()
            assert self.release.wait(10), "the test never released the pass"
        for version in self.writes.pop(name, []):
            migration["metadata"]["resourceVersion"] = version
            if written is not None:
                written.append(version)
        self.first_in_line.setdefault(name, []).append(first_in_line)
        self.handed.setdefault(name, []).append(handed)
        state, reason = self.states[name]
        status: dict[str, Any] = {"state": state, "reason": reason}
        if name in self.preflights:
            status["preflight"] = dict(self.preflights[name])
        return Step(status, self.requeue)

    def record_error(self, migration: dict[str, Any], error: BaseException) -> None:
        self.errors.append(error)


def body(name: str, env: str, created: str, rv: str = "1", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "creationTimestamp": created,
            "resourceVersion": rv,
            "uid": f"uid-{name}",
        },
        "spec": {"environment": env, **status.pop("spec", {})},
        "status": status,
    }


async def settle(c: ctl.Controller, expected: dict[str, int], timeout: float = 10) -> None:
    """Until each named worker has finished that many passes."""

    def done() -> bool:
        return all(c.workers[("ns", n)].passes >= count for n, count in expected.items())

    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"passes { ({k[1]: w.passes for k, w in c.workers.items()}) }, expected {expected}"
            )
        await asyncio.sleep(0.005)


def scenario(check: Any) -> None:
    async def main() -> None:
        rec = Reconciler()
        c = ctl.Controller(lambda **_: rec)  # type: ignore[arg-type]
        try:
            await check(rec, c)
        finally:
            await c.deactivate(drain_timeout=1)

    asyncio.run(main())


def start(rec: Reconciler, c: ctl.Controller, b: dict[str, Any], state: tuple[str, str]) -> None:
    rec.bodies[b["metadata"]["name"]] = b
    rec.states[b["metadata"]["name"]] = state
    c.on_migration("ADDED", b)


LOCKED = ("Gated", "EnvironmentLocked")
RUNNING = ("Running", "JobRunning")


def test_an_ended_job_wakes_only_the_first_in_its_environments_line() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        holder = body("holder", "gstg", "2026-11-22T10:00:00Z")
        start(rec, c, holder, RUNNING)
        start(rec, c, body("second", "gstg", "2026-11-22T10:00:02Z"), LOCKED)
        start(rec, c, body("first", "gstg", "2026-11-22T10:00:01Z"), LOCKED)
        start(rec, c, body("elsewhere", "gprd", "2026-11-22T09:00:00Z"), LOCKED)
        await settle(c, {"holder": 1, "first": 1, "second": 1, "elsewhere": 1})
        assert c.first_in_line("gstg") is c.workers[("ns", "first")]

        holder["metadata"]["resourceVersion"] = "2"
        c.on_migration("MODIFIED", {**holder, "status": {"jobOutcome": "Succeeded"}})
        await settle(c, {"first": 2, "holder": 2})
        assert rec.passes == Counter(holder=2, first=2, second=1, elsewhere=1)

    scenario(check)


def test_leaving_the_line_hands_the_turn_to_the_next() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        start(rec, c, body("first", "gstg", "2026-11-22T10:00:01Z"), LOCKED)
        start(rec, c, body("second", "gstg", "2026-11-22T10:00:02Z"), LOCKED)
        await settle(c, {"first": 1, "second": 1})

        # The first takes the lock: the second is first in line now, and looks.
        rec.states["first"] = RUNNING
        c.workers[("ns", "first")].poke()
        await settle(c, {"first": 2, "second": 2})
        assert c.first_in_line("gstg") is c.workers[("ns", "second")]

    scenario(check)


def test_deleting_a_migration_wakes_the_first_in_its_line() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        holder = body("holder", "gstg", "2026-11-22T10:00:00Z")
        start(rec, c, holder, RUNNING)
        start(rec, c, body("waiter", "gstg", "2026-11-22T10:00:01Z"), LOCKED)
        await settle(c, {"holder": 1, "waiter": 1})
        del rec.bodies["holder"]
        c.on_migration("DELETED", holder)
        await settle(c, {"waiter": 2})
        assert ("ns", "holder") not in c.workers

    scenario(check)


def test_an_ended_migration_wakes_those_that_wait_for_it() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        before = body("before", "gstg", "2026-11-22T10:00:00Z")
        start(rec, c, before, RUNNING)
        after = body(
            "after", "gprd", "2026-11-22T10:00:01Z", spec={"waitFor": {"migrations": ["before"]}}
        )
        start(rec, c, after, ("Gated", "WaitingForMigrations"))
        start(rec, c, body("unrelated", "gprd", "2026-11-22T10:00:02Z"), ("Gated", "Suspended"))
        await settle(c, {"before": 1, "after": 1, "unrelated": 1})

        ended = {
            **before,
            "status": {
                "jobOutcome": "Succeeded",
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed"}],
            },
        }
        rec.bodies["before"] = ended
        c.on_migration("MODIFIED", ended)
        await settle(c, {"after": 2})
        assert rec.passes["unrelated"] == 1

    scenario(check)


def test_the_echo_of_a_workers_own_write_wakes_nobody() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        mine = body("mine", "gstg", "2026-11-22T10:00:00Z", rv="7")
        start(rec, c, mine, LOCKED)
        await settle(c, {"mine": 1})
        assert c.workers[("ns", "mine")].seen_version == "7"

        c.on_migration("MODIFIED", mine)  # the version its pass ended on
        assert not c.workers[("ns", "mine")].poked.is_set()
        c.on_migration(
            "MODIFIED", {**mine, "metadata": {**mine["metadata"], "resourceVersion": "8"}}
        )
        assert c.workers[("ns", "mine")].poked.is_set()

    scenario(check)


def test_a_passs_own_writes_coming_back_while_it_runs_wake_nobody_another_write_does() -> None:
    """The watch can bring a pass's write back before the pass has returned: not
    news. Without this, each write was followed at once by a pass that read the
    Job, its pods and its log again (on kwok, whose logs cannot be read, it
    wrote the log's unknown progress too)."""

    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        rec.requeue = 3600.0  # only a poke runs the next pass within the test
        mine = body("mine", "gstg", "2026-11-22T10:00:00Z", rv="1")
        start(rec, c, mine, RUNNING)
        await settle(c, {"mine": 1})
        worker = c.workers[("ns", "mine")]

        async def pass_meanwhile(writes: list[str], events: list[str]) -> None:
            rec.writes["mine"], rec.held = writes, {"mine"}
            rec.entered.clear()
            rec.release.clear()
            worker.poke()
            assert await asyncio.to_thread(rec.entered.wait, 10)
            for version in events:
                c.on_migration(
                    "MODIFIED",
                    {**mine, "metadata": {**mine["metadata"], "resourceVersion": version}},
                )
            rec.held = set()
            rec.release.set()

        await pass_meanwhile(["2", "3"], ["1", "2", "3"])  # what it started from, wrote
        await settle(c, {"mine": 2})
        # The worker went from that pass straight to its sleep: a poke would
        # have started the next pass before the loop ran anything else.
        assert (worker.in_pass, worker.seen_version, rec.passes["mine"]) == (False, "3", 2)

        await pass_meanwhile(["5"], ["4", "5"])  # 4: someone else's write
        await settle(c, {"mine": 3})
        await settle(c, {"mine": 4})  # the next pass, at once: 4 was news

    scenario(check)


def test_deactivate_stops_a_worker_poked_as_it_is_cancelled() -> None:
    # asyncio.wait_for on Python 3.11 swallowed this cancellation: the worker
    # lived on after losing leadership, and the shutdown never finished.
    async def main() -> None:
        rec = Reconciler()
        c = ctl.Controller(lambda **_: rec)  # type: ignore[arg-type]
        start(rec, c, body("mine", "gstg", "2026-11-22T10:00:00Z"), LOCKED)
        await settle(c, {"mine": 1})
        task = c.workers[("ns", "mine")].task
        c.workers[("ns", "mine")].poke()
        async with asyncio.timeout(10):
            await c.deactivate(drain_timeout=1)
        assert task.done()
        assert not c.workers

    asyncio.run(main())


def test_a_burst_queues_behind_the_oldest_of_each_environment() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        for _ in range(ctl.FIRST_PASSES):  # a burst holds every queue slot
            await c.first_passes.acquire()
        start(rec, c, body("head", "gstg", "2026-11-22T10:00:00Z"), RUNNING)
        start(rec, c, body("behind", "gstg", "2026-11-22T10:00:01Z"), LOCKED)
        start(rec, c, body("other-head", "gprd", "2026-11-22T10:00:02Z"), RUNNING)
        # The oldest of each environment goes at once; the one behind waits.
        await settle(c, {"head": 1, "other-head": 1})
        assert rec.passes["behind"] == 0
        c.first_passes.release()
        await settle(c, {"behind": 1})

    scenario(check)


def test_a_pass_starts_from_its_own_last_version_come_back_and_reads_a_newer_one() -> None:
    """No GET when the watch has brought back exactly the version the last pass
    ended on; a GET once anything newer came (a watch event can lag a write)."""

    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        holder = body("holder", "gstg", "2026-11-22T10:00:00Z")
        start(rec, c, holder, RUNNING)
        await settle(c, {"holder": 1})
        assert rec.reads["holder"] == 0  # the first pass: the ADDED event's body
        c.on_migration("MODIFIED", holder)  # its own version, come back: no poke
        c.poke(("ns", "holder"))
        await settle(c, {"holder": 2})
        assert rec.reads["holder"] == 0
        newer = body("holder", "gstg", "2026-11-22T10:00:00Z", rv="2")
        rec.bodies["holder"] = newer
        c.on_migration("MODIFIED", newer)
        await settle(c, {"holder": 3})
        c.poke(("ns", "holder"))
        await settle(c, {"holder": 4})
        # The third pass read the newer version afresh; the fourth had it back.
        assert rec.reads["holder"] == 1

    scenario(check)


def test_a_free_lock_is_expected_by_the_oldest_and_by_one_poked_for_a_release() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        holder = body("holder", "gstg", "2026-11-22T10:00:00Z")
        start(rec, c, holder, RUNNING)
        start(rec, c, body("first", "gstg", "2026-11-22T10:00:01Z"), LOCKED)
        await settle(c, {"holder": 1, "first": 1})
        assert rec.first_in_line == {"holder": [True], "first": [False]}
        c._lock_released("gstg", None)  # what a pass that deleted the Lease calls
        await settle(c, {"first": 2})
        assert rec.first_in_line["first"] == [False, True]
        c.poke(("ns", "first"))  # any other poke: the lock is not known to be free
        await settle(c, {"first": 3})
        assert rec.first_in_line["first"] == [False, True, False]
        assert rec.handed["first"] == [False, False, False]

    scenario(check)


def test_the_lock_goes_to_the_first_in_line_but_its_holder_and_that_one_is_told() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        start(rec, c, body("holder", "gstg", "2026-11-22T10:00:00Z"), RUNNING)
        start(rec, c, body("first", "gstg", "2026-11-22T10:00:01Z"), LOCKED)
        start(rec, c, body("second", "gstg", "2026-11-22T10:00:02Z"), LOCKED)
        start(rec, c, body("elsewhere", "gprd", "2026-11-22T09:00:00Z"), LOCKED)
        await settle(c, {"holder": 1, "first": 1, "second": 1, "elsewhere": 1})
        first = c._successor("gstg", Holder("ns", "holder", "uid-holder"))
        assert first == Holder("ns", "first", "uid-first")
        # One handed the lock that cannot use it hands it on, not to itself.
        assert c._successor("gstg", first) == Holder("ns", "second", "uid-second")
        c._lock_released("gstg", first)  # what a pass that handed the Lease on calls
        await settle(c, {"first": 2})
        # It reads the Lease (not expected free) and knows it was handed the lock.
        assert (rec.first_in_line["first"], rec.handed["first"]) == ([False, False], [False, True])
        assert rec.passes["second"] == 1
        # One being deleted is not handed anything.
        rec.bodies["first"]["metadata"]["deletionTimestamp"] = "2026-11-22T10:01:00Z"
        c.on_migration("MODIFIED", {**rec.bodies["first"], "metadata": {
            **rec.bodies["first"]["metadata"], "resourceVersion": "2"}})  # fmt: skip
        assert c._successor("gstg", Holder("ns", "holder", "uid-holder")) is None

    scenario(check)


def job_event(migration: str, *conditions: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": f"{migration}-1a2b3c4d", "labels": {
            "pdm-operator.io/migration": migration}},
        "status": {"active": 1, "ready": 1, "conditions": [
            {"type": c, "status": "True"} for c in conditions]},
    }  # fmt: skip


def test_a_jobs_progress_wakes_nobody_its_end_and_deletion_wake_its_migration() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        start(rec, c, body("running", "gstg", "2026-11-22T10:00:00Z"), RUNNING)
        await settle(c, {"running": 1})
        worker = c.workers[("ns", "running")]
        for event in ("ADDED", "MODIFIED"):
            c.on_job(job_event("running"), event)
            c.on_job(job_event("running", "SuccessCriteriaMet"), event)  # pods still ending
            assert not worker.poked.is_set()
        c.on_job(job_event("running", "SuccessCriteriaMet", "Complete"), "MODIFIED")
        assert worker.poked.is_set()
        await settle(c, {"running": 2})
        c.on_job(job_event("running"), "DELETED")
        assert worker.poked.is_set()

    scenario(check)


def preflight_pod(migration: str, job: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": f"{job}-x7k2q", "labels": {
            "pdm-operator.io/migration": migration,
            "app.kubernetes.io/component": "post-deploy-migration-preflight",
            "batch.kubernetes.io/job-name": job}},
        "status": {"phase": phase},
    }  # fmt: skip


def test_the_preflight_pods_end_wakes_its_migration_and_its_jobs_complete_then_does_not() -> None:
    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        rec.preflights["asking"] = {"jobName": "asking-p1a2b3c4", "phase": "Running"}
        start(rec, c, body("asking", "gstg", "2026-11-22T10:00:00Z"), ("Pending", "Preflight"))
        await settle(c, {"asking": 1})
        worker = c.workers[("ns", "asking")]
        for phase in ("Pending", "Running", "Failed"):  # a failed pod: its Job may run another
            c.on_preflight_pod(preflight_pod("asking", "asking-p1a2b3c4", phase), "MODIFIED")
        # A pod of an earlier run's pre-flight, and a pod deleted, are no news.
        c.on_preflight_pod(preflight_pod("asking", "asking-p0ffee00", "Succeeded"), "MODIFIED")
        c.on_preflight_pod(preflight_pod("asking", "asking-p1a2b3c4", "Succeeded"), "DELETED")
        assert not worker.poked.is_set()
        c.on_preflight_pod(preflight_pod("asking", "asking-p1a2b3c4", "Succeeded"), "MODIFIED")
        assert worker.poked.is_set()
        # That pass read the answer: the Job's Complete a second later wakes nobody.
        rec.preflights["asking"]["phase"] = "Succeeded"
        rec.states["asking"] = RUNNING
        await settle(c, {"asking": 2})
        ended = job_event("asking", "SuccessCriteriaMet", "Complete")
        ended["metadata"]["name"] = "asking-p1a2b3c4"
        ended["metadata"]["labels"]["app.kubernetes.io/component"] = (
            "post-deploy-migration-preflight"
        )
        c.on_job(ended, "MODIFIED")
        assert not worker.poked.is_set()
        # The migration Job's end does.
        c.on_job(job_event("asking", "SuccessCriteriaMet", "Complete"), "MODIFIED")
        assert worker.poked.is_set()

    scenario(check)


def test_a_preflight_jobs_end_wakes_a_migration_whose_passes_have_not_ended_yet() -> None:
    """Unknown is news: before a pass has ended, the Job's end pokes as it always did."""

    async def check(rec: Reconciler, c: ctl.Controller) -> None:
        start(rec, c, body("fresh", "gstg", "2026-11-22T10:00:00Z"), RUNNING)
        worker = c.workers[("ns", "fresh")]
        assert worker.preflight_job is None
        worker.poked.clear()
        ended = job_event("fresh", "Complete")
        ended["metadata"]["labels"]["app.kubernetes.io/component"] = (
            "post-deploy-migration-preflight"
        )
        c.on_job(ended, "MODIFIED")
        assert worker.poked.is_set()

    scenario(check)
