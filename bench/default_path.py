"""The default path on the real node, against the bare chart Job.

Everything else in ``bench/`` runs on kwok, with the pre-flight off. This part
runs what a user runs: a PostDeployMigration with the product's defaults (the
pre-flight pod and its plan, the chart-copied Job, its PodDisruptionBudget,
the environment's history), with pods that really run on the real node: the
stand-in GitLab toolbox (real Rails, hack/standin-toolbox/) against a real
PostgreSQL, applying real post-deployment migrations.

Each environment has its own namespace and its own chart-shaped release
(tests/support/chart.py), whose database.yml names that environment's main and
ci databases. The release's regular deploy (its Job, with
``SKIP_POST_DEPLOYMENT_MIGRATIONS``) runs once; both databases are then kept as
PostgreSQL templates, and before every measured run they are recreated from
them, so every run finds the same four post-deployment migrations pending in
each database.

Three arms, one round each at a time, in a rotating order, all environments
at once in an arm (so the same number of pods share the node in each arm):

* **operator**: a PostDeployMigration with the defaults (pre-flight on), as
  the integration tests create it (``podTemplateFrom`` the chart's Job, the
  image from the toolbox Deployment);
* **bare**: the chart's Job itself without the skip variable (what ``helm
  upgrade`` runs when it does not skip), created directly;
* **no pre-flight**: the same PostDeployMigration with ``spec.preflight.enabled:
  false``, for the operator's writes with and without the pre-flight.

After every run the databases are read: a run counts only when every
post-deployment version is recorded in both (a Job that skipped them would be
fast, and wrong).

Times come from the bench's own watches (jobs, pods, migrations, cluster-wide)
on one clock; the API's timestamps are whole seconds.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch
from kubernetes.client.rest import ApiException
from tests.support import chart, realnode, standin
from tests.support.pdm import Api
from tests.support.pdm import migration as pdm_body

from harness import GROUP, PLURAL, VERSION, WRITE_VERBS, Bench, percentile, wait_for

ARMS = ("operator", "bare", "no pre-flight")
LABEL_MIGRATION = "pdm-operator.io/migration"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_BARE = "bench.pdm-operator.io/bare"
JOB_NAME = "batch.kubernetes.io/job-name"
#: Seconds one arm's runs may take before the bench gives up on them.
RUN_TIMEOUT = 600.0


@dataclass
class Seen:
    """First sightings on the bench's clock (``time.monotonic``), keyed by
    ``(namespace, name)`` of a Job (its pod's are keyed by the Job too) or of a
    migration."""

    job_added: dict[tuple[str, str], float] = field(default_factory=dict)
    job_complete: dict[tuple[str, str], float] = field(default_factory=dict)
    pod_added: dict[tuple[str, str], float] = field(default_factory=dict)
    pod_end: dict[tuple[str, str], float] = field(default_factory=dict)
    pod_failed: set[tuple[str, str]] = field(default_factory=set)
    #: (namespace, migration) -> {component: Job name}
    jobs_of: dict[tuple[str, str], dict[str, set[str]]] = field(default_factory=dict)
    ended: dict[tuple[str, str], float] = field(default_factory=dict)
    outcome: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _watch(
    stream: Callable[..., Any], on_event: Callable[[Any, float], None], stop: threading.Event
) -> None:
    """Follow ``stream`` until ``stop``; a watch that times out or errs is started again."""
    while not stop.is_set():
        w = watch.Watch()
        try:
            for ev in w.stream(stream, timeout_seconds=60):
                on_event(ev["object"], time.monotonic())
                if stop.is_set():
                    w.stop()
        except Exception as e:  # noqa: BLE001 - a dropped or expired watch: list again
            print(f"[bench] watch restarted: {e!r}"[:300], flush=True)
            time.sleep(0.5)


def _on_job(seen: Seen, namespaces: set[str]) -> Callable[[Any, float], None]:
    def handle(job: Any, now: float) -> None:
        ns = job.metadata.namespace
        if ns not in namespaces:
            return
        key = (ns, job.metadata.name)
        labels = job.metadata.labels or {}
        with seen.lock:
            seen.job_added.setdefault(key, now)
            owner = labels.get(LABEL_MIGRATION)
            if owner:
                by_component = seen.jobs_of.setdefault((ns, owner), {})
                by_component.setdefault(labels.get(LABEL_COMPONENT, ""), set()).add(key[1])
            for c in job.status.conditions or []:
                if c.type == "Complete" and c.status == "True":
                    seen.job_complete.setdefault(key, now)

    return handle


def _on_pod(seen: Seen, namespaces: set[str]) -> Callable[[Any, float], None]:
    def handle(pod: Any, now: float) -> None:
        ns = pod.metadata.namespace
        job = (pod.metadata.labels or {}).get(JOB_NAME) or (pod.metadata.labels or {}).get(
            "job-name"
        )
        if ns not in namespaces or not job:
            return
        key = (ns, job)
        with seen.lock:
            seen.pod_added.setdefault(key, now)
            if pod.status.phase in ("Succeeded", "Failed"):
                seen.pod_end.setdefault(key, now)
                if pod.status.phase == "Failed":
                    seen.pod_failed.add(key)

    return handle


def _on_migration(seen: Seen, namespaces: set[str]) -> Callable[[Any, float], None]:
    def handle(obj: Any, now: float) -> None:
        ns = obj["metadata"]["namespace"]
        if ns not in namespaces:
            return
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] in ("Succeeded", "Failed") and c["status"] == "True":
                with seen.lock:
                    key = (ns, obj["metadata"]["name"])
                    seen.ended.setdefault(key, now)
                    seen.outcome.setdefault(key, f"{c['type']}/{c.get('reason', '')}")

    return handle


@dataclass
class Env:
    """One environment: its namespace, release and databases."""

    name: str
    ns: str
    database: str  # main; ci is standin.ci(database)
    template: str


def _pairs(env: Env) -> list[tuple[str, str]]:
    """(database, its template) for main and ci."""
    ci = standin.ci
    return [(env.database, env.template), (ci(env.database), ci(env.template))]


def _reset(db: Any, env: Env) -> None:
    """Both databases as the regular deploy left them: the post-deployment migrations pending."""
    for run, tmpl in _pairs(env):
        db.psql(f"DROP DATABASE IF EXISTS {run} WITH (FORCE)", database="postgres")
        db.psql(f"CREATE DATABASE {run} TEMPLATE {tmpl} OWNER gitlab", database="postgres")


def _setup(bench: Bench, db: Any, index: int, placement: dict[str, Any]) -> Env:
    """A namespace, its release and the regular deploy; the databases kept as templates."""
    tag = uuid.uuid4().hex[:6]
    env = Env(f"dp{index}-{tag}", bench.namespace(f"bench-dp{index}"), f"dp{index}_{tag}", "")
    env.template = f"{env.database}_tmpl"
    for each in (env.database, standin.ci(env.database)):
        db.psql(f"CREATE DATABASE {each} OWNER gitlab", database="postgres")
    standin.regular_deploy(Api(bench.api, env.ns), db, env.database, placement)
    for run, tmpl in _pairs(env):
        # A template may have no session: the regular deploy's are gone, a pooled one is ended.
        kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'"
        db.psql(kill % run, database="postgres")
        db.psql(f"CREATE DATABASE {tmpl} TEMPLATE {run} OWNER gitlab", database="postgres")
    return env


def _drop(db: Any, env: Env) -> None:
    for pair in _pairs(env):
        for name in pair:
            db.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", database="postgres")


@contextlib.contextmanager
def _cleanup(bench: Bench, db: Any, environments: list[Env]) -> Iterator[None]:
    """The namespaces deleted while the operator still runs (its migrations carry
    its finalizer), then the databases dropped."""
    try:
        yield
    finally:
        for e in environments:
            with contextlib.suppress(ApiException):
                bench.core.delete_namespace(e.ns)
        for e in environments:
            bench.delete_namespace(e.ns)
            _drop(db, e)


def _bare_job(name: str) -> dict[str, Any]:
    """The chart's Job as ``helm upgrade`` renders it without the skip variable."""
    job = chart.chart_job(name)
    job["metadata"].setdefault("labels", {})[LABEL_BARE] = name
    for c in job["spec"]["template"]["spec"]["containers"]:
        c["env"] = [e for e in c.get("env") or [] if e["name"] != chart.SKIP]
    return job


def _create(bench: Bench, arm: str, env: Env, name: str, placement: dict[str, Any]) -> None:
    if arm == "bare":
        job = _bare_job(name)
        chart.on_real_node(job["spec"]["template"]["spec"], placement)
        bench.batch.create_namespaced_job(env.ns, job)
        return
    spec: dict[str, Any] = {"podTemplateFrom": standin.CHART}
    spec["preflight"] = {} if arm == "operator" else {"enabled": False}
    body = pdm_body(name, env.name, **spec)
    bench.custom.create_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, body)


