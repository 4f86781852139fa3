"""The operator's memory with many PostDeployMigration objects in the cluster.

A GitLab installation accumulates a migration per deployment per environment;
the objects stay until someone deletes them. This fills a namespace with
``count`` migrations that have ended (the status a real run left behind,
copied), starts the operator on it, waits until it has listed them and gone
idle, then runs ``running`` more migrations through it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness import GROUP, PLURAL, VERSION, Bench, is_true, migration, process_cost, wait_for


def _succeeded(bench: Bench, ns: str, names: list[str]) -> bool:
    items = bench.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
    done = {o["metadata"]["name"] for o in items if is_true(o, "Succeeded")}
    return done.issuperset(names)


def _idle(pid: int, quiet_s: float = 3.0, timeout: float = 600) -> float:
    """Seconds until the process used under 2% of a core for ``quiet_s`` seconds."""
    start = time.monotonic()
    last, quiet_since = process_cost(pid).cpu_s, time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(1.0)
        now = process_cost(pid).cpu_s
        if now - last > 0.02:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return quiet_since - start
        last = now
    raise TimeoutError(f"the operator did not go idle within {timeout:.0f}s")


def measure(bench: Bench, count: int, running: int = 50, envs: int = 10) -> dict[str, Any]:
    ns = bench.namespace("bench-objects")
    bench.declare(ns, {f"env{i}" for i in range(envs)})
    try:
        # One real run, whose status every other object gets.
        with bench.operator(ns):
            bench.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, migration("template", "env0")
            )
            wait_for(lambda: _succeeded(bench, ns, ["template"]), 120, "the template migration")
        status = bench.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "template")[
            "status"
        ]

        def add(i: int) -> None:
            name = f"old-{i:05d}"
            bench.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, migration(name, f"env{i % envs}")
            )
            bench.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURAL, name, {"status": status}
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(add, range(count - 1)))

        with bench.operator(ns) as op:
            listed_idle_s = _idle(bench.pid(op))
            idle = process_cost(bench.pid(op))
            names = [f"new-{i:03d}" for i in range(running)]
            bench.create_migrations(
                ns, [migration(n, f"env{i % envs}") for i, n in enumerate(names)], threads=1
            )
            wait_for(
                lambda: _succeeded(bench, ns, names), max(300.0, running * 3.0), "new runs", 1.0
            )
            after = process_cost(bench.pid(op))
    finally:
        bench.delete_namespace(ns)
    return {
        "objects": count,
        "running": running,
        "idle_after_s": listed_idle_s,
        "idle_rss_mib": idle.rss_mib,
        "rss_after_runs_mib": after.rss_mib,
        "peak_rss_mib": after.peak_rss_mib,
    }
