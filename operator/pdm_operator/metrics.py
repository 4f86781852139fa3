"""Prometheus metrics.

Label values are bounded on purpose: environments, modes, pipelines, sink
types, outcomes and Kubernetes reasons; never a migration name, a SHA or an
error text. The reconcile metrics use controller-runtime's names, so the
dashboards SREs already have for Go operators read this one too.

Counters and histograms move when something happens; the gauges about what
is in progress are computed at scrape time from the operator's own state
(``StateCollector``), so they cannot drift.
"""

from __future__ import annotations

import importlib.metadata
import platform
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pdm_operator import __version__, failures, timestamps
from pdm_operator.model import Body

CONTROLLER = "postdeploymigration"

MIGRATIONS = Counter(
    "pdm_migrations_total",
    "Migrations that ended, by environment, mode, pipeline, outcome (succeeded|failed) and reason.",
    ["environment", "mode", "pipeline", "outcome", "reason"],
)
FAILURES = Counter(
    "pdm_migration_failures_total",
    "Migrations that failed in their migration Job or pre-flight, by environment and failure "
    "class (status.failure.class: LockContention|Timeout|DataError|Infrastructure|Unknown).",
    ["environment", "class"],
)
MIGRATION_DURATION = Histogram(
    "pdm_migration_duration_seconds",
    "Run time of migration Jobs, from creation to end.",
    ["environment", "mode"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
GATE_WAIT = Histogram(
    "pdm_gate_wait_seconds",
    "Time from a migration's creation to its Job's creation (image, gates, lock).",
    ["environment"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
)
STEP_DURATION = Histogram(
    "pdm_migration_step_duration_seconds",
    "How long each post-deployment migration took on a database, as Rails announced it "
    "(\"migrated (0.0123s)\" in the Job's log), by environment and database (GitLab's "
    'main, ci…; "" when Rails names none).',
    ["environment", "database"],
    buckets=(0.1, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400),
)
LAST_SUCCESS = Gauge(
    "pdm_last_success_timestamp_seconds",
    "When the last migration of an environment succeeded (Unix time).",
    ["environment"],
)
REPORTS = Counter(
    "pdm_reports_total",
    "Report delivery attempts by sink, blocking and outcome"
    " (delivered|retry|failed|gave_up|no_merge_requests).",
    ["sink", "blocking", "outcome"],
)
REPORT_LATENCY = Histogram(
    "pdm_report_delivery_seconds",
    "Time from a report's first attempt to its delivery.",
    ["sink"],
    buckets=(0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 86400),
)
API_REQUESTS = Counter(
    "pdm_api_requests_total",
    "Requests the operator's Kubernetes client sent (Kopf's watches aside), by method, "
    "resource (with its subresource: postdeploymigrations/status) and dry_run (true|false).",
    ["method", "resource", "dry_run"],
)
STATUS_WRITES = Counter(
    "pdm_status_writes_total",
    "PostDeployMigration status writes the operator sent, by what they changed: progress "
    "(status.progress alone: Rails announced a migration while the Job runs, at most one per "
    "migration every 15 s), reports (the delivery records of GitLab and Sentry reports, with "
    "the Reported condition), state (anything else: conditions, pre-flight, Job, outcome). "
    "Their sum is pdm_api_requests_total's PATCH postdeploymigrations/status",
    ["change"],
)
STALLED = Counter(
    "pdm_stalled_total",
    "Times a migration stopped making progress, by environment and reason (ReconcileError, "
    "Unschedulable, ErrImagePull, ImagePullBackOff, CreateContainerConfigError, "
    "CreateContainerError, PodCreateFailed).",
    ["environment", "reason"],
)
RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller (result: success|error|requeue|requeue_after).",
    ["controller", "result"],
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller.",
    ["controller"],
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller.",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WATCH_EVENTS = Gauge(
    "pdm_watch_last_event_timestamp_seconds",
    "When the last watch event of a resource arrived (Unix time).",
    ["resource"],
)
WATCH_STALLED = Gauge(
    "pdm_watch_stalled",
    "1 when the watch of a resource has stalled: objects changed in the API and no event came.",
    ["resource"],
)
LEADER = Gauge(
    "pdm_operator_leader",
    "1 while this operator acts (HA: holds the leader Lease; always 1 without leader election).",
)
BUILD_INFO = Gauge(
    "pdm_operator_build_info",
    "Build information; the value is always 1.",
    ["version", "python_version", "kopf_version"],
)


ROLLBACK_FLOOR = Gauge(
    "pdm_operator_rollback_floor_info",
    "1 for each environment's rollback floor: the highest GitLab version whose "
    "post-deployment migrations ran (from the environment's history); rolling back "
    'below it is unsafe. version="unknown" when the history is missing or holds a record '
    "or version that cannot be read (rollback-check then answers unknown)",
    ["environment", "version"],
)
HISTORY_WRITE_FAILURES = Counter(
    "pdm_operator_history_write_failures_total",
    "Runs whose record the API server refused for good (an immutable or too large history "
    "ConfigMap, RBAC): rollback-check cannot know of them until they are added by hand",
    ["environment"],
)
GITLAB_GATE_ERRORS = Counter(
    "pdm_operator_gitlab_gate_errors_total",
    "Reads of GitLab's Deployments API by an environment's gitlabDeployments gate that failed, "
    "by GitLab environment and reason (timeout, connection, http_<code>, redirect: not "
    "followed, token: its Secret could not be read, error: an answer that could not be read); "
    "one per attempt, not per migration held: while they fail the gate stays shut "
    "(GitLabUnreachable; GitLabRefused for a token, a 401/403/404 or a redirect)",
    ["gitlab_environment", "reason"],
)
_floors: dict[str, str] = {}
_floors_lock = threading.Lock()


def rollback_floor(environment: str, version: str | None) -> None:
    """Show ``version`` as the environment's floor (``unknown`` when it cannot be
    known; None: no floor, nothing applied).

    Called from pass threads and the startup reload: one at a time, so an
    environment never shows two floors."""
    with _floors_lock:
        old = _floors.pop(environment, None)
        if old is not None and old != version:
            ROLLBACK_FLOOR.remove(environment, old)
        if version is not None:
            _floors[environment] = version
            ROLLBACK_FLOOR.labels(environment, version).set(1)


def history_write_failed(environment: str) -> None:
    """A run of ``environment`` could not be recorded in its history."""
    HISTORY_WRITE_FAILURES.labels(environment).inc()


def gitlab_gate_error(gitlab_environment: str, reason: str) -> None:
    """A read of ``gitlab_environment``'s deployments failed (``reason``: bounded, never
    an error text)."""
    GITLAB_GATE_ERRORS.labels(gitlab_environment, reason).inc()


def _labels(migration: Body) -> tuple[str, str, str]:
    spec = migration["spec"]
    return spec["environment"], spec.get("mode", "Run"), spec.get("pipeline", "Regular")


def migration_ended(migration: Body, status: Body, succeeded: bool, reason: str) -> None:
    env, mode, pipeline = _labels(migration)
    outcome = "succeeded" if succeeded else "failed"
    MIGRATIONS.labels(env, mode, pipeline, outcome, reason or "Unknown").inc()
    start, end = (
        timestamps.parse_or_none(status.get("startTime")),
        timestamps.parse_or_none(status.get("jobCompletionTime") or status.get("completionTime")),
    )
    if start and end and mode == "Run":
        MIGRATION_DURATION.labels(env, mode).observe(max(0.0, (end - start).total_seconds()))
    if succeeded and mode == "Run":
        observe_success(env, status)


def migration_failed(migration: Body, status: Body) -> None:
    """A failure with a class (one of ``failures.CLASSES``: a bounded label)."""
    cls = (status.get("failure") or {}).get("class")
    if cls in failures.CLASSES:
        FAILURES.labels(migration["spec"]["environment"], cls).inc()


_last_success: dict[str, float] = {}


def observe_success(environment: str, status: Body) -> None:
    """Keep the newest success time per environment (also from the initial listing)."""
    end = timestamps.parse_or_none(status.get("completionTime"))
    if end is None or end.timestamp() <= _last_success.get(environment, 0.0):
        return
    _last_success[environment] = end.timestamp()
    LAST_SUCCESS.labels(environment).set(end.timestamp())


#: Database labels of ``STEP_DURATION`` kept as they are (GitLab has main, ci and
#: a few more); any beyond are "other": the names come from a pod's log.
STEP_DATABASES = 8
_step_databases: set[str] = set()
_step_lock = threading.Lock()


def step_completed(environment: str, database: str, seconds: float) -> None:
    """Rails announced a migration done on ``database`` after ``seconds``."""
    with _step_lock:
        if database not in _step_databases and len(_step_databases) < STEP_DATABASES:
            _step_databases.add(database)
        label = database if database in _step_databases else "other"
    STEP_DURATION.labels(environment, label).observe(max(0.0, seconds))


def job_created(migration: Body, now: datetime) -> None:
    created = timestamps.parse_or_none(migration["metadata"].get("creationTimestamp"))
    if created is not None:
        GATE_WAIT.labels(migration["spec"]["environment"]).observe(
            max(0.0, (now - created).total_seconds())
        )


def stalled(migration: Body, reason: str) -> None:
    STALLED.labels(str(migration["spec"]["environment"]), reason).inc()


def report_attempted(record: Body, outcome: str) -> None:
    REPORTS.labels(record["sink"], str(bool(record.get("blocking"))).lower(), outcome).inc()
    if outcome == "delivered":
        first, done = (
            timestamps.parse_or_none(record.get("firstAttemptTime")),
            timestamps.parse_or_none(record.get("deliveredTime")),
        )
        if first and done:
            REPORT_LATENCY.labels(record["sink"]).observe(max(0.0, (done - first).total_seconds()))


def api_request(method: str, resource: str, dry_run: bool) -> None:
    API_REQUESTS.labels(method, resource, "true" if dry_run else "false").inc()


def status_write(change: str) -> None:
    """A status write was sent; ``change`` is progress, reports or state."""
    STATUS_WRITES.labels(change).inc()


def watch_event(resource: str) -> None:
    WATCH_EVENTS.labels(resource).set(datetime.now(UTC).timestamp())


class StateCollector(Collector):
    """Gauges of what is in progress, computed from the operator's state at scrape time.

    ``migrations`` returns the last known body of every migration the
    operator follows (unfinished ones, and finished ones with reports still
    pending).
    """

    def __init__(
        self, migrations: Callable[[], Iterable[Body]], clock: Callable[[], datetime]
    ) -> None:
        self.migrations = migrations
        self.clock = clock

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        running = GaugeMetricFamily(
            "pdm_migrations_running", "Migrations whose Job runs now.", labels=["environment"]
        )
        gated = GaugeMetricFamily(
            "pdm_migrations_gated",
            "Migrations held by a gate, by gate.",
            labels=["environment", "reason"],
        )
        deadline = GaugeMetricFamily(
            "pdm_migration_deadline_ratio",
            "The largest elapsed/activeDeadlineSeconds among running migrations of an environment.",
            labels=["environment"],
        )
        steps = GaugeMetricFamily(
            "pdm_migration_progress_ratio",
            "Of a running migration, the steps Rails announced done over the plan's "
            "(status.progress; absent while the total is unknown), by environment.",
            labels=["environment"],
        )
        current = GaugeMetricFamily(
            "pdm_migration_current_step_seconds",
            "Of a running migration, how long the migration Rails announced last has "
            "been running (status.progress.current.since), by environment.",
            labels=["environment"],
        )
        pending = GaugeMetricFamily(
            "pdm_reports_pending", "Reports not delivered yet.", labels=["sink", "blocking"]
        )
        oldest = GaugeMetricFamily(
            "pdm_report_oldest_pending_age_seconds",
            "Age of the oldest undelivered report, since its first attempt.",
            labels=["sink", "blocking"],
        )
        now = self.clock()
        runs: dict[str, int] = {}
        gates: dict[tuple[str, str], int] = {}
        ratios: dict[str, float] = {}
        counts: dict[tuple[str, str], int] = {}
        ages: dict[tuple[str, str], float] = {}
        done: dict[str, float] = {}
        since: dict[str, float] = {}
        for m in list(self.migrations()):
            env = m["spec"]["environment"]
            status = m.get("status") or {}
            state = status.get("state")
            if state == "Running":
                runs[env] = runs.get(env, 0) + 1
                start = timestamps.parse_or_none(status.get("startTime"))
                limit = float((m["spec"].get("job") or {}).get("activeDeadlineSeconds") or 3600)
                if start:
                    ratios[env] = max(ratios.get(env, 0.0), (now - start).total_seconds() / limit)
                _progress(env, status.get("progress") or {}, now, done, since)
            elif state == "Gated":
                key = (env, status.get("reason") or "Unknown")
                gates[key] = gates.get(key, 0) + 1
            for rec in status.get("reports") or []:
                if rec.get("state") not in ("Pending", "Waiting"):
                    continue
                key = (rec["sink"], str(bool(rec.get("blocking"))).lower())
                counts[key] = counts.get(key, 0) + 1
                first = timestamps.parse_or_none(rec.get("firstAttemptTime"))
                if first:
                    ages[key] = max(ages.get(key, 0.0), (now - first).total_seconds())
        for env, n in runs.items():
            running.add_metric([env], n)
        for (env, reason), n in gates.items():
            gated.add_metric([env, reason], n)
        for env, r in ratios.items():
            deadline.add_metric([env], r)
        for key, n in counts.items():
            pending.add_metric(list(key), n)
            oldest.add_metric(list(key), ages.get(key, 0.0))
        _by_environment(steps, done)
        _by_environment(current, since)
        yield from (running, gated, deadline, steps, current, pending, oldest)


def _by_environment(family: GaugeMetricFamily, values: dict[str, float]) -> None:
    for env, value in values.items():
        family.add_metric([env], value)


def _progress(
    env: str, progress: Body, now: datetime, done: dict[str, float], since: dict[str, float]
) -> None:
    """A running migration's progress into the gauges (one running per environment:
    its lock; the largest if ever two)."""
    total = progress.get("total")
    if total:
        done[env] = max(done.get(env, 0.0), int(progress.get("done") or 0) / int(total))
    started = timestamps.parse_or_none((progress.get("current") or {}).get("since"))
    if started is not None:
        since[env] = max(since.get(env, 0.0), (now - started).total_seconds())


def serve(port: int, state: StateCollector, leader_election: bool = False) -> None:
    """Start the /metrics endpoint (a thread of prometheus-client's own)."""
    BUILD_INFO.labels(
        __version__, platform.python_version(), importlib.metadata.version("kopf")
    ).set(1)
    REGISTRY.register(state)
    LEADER.set(0 if leader_election else 1)
    start_http_server(port)
