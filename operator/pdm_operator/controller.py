"""Workers: one asyncio task per unfinished migration, poked by watch events.

Kopf watches PostDeployMigrations and the Jobs the operator made, and calls
``Controller.on_migration`` / ``on_job`` for every event. The controller keeps
a worker per migration that has not ended; a worker runs reconcile passes in
a thread (the official client blocks) until the migration ends, sleeping
between passes until an event pokes it or its requeue time comes.

Why not Kopf daemons or timers: Kopf puts a finalizer on every object that
has one, so a stopped operator would block ``kubectl delete pdm``, and it
writes its own state into each object. Low-level event handlers need neither,
and Kopf's initial listing after a restart re-creates the workers: that is
the resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pdm_operator import conditions, jobs, lines, metrics, model, preflight
from pdm_operator.errors import Conflict
from pdm_operator.inflight import InFlight
from pdm_operator.kube import describe, expected
from pdm_operator.lines import Lines
from pdm_operator.locks import Holder
from pdm_operator.model import Body
from pdm_operator.reconcile import Reconciler, Step
from pdm_operator.reporting import outbox
from pdm_operator.reporting.reporter import ReportingHub
from pdm_operator.waking import sleep_until_poked

log = logging.getLogger(__name__)

Key = tuple[str, str]


#: First passes that may run at once for new migrations queued behind older
#: ones of their environment. A burst of new migrations (a pipeline applying
#: hundreds) would otherwise fill every thread and the API server's queue
#: ahead of the passes that start Jobs and record their ends.
FIRST_PASSES = 4
_NO_QUEUE = contextlib.nullcontext()

#: Seconds a queued first pass waits at most for the starters' first passes.
STARTERS_FIRST = 2.0

#: Back-off after a pass failed with an unexpected error (API down, a bug):
#: doubled each time up to the cap, with jitter; reset by a good pass.
ERROR_BACKOFF_START = 1.0
ERROR_BACKOFF_CAP = 60.0

Uniform = Callable[[float, float], float]

#: The Job controller's label on a Job's pods (kubernetes
#: ``staging/src/k8s.io/api/batch/v1/types.go``, ``JobNameLabel``).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def running_preflight(status: Body) -> str:
    """The pre-flight Job a migration's status says is running ("" when none)."""
    pf = status.get("preflight") or {}
    return str(pf.get("jobName") or "") if pf.get("phase") == "Running" else ""


def requeue_delay(
    requeue: float,
    *,
    behind_others: bool,
    queued_poll: float,
    uniform: Uniform = random.uniform,
) -> float:
    """Seconds until a worker's next pass when nothing pokes it (0 or less: at once).

    ``requeue`` is what the pass asked for. One waiting behind others in its
    environment's line waits at least ``queued_poll``, ±25%: the end of the
    holder pokes the first in line, not everyone, so a slow poll is only a
    safety net, and spread out so that a line that formed at once does not
    poll at once. (A pass that asked for no requeue has ended its migration:
    the worker exits before asking this.)
    """
    if not behind_others:
        return requeue
    return max(requeue, queued_poll * uniform(0.75, 1.25))


def error_backoff(backoff: float, *, uniform: Uniform = random.uniform) -> tuple[float, float]:
    """After a pass failed: the sleep (``backoff`` ±20%), and the back-off for a
    failure after that (doubled, at most ``ERROR_BACKOFF_CAP``). A good pass
    starts again from ``ERROR_BACKOFF_START``."""
    return backoff * uniform(0.8, 1.2), min(backoff * 2, ERROR_BACKOFF_CAP)


class Reconcile(Protocol):
    """One pass over a migration (``Reconciler.reconcile``)."""

    def __call__(
        self, migration: Body, *, first_in_line: bool, handed: bool, written: list[str]
    ) -> Step: ...


@dataclass(frozen=True)
class Passes:
    """What a worker does in a thread, as plain functions (all block)."""

    #: The migration read afresh; None when it is gone.
    read: Callable[[str, str], Body | None]
    reconcile: Reconcile
    #: Put a pass's unexpected error in the migration's status and an Event.
    record_error: Callable[[Body, BaseException], None]
    #: Seconds between the safety-net polls of one behind others in its line.
    queued_poll: float

    @classmethod
    def of(cls, reconciler: Reconciler) -> Passes:
        return cls(
            reconciler.kube.get_migration,
            reconciler.reconcile,
            reconciler.record_error,
            reconciler.timing.queued_poll,
        )


