"""Background delivery of the outbox, one task per migration with work to do.

A reporter runs apart from the migration worker, on its own thread pool, so
a slow, hanging or absent GitLab can occupy reporters but never the threads
that follow Jobs and write conditions. It writes ``status.reports`` and the
``Reported`` condition; every write is guarded by the resourceVersion it was
computed from, and a conflict means: read again, compute again.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from pdm_operator import conditions, events, metrics, timestamps
from pdm_operator.errors import Conflict
from pdm_operator.inflight import InFlight
from pdm_operator.kube import Kube
from pdm_operator.logs import for_migration
from pdm_operator.model import Body
from pdm_operator.reporting import outbox, sinks
from pdm_operator.reporting.records import (
    DELIVERED,
    FAILED,
    GAVE_UP,
    NO_MERGE_REQUESTS,
    PENDING,
    UNDELIVERED,
    Result,
)
from pdm_operator.statuswriter import StatusWriter
from pdm_operator.waking import sleep_until_poked

log = logging.getLogger(__name__)

Key = tuple[str, str]
OUTCOMES = {
    DELIVERED: "delivered",
    FAILED: "failed",
    GAVE_UP: "gave_up",
    NO_MERGE_REQUESTS: "no_merge_requests",
    PENDING: "retry",
}


class TokenReader:
    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def read(self, ref: Body | None, what: str) -> str:
        if not ref:
            raise sinks.TokenError(f"no tokenSecretRef for {what}")
        value = self.kube.read_secret_value(self.namespace, ref["name"], ref["key"])
        if not value:
            raise sinks.TokenError(
                f"Secret {ref['name']!r} has no key {ref['key']!r} (token for {what})"
            )
        return value


class Reporter:
    """Delivers one migration's outbox until every record is settled."""

    def __init__(self, key: Key, hub: ReportingHub) -> None:
        self.key = key
        self.hub = hub
        self.poked = asyncio.Event()
        self.task = asyncio.create_task(self.run(), name=f"report:{key[0]}/{key[1]}")

    def poke(self) -> None:
        self.poked.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self.poked.clear()
                try:
                    wait = await loop.run_in_executor(
                        self.hub.api_pool, self.hub.plan_and_record, self.key
                    )
                    if wait is None:
                        return
                    if wait <= 0:
                        await self.deliver_due(loop)
                        continue
                except Conflict:
                    continue
                except Exception:
                    log.exception("reporting for %s/%s failed; retrying", *self.key)
                    wait = 5.0
                await sleep_until_poked(self.poked, wait)
        finally:
            self.hub.forget(self)

    async def deliver_due(self, loop: asyncio.AbstractEventLoop) -> None:
        migration = await loop.run_in_executor(
            self.hub.api_pool, self.hub.kube.get_migration, *self.key
        )
        if migration is None:
            return
        records = list((migration.get("status") or {}).get("reports") or [])
        ready = outbox.due(records, self.hub.clock())
        if not ready:
            return
        ctx = self.hub.context(migration, records)
        results = await asyncio.gather(
            *(
                loop.run_in_executor(self.hub.delivery_pool, self.hub.deliver, rec, ctx)
                for rec in ready
            )
        )
        outcomes = {
            (r["sink"], r["target"], r["desired"]): res
            for r, res in zip(ready, results, strict=True)
        }
        for _ in range(5):  # conflicts: read again and apply the same outcomes
            try:
                await loop.run_in_executor(
                    self.hub.api_pool, self.hub.record_outcomes, self.key, outcomes
                )
                return
            except Conflict:
                continue


