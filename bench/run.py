#!/usr/bin/env python3
"""The benchmarks: prints the tables and writes docs/benchmarks.md.

    make bench                       # every part but the soak, about 35 minutes
    make soak                        # the 60-minute soak, added to the same document
    make bench BENCH_ARGS=--quick    # a few minutes; writes bench/results/ instead

Against ``$KUBECONFIG`` or, without it, a fresh local control plane. Parts
(``--only``): ``overhead`` (1, 50 and 500 concurrent migrations), ``objects``
(memory with 5,000 migration objects), ``outage`` (a rollback while GitLab is
healthy, slow, hanging, down, against the blocking CI approach),
``default-path`` (the product's defaults on the real node, against the bare
chart Job; a cluster of its own), ``soak`` (60 minutes of churn; only when
named). Raw results go to ``bench/results/latest.json``; a run keeps the other
parts of the previous run of the same commit, so ``make bench`` and ``make
soak`` make one document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "hack"))  # what it imports

import default_path
import objects
import outage
import overhead
import report
import soak
from harness import RESULTS, ROOT, Bench, machine_facts

PARTS = ("overhead", "objects", "outage", "default-path", "soak")
#: ``make bench``: every part but the hour-long soak (``make soak``).
DEFAULT_PARTS = ("overhead", "objects", "outage", "default-path")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run, 2-minute soak")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS))
    ap.add_argument("--runs", type=int, help="runs per measurement (default 3; 1 with --quick)")
    ap.add_argument("--pdms", type=int, nargs="+", help="concurrent migrations (1 50 500)")
    ap.add_argument("--envs", type=int, default=10, help="environments (default 10)")
    ap.add_argument("--objects", type=int, help="migration objects (default 5000)")
    ap.add_argument("--soak-minutes", type=float, help="soak length (default 60)")
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
    ap.add_argument(
        "--rounds", type=int, help="rounds of the default path on the real node (5; 1 quick)"
    )
    ap.add_argument(
        "--node-envs", type=int, default=4, help="environments of the default path (default 4)"
    )
    ap.add_argument("--out", type=Path, help="Markdown file (default docs/benchmarks.md)")
    ap.add_argument("--render", type=Path, help="only write the Markdown from this results JSON")
    args = ap.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        out = args.out or ROOT / "docs/benchmarks.md"
        out.write_text(report.markdown(results, results.get("argv", "")))
        _readme(out, results)
        print(report.tables(results))
        return 0
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    pdms = args.pdms or ([1, 50] if quick else [1, 50, 500])
    count = args.objects or (500 if quick else 5000)
    minutes = args.soak_minutes or (2.0 if quick else 60.0)
    out = args.out or (RESULTS / "benchmarks-quick.md" if quick else ROOT / "docs/benchmarks.md")

    return measure_all(args, runs, pdms, count, minutes, out)


def measure_all(
    args: argparse.Namespace, runs: int, pdms: list[int], count: int, minutes: float, out: Path
) -> int:
    started = time.monotonic()
    results: dict[str, Any] = {"runs": runs, "quick": args.quick}
    if set(args.only) - {"default-path"}:  # the kwok parts share one cluster
        bench = Bench()
        results["machine"] = machine_facts(bench)
        try:
            _kwok_parts(bench, args, results, runs, pdms, count, minutes)
        finally:
            bench.close()
    if "default-path" in args.only:
        results["default_path"] = _default_path(args, results)
        _progress("default path", _brief(results["default_path"]), results)
    results["wall_minutes"] = (time.monotonic() - started) / 60
    results["invocations"] = [
        {
            "argv": " ".join(sys.argv[1:]),
            "parts": list(args.only),
            "minutes": results["wall_minutes"],
            "date": f"{datetime.now(UTC):%Y-%m-%d}",
        }
    ]
    results = report.merged(results, args.only, RESULTS / "latest.json")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    text = report.markdown(results, " ".join(sys.argv[1:]))
    print(report.tables(results))
    out.write_text(text)
    print(f"\nwrote {out}", file=sys.stderr)
    _readme(out, results)
    return 0


def _readme(out: Path, results: dict[str, Any]) -> None:
    """The README's figures, from the same results as docs/benchmarks.md (not a quick run's)."""
    if out.resolve() == (ROOT / "docs/benchmarks.md").resolve():
        readme = ROOT / "README.md"
        readme.write_text(report.readme(readme.read_text(), results))
        print(f"wrote the figures in {readme}", file=sys.stderr)


def _kwok_parts(
    bench: Bench,
    args: argparse.Namespace,
    results: dict[str, Any],
    runs: int,
    pdms: list[int],
    count: int,
    minutes: float,
) -> None:
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
        results["objects"] = objects.measure(bench, count, running=min(50, count), envs=args.envs)
        _progress("objects", results["objects"], results)
    if "outage" in args.only:
        results["outage"] = outage.measure(bench, runs, ci_timeout=args.ci_timeout)
        _progress("outage", results["outage"], results)
    if "soak" in args.only:
        results["soak"] = soak.measure(
            bench, minutes, envs=args.envs, warmup_minutes=min(5.0, minutes / 4)
        )
        _progress("soak", {k: v for k, v in results["soak"].items() if k != "samples"})


def _default_path(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """On the real node: a cluster of its own (kubelet, containerd, PostgreSQL beside
    kwok) when there is no KUBECONFIG, so the kwok figures never share a machine
    with a kubelet."""
    rounds = args.rounds or (1 if args.quick else 5)
    node = Bench("pdm-bench-node", real_node=True)
    try:
        results.setdefault("machine", machine_facts(node))
        result = default_path.measure(node, rounds=rounds, envs=args.node_envs)
        with contextlib.suppress(Exception):  # what ran the pods, for the report
            result["node"] = default_path.node_facts(node)
        return result
    finally:
        node.close()


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "runs"}


def _progress(what: str, value: Any, results: dict[str, Any] | None = None) -> None:
    print(f"[bench] {what}: {json.dumps(value, default=str)}", file=sys.stderr, flush=True)
    if results is not None:  # what is measured so far survives a later failure
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "partial.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