class MakeReconciler(Protocol):
    """Builds the Reconciler, given the controller's side of the environments'
    lines (``Reconciler``'s ``on_release``, ``successor`` and ``known``)."""

    def __call__(
        self,
        *,
        on_release: Callable[[str, Holder | None], None],
        successor: Callable[[str, Holder], Holder | None],
        known: Callable[[str, str], Body | None],
    ) -> Reconciler: ...


class Worker:
    def __init__(
        self, key: Key, controller: Controller, body: Body, fresh: bool, ops: Passes
    ) -> None:
        self.key = key
        self.controller = controller
        #: Its passes' blocking work: the reads, the pass, the error's record.
        self.ops = ops
        self.poked = asyncio.Event()
        spec, meta = body.get("spec") or {}, body.get("metadata") or {}
        self.environment = str(spec.get("environment") or "")
        controller.lines.join(
            self.environment, key, (str(meta.get("creationTimestamp") or ""), key[1])
        )
        self.waits_for = frozenset((spec.get("waitFor") or {}).get("migrations") or ())
        #: The body of the event that made the worker, for its first pass, when
        #: nothing of ours can be newer: the migration was just created, or
        #: listed at start. Else (and for every later pass) a fresh read: an
        #: earlier worker's writes may still be on their way back by watch.
        self.first_body: Body | None = copy.deepcopy(body) if fresh else None
        self.state = model.STATE_PENDING
        self.reason = ""
        #: The resourceVersion the last pass ended on (read or written by it):
        #: a watch event of that version is our own write coming back.
        self.seen_version: str | None = None
        #: A pass is in its thread: a watch event that comes meanwhile may be
        #: one of its own writes (``news``).
        self.in_pass = False
        #: The resourceVersions of the watch events that came during the pass.
        self.arrived: set[str] = set()
        #: Poked because its environment's lock was given back: its next pass
        #: takes the Lease without reading it first (``locks.acquire``).
        self.lock_freed = False
        #: Poked because the holder before it handed it the lock (named it in
        #: the Lease): its next pass reads the Lease, and gives the lock back
        #: if it cannot use it (``decide.reconcile``).
        self.lock_handed = False
        #: The pre-flight Job the last pass left running (its status'
        #: ``preflight.jobName`` while its phase is Running), "" when none
        #: runs, None before a pass has ended: whose end is worth a pass.
        self.preflight_job: str | None = None
        #: Passes finished (their outcome taken in), for tests and debugging.
        self.passes = 0
        self.task: asyncio.Task[None] = asyncio.create_task(
            self.run(), name=f"pdm:{key[0]}/{key[1]}"
        )

    def poke(self) -> None:
        self.poked.set()

    def news(self, version: str | None) -> None:
        """A watch event of its migration, not of the version its last pass ended on.

        While a pass runs, its own status write comes back by watch before the
        pass has returned (and so before ``seen_version`` names it): such an
        event is kept, and pokes only if the pass neither started from nor
        wrote that version (``_one_pass``). Otherwise another pass would follow at once, to find
        what the last one wrote: reading the Job, its pods and its log again.
        """
        if self.in_pass and version is not None:
            self.arrived.add(version)
        else:
            self.poke()

    def awaits_preflight(self, job_name: str) -> bool:
        """Whether the end of pre-flight Job ``job_name`` is news to this worker.

        Not once its answer is recorded: the pod's end wakes the pass that
        reads it, and the Job's ``Complete`` a second later would only cost
        another pass. Unknown (no pass has ended yet) counts as news.
        """
        return self.preflight_job is None or self.preflight_job == job_name

    async def run(self) -> None:
        namespace, name = self.key
        fields = {"namespace": namespace, "migration": name}
        backoff = ERROR_BACKOFF_START
        first = True
        try:
            while True:
                self.poked.clear()
                was_first, first = first, False
                try:
                    step, started = await self._one_pass(was_first)
                except Conflict:
                    # The reporter wrote the status since we read it: read again.
                    metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "requeue").inc()
                    continue
                except Exception as e:
                    metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "error").inc()
                    metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
                    if expected(e):
                        # The API server or the network: no traceback to read.
                        log.warning(
                            "%s/%s: reconcile failed (%s); retrying in %.0fs",
                            namespace,
                            name,
                            describe(e),
                            backoff,
                            extra=fields,
                        )
                    else:
                        log.exception(
                            "%s/%s: reconcile failed; retrying in %.0fs",
                            namespace,
                            name,
                            backoff,
                            extra=fields,
                        )
                    await self._record_error(e)
                    delay, backoff = error_backoff(backoff)
                    await self._sleep(delay)
                    continue
                self.passes += 1
                metrics.RECONCILE_TIME.labels(metrics.CONTROLLER).observe(
                    time.monotonic() - started
                )
                done = step is None or step.requeue is None
                metrics.RECONCILE_TOTAL.labels(
                    metrics.CONTROLLER, "success" if done else "requeue_after"
                ).inc()
                backoff = ERROR_BACKOFF_START
                if step is None or step.requeue is None:
                    return
                was_in_line = self.in_line
                self.state = str(step.status.get("state") or model.STATE_PENDING)
                self.reason = str(step.status.get("reason") or "")
                self.preflight_job = running_preflight(step.status)
                self.controller.lines.set_waiting(self.environment, self.key, self.in_line)
                if was_in_line and not self.in_line:
                    # Out of the line (the lock taken, or held by another
                    # gate now): whoever is first now gets its turn to look.
                    self.controller.poke_first_in_line(self.environment, freed=False)
                delay = requeue_delay(
                    step.requeue,
                    behind_others=self.in_line
                    and self.controller.lines.first(self.environment) != self.key,
                    queued_poll=self.ops.queued_poll,
                )
                if delay > 0:
                    await self._sleep(delay)
        finally:
            self.controller.forget(self)

    async def _one_pass(self, first: bool) -> tuple[Step | None, float]:
        """A pass in a thread; the step, and when it started (after any queue)."""
        # A new migration with older ones of its environment ahead will wait
        # for the lock: its first pass queues behind the passes that start
        # and end Jobs.
        lines = self.controller.lines
        queue = first and lines.has_older(self.environment, self.key)
        starter = first and not queue
        if queue:
            await self.controller.starters_done()
        if starter:
            self.controller.starting(1)
        try:
            async with self.controller.first_passes if queue else _NO_QUEUE:
                started = time.monotonic()
                body, self.first_body = self.first_body or self._known(), None
                # The lock is probably free for the first of its environment,
                # or one poked because it was given back; it is this one's if
                # it was handed over.
                handed, self.lock_handed = self.lock_handed, False
                free = not handed and (
                    self.lock_freed or not lines.has_older(self.environment, self.key)
                )
                self.lock_freed = False
                seen: list[str] = []
                self.in_pass = True
                try:
                    step, self.seen_version = await asyncio.to_thread(
                        self._pass, body, free, handed, seen
                    )
                finally:
                    # Whatever came meanwhile that this pass neither started
                    # from nor wrote is news, the pass raised or not.
                    self.in_pass = False
                    arrived, self.arrived = self.arrived, set()
                    if arrived - set(seen):
                        self.poke()
        finally:
            if starter:
                self.controller.starting(-1)
        return step, started

    @property
    def in_line(self) -> bool:
        """Waiting for its environment's lock."""
        return lines.waits(self.state, self.reason)

    def _pass(
        self, body: Body | None, first: bool, handed: bool, seen: list[str]
    ) -> tuple[Step | None, str | None]:
        """One pass; ``seen`` gets the resourceVersion it starts from, then each it writes."""
        # Runs in a thread; counted, so a leadership handover can wait for
        # passes still writing after their task was cancelled.
        with self.controller.inflight:
            # The first pass starts from the watch event's body: nothing of
            # ours can be newer, and if anything else is, the pass's guarded
            # writes conflict and the next pass reads again. A later pass
            # starts from the body the watch has brought back of this
            # worker's own last version (``_known``), else reads afresh: a
            # watch event can be older than our own last write.
            migration = body
            if migration is None:
                migration = self.ops.read(*self.key)
            if migration is None or migration["metadata"].get("deletionTimestamp"):
                return None, None
            seen.append(str(migration["metadata"].get("resourceVersion")))
            step = self.ops.reconcile(migration, first_in_line=first, handed=handed, written=seen)
            # The pass updates the resourceVersion in place as it writes.
            return step, migration["metadata"].get("resourceVersion")

    def _known(self) -> Body | None:
        """The migration as the last pass left it, when nothing newer has come by watch.

        The controller keeps the body of the latest watch event; if that is
        the version this worker's last pass ended on (its own write, come
        back), it is the newest version there is as far as anyone here
        knows, and a GET would return the same object. Otherwise (no event
        yet, or a newer one): None, and the pass reads afresh.
        """
        if self.seen_version is None:
            return None
        latest = self.controller.latest.get(self.key)
        version = ((latest or {}).get("metadata") or {}).get("resourceVersion")
        return copy.deepcopy(latest) if version == self.seen_version else None

    async def _sleep(self, seconds: float) -> None:
        await sleep_until_poked(self.poked, seconds)

    async def _record_error(self, error: Exception) -> None:
        """Put the failure in the migration's status and an event; best effort."""

        def record() -> None:
            with self.controller.inflight:
                migration = self.ops.read(*self.key)
                if migration is not None:
                    self.ops.record_error(migration, error)

        try:
            await asyncio.to_thread(record)
        except Exception as e:  # noqa: BLE001 - the API may be what failed in the first place
            log.debug("%s/%s: could not record the error: %s", *self.key, describe(e))


