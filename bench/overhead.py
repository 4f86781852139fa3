"""Operator overhead at N concurrent PostDeployMigrations over E environments.

Times come from the benchmark's own watches, on one clock, to the millisecond
(the API's timestamps are whole seconds):

* **start latency**: from the moment a migration may start (its creation, or
  the end of the previous migration of its environment, whichever is later)
  to its Job appearing: what the operator adds, not the environment lock's
  queue;
* **end latency**: from the Job's Complete condition to the migration's
  Succeeded;
* **throughput**: migrations completed per minute, first creation to last
  Succeeded;
* **cost**: the operator's CPU seconds and peak RSS, and API requests per
  migration by verb from ``apiserver_request_total``: everything the cluster
  did meanwhile (the operator, and the Job controller, scheduler and kwok for
  each Job). :func:`bare_jobs` measures that second part alone;
* **duplicates**: migrations that got more than one Job.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch

from harness import (
    GROUP,
    PLURAL,
    VERSION,
    WRITE_VERBS,
    Bench,
    bare_job,
    migration,
    percentile,
    process_cost,
)

LABEL_MIGRATION = "pdm-operator.io/migration"


@dataclass
class Timeline:
    created: dict[str, float] = field(default_factory=dict)
    env_of: dict[str, str] = field(default_factory=dict)
    job_seen: dict[str, float] = field(default_factory=dict)
    job_complete: dict[str, float] = field(default_factory=dict)
    succeeded: dict[str, float] = field(default_factory=dict)
    jobs_of: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _watch_jobs(bench: Bench, ns: str, tl: Timeline, stop: threading.Event) -> None:
    w = watch.Watch()
    for ev in w.stream(bench.batch.list_namespaced_job, ns, timeout_seconds=3600):
        now = time.monotonic()
        job = ev["object"]
        pdm = (job.metadata.labels or {}).get(LABEL_MIGRATION, "")
        with tl.lock:
            tl.job_seen.setdefault(pdm, now)
            tl.jobs_of.setdefault(pdm, set()).add(job.metadata.name)
            for c in job.status.conditions or []:
                if c.type == "Complete" and c.status == "True":
                    tl.job_complete.setdefault(pdm, now)
        if stop.is_set():
            w.stop()


def _watch_migrations(bench: Bench, ns: str, tl: Timeline, stop: threading.Event) -> None:
    w = watch.Watch()
    for ev in w.stream(
        bench.custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, timeout_seconds=3600
    ):
        now = time.monotonic()
        obj = ev["object"]
        conds = (obj.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Succeeded" and c["status"] == "True" for c in conds):
            with tl.lock:
                tl.succeeded.setdefault(obj["metadata"]["name"], now)
        if stop.is_set():
            w.stop()


def _by_verb(requests: Counter[tuple[str, str]]) -> Counter[str]:
    by_verb: Counter[str] = Counter()
    for (verb, _), v in requests.items():
        by_verb[verb] += v
    return by_verb


def _events_by_reason(bench: Bench, ns: str) -> Counter[str]:
    """Events by who posted them and why: which transitions cost a write each."""
    return Counter(
        f"{(e.source and e.source.component) or e.reporting_component}: {e.reason}"
        for e in bench.core.list_namespaced_event(ns).items
    )


def measure(bench: Bench, n: int, envs: int) -> dict[str, Any]:  # noqa: PLR0915 - one timeline
    """One run: ``n`` migrations created at once over ``envs`` environments."""
    ns = bench.namespace("bench")
    bench.declare(ns, {f"env{i}" for i in range(envs)})
    tl = Timeline()
    stop = threading.Event()
    try:
        with bench.operator(ns) as op:
            for target in (_watch_jobs, _watch_migrations):
                threading.Thread(target=target, args=(bench, ns, tl, stop), daemon=True).start()
            time.sleep(1.0)  # let both watches establish; not measured
            before = bench.apiserver_requests()
            sent_before, full_before = bench.operator_requests(op), bench.full_collections(op)
            cost0 = process_cost(bench.pid(op))
            start = time.monotonic()
            for i in range(n):
                name, environment = f"b-{i:04d}", f"env{i % envs}"
                with tl.lock:
                    tl.created[name] = time.monotonic()
                    tl.env_of[name] = environment
                bench.custom.create_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, migration(name, environment)
                )
            deadline = time.monotonic() + max(300.0, n * 3.0)
            while time.monotonic() < deadline:
                with tl.lock:
                    if len(tl.succeeded) >= n:
                        break
                time.sleep(0.2)
            elapsed = max(tl.succeeded.values(), default=time.monotonic()) - start
            cost1 = process_cost(bench.pid(op))
            # Full collections until the last success; requests once the Events are posted.
            full, sent = (
                bench.full_collections(op) - full_before,
                bench.settled_requests(op) - sent_before,
            )
            after = bench.apiserver_requests()
            window = time.monotonic() - start
        jobs = bench.batch.list_namespaced_job(ns).items
        event_reasons = _events_by_reason(bench, ns)
    finally:
        stop.set()
        bench.delete_namespace(ns)
    per_migration = Counter((j.metadata.labels or {}).get(LABEL_MIGRATION) for j in jobs)

    starts, ends = [], []
    start_of: dict[str, float] = {}
    by_env: dict[str, list[str]] = {}
    for name in sorted(tl.job_seen, key=lambda k: tl.job_seen[k]):
        if name in tl.created:
            by_env.setdefault(tl.env_of[name], []).append(name)
    for names in by_env.values():
        prev_end = 0.0
        for name in names:
            start_of[name] = tl.job_seen[name] - max(tl.created[name], prev_end)
            starts.append(start_of[name])
            prev_end = tl.succeeded.get(name, tl.job_complete.get(name, prev_end))
    end_of = {k: tl.succeeded[k] - done for k, done in tl.job_complete.items() if k in tl.succeeded}
    ends = list(end_of.values())

    def worst(latencies: dict[str, float], at: dict[str, float]) -> list[tuple[str, int, float]]:
        """The five slowest: (name, ms, seconds into the run when it happened)."""
        top = sorted(latencies, key=lambda k: -latencies[k])[:5]
        return [(k, round(latencies[k] * 1000), round(at[k] - start, 1)) for k in top]

    by_verb = _by_verb(after - before)
    return {
        "n": n,
        "envs": envs,
        "completed": len(tl.succeeded),
        "start_p50": percentile(starts, 50),
        "start_p99": percentile(starts, 99),
        "end_p50": percentile(ends, 50),
        "end_p99": percentile(ends, 99),
        "per_minute": len(tl.succeeded) / elapsed * 60 if elapsed > 0 else 0.0,
        "cpu_s": cost1.cpu_s - cost0.cpu_s,
        "peak_rss_mib": cost1.peak_rss_mib,
        "writes_per_pdm": sum(by_verb[v] for v in WRITE_VERBS) / n,
        "requests_per_pdm": {k: v / n for k, v in sorted(by_verb.items())},
        # Jobs beyond the first of any migration: as listed at the end, and
        # as seen by the watch (which would catch one created and deleted).
        "window_s": window,
        "slowest_starts": worst(start_of, tl.job_seen),
        "slowest_ends": worst(end_of, tl.succeeded),
        "writes": bench.writes(before, after),
        # What the operator's client sent, counted by the operator itself.
        "operator_requests": {k: v / n for k, v in sorted(sent.items())},
        "full_collections": full,
        "events_per_pdm": {k: v / n for k, v in event_reasons.most_common()},
        "duplicate_jobs": max(
            sum(c - 1 for c in per_migration.values()),
            sum(len(names) - 1 for names in tl.jobs_of.values()),
        ),
    }


def bare_jobs(bench: Bench, n: int) -> dict[str, Any]:
    """API requests per bare Job, no operator: Kubernetes' own cost of a Job.

    The same container the operator renders, created directly on a quiet
    cluster; subtracted from a run's requests, it leaves the operator's.
    """
    ns = bench.namespace("bench-bare")
    time.sleep(1.0)  # the namespace's own start-up writes settle; not counted
    before = bench.apiserver_requests()
    start = time.monotonic()
    for i in range(n):
        bench.batch.create_namespaced_job(ns, bare_job(f"bare-{i:04d}"))

    def all_done() -> bool:
        jobs = bench.batch.list_namespaced_job(ns).items
        return sum(1 for j in jobs if j.status.succeeded) >= n

    deadline = time.monotonic() + max(120.0, n * 2.0)
    while time.monotonic() < deadline and not all_done():
        time.sleep(0.5)
    time.sleep(2.0)  # the last pod status updates land before counting
    after = bench.apiserver_requests()
    window = time.monotonic() - start
    bench.delete_namespace(ns)
    by_verb = _by_verb(after - before)
    return {
        "n": n,
        "window_s": window,
        "requests_per_job": {k: v / n for k, v in sorted(by_verb.items())},
        "writes": bench.writes(before, after),
    }
