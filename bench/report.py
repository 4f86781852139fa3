"""docs/benchmarks.md from the results of bench/run.py."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import PROGRESS_WRITES, ROOT, WRITE_VERBS, spread

MB_IN_MIB = 1_000_000 / 1_048_576  # the RSS target is in MB, /proc reports KiB

#: The document's sections, in order (Findings comes from bench/findings.md).
SECTIONS = (
    "Against the targets",
    "The default path on the real node",
    "Operator overhead",
    "API requests per migration",
    "Memory with many objects",
    "Rollback while GitLab fails",
    "Soak",
    "Findings",
)


def _mmm(values: list[float], scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    lo, med, hi = spread(v * scale for v in values)
    return " / ".join(fmt.format(x) for x in (lo, med, hi))


def _by_n(results: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for r in results.get("overhead", []):
        out.setdefault(r["n"], []).append(r)
    return out


def _writes(verbs: dict[str, float]) -> float:
    return sum(v for k, v in verbs.items() if k in WRITE_VERBS)


#: Writes the benchmark makes itself (creating the migrations), not the operator.
USER_WRITES = ("POST postdeploymigrations",)
#: Writes Kubernetes' controllers make about what the operator created: the
#: disruption controller keeps each PodDisruptionBudget's status.
KUBE_WRITES = ("PUT poddisruptionbudgets/status",)


def operator_writes(results: dict[str, Any], run: dict[str, Any]) -> dict[str, float]:
    """The operator's own writes per migration, by ``"VERB resource"``.

    As the operator counted what its client sent (``pdm_api_requests_total``,
    once its background Events are posted), server-side dry runs included:
    the API server counts them as creates though nothing is stored. A run
    measured before that counter existed falls back to the API server's
    count: the run's writes, minus what an idle cluster writes over the same time
    (Lease renewals), minus what Kubernetes writes for a bare Job (Job
    controller, scheduler, kwok), minus the benchmark's own creates and the
    status the disruption controller keeps on the operator's
    PodDisruptionBudgets (``KUBE_WRITES``).
    """
    if "operator_requests" in run:
        return {
            k: v
            for k, v in run["operator_requests"].items()
            if k.split(" ", 1)[0] in WRITE_VERBS and v > 0
        }
    bg = results.get("background_writes") or {}
    bare = results.get("bare_job") or {}
    keys = set(run.get("writes", {})) | set(bare.get("writes", {}))
    out = {}
    for k in sorted(keys - set(USER_WRITES) - set(KUBE_WRITES)):
        mine = (run["writes"].get(k, 0) - bg.get(k, 0.0) * run["window_s"]) / run["n"]
        kube = 0.0
        if bare:
            kube = (bare["writes"].get(k, 0) - bg.get(k, 0.0) * bare["window_s"]) / bare["n"]
        if abs(mine - kube) >= 0.05:
            out[k] = mine - kube
    return out


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


def overhead_table(results: dict[str, Any]) -> list[str]:
    rows = [
        "| PDMs | envs | start p50 ms | start p99 ms | end p50 ms | end p99 ms | PDMs/min "
        "| operator CPU s | peak RSS MiB | full collections | duplicate Jobs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, runs in sorted(_by_n(results).items()):

        def col(key: str, scale: float = 1.0, fmt: str = "{:.0f}", runs: list = runs) -> str:
            return _mmm([r[key] for r in runs], scale, fmt)

        rows.append(
            f"| {n} | {min(n, runs[0]['envs'])} | {col('start_p50', 1000)} "
            f"| {col('start_p99', 1000)} | {col('end_p50', 1000)} | {col('end_p99', 1000)} "
            f"| {col('per_minute', fmt='{:.0f}')} | {col('cpu_s', fmt='{:.1f}')} "
            f"| {col('peak_rss_mib')} "
            f"| {col('full_collections') if all('full_collections' in r for r in runs) else '–'} "
            f"| {sum(r['duplicate_jobs'] for r in runs)} |"
        )
    return rows


def requests_table(results: dict[str, Any]) -> list[str]:
    bare = (results.get("bare_job") or {}).get("requests_per_job") or {}
    runs_by_n = _by_n(results)
    verbs = sorted({v for r in results.get("overhead", []) for v in r["requests_per_pdm"]})
    verbs = sorted(set(verbs) | set(bare))
    rows = [
        "| PDMs | " + " | ".join(verbs) + " | writes | the operator's writes |",
        "|---|" + "---|" * (len(verbs) + 2),
    ]
    for n, runs in sorted(runs_by_n.items()):
        med = _median_run(runs, "writes_per_pdm")
        rows.append(
            f"| {n} | "
            + " | ".join(f"{med['requests_per_pdm'].get(v, 0):.1f}" for v in verbs)
            + f" | {_writes(med['requests_per_pdm']):.1f} "
            + f"| {sum(operator_writes(results, med).values()):.1f} |"
        )
    if bare:
        rows.append(
            "| bare Job | "
            + " | ".join(f"{bare.get(v, 0):.1f}" for v in verbs)
            + f" | {_writes(bare):.1f} | – |"
        )
    if runs_by_n:
        largest = _median_run(runs_by_n[max(runs_by_n)], "writes_per_pdm")
        mine = operator_writes(results, largest)
        rows += [
            "",
            f"The operator's writes per migration at {largest['n']}, by request: "
            + ", ".join(
                f"{k} {v:.2g}" for k, v in sorted(mine.items(), key=lambda kv: -kv[1]) if v >= 0.005
            )
            + ".",
        ]
    return rows


def outage_table(results: dict[str, Any]) -> list[str]:
    runs = results.get("outage") or []
    rows = [
        "| GitLab | approach | end-to-end s (min / median / max) | median ÷ healthy "
        "| CI job passed | deployments left (of expected) |",
        "|---|---|---|---|---|---|",
    ]
    healthy: dict[str, float] = {}
    for fault in ("healthy", "slow", "hanging", "down"):
        for approach in ("operator", "blocking CI"):
            mine = [r for r in runs if r["fault"] == fault and r["approach"] == approach]
            if not mine:
                continue
            med = statistics.median(r["seconds"] for r in mine)
            if fault == "healthy":
                healthy[approach] = med
            ratio = med / healthy[approach] if healthy.get(approach) else float("nan")
            left = ", ".join(
                f"{r['successful']} success" + (f" + {r['deployments'] - r['successful']} other"
                                                 if r["deployments"] > r["successful"] else "")
                for r in mine
            )  # fmt: skip
            rows.append(
                f"| {fault} | {approach} | {_mmm([r['seconds'] for r in mine], fmt='{:.1f}')} "
                f"| {ratio:.2f} | {sum(r['ok'] for r in mine)}/{len(mine)} "
                f"| {left} (of {mine[0]['expected']} each) |"
            )
    return rows


def targets_table(results: dict[str, Any]) -> list[str]:
    rows = ["| target | measured | |", "|---|---|---|"]

    def row(target: str, measured: str, met: bool | None) -> None:
        rows.append(
            f"| {target} | {measured} | {'met' if met else 'missed' if met is False else '–'} |"
        )

    big = _by_n(results).get(500) or _by_n(results).get(max(_by_n(results), default=0))
    if big:
        start = statistics.median(r["start_p99"] for r in big) * 1000
        end = statistics.median(r["end_p99"] for r in big) * 1000
        row(
            f"operator overhead p99 ≤ 200 ms at 500 concurrent PDMs (measured at {big[0]['n']})",
            f"start p99 {start:.0f} ms, end p99 {end:.0f} ms (median of runs)",
            max(start, end) <= 200 and big[0]["n"] >= 500,
        )
        worst = max(
            sum(operator_writes(results, _median_run(runs, "writes_per_pdm")).values())
            for runs in _by_n(results).values()
        )
        row("≤ 10 API writes per PDM outside reporting",
            f"{worst:.1f} sent by the operator, the Job's own create included "
            "(worst size, median run)", worst <= 10)  # fmt: skip
        dup = sum(r["duplicate_jobs"] for r in results.get("overhead", []))
        row("zero duplicate Jobs", f"{dup} in {len(results['overhead'])} runs", dup == 0)
    obj = results.get("objects")
    if obj:
        mb = obj["peak_rss_mib"] / MB_IN_MIB
        row(
            f"≤ 150 MB RSS with 5,000 PDM objects (measured with {obj['objects']:,})",
            f"peak {mb:.0f} MB ({obj['peak_rss_mib']:.0f} MiB)",
            mb <= 150 and obj["objects"] >= 5000,
        )
    out = [r for r in results.get("outage") or [] if r["approach"] == "operator"]
    if out:
        healthy = statistics.median(r["seconds"] for r in out if r["fault"] == "healthy")
        worst_fault, worst = max(
            (
                (f, statistics.median(r["seconds"] for r in out if r["fault"] == f) / healthy)
                for f in {r["fault"] for r in out} - {"healthy"}
            ),
            key=lambda x: x[1],
        )
        row(
            "rollback under any GitLab fault within 5% of healthy",
            f"worst: {worst:.2f} × healthy ({worst_fault})",
            worst <= 1.05,
        )
        dup = sum(max(0, r["deployments"] - r["expected"]) for r in out)
        where = f"{len(out)} operator rollbacks"
        soak = results.get("soak")
        if soak:
            dup += soak["duplicate_deployments"]
            where += f" and {soak['deployments']} soak deployments"
        row("zero duplicate deployments", f"{dup} in {where}", dup == 0)
    dp = results.get("default_path") or {}
    if dp.get("ok"):
        _default_path_targets(dp, row)
    soak = results.get("soak")
    if soak:
        row(
            "soak memory growth ≤ 5 MiB/hour after warm-up (or explained)",
            f"{soak['growth_mib_per_hour']:+.1f} MiB/hour over {soak['minutes']:.0f} min",
            soak["growth_mib_per_hour"] <= 5 if soak["minutes"] >= 60 else None,
        )
    return rows


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _default_path_targets(dp: dict[str, Any], row: Any) -> None:
    n = dp["ok"]["operator"]
    row(
        f"default path ÷ (bare chart Job + pre-flight pod) ≤ 1.05 ({n} PDMs on the real node)",
        f"{dp['ratio']:.3f} (p50 {dp['operator_total']['p50']:.1f} s against "
        f"{dp['bare_total']['p50']:.1f} s + {dp['operator_preflight_pod_run']['p50']:.1f} s)",
        dp["ratio"] <= 1.05,
    )
    literal = dp["operator_operator_time"]
    row(
        "the operator's own time on the default path ≤ 1 s p50, ≤ 2 s p99",
        f"p50 {_ms(literal['p50'])}, p99 {_ms(literal['p99'])} (apply → pre-flight Job, "
        "pre-flight pod's end → migration Job, Job Complete → Succeeded)",
        literal["p50"] <= 1 and literal["p99"] <= 2,
    )
    req = dp["requests"]
    with_pf, without = _own_writes(req["operator"]), _own_writes(req["no pre-flight"])
    row(
        "operator writes per migration with the pre-flight ≤ 3 more than without",
        f"{with_pf:.1f} with, {without:.1f} without ({with_pf - without:+.1f}; real node), the "
        "environments' timed status writes and the progress writes apart (with them: "
        f"{req['operator']['operator_writes']:.1f} and "
        f"{req['no pre-flight']['operator_writes']:.1f}; see the default path's section)",
        with_pf - without <= 3,
    )
    dup = dp["duplicate_jobs"] + dp["extra_preflights"]
    row(
        "every default-path run applied its migrations, once",
        f"{n}/{dp['of']['operator']} with the pre-flight, "
        f"{dp['ok']['no pre-flight']}/{dp['of']['no pre-flight']} without, "
        f"{dp['ok']['bare']}/{dp['of']['bare']} bare; {dup} extra Jobs",
        n == dp["of"]["operator"] and dup == 0,
    )


DEFAULT_PATH = (
    "Every other section runs on kwok. This one runs the product's defaults on the **real "
    "node** (kubelet and containerd on this machine): the stand-in GitLab toolbox "
    "(`hack/standin-toolbox/`, real Rails against a real PostgreSQL on the node) applies "
    "four post-deployment migrations in each of two databases (main and ci). Each "
    "environment has its own namespace and chart-shaped release; before every run its "
    "databases are recreated from a template taken after the regular deploy, so every run "
    "finds the same 8 pending. Three arms, all environments at once in each, in a rotating "
    "order each round: *with the pre-flight* (a PostDeployMigration with the defaults: "
    "`podTemplateFrom` the chart's Job, the image from the toolbox Deployment, the "
    "pre-flight pod and its plan, the Job, its PodDisruptionBudget, the history), *bare* "
    "(the chart's Job itself without the skip variable, created directly: what `helm "
    "upgrade` runs without skipping) and *without the pre-flight* "
    "(`spec.preflight.enabled: false`). A run counts only if both databases then record "
    "every version. Times are from the bench's own watches, on one clock."
)


#: The PostDeployEnvironments' status, written by a timer (``envstatus.py``).
ENVIRONMENT_STATUS = "PATCH postdeployenvironments/status"


def _own_writes(arm: dict[str, Any]) -> float:
    """An arm's operator writes per run but the environments' status and the
    progress written alone.

    The environments' status is written on a 10-second timer per environment
    when it changed, not by a migration's pass: each arm's window catches the
    rounds that fall in it, whoever's change they carry (the bare arm, which
    makes no migration, is charged some too). A progress write is made by a
    read of a running Job's log, due every 15 s, that finds Rails announced a
    migration since the last: how many a run makes depends on how long its
    migrations run and where the reads fall, in either arm, not on the
    pre-flight. Results from before the operator counted them have none.
    """
    requests = arm["operator_requests"]
    return (
        float(arm["operator_writes"])
        - float(requests.get(ENVIRONMENT_STATUS, 0))
        - float(requests.get(PROGRESS_WRITES, 0))
    )


def default_path_lines(results: dict[str, Any]) -> list[str]:
    dp = results.get("default_path") or {}
    if not dp:
        return []
    if dp.get("skipped"):
        return [f"Not measured: {dp['skipped']}."]
    node = dp.get("node") or {}

    def t(key: str) -> str:
        v = dp[key]
        return f"{v['p50']:.2f} | {v['p99']:.2f}"

    req = dp["requests"]
    verbs = sorted({v for arm in req.values() for v in arm["cluster"]})
    cost = dp["operator_total"]["p50"] - dp["nopf_total"]["p50"]
    lines = [
        DEFAULT_PATH,
        "",
        f"{dp['envs']} environments × {dp['rounds']} rounds: "
        f"{dp['of']['operator']} PostDeployMigrations with the pre-flight, "
        f"{dp['of']['no pre-flight']} without, {dp['of']['bare']} bare Jobs"
        + (f"; kubelet {node.get('kubelet')}, {node.get('runtime')}" if node else "")
        + f". Setting up the releases and templates took {dp['setup_s']:.0f} s.",
        "",
        "| with the pre-flight (seconds) | p50 | p99 |",
        "|---|---|---|",
        f"| apply → pre-flight Job created (operator) | {t('operator_apply_to_preflight')} |",
        f"| pre-flight pod's run (created → ended) | {t('operator_preflight_pod_run')} |",
        f"| pre-flight pod ended → migration Job created | {t('operator_preflight_end_to_job')} |",
        f"| (not waited for: pod ended → pre-flight Job Complete, by the Job controller) "
        f"| {t('operator_preflight_end_to_complete')} |",
        f"| migration Job's pod run | {t('operator_job_pod_run')} |",
        f"| migration Job Complete → Succeeded (operator) | {t('operator_complete_to_end')} |",
        f"| the operator's time (the three steps it takes from apply, pre-flight pod end, "
        f"Job Complete) | {t('operator_operator_time')} |",
        f"| **apply → Succeeded** | {t('operator_total')} |",
        "",
        "| bare and without the pre-flight (seconds) | p50 | p99 |",
        "|---|---|---|",
        f"| bare chart Job: apply → Complete | {t('bare_total')} |",
        f"| bare chart Job's pod run | {t('bare_pod_run')} |",
        f"| without the pre-flight: apply → Job created (operator) | {t('nopf_apply_to_job')} |",
        f"| without the pre-flight: Job Complete → Succeeded (operator) "
        f"| {t('nopf_complete_to_end')} |",
        f"| without the pre-flight: apply → Succeeded | {t('nopf_total')} |",
        "",
        f"**Ratio**: apply → Succeeded with the pre-flight (p50 {dp['operator_total']['p50']:.2f} "
        f"s) ÷ (bare apply → Complete {dp['bare_total']['p50']:.2f} s + the pre-flight pod's "
        f"run {dp['operator_preflight_pod_run']['p50']:.2f} s) = **{dp['ratio']:.3f}**.",
        "",
        f"**The pre-flight's cost**: p50 {cost:.1f} s more from apply to Succeeded than without it "
        f"({dp['operator_total']['p50']:.1f} s against {dp['nopf_total']['p50']:.1f} s), of "
        f"which its pod's run is {dp['operator_preflight_pod_run']['p50']:.1f} s: one Rails "
        "boot and `db:migrate:status` on the stand-in (its Job's pod, which boots Rails and "
        f"applies 8 migrations, runs {dp['operator_job_pod_run']['p50']:.1f} s). On GitLab's "
        "toolbox a Rails boot takes far longer; weigh the pre-flight against one boot there.",
        "",
        "Requests per run, whole cluster, from `apiserver_request_total`, the idle "
        "cluster's (node heartbeats, Leases, the operator's leader Lease) over the same "
        "seconds taken off; *operator writes*: what the operator's client sent "
        "(`pdm_api_requests_total`); *of which environments' status*: the "
        "PostDeployEnvironments' status, written on a 10-second timer per environment "
        "when it changed, so each arm's window catches the rounds that fall in it, "
        "whoever's change they carry (the bare arm makes no PostDeployMigration); *of which "
        "progress alone*: status patches that changed only `status.progress` "
        '(`pdm_status_writes_total{change="progress"}`), made by a read of the running '
        "Job's log, due every 15 s, that finds Rails announced a migration since the last: "
        "they depend on how long the migrations run and where the reads fall, not on the "
        "pre-flight, and both arms make them.",
        "",
        "| arm | "
        + " | ".join(verbs)
        + " | operator writes | of which environments' status | of which progress alone |",
        "|---|" + "---|" * (len(verbs) + 3),
    ]
    for arm in ("operator", "no pre-flight", "bare"):
        name = {"operator": "with the pre-flight", "no pre-flight": "without"}.get(arm, arm)
        lines.append(
            f"| {name} | "
            + " | ".join(f"{req[arm]['cluster'].get(v, 0):.1f}" for v in verbs)
            + f" | {req[arm]['operator_writes']:.1f}"
            + f" | {req[arm]['operator_requests'].get(ENVIRONMENT_STATUS, 0):.1f}"
            + f" | {req[arm]['operator_requests'].get(PROGRESS_WRITES, 0):.1f} |"
        )
    for arm in ("operator", "no pre-flight"):
        writes = {
            k: v
            for k, v in req[arm]["operator_requests"].items()
            if k.split(" ", 1)[0] in WRITE_VERBS
        }
        lines += [
            "",
            f"The operator's writes per run {'with' if arm == 'operator' else 'without'} the "
            "pre-flight: "
            + ", ".join(f"{k} {v:.2g}" for k, v in sorted(writes.items(), key=lambda kv: -kv[1]))
            + ".",
        ]
    return lines


def soak_lines(results: dict[str, Any]) -> list[str]:
    s = results.get("soak")
    if not s:
        return []
    every = max(1, len(s["samples"]) // 12)
    points = ", ".join(f"{t:.1f} min {rss:.0f}" for t, rss in s["samples"][::every])
    return [
        f"{s['minutes']:g} minutes, 20 migrations in flight over 10 environments: "
        f"{s['migrations']} ran and reported a GitLab deployment each, then were deleted "
        f"({s['deleted']}); {s['deployments']} deployments, "
        f"{s['duplicate_deployments']} of them duplicates.",
        "",
        "| RSS first sample | after warm-up | last | peak | growth after warm-up | CPU s |",
        "|---|---|---|---|---|---|",
        f"| {s['rss_first_mib']:.0f} MiB | {s['rss_warm_mib']:.0f} MiB "
        f"| {s['rss_last_mib']:.0f} MiB "
        f"| {s['peak_rss_mib']:.0f} MiB | {s['growth_mib_per_hour']:+.1f} MiB/hour "
        f"| {s['cpu_s']:.0f} |",
        "",
        f"RSS (MiB) over time: {points}.",
        *_heap_lines(s),
    ]


#: What the soak's heap totals hold (bench/soak.py ``heap_samples``), in table order.
HEAP_COLUMNS = (
    ("rss_mib", "RSS MiB"),
    ("python_blocks", "Python blocks"),
    ("pymalloc_mib", "pymalloc arenas MiB"),
    ("pymalloc_live_mib", "live in them MiB"),
    ("pymalloc_free_mib", "free in them MiB"),
    ("malloc_mib", "malloc arenas MiB"),
    ("malloc_free_mib", "free in them MiB"),
    ("malloc_arenas", "malloc arenas"),
)


def _heap_lines(s: dict[str, Any]) -> list[str]:
    """What RSS is made of at the warm-up and at the end (the operator's heap totals)."""
    rows = [(label, s.get(key) or {}) for label, key in (("after warm-up", "heap_warm"),
                                                         ("last", "heap_last"))]  # fmt: skip
    if not all(h for _, h in rows):
        return []
    columns = [(k, title) for k, title in HEAP_COLUMNS if all(k in h for _, h in rows)]

    def cell(v: Any) -> str:
        return f"{v:,.0f}" if isinstance(v, int) else f"{v:.1f}"

    return [
        "",
        "What the operator's memory is made of (its heap totals, "
        "`PDM_OPERATOR_HEAPWATCH`): CPython's live blocks and its arenas, and glibc "
        "malloc's arenas with the bytes free inside them.",
        "",
        "| when | minute | " + " | ".join(title for _, title in columns) + " |",
        "|---|---|" + "---|" * len(columns),
        *(
            f"| {label} | {h.get('minute', float('nan')):.0f} | "
            + " | ".join(cell(h[k]) for k, _ in columns)
            + " |"
            for label, h in rows
        ),
    ]


def objects_lines(results: dict[str, Any]) -> list[str]:
    o = results.get("objects")
    if not o:
        return []
    note = []
    if o.get("commit") and o["commit"] != results["machine"]["commit"]:
        note = [f"Measured separately, at commit `{o['commit']}`.", ""]
    return [
        *note,
        "| objects | idle after start | RSS idle | RSS after runs | peak RSS |",
        "|---|---|---|---|---|",
        f"| {o['objects']:,} ended + {o['running']} run | {o['idle_after_s']:.0f} s "
        f"| {o['idle_rss_mib']:.0f} MiB | {o['rss_after_runs_mib']:.0f} MiB "
        f"| {o['peak_rss_mib']:.0f} MiB ({o['peak_rss_mib'] / MB_IN_MIB:.0f} MB) |",
    ]


def tables(results: dict[str, Any]) -> str:
    parts = [targets_table(results)]
    if results.get("default_path"):
        parts.append(default_path_lines(results))
    if results.get("overhead"):
        parts += [overhead_table(results), requests_table(results)]
    for lines in (objects_lines(results), outage_table(results) if results.get("outage") else [],
                  soak_lines(results)):  # fmt: skip
        if lines:
            parts.append(lines)
    return "\n\n".join("\n".join(p) for p in parts)


#: What every table measures (bench/harness.py ``migration``): said once, above them.
CONFIGURATION = (
    "**What is measured.** *The default path on the real node* runs the product's "
    "defaults with pods that really run (its section says how). Every other table is of "
    "migrations on **kwok** nodes: their "
    "pods are simulated, run no container and serve no log. So every PostDeployMigration "
    "there is created with `spec.preflight.enabled: false` (no pre-flight Job, no pending "
    "list, no plan, no approval, no progress to read) and `image.reference` (no "
    "Deployment to resolve or wait for, no pod template to copy); its environment has "
    "no windows, locks or GitLab gate, and no reporting unless a section says so (the "
    "rollback section tracks a GitLab Deployment; the soak reports each migration)."
)


README_START = "<!-- bench:start (written by bench/run.py with docs/benchmarks.md; do not edit) -->"
README_END = "<!-- bench:end -->"


def readme(text: str, results: dict[str, Any]) -> str:
    """The README with its figures block replaced by this run's targets table."""
    head, found, rest = text.partition(README_START)
    _, ended, tail = rest.partition(README_END)
    if not (found and ended):
        raise ValueError("README.md has no bench:start / bench:end block")
    block = [
        README_START,
        f"The figures of {_measured(results)}, on {results['machine']['cpu']} "
        f"({results['machine']['memory']}), from [docs/benchmarks.md](docs/benchmarks.md):",
        "",
        *targets_table(results),
        README_END,
    ]
    return head + "\n".join(block) + tail


def _measured(results: dict[str, Any]) -> str:
    """ "2026-12-06 at commit abc1234: `make bench` (31 min), `make soak` (61 min)"."""
    m = results["machine"]
    runs = results.get("invocations") or [
        {"argv": results.get("argv", ""), "minutes": results["wall_minutes"], "date": ""}
    ]
    how = ", ".join(
        f"`bench/run.py{' ' + i['argv'] if i['argv'] else ''}` ({i['minutes']:.0f} min)"
        for i in runs
    )
    date = max((i.get("date") or "" for i in runs), default="") or f"{datetime.now(UTC):%Y-%m-%d}"
    return f"{date} at commit `{m['commit']}`: {how}"


#: What each part writes into the results.
KEYS = {
    "overhead": ("overhead", "bare_job", "background_writes"),
    "objects": ("objects",),
    "outage": ("outage",),
    "soak": ("soak",),
    "default-path": ("default_path",),
}


def merged(results: dict[str, Any], parts: list[str], previous: Path) -> dict[str, Any]:
    """``results`` with the other parts of the last run at the same commit (``make
    bench`` and ``make soak`` are two commands; the document shows both), never of
    another commit, of uncommitted changes, or of a quick run with a full one."""
    if not previous.exists():
        return results
    try:
        before = json.loads(previous.read_text())
    except ValueError:
        return results
    commit = results.get("machine", {}).get("commit", "")
    if (
        before.get("machine", {}).get("commit") != commit
        or commit.endswith("-dirty")
        or bool(before.get("quick")) != bool(results.get("quick"))
    ):
        return results
    out = dict(results)
    for part, keys in KEYS.items():
        if part in parts:
            continue
        for key in keys:
            if key in before:
                out[key] = before[key]
    out["invocations"] = [
        *(i for i in before.get("invocations", []) if set(i["parts"]) - set(parts)),
        *results["invocations"],
    ]
    out["wall_minutes"] = sum(i["minutes"] for i in out["invocations"])
    return out


def markdown(results: dict[str, Any], argv: str) -> str:
    m = results["machine"]
    findings = (ROOT / "bench" / "findings.md").read_text()
    section = lambda title, lines: [f"## {title}", "", *lines, ""] if lines else []  # noqa: E731
    doc = [
        "# Benchmarks",
        "",
        "<!-- Written by bench/run.py: edit bench/report.py or bench/findings.md, then rerun. -->",
        "",
        f"Measured {_measured(results)}. Figures are `min / median / max` over "
        f"{results['runs']} runs unless a column says otherwise.",
        "",
        f"- **CPU**: {m['cpu']}; **memory** {m['memory']}; kernel {m['kernel']}",
        f"- **Cluster**: {m['cluster']}",
        f"- **Operator**: Python {m['python']}; {m['libraries']}",
        "",
        CONFIGURATION,
        "",
        *section("Against the targets", targets_table(results)),
        *section("The default path on the real node", default_path_lines(results)),
    ]
    if results.get("overhead"):
        doc += section("Operator overhead", [
            "*start*: from the moment a migration may start (its creation, or the end of the "
            "previous migration of its environment) to its Job appearing; *end*: from the Job's "
            "Complete condition to the migration's Succeeded. Both from the benchmark's own "
            "watches, on one clock. All migrations are created at once, over the environments "
            "shown, so most of them queue for their environment's lock. *full collections*: "
            "the operator's collections of Python's oldest generation until the last "
            "migration succeeded (`python_gc_collections_total{generation=\"2\"}`).",
            "",
            *overhead_table(results),
        ])  # fmt: skip
        doc += section("API requests per migration", [
            "From `apiserver_request_total` before and after each run (median run shown): the "
            "whole cluster, so the Job controller, the scheduler and kwok are in it. *bare Job* "
            "is the same Job created without the operator on a quiet cluster. The last column "
            "is the operator's own writes: every write request its client sent, as the "
            "operator counts them (`pdm_api_requests_total`, read once its background Events "
            "are posted), the migration Job's create and server-side dry runs included. "
            "Resources are counted with their subresource (`postdeploymigrations/status`).",
            "",
            *requests_table(results),
        ])  # fmt: skip
    doc += section("Memory with many objects", objects_lines(results))
    if results.get("outage"):
        doc += section("Rollback while GitLab fails", [
            "End-to-end time of one rollback as its CI job sees it. *operator*: `kubectl apply` "
            "a Rollback PostDeployMigration tracking a GitLab Deployment in two projects, then "
            "`kubectl wait --for=condition=Succeeded`. *blocking CI*: `kubectl apply` the Job, "
            "`kubectl wait --for=condition=complete`, then `bench/ci_record.py` records both "
            "deployments with python-gitlab (30 s per call). GitLab is the test server on "
            "127.0.0.1: *slow* answers 10 s late, *hanging* never answers until it recovers, "
            "*down* refuses connections. It recovers after each run; *deployments left* counts "
            "what each rollback left in GitLab then.",
            "",
            *outage_table(results),
        ])  # fmt: skip
    doc += section("Soak", soak_lines(results))
    doc += [findings.rstrip(), ""]
    return "\n".join(doc)
