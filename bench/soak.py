"""Soak: PostDeployMigration churn for a while, with the operator's RSS sampled.

Keeps ``inflight`` migrations going over ``envs`` environments, each reporting
to a test GitLab (so the outbox's status patches churn too), and deletes each
one shortly after it ends, so objects, workers, Jobs, Leases and outbox
records come and go the whole time. The operator's resident memory is sampled
every ``every`` seconds; the growth rate is the least-squares slope after the
warm-up.

The operator also runs with its heap totals on (``PDM_OPERATOR_HEAPWATCH``,
``operator/pdm_operator/heapwatch.py``: a line a minute, no tracing), so the
result says what RSS is made of at the warm-up and at the end: live Python
objects (the allocator's blocks), pymalloc's arenas, and glibc malloc's
arenas with the bytes free inside them. RSS that grows while the blocks stay
flat is the allocators keeping memory, not objects kept.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import watch
from kubernetes.client.rest import ApiException
from tests.support.fake_gitlab import FakeGitLab

from harness import GROUP, PLURAL, VERSION, Bench, process_cost, slope, tracked

TOKEN = "glpat-BENCH-soak-token"


#: Seconds a soak may run past its length for its first migration to end.
FIRST_END_GRACE = 120.0

#: Seconds between the operator's heap totals.
HEAP_EVERY = 60.0


def measure(
    bench: Bench,
    minutes: float,
    inflight: int = 20,
    envs: int = 10,
    warmup_minutes: float = 5.0,
    every: float = 10.0,
) -> dict[str, Any]:
    ns = bench.namespace("bench-soak")
    bench.declare(ns, {f"env{i}" for i in range(envs)})
    gitlab = FakeGitLab(token=TOKEN).start()
    heap_dir = Path(tempfile.mkdtemp(prefix="pdm-soak-heap-"))
    heap_env = {
        "PDM_OPERATOR_HEAPWATCH": str(heap_dir),
        "PDM_OPERATOR_HEAPWATCH_EVERY": str(HEAP_EVERY),
    }
    try:
        bench.gitlab_token(ns, TOKEN)
        with bench.operator(ns, env=heap_env) as op:
            pid = bench.pid(op)
            ended: dict[str, float] = {}
            lock = threading.Lock()
            stop = threading.Event()
            threading.Thread(
                target=_watch_ends, args=(bench, ns, ended, lock, stop), daemon=True
            ).start()

            samples: list[tuple[float, float]] = []
            start = time.monotonic()
            end = start + minutes * 60
            next_sample = start
            created = deleted = 0
            live: set[str] = set()
            # A short soak (the suite's) runs on until one migration has
            # ended, for at most FIRST_END_GRACE more seconds: on a loaded
            # machine the first may need longer than the soak itself.
            while time.monotonic() < end or (
                not ended and time.monotonic() < end + FIRST_END_GRACE
            ):
                now = time.monotonic()
                if now >= next_sample:
                    samples.append(((now - start) / 60, process_cost(pid).rss_mib))
                    next_sample += every
                with lock:
                    done = [n for n in live if n in ended and now - ended[n] > 2.0]
                for name in done:
                    _delete(bench, ns, name)
                    live.discard(name)
                    deleted += 1
                while len(live) - sum(1 for n in live if n in ended) < inflight:
                    name = f"soak-{created:06d}"
                    # Its own sha (a second deployment is a duplicate), in the project's history.
                    sha = gitlab.add_commits("gitlab-org/gitlab", shas=[f"{created:040x}"])[0]
                    bench.custom.create_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        ns,
                        PLURAL,
                        tracked(
                            name, f"env{created % envs}", gitlab.url, sha, ["gitlab-org/gitlab"]
                        ),
                    )
                    live.add(name)
                    created += 1
                time.sleep(0.5)
            stop.set()
            final = process_cost(pid)
    finally:
        gitlab.stop()
        bench.delete_namespace(ns)
    deployments = gitlab.deployments("gitlab-org/gitlab")
    steady = [(t, rss) for t, rss in samples if t >= warmup_minutes]
    heap = heap_samples(heap_dir / "totals.jsonl")
    shutil.rmtree(heap_dir, ignore_errors=True)
    heap_steady = [h for h in heap if h["minute"] >= warmup_minutes]
    return {
        "minutes": minutes,
        "migrations": len(ended),
        "deleted": deleted,
        "deployments": len(deployments),
        # Each migration has its own sha: two deployments with one sha are a duplicate.
        "duplicate_deployments": len(deployments) - len({d["sha"] for d in deployments}),
        "rss_first_mib": samples[0][1] if samples else float("nan"),
        "rss_warm_mib": steady[0][1] if steady else float("nan"),
        "rss_last_mib": final.rss_mib,
        "peak_rss_mib": final.peak_rss_mib,
        "growth_mib_per_hour": slope(steady) * 60,
        "cpu_s": final.cpu_s,
        "samples": samples,
        # What RSS is made of (heap_samples), at the first sample after the
        # warm-up and at the last; {} when the operator wrote none.
        "heap_warm": heap_steady[0] if heap_steady else {},
        "heap_last": heap[-1] if heap else {},
        "heap_samples": heap,
    }


def heap_samples(path: Path) -> list[dict[str, float]]:
    """The operator's heap totals (heapwatch.py), in MiB but for the block count:
    ``python_blocks`` (live objects and buffers in CPython's allocator),
    ``pymalloc_mib`` (its arenas; ``pymalloc_live_mib`` in live blocks,
    ``pymalloc_free_mib`` free in them), ``malloc_mib`` / ``malloc_free_mib``
    (glibc malloc's arenas, and what is free inside them: the pages
    ``malloc_trim`` gave back are counted, but are not in RSS),
    ``malloc_arenas``."""
    out = []
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        t = json.loads(line)

        def mib(key: str, t: dict[str, Any] = t) -> float:
            return round(t.get(key, float("nan")) / 2**20, 1)

        out.append(
            {
                "minute": round(t["t"] / 60, 2),
                "rss_mib": round(t["rss_kib"] / 1024, 1),
                "python_blocks": t["allocated_blocks"],
                "pymalloc_mib": mib("arena_bytes"),
                "pymalloc_live_mib": mib("live_block_bytes"),
                "pymalloc_free_mib": round(mib("free_pool_bytes") + mib("unused_pool_bytes"), 1),
                "malloc_mib": mib("malloc_arena_bytes"),
                "malloc_free_mib": mib("malloc_free_bytes"),
                "malloc_mmapped_mib": mib("malloc_mmapped_bytes"),
                "malloc_arenas": t.get("malloc_arenas", float("nan")),
            }
        )
    return out


def _delete(bench: Bench, ns: str, name: str) -> None:
    try:
        bench.custom.delete_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, propagation_policy="Background"
        )
    except ApiException as e:
        if e.status != 404:
            raise


def _watch_ends(
    bench: Bench, ns: str, ended: dict[str, float], lock: threading.Lock, stop: threading.Event
) -> None:
    """Note when each migration has ended and delivered its reports."""
    while not stop.is_set():
        w = watch.Watch()
        for ev in w.stream(
            bench.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            ns,
            PLURAL,
            timeout_seconds=60,
        ):
            obj = ev["object"]
            conds = {
                c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []
            }
            if conds.get("Succeeded") == "True" and conds.get("Reported") == "True":
                with lock:
                    ended.setdefault(obj["metadata"]["name"], time.monotonic())
            if stop.is_set():
                w.stop()