def _key_of(body: Body) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace")), str(meta.get("name")))


def _job_ended(body: Body) -> bool:
    """The migration's Job has ended (its outcome recorded, or the migration finished)."""
    status = body.get("status") or {}
    return model.is_finished(status) or bool(status.get("jobOutcome"))


def _needs_worker(body: Body) -> bool:
    """Unfinished, or finished but its status not yet caught up with its spec's
    generation (a pass only to catch ``observedGeneration`` up, which it says)."""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    lagging = int(status.get("observedGeneration") or 0) != int(meta.get("generation") or 1)
    return not model.is_finished(status) or lagging


class Controller:
    def __init__(
        self,
        reconciler: MakeReconciler,
        reporting: ReportingHub | None = None,
        active: bool = True,
    ) -> None:
        """``reconciler`` builds the Reconciler with this controller's side of the
        lines: a pass tells the controller of a lock it gave back and asks it
        whom to hand the lock to, and the controller runs the passes."""
        self.reporting = reporting
        #: False while on standby (HA): events are noted, nothing is acted on.
        self.active = active
        self.inflight = InFlight()
        self.workers: dict[Key, Worker] = {}
        self.lines: Lines[Key] = Lines()
        self.first_passes = asyncio.Semaphore(FIRST_PASSES)
        #: First passes running of migrations with no older one in their
        #: environment (they start Jobs); queued first passes wait for them.
        self._starters = 0
        self._no_starters = asyncio.Event()
        self._no_starters.set()
        #: The last known body of every migration in progress or with reports
        #: pending, for the gauges computed at scrape time.
        self.latest: dict[Key, Body] = {}
        if reporting is not None:
            reporting.on_change = self.poke
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reconciler = reconciler(
            on_release=self._lock_released, successor=self._successor, known=self._known
        )
        self._passes = Passes.of(self.reconciler)

    def on_migration(self, event_type: str | None, body: Body) -> None:
        """A watch event for a PostDeployMigration (``None`` for the initial listing)."""
        self._remember_loop()
        key = _key_of(body)
        if event_type == "DELETED":
            self._deleted(key, body)
            return
        if not self.active:
            return
        if self.reporting is not None:
            self.reporting.observe(body)
        self._count_success(body)
        self._keep_latest(key, body)
        if _job_ended(body):
            # Its Job has ended, which opens the gates it held: the
            # environment lock, and the dependencies of those waiting for it.
            self._poke_gated_behind(key, body)
        self._start_or_poke_worker(key, body, fresh=event_type in (None, "ADDED"))

    def _remember_loop(self) -> None:
        """The event loop, for a pass's thread to call back on (``_lock_released``)."""
        if self._loop is None:
            with contextlib.suppress(RuntimeError):  # no loop: a test calling it directly
                self._loop = asyncio.get_running_loop()

    @staticmethod
    def _count_success(body: Body) -> None:
        """A succeeded migration's completion time, for the newest success per environment."""
        status = body.get("status") or {}
        if model.is_finished(status) and conditions.is_true(
            status.get("conditions"), model.SUCCEEDED
        ):
            metrics.observe_success(body["spec"]["environment"], status)

    def _keep_latest(self, key: Key, body: Body) -> None:
        """Keep the body while the migration is in progress or has reports pending."""
        if model.is_finished(body.get("status") or {}) and not outbox.needs_reporting(body):
            self.latest.pop(key, None)
        else:
            self.latest[key] = body

    def _known(self, namespace: str, name: str) -> Body | None:
        """From a pass's thread: the latest body the watch brought of a migration."""
        return self.latest.get((namespace, name))

    def _start_or_poke_worker(self, key: Key, body: Body, *, fresh: bool) -> None:
        """A worker for a migration that has none and needs one; else poke its
        worker, unless the event is that worker's own write come back."""
        worker = self.workers.get(key)
        if worker is None:
            if _needs_worker(body):
                self.workers[key] = Worker(key, self, body, fresh, self._passes)
        elif not self._own_write(worker, body):
            if worker.first_body is not None:
                worker.first_body = copy.deepcopy(body)  # newer than the one it was made with
            worker.news((body.get("metadata") or {}).get("resourceVersion"))

    def _deleted(self, key: Key, body: Body) -> None:
        self.latest.pop(key, None)
        worker = self.workers.pop(key, None)
        if worker is not None:
            worker.task.cancel()
            self.lines.leave(worker.environment, key)
        if self.reporting is not None:
            self.reporting.cancel(key)
        # It may have held its environment's lock, or been first in line. The
        # first now reads the Lease: one that names a migration gone is taken
        # over, which a create would only learn from a refusal.
        self.poke_first_in_line(str((body.get("spec") or {}).get("environment") or ""), freed=False)

    def starting(self, change: int) -> None:
        """A starter's first pass begins (+1) or ends (-1)."""
        self._starters += change
        if self._starters:
            self._no_starters.clear()
        else:
            self._no_starters.set()

    async def starters_done(self) -> None:
        """Until no starter's first pass runs (at most STARTERS_FIRST seconds).

        A burst of new migrations (a pipeline applying hundreds at once) lists
        the oldest of each environment first; their passes create the Jobs,
        the others' only say they wait. Bounded, so that a stream of new
        environments cannot starve the rest.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_starters.wait(), STARTERS_FIRST)

    def poke(self, key: Key) -> None:
        worker = self.workers.get(key)
        if worker is not None:
            worker.poke()

    def on_job(self, body: Body, event_type: str | None = None) -> None:
        """A watch event for a migration or pre-flight Job: poke its migration when
        the Job has ended or is gone.

        Not for the Job's progress in between (its pod created, active, ready:
        three or four events a Job), which no pass acts on at once: a pod that
        cannot start is looked for by the running Job's own polls
        (``decide.after_job``). At 500 migrations those events made two to
        three passes a migration, each reading the Job and listing its pods.
        """
        if event_type != "DELETED" and jobs.outcome(body) is None:
            return
        worker, meta = self._worker_of(body)
        if worker is None:
            return
        labels = meta.get("labels") or {}
        if labels.get(model.LABEL_COMPONENT) == preflight.COMPONENT and not (
            worker.awaits_preflight(str(meta.get("name")))
        ):
            return
        worker.poke()

    def on_preflight_pod(self, body: Body, event_type: str | None = None) -> None:
        """A watch event for a pre-flight pod: poke its migration when the pod has
        Succeeded, a second before its Job's ``Complete`` (``decide``'s
        pre-flight reads the answer then). A failed pod is left to its Job,
        which may run another (``preflight.BACKOFF_LIMIT``)."""
        if event_type == "DELETED" or (body.get("status") or {}).get("phase") != "Succeeded":
            return
        worker, meta = self._worker_of(body)
        job = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
        if worker is not None and worker.awaits_preflight(str(job)):
            worker.poke()

    def _worker_of(self, body: Body) -> tuple[Worker | None, Body]:
        """The worker of the migration a Job or pod names in its label, and its metadata."""
        meta: Body = body.get("metadata") or {}
        name = (meta.get("labels") or {}).get(model.LABEL_MIGRATION)
        return self.workers.get((str(meta.get("namespace")), str(name))), meta

    @staticmethod
    def _own_write(worker: Worker, body: Body) -> bool:
        """The event is the version the worker's last pass ended on: nothing new."""
        version = (body.get("metadata") or {}).get("resourceVersion")
        return version is not None and version == worker.seen_version

    def _poke_gated_behind(self, key: Key, body: Body) -> None:
        namespace, name = key
        for worker in self.workers.values():
            if worker.key[0] == namespace and name in worker.waits_for:
                worker.poke()
        # Read, not created: the pass that ended it has handed its lock on
        # already (``_after_release``), or will.
        self.poke_first_in_line(str((body.get("spec") or {}).get("environment") or ""), freed=False)

    def first_in_line(self, environment: str) -> Worker | None:
        """The oldest migration waiting for ``environment``'s lock."""
        first = self.lines.first(environment)
        return None if first is None else self.workers.get(first)

    def _successor(self, environment: str, holder: Holder) -> Holder | None:
        """From a pass's thread: whom ``holder`` hands ``environment``'s lock to.

        The first in line but the holder, as its latest watch event shows it
        (its uid names it in the Lease); None when nobody waits, or the first
        is being deleted: the Lease is then deleted.
        """
        key = self.lines.first(environment, but=(holder.namespace, holder.name))
        body = None if key is None else self.latest.get(key)
        meta = (body or {}).get("metadata") or {}
        if key is None or not meta.get("uid") or meta.get("deletionTimestamp"):
            return None
        return Holder(key[0], key[1], str(meta["uid"]))

    def _lock_released(self, environment: str, to: Holder | None) -> None:
        """From a pass's thread, the moment it gave ``environment``'s lock back."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                self._loop.call_soon_threadsafe(self._after_release, environment, to)

    def _after_release(self, environment: str, to: Holder | None) -> None:
        """Poke the one the lock was handed to; else (deleted, or that one is gone)
        the first in line, which finds the Lease free or held by one gone."""
        worker = None if to is None else self.workers.get((to.namespace, to.name))
        if worker is not None:
            worker.lock_handed = True
            worker.poke()
        else:
            self.poke_first_in_line(environment, freed=to is None)

    def environment_changed(self, environment: str) -> None:
        """From the environments' thread: ``environment``'s spec changed (a change
        lock set or lifted, a window edited): every migration of it looks again."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                self._loop.call_soon_threadsafe(self._poke_environment, environment)

    def _poke_environment(self, environment: str) -> None:
        for worker in list(self.workers.values()):
            if worker.environment == environment:
                worker.poke()

    def poke_first_in_line(self, environment: str, *, freed: bool = True) -> None:
        """Wake the oldest waiter of ``environment``; ``freed``: because its lock
        was given back (or its holder ended or went), so it is probably free."""
        first = self.first_in_line(environment)
        if first is not None:
            first.lock_freed = first.lock_freed or freed
            first.poke()

    def forget(self, worker: Worker) -> None:
        if self.workers.get(worker.key) is worker:
            del self.workers[worker.key]
            self.lines.leave(worker.environment, worker.key)

    def activate(self, migrations: list[Body]) -> None:
        """Start acting (leadership acquired): every listed migration gets its worker."""
        self.active = True
        for body in migrations:
            self.on_migration(None, body)

    async def deactivate(self, drain_timeout: float = 30.0) -> None:
        """Stop acting (leadership lost or shutdown): cancel, then wait for passes in threads."""
        self.active = False
        tasks = [w.task for w in self.workers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.workers.clear()
        self.lines = Lines()
        self.latest.clear()
        if self.reporting is not None:
            await self.reporting.pause()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and (
            self.inflight.count or (self.reporting is not None and self.reporting.inflight.count)
        ):
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Graceful shutdown: stop acting, drain, and let the reporters' threads go."""
        await self.deactivate()
        if self.reporting is not None:
            await self.reporting.stop()