def _warm_up(bench: Bench, seen: Seen, env: Env, placement: dict[str, Any]) -> str:
    """One run with the pre-flight in ``env``, to its end; its outcome."""
    run = Run("operator", env, "warm-up", time.monotonic())
    _create(bench, run.arm, env, run.name, placement)
    wait_for(lambda: _ended(seen, run), RUN_TIMEOUT, f"the warm-up run of {env.name}")
    with seen.lock:
        outcome = seen.outcome.get((env.ns, run.name), "")
    return outcome if outcome == "Succeeded/JobComplete" else ""


@dataclass
class Run:
    arm: str
    env: Env
    name: str
    created: float


def _ended(seen: Seen, run: Run) -> bool:
    key = (run.env.ns, run.name)
    with seen.lock:
        if run.arm == "bare":
            return key in seen.job_complete or key in seen.pod_failed
        return key in seen.ended


def _applied(db: Any, env: Env) -> bool:
    """Every post-deployment version recorded in both databases."""
    main, ci = standin.both(db, env.database)
    return all(v in main and v in ci for v in standin.POST)


def _record(seen: Seen, run: Run, applied: bool) -> dict[str, Any]:
    """What one run took, in seconds (NaN: a step never seen)."""
    nan = float("nan")
    key = (run.env.ns, run.name)
    out: dict[str, Any] = {"arm": run.arm, "env": run.env.name, "name": run.name}
    out["applied"] = applied
    with seen.lock:
        if run.arm == "bare":
            out["ok"] = key in seen.job_complete and applied
            out["total"] = seen.job_complete.get(key, float("nan")) - run.created
            out["pod_run"] = seen.pod_end.get(key, float("nan")) - seen.pod_added.get(
                key, float("nan")
            )
            return out
        out["outcome"] = seen.outcome.get(key, "")
        # Succeeded by its Job (not NothingPending), and the databases say so.
        out["ok"] = out["outcome"] == "Succeeded/JobComplete" and applied
        out["total"] = seen.ended.get(key, float("nan")) - run.created
        jobs = seen.jobs_of.get(key, {})
        jkey = (run.env.ns, min(jobs.get(standin.MIGRATION_COMPONENT) or {""}))
        out["jobs"] = {k: sorted(v) for k, v in jobs.items()}
        out["complete_to_end"] = seen.ended.get(key, float("nan")) - seen.job_complete.get(
            jkey, float("nan")
        )
        out["job_pod_run"] = seen.pod_end.get(jkey, float("nan")) - seen.pod_added.get(
            jkey, float("nan")
        )
        if run.arm == "operator":
            pf = (run.env.ns, min(jobs.get(standin.PREFLIGHT_COMPONENT) or {""}))
            pf_added, pf_pod = seen.job_added.get(pf, nan), seen.pod_added.get(pf, nan)
            pf_end, pf_complete = seen.pod_end.get(pf, nan), seen.job_complete.get(pf, nan)
            job_added = seen.job_added.get(jkey, nan)
            out["preflight_jobs"] = len(jobs.get(standin.PREFLIGHT_COMPONENT) or ())
            out["apply_to_preflight"] = pf_added - run.created
            out["preflight_pod_run"] = pf_end - pf_pod
            out["preflight_total"] = pf_end - pf_added
            out["preflight_end_to_job"] = job_added - pf_end
            # For the record, not on the path: Kubernetes' Job controller marks
            # the pre-flight Job Complete at most once a second after its pods
            # change (SyncJobBatchPeriod, kubernetes pkg/controller/job/
            # job_controller.go); the operator reads the answer at the pod's end.
            out["preflight_end_to_complete"] = pf_complete - pf_end
            out["operator_time"] = (
                out["apply_to_preflight"] + out["preflight_end_to_job"] + out["complete_to_end"]
            )
        else:
            out["apply_to_job"] = seen.job_added.get(jkey, float("nan")) - run.created
            out["operator_time"] = out["apply_to_job"] + out["complete_to_end"]
    return out


