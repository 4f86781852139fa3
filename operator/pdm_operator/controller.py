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
import logging
import random
import time

from pdm_operator import conditions, metrics, model
from pdm_operator.inflight import InFlight
from pdm_operator.kube import Conflict
from pdm_operator.model import Body
from pdm_operator.reconcile import Reconciler, Step
from pdm_operator.reporting import outbox
from pdm_operator.reporting.reporter import ReportingHub

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: Back-off after a pass failed with an unexpected error (API down, a bug):
#: doubled each time up to the cap, with jitter; reset by a good pass.
ERROR_BACKOFF_START = 1.0
ERROR_BACKOFF_CAP = 60.0


class Worker:
    def __init__(self, key: Key, controller: Controller) -> None:
        self.key = key
        self.controller = controller
        self.poked = asyncio.Event()
        self.state = model.STATE_PENDING
        self.task: asyncio.Task[None] = asyncio.create_task(
            self.run(), name=f"pdm:{key[0]}/{key[1]}"
        )

    def poke(self) -> None:
        self.poked.set()

    async def run(self) -> None:
        namespace, name = self.key
        fields = {"namespace": namespace, "migration": name}
        backoff = ERROR_BACKOFF_START
        try:
            while True:
                self.poked.clear()
                started = time.monotonic()
                try:
                    step = await asyncio.to_thread(self._pass)
                except Conflict:
                    # The reporter wrote the status since we read it: read again.
                    metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "requeue").inc()
                    continue
                except Exception:
                    metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "error").inc()
                    metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
                    log.exception(
                        "%s/%s: reconcile failed; retrying in %.0fs",
                        namespace,
                        name,
                        backoff,
                        extra=fields,
                    )
                    delay = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
                    backoff = min(backoff * 2, ERROR_BACKOFF_CAP)
                    await self._sleep(delay)
                    continue
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
                self.state = str(step.status.get("state") or model.STATE_PENDING)
                if step.requeue > 0:
                    await self._sleep(step.requeue)
        finally:
            self.controller.forget(self)

    def _pass(self) -> Step | None:
        # Runs in a thread; counted, so a leadership handover can wait for
        # passes still writing after their task was cancelled.
        with self.controller.inflight:
            # Always from a fresh read: a watch event can be older than our
            # own last status write, and a pass must start from the truth.
            migration = self.controller.reconciler.kube.get_migration(*self.key)
            if migration is None or migration["metadata"].get("deletionTimestamp"):
                return None
            return self.controller.reconciler.reconcile(migration)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.poked.wait(), timeout=seconds)


class Controller:
    def __init__(
        self, reconciler: Reconciler, reporting: ReportingHub | None = None, active: bool = True
    ) -> None:
        self.reconciler = reconciler
        self.reporting = reporting
        #: False while on standby (HA): events are noted, nothing is acted on.
        self.active = active
        self.inflight = InFlight()
        self.workers: dict[Key, Worker] = {}
        #: The last known body of every migration in progress or with reports
        #: pending, for the gauges computed at scrape time.
        self.latest: dict[Key, Body] = {}
        if reporting is not None:
            reporting.on_change = self.poke

    def on_migration(self, event_type: str | None, body: Body) -> None:
        """A watch event for a PostDeployMigration (``None`` for the initial listing)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.latest.pop(key, None)
            worker = self.workers.pop(key, None)
            if worker is not None:
                worker.task.cancel()
            if self.reporting is not None:
                self.reporting.cancel(key)
            self._poke_waiting()
            return
        if not self.active:
            return
        if self.reporting is not None:
            self.reporting.observe(body)
        status = body.get("status") or {}
        if model.is_finished(status):
            if conditions.is_true(status.get("conditions"), model.SUCCEEDED):
                metrics.observe_success(body["spec"]["environment"], status)
            if outbox.needs_reporting(body):
                self.latest[key] = body
            else:
                self.latest.pop(key, None)
            # Its end may open a gate (the environment lock, a dependency).
            self._poke_waiting()
            worker = self.workers.get(key)
            if worker is not None:
                worker.poke()
            return
        self.latest[key] = body
        worker = self.workers.get(key)
        if worker is None:
            self.workers[key] = Worker(key, self)
        else:
            worker.poke()

    def poke(self, key: Key) -> None:
        worker = self.workers.get(key)
        if worker is not None:
            worker.poke()

    def on_job(self, body: Body) -> None:
        """A watch event for a migration Job: poke its migration."""
        meta = body.get("metadata") or {}
        name = (meta.get("labels") or {}).get(model.LABEL_MIGRATION)
        worker = self.workers.get((str(meta.get("namespace")), str(name)))
        if worker is not None:
            worker.poke()

    def _poke_waiting(self) -> None:
        for worker in self.workers.values():
            if worker.state in (model.STATE_GATED, model.STATE_PENDING):
                worker.poke()

    def forget(self, worker: Worker) -> None:
        if self.workers.get(worker.key) is worker:
            del self.workers[worker.key]

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
