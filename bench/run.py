#!/usr/bin/env python3
"""Every benchmark, one command: prints the tables and writes docs/benchmarks.md.

    make bench                       # the full set, about an hour
    make bench BENCH_ARGS=--quick    # a few minutes; writes bench/results/ instead

Against ``$KUBECONFIG`` or, without it, a fresh local control plane. Parts
(``--only``): ``overhead`` (1, 50 and 500 concurrent migrations), ``objects``
(memory with 5,000 migration objects), ``soak`` (30 minutes of churn),
``outage`` (a rollback while GitLab is healthy, slow, hanging, down, against
the blocking CI approach). Raw results go to ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import objects
import outage
import overhead
import report
import soak
from harness import RESULTS, ROOT, Bench, machine_facts

PARTS = ("overhead", "objects", "soak", "outage")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run, 2-minute soak")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--runs", type=int, help="runs per measurement (default 3; 1 with --quick)")
    ap.add_argument("--pdms", type=int, nargs="+", help="concurrent migrations (1 50 500)")
    ap.add_argument("--envs", type=int, default=10, help="environments (default 10)")
    ap.add_argument("--objects", type=int, help="migration objects (default 5000)")
    ap.add_argument("--soak-minutes", type=float, help="soak length (default 30)")
    ap.add_argument(
        "--idle-seconds",
        type=float,
        help="window for the idle cluster's background writes (default 30; 10 with --quick)",
    )
    ap.add_argument(
        "--bare-jobs", type=int, default=20, help="Jobs of the bare-Job baseline (default 20)"
    )
    ap.add_argument(
        "--ci-timeout",
        type=float,
        default=30.0,
        help="per-call timeout of the blocking CI baseline in the outage comparison (default 30)",
    )
    ap.add_argument("--out", type=Path, help="Markdown file (default docs/benchmarks.md)")
    ap.add_argument("--render", type=Path, help="only write the Markdown from this results JSON")
    args = ap.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        (args.out or ROOT / "docs/benchmarks.md").write_text(
            report.markdown(results, results.get("argv", ""))
        )
        print(report.tables(results))
        return 0
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    pdms = args.pdms or ([1, 50] if quick else [1, 50, 500])
    count = args.objects or (500 if quick else 5000)
    minutes = args.soak_minutes or (2.0 if quick else 30.0)
    out = args.out or (RESULTS / "benchmarks-quick.md" if quick else ROOT / "docs/benchmarks.md")

    return measure_all(args, runs, pdms, count, minutes, out)


def measure_all(
    args: argparse.Namespace, runs: int, pdms: list[int], count: int, minutes: float, out: Path
) -> int:
    started = time.monotonic()
    bench = Bench()
    results: dict[str, Any] = {
        "machine": machine_facts(bench),
        "runs": runs,
        "argv": " ".join(sys.argv[1:]),
    }
    try:
        if "overhead" in args.only:
            idle = args.idle_seconds or (10.0 if args.quick else 30.0)
            results["background_writes"] = bench.background_writes(idle)
            results["overhead"] = []
            for n in pdms:
                for r in range(runs):
                    res = overhead.measure(bench, n, args.envs)
                    results["overhead"].append(res)
                    _progress(f"overhead n={n} run {r + 1}/{runs}", res, results)
            results["bare_job"] = overhead.bare_jobs(bench, args.bare_jobs)
        if "objects" in args.only:
            results["objects"] = objects.measure(
                bench, count, running=min(50, count), envs=args.envs
            )
            _progress("objects", results["objects"], results)
        if "outage" in args.only:
            results["outage"] = outage.measure(bench, runs, ci_timeout=args.ci_timeout)
            _progress("outage", results["outage"], results)
        if "soak" in args.only:
            results["soak"] = soak.measure(
                bench, minutes, envs=args.envs, warmup_minutes=min(5.0, minutes / 4)
            )
            _progress("soak", {k: v for k, v in results["soak"].items() if k != "samples"})
    finally:
        bench.close()
    results["wall_minutes"] = (time.monotonic() - started) / 60
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    text = report.markdown(results, results["argv"])
    print(report.tables(results))
    out.write_text(text)
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


def _progress(what: str, value: Any, results: dict[str, Any] | None = None) -> None:
    print(f"[bench] {what}: {json.dumps(value, default=str)}", file=sys.stderr, flush=True)
    if results is not None:  # what is measured so far survives a later failure
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "partial.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