def _requests_rate(bench: Bench, seconds: float) -> dict[tuple[str, str], float]:
    """Requests per second of the cluster idling with the operator running."""
    before = bench.apiserver_requests()
    time.sleep(seconds)
    after = bench.apiserver_requests()
    return {k: v / seconds for k, v in (after - before).items()}


def _net_per_run(
    before: Counter[tuple[str, str]],
    after: Counter[tuple[str, str]],
    idle: dict[tuple[str, str], float],
    seconds: float,
    runs: int,
) -> dict[str, float]:
    """The cluster's requests per run by verb, the idle cluster's (node heartbeats,
    Leases) over the same seconds taken off."""
    by_verb: Counter[str] = Counter()
    idle_by_verb: Counter[str] = Counter()
    for (verb, _), v in (after - before).items():
        by_verb[verb] += v
    for (verb, _), rate in idle.items():
        idle_by_verb[verb] += rate * seconds  # type: ignore[assignment]
    return {verb: max(0.0, (by_verb[verb] - idle_by_verb[verb]) / runs) for verb in sorted(by_verb)}


def measure(  # noqa: PLR0915 - one timeline
    bench: Bench, rounds: int = 5, envs: int = 4, idle_seconds: float = 20.0
) -> dict[str, Any]:
    """``rounds`` times ``envs`` runs of each arm; see the module's docstring."""
    db = bench.local.database() if bench.local else None
    if bench.local is None or db is None:
        # As the integration suite's real-node tests (tests/integration/conftest.py gitlab_db).
        return {
            "skipped": "the default path runs the stand-in toolbox against the local real "
            "node's PostgreSQL (hack/localcluster.py --real-node); a cluster named by "
            "KUBECONFIG has none"
        }
    placement = realnode.placement(bench.local is not None)
    started = time.monotonic()
    with ThreadPoolExecutor(envs) as pool:
        environments = list(pool.map(lambda i: _setup(bench, db, i, placement), range(envs)))
    namespaces = {e.ns for e in environments}
    for e in environments:
        bench.declare(e.ns, {e.name})
    setup_s = time.monotonic() - started
    seen = Seen()
    stop = threading.Event()
    streams = (
        (bench.batch.list_job_for_all_namespaces, _on_job),
        (bench.core.list_pod_for_all_namespaces, _on_pod),
        (
            lambda **kw: bench.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw),
            _on_migration,
        ),
    )
    for stream, handler in streams:
        threading.Thread(
            target=_watch, args=(stream, handler(seen, namespaces), stop), daemon=True
        ).start()
    first, *rest = sorted(namespaces)
    extra = [arg for ns in rest for arg in ("--namespace", ns)]
    runs: list[dict[str, Any]] = []
    per_arm: dict[str, dict[str, Any]] = {
        arm: {"operator_requests": Counter(), "cluster": Counter(), "seconds": 0.0, "runs": 0}
        for arm in ARMS
    }
    try:
        with bench.operator(first, *extra) as op, _cleanup(bench, db, environments):
            # Every environment's lock and history in its own namespace? The
            # operator has one lock namespace: the first's.
            # One run per environment first, not counted: what an environment
            # writes once (its history ConfigMap, its status) is not a run's cost.
            with ThreadPoolExecutor(envs) as pool:
                warm = list(pool.map(lambda e: _warm_up(bench, seen, e, placement), environments))
            if not all(warm):
                raise RuntimeError(f"a warm-up run did not succeed: {warm}")
            idle = _requests_rate(bench, idle_seconds)
            for r in range(rounds):
                order = ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]
                for arm in order:
                    with ThreadPoolExecutor(envs) as pool:
                        list(pool.map(lambda e: _reset(db, e), environments))
                    sent0 = bench.operator_requests(op)
                    cluster0 = bench.apiserver_requests()
                    t0 = time.monotonic()
                    these: list[Run] = []

                    def create(env: Env, arm: str = arm, r: int = r) -> Run:
                        name = f"{'pdm' if arm == 'operator' else arm.split(maxsplit=1)[0]}-{r}"
                        run = Run(arm, env, name, time.monotonic())
                        _create(bench, arm, env, name, placement)
                        return run

                    with ThreadPoolExecutor(envs) as pool:
                        these = list(pool.map(create, environments))
                    wait_for(
                        lambda these=these: all(_ended(seen, run) for run in these),
                        RUN_TIMEOUT,
                        f"the {arm} runs of round {r + 1}",
                    )
                    # The operator posts its Events in the background: count once they settle.
                    sent = bench.settled_requests(op) - sent0
                    cluster1 = bench.apiserver_requests()
                    seconds = time.monotonic() - t0
                    tally = per_arm[arm]
                    tally["operator_requests"].update(sent)
                    tally["cluster"].update(cluster1 - cluster0)
                    tally["seconds"] += seconds
                    tally["runs"] += len(these)
                    for run in these:
                        runs.append(_record(seen, run, _applied(db, run.env)))
                    print(
                        f"[bench] default path round {r + 1}/{rounds} {arm}: "
                        + ", ".join(f"{x['total']:.1f}s" for x in runs[-len(these) :]),
                        flush=True,
                    )
    finally:
        stop.set()
    return _summary(runs, per_arm, idle, rounds, envs, setup_s)