class ReportingHub:
    """The reporters of one operator, their thread pool and their writes."""

    def __init__(
        self,
        kube: Kube,
        *,
        api_pool: ThreadPoolExecutor | None,
        clock: Callable[[], datetime],
        call_timeout: float = 5.0,
        delivery_threads: int = 16,
        on_change: Callable[[Key], None] | None = None,
    ) -> None:
        self.kube = kube
        self.writer = StatusWriter(kube)
        self.api_pool = api_pool
        self.clock = clock
        self.call_timeout = call_timeout
        self.delivery_pool = ThreadPoolExecutor(
            max_workers=delivery_threads, thread_name_prefix="pdm-report"
        )
        self.reporters: dict[Key, Reporter] = {}
        self.on_change = on_change
        self.inflight = InFlight()

    def observe(self, migration: Body) -> None:
        """Start or poke the reporter of a migration that has reporting to do."""
        meta = migration["metadata"]
        key = (meta["namespace"], meta["name"])
        reporter = self.reporters.get(key)
        if reporter is not None:
            reporter.poke()
        elif outbox.needs_reporting(migration):
            self.reporters[key] = Reporter(key, self)

    def forget(self, reporter: Reporter) -> None:
        if self.reporters.get(reporter.key) is reporter:
            del self.reporters[reporter.key]

    def cancel(self, key: Key) -> None:
        reporter = self.reporters.pop(key, None)
        if reporter is not None:
            reporter.task.cancel()

    async def pause(self) -> None:
        """Cancel every reporter; their records stay in the status for whoever acts next."""
        tasks = [r.task for r in self.reporters.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.reporters.clear()

    async def stop(self) -> None:
        await self.pause()
        self.delivery_pool.shutdown(wait=False, cancel_futures=True)

    def context(self, migration: Body, records: list[Body]) -> sinks.Context:
        tokens = TokenReader(self.kube, migration["metadata"]["namespace"])
        tracking = migration["spec"]["tracking"]
        return sinks.Context(
            migration=migration,
            records=records,
            gitlab_token=lambda: tokens.read(
                (tracking.get("gitlab") or {}).get("tokenSecretRef"), "GitLab"
            ),
            sentry_token=lambda sink: tokens.read(sink.get("tokenSecretRef"), "Sentry"),
            timeout=self.call_timeout,
            now=self.clock(),
        )

    # --- blocking writes (run in the API pool) -----------------------------------
    def deliver(self, record: Body, ctx: sinks.Context) -> Result:
        with self.inflight:
            return sinks.deliver(record, ctx)

    def plan_and_record(self, key: Key) -> float | None:
        """Record the wanted reports before any attempt; seconds until the next is due."""
        with self.inflight:
            return self._plan_and_record(key)

    def _plan_and_record(self, key: Key) -> float | None:
        migration = self.kube.get_migration(*key)
        if migration is None:
            return None
        status = migration.get("status") or {}
        records = outbox.merge(status.get("reports"), outbox.intents(migration), self.clock())
        if records != (status.get("reports") or []):
            migration = self._write(migration, records) or migration
        if not outbox.needs_reporting(migration):
            return None
        wait = outbox.next_wakeup(records, self.clock())
        return 0.0 if wait is None else wait

    def record_outcomes(self, key: Key, outcomes: dict[tuple[str, str, str], Result]) -> None:
        with self.inflight:
            self._record_outcomes(key, outcomes)

    def _record_outcomes(self, key: Key, outcomes: dict[tuple[str, str, str], Result]) -> None:
        migration = self.kube.get_migration(*key)
        if migration is None:
            return
        now = self.clock()
        give_up = float(
            (migration["spec"].get("tracking") or {}).get("giveUpAfterSeconds") or 86400
        )
        records, settled = [], []
        for rec in (migration.get("status") or {}).get("reports") or []:
            result = outcomes.get((rec["sink"], rec["target"], rec["desired"]))
            if result is None:
                records.append(rec)
                continue
            after = outbox.after_attempt(rec, result, now, give_up)
            if not result.waiting:
                metrics.report_attempted(after, OUTCOMES.get(after["state"], "retry"))
            if after["state"] in UNDELIVERED or (
                after.get("conflict") and after.get("conflict") != rec.get("conflict")
            ):
                settled.append(after)
            records.append(after)
        # The migration may have moved on while we delivered (the Job ended):
        # records follow its current intents, so Reported never speaks of an
        # outdated state.
        written = self._write(migration, outbox.merge(records, outbox.intents(migration), now))
        # Each report that ends undelivered, or that left someone else's
        # deployment alone, gets its own log line and event (the Reported
        # condition names only the first, and its transition has none:
        # ``events.announced``).
        for rec in settled:
            what = f"{rec['sink']} {rec['target']} ({rec['desired']})"
            if rec["state"] in UNDELIVERED:
                reason, message = f"Report{rec['state']}", f"{what}: {rec.get('lastError', '')}"
            else:
                reason, message = "ReportConflict", f"{what}: {rec['conflict']}"
            for_migration(log, migration).warning("%s: %s", reason, message)
            self.kube.create_event(
                events.event_for(
                    written or migration, "Warning", reason, message, timestamps.rfc3339(now)
                )
            )

    def _write(self, migration: Body, records: list[Body]) -> Body | None:
        meta = migration["metadata"]
        status = migration.get("status") or {}
        old_conditions = list(status.get("conditions") or [])
        new_conditions = copy.deepcopy(old_conditions)
        cond = outbox.reported_condition(records)
        now = timestamps.rfc3339(self.clock())
        if cond is not None:
            new_conditions = conditions.apply(
                new_conditions, cond, int(meta.get("generation") or 1), now
            )
        patch: Body = {"reports": records}
        if new_conditions != old_conditions:
            patch["conditions"] = new_conditions
        written = self.writer.write(migration, patch, old_conditions, new_conditions, now=now)
        if self.on_change is not None:
            self.on_change((meta["namespace"], meta["name"]))
        return written
