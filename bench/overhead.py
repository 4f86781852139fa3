#!/usr/bin/env python3
"""Operator overhead at N concurrent PostDeployMigrations over E environments.

    .venv/bin/python bench/overhead.py --pdms 1 50 500 --envs 10 --runs 3

Against ``$KUBECONFIG`` or, without it, a fresh local control plane
(``pdm-bench``). Times come from this process's own watches, on one clock,
to the millisecond (the API's timestamps are whole seconds):

* **start latency**: from the moment a migration may start (its creation, or
  the end of the previous Job of its environment, whichever is later) to its
  Job appearing; what the operator adds, not the environment lock's queue;
* **end latency**: from the Job's Complete condition to the migration's
  Succeeded;
* **throughput**: migrations completed per minute;
* **cost**: the operator's CPU seconds and peak RSS, and API requests per
  migration by verb, from the API server's ``apiserver_request_total``
  (everything in the cluster meanwhile: the operator, and the Job
  controller, scheduler and kwok for each Job).

Prints a table; ``--markdown FILE`` also writes it as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

from kubernetes import client, config, watch  # noqa: E402

from localcluster import LocalCluster  # noqa: E402

GROUP, VERSION, PLURAL = "pdm-operator.io", "v1alpha1", "postdeploymigrations"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Timeline:
    created: dict[str, float] = field(default_factory=dict)
    env_of: dict[str, str] = field(default_factory=dict)
    job_seen: dict[str, float] = field(default_factory=dict)
    job_complete: dict[str, float] = field(default_factory=dict)
    succeeded: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def watch_jobs(api: client.ApiClient, ns: str, tl: Timeline, stop: threading.Event) -> None:
    w = watch.Watch()
    for ev in w.stream(client.BatchV1Api(api).list_namespaced_job, ns, timeout_seconds=3600):
        now = time.monotonic()
        job = ev["object"]
        pdm = (job.metadata.labels or {}).get("pdm-operator.io/migration")
        with tl.lock:
            tl.job_seen.setdefault(pdm, now)
            for c in job.status.conditions or []:
                if c.type == "Complete" and c.status == "True":
                    tl.job_complete.setdefault(pdm, now)
        if stop.is_set():
            w.stop()


def watch_pdms(api: client.ApiClient, ns: str, tl: Timeline, stop: threading.Event) -> None:
    w = watch.Watch()
    custom = client.CustomObjectsApi(api)
    for ev in w.stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, timeout_seconds=3600
    ):
        now = time.monotonic()
        obj = ev["object"]
        conds = (obj.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Succeeded" and c["status"] == "True" for c in conds):
            with tl.lock:
                tl.succeeded.setdefault(obj["metadata"]["name"], now)
        if stop.is_set():
            w.stop()


def apiserver_requests(api: client.ApiClient) -> Counter[tuple[str, str]]:
    resp = api.rest_client.pool_manager.request("GET", f"{api.configuration.host}/metrics")
    text = resp.data.decode()
    out: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        out[(labels.get("verb", ""), labels.get("resource", ""))] += int(
            float(line.rsplit(" ", 1)[1])
        )
    return out


def proc_cost(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a process and its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    hwm = next(
        line
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    return cpu, int(hwm.split()[1]) / 1024


def one_run(
    api: client.ApiClient, env: dict[str, str], n: int, envs: int, log: Path
) -> dict[str, Any]:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": ns}})
    op = subprocess.Popen(
        [sys.executable, "-m", "pdm_operator.cli", "run", "-n", ns, "--lock-namespace", ns,
         "--liveness-port", "0", "--metrics-port", "0"],
        env={**env, "PYTHONPATH": str(ROOT / "operator")},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    tl = Timeline()
    stop = threading.Event()
    threads = [
        threading.Thread(target=f, args=(api, ns, tl, stop), daemon=True)
        for f in (watch_jobs, watch_pdms)
    ]
    for t in threads:
        t.start()
    time.sleep(2.0)  # the operator's start-up (imports, first listing); not measured
    before = apiserver_requests(api)
    cpu0, _ = proc_cost(op.pid)
    start = time.monotonic()
    for i in range(n):
        name = f"b-{i:04d}"
        environment = f"env{i % envs}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PostDeployMigration",
            "metadata": {"name": name},
            "spec": {
                "environment": environment,
                "image": {"reference": "registry.example.com/toolbox:v1"},
            },
        }
        with tl.lock:
            tl.created[name] = time.monotonic()
            tl.env_of[name] = environment
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    deadline = time.monotonic() + max(300.0, n * 3.0)
    while time.monotonic() < deadline:
        with tl.lock:
            if len(tl.succeeded) >= n:
                break
        time.sleep(0.2)
    elapsed = time.monotonic() - start
    after = apiserver_requests(api)
    cpu1, rss = proc_cost(op.pid)
    stop.set()
    op.send_signal(signal.SIGTERM)
    op.wait(timeout=30)
    core.delete_namespace(ns)

    # Start latency: from when the migration could start to its Job appearing.
    starts, ends = [], []
    by_env: dict[str, list[str]] = {}
    for name in sorted(tl.job_seen, key=lambda k: tl.job_seen[k]):
        by_env.setdefault(tl.env_of.get(name, ""), []).append(name)
    for names in by_env.values():
        prev_end = 0.0
        for name in names:
            ready = max(tl.created[name], prev_end)
            starts.append(tl.job_seen[name] - ready)
            prev_end = tl.succeeded.get(name, tl.job_complete.get(name, prev_end))
    for name, done in tl.job_complete.items():
        if name in tl.succeeded:
            ends.append(tl.succeeded[name] - done)
    delta = after - before
    writes = sum(
        v for (verb, _), v in delta.items() if verb in ("POST", "PUT", "PATCH", "DELETE", "APPLY")
    )
    by_verb: Counter[str] = Counter()
    for (verb, _), v in delta.items():
        by_verb[verb] += v
    return {
        "n": n,
        "completed": len(tl.succeeded),
        "start_p50": percentile(starts, 50),
        "start_p99": percentile(starts, 99),
        "end_p50": percentile(ends, 50),
        "end_p99": percentile(ends, 99),
        "per_minute": len(tl.succeeded) / elapsed * 60,
        "cpu_s": cpu1 - cpu0,
        "rss_mib": rss,
        "writes_per_pdm": writes / n,
        "requests_per_pdm": {k: round(v / n, 1) for k, v in sorted(by_verb.items())},
    }


def baseline(api: client.ApiClient, n: int) -> Counter[str]:
    """API requests per bare Job (no operator): what Kubernetes itself spends on a Job.

    The same Job the operator renders, created directly; its cost (Job
    controller, scheduler, kwok) is subtracted to get the operator's own.
    """
    ns = f"bench-base-{uuid.uuid4().hex[:6]}"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespace({"metadata": {"name": ns}})
    before = apiserver_requests(api)
    for i in range(n):
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"bare-{i:04d}"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "migrations", "image": "registry.example.com/toolbox:v1"}
                        ],
                    }
                },
            },
        }
        batch.create_namespaced_job(ns, job)
    deadline = time.monotonic() + max(120.0, n * 2.0)
    while time.monotonic() < deadline:
        jobs = batch.list_namespaced_job(ns).items
        if sum(1 for j in jobs if j.status.succeeded) >= n:
            break
        time.sleep(0.5)
    time.sleep(2.0)  # let the last pod status updates land before counting
    after = apiserver_requests(api)
    core.delete_namespace(ns)
    per_verb: Counter[str] = Counter()
    for (verb, _), v in (after - before).items():
        per_verb[verb] += v
    return Counter({k: round(v / n, 1) for k, v in per_verb.items()})


def summarize(results: list[dict[str, Any]], key: str) -> str:
    vals = [r[key] for r in results]
    return f"{min(vals):.3f} / {statistics.median(vals):.3f} / {max(vals):.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pdms", type=int, nargs="+", default=[1, 50])
    ap.add_argument("--envs", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    env = dict(os.environ)
    local = None
    if not env.get("KUBECONFIG"):
        local = LocalCluster("pdm-bench")
        local.down(quiet=True)
        env["KUBECONFIG"] = str(local.up())
    api = config.new_client_from_config(config_file=env["KUBECONFIG"])
    kubectl = str(local.state()["bins"]["kubectl"]) if local else "kubectl"  # type: ignore[index]
    subprocess.run(
        [kubectl, "apply", "--server-side", "-k", str(ROOT / "crds")],
        env=env,
        check=True,
        capture_output=True,
    )
    log = ROOT / "bench" / "results" / "operator.log"
    log.parent.mkdir(exist_ok=True)
    rows = []
    try:
        for n in args.pdms:
            results = [one_run(api, env, n, args.envs, log) for _ in range(args.runs)]
            rows.append((n, results))
            print(json.dumps({"n": n, "runs": results}, default=str), file=sys.stderr)
        base = baseline(api, 20)
    finally:
        if local:
            local.down(quiet=True)
    header = (
        "| PDMs | envs | start p50 s | start p99 s | end p50 s | end p99 s | PDMs/min "
        "| operator CPU s | peak RSS MiB | API writes/PDM | requests/PDM by verb (median run) |"
    )
    lines = [header, "|" + "---|" * 11]
    for n, results in rows:
        med = sorted(results, key=lambda r: r["start_p99"])[len(results) // 2]
        lines.append(
            f"| {n} | {min(n, args.envs)} | {summarize(results, 'start_p50')} "
            f"| {summarize(results, 'start_p99')} "
            f"| {summarize(results, 'end_p50')} | {summarize(results, 'end_p99')} "
            f"| {summarize(results, 'per_minute')} | {summarize(results, 'cpu_s')} "
            f"| {summarize(results, 'rss_mib')} | {summarize(results, 'writes_per_pdm')} "
            f"| {med['requests_per_pdm']} |"
        )
    base_writes = sum(
        v for k, v in base.items() if k in ("POST", "PUT", "PATCH", "DELETE", "APPLY")
    )
    lines += [
        "",
        f"Bare Job without the operator (baseline, 20 Jobs): {dict(sorted(base.items()))} per Job, "
        f"{base_writes:.1f} writes; the operator's own writes per PDM are the column above "
        "minus this.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