def _p(values: list[float], p: float) -> float:
    return percentile([v for v in values if not math.isnan(v)], p)


def _summary(
    runs: list[dict[str, Any]],
    per_arm: dict[str, dict[str, Any]],
    idle: dict[tuple[str, str], float],
    rounds: int,
    envs: int,
    setup_s: float,
) -> dict[str, Any]:
    def of(arm: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["arm"] == arm and r["ok"]]

    out: dict[str, Any] = {"rounds": rounds, "envs": envs, "setup_s": setup_s, "runs": runs}
    out["ok"] = {arm: sum(1 for r in runs if r["arm"] == arm and r["ok"]) for arm in ARMS}
    out["of"] = {arm: sum(1 for r in runs if r["arm"] == arm) for arm in ARMS}
    for key in (
        "apply_to_preflight",
        "preflight_end_to_job",
        "preflight_end_to_complete",
        "complete_to_end",
        "operator_time",
        "preflight_pod_run",
        "preflight_total",
        "total",
        "job_pod_run",
    ):
        values = of("operator", key)
        out[f"operator_{key}"] = {"p50": _p(values, 50), "p99": _p(values, 99)}
    for key in ("apply_to_job", "complete_to_end", "operator_time", "total"):
        values = of("no pre-flight", key)
        out[f"nopf_{key}"] = {"p50": _p(values, 50), "p99": _p(values, 99)}
    for key in ("total", "pod_run"):
        values = of("bare", key)
        out[f"bare_{key}"] = {"p50": _p(values, 50), "p99": _p(values, 99)}
    bare, pf, pdm = (
        out["bare_total"]["p50"],
        out["operator_preflight_pod_run"]["p50"],
        out["operator_total"]["p50"],
    )
    out["ratio"] = pdm / (bare + pf) if bare + pf > 0 else float("nan")
    out["duplicate_jobs"] = sum(
        max(0, len(r.get("jobs", {}).get(standin.MIGRATION_COMPONENT, [])) - 1) for r in runs
    )
    out["extra_preflights"] = sum(max(0, r.get("preflight_jobs", 1) - 1) for r in runs)
    requests: dict[str, Any] = {}
    for arm, tally in per_arm.items():
        n = tally["runs"] or 1
        sent: Counter[str] = tally["operator_requests"]
        requests[arm] = {
            "operator_writes": sum(v for k, v in sent.items() if k.split()[0] in WRITE_VERBS) / n,
            "operator_requests": {k: v / n for k, v in sorted(sent.items())},
            "cluster": _net_per_run(Counter(), tally["cluster"], idle, tally["seconds"], n),
            "seconds": tally["seconds"],
        }
    out["requests"] = requests
    return out


def node_facts(bench: Bench) -> dict[str, str]:
    """The kubelet and container runtime that ran the pods."""
    for node in bench.core.list_node().items:
        if (node.metadata.labels or {}).get(realnode.NODE_LABEL) == "real" or bench.local is None:
            info = node.status.node_info
            return {
                "kubelet": info.kubelet_version,
                "runtime": info.container_runtime_version,
                "os": info.os_image,
            }
    return {}
