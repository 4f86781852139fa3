"""The benchmark command works against any cluster, end to end, in its smallest size.

The figures are not asserted (they are measurements, not tests); what is:
the command finishes, writes every section, and the operator's side of the
GitLab outage comparison delivered each rollback's deployments exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import report  # bench/report.py (bench/ is on pytest's pythonpath)
from tests.integration.conftest import Cluster
from tests.support.operator import pythonpath_env, repo_root

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_make_bench_quick_writes_every_section(cluster: Cluster, crd: None, tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    env = {**pythonpath_env(cluster.env()), "PDM_BENCH_RESULTS": str(tmp_path)}
    if cluster.local_cluster is not None and cluster.database is not None:
        # The default path on this suite's own real node and PostgreSQL.
        env["PDM_BENCH_LOCAL_CLUSTER"] = cluster.local_cluster.name
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--pdms", "1", "--objects", "20",
         "--soak-minutes", "0.15", "--ci-timeout", "2", "--idle-seconds", "2",
         "--bare-jobs", "3", "--rounds", "1", "--node-envs", "1", "--out", str(out),
         "--only", "overhead", "objects", "outage", "default-path", "soak"],
        cwd=repo_root(), env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:] + proc.stdout[-5000:]

    text = out.read_text()
    for section in report.SECTIONS:
        assert f"## {section}" in text
    assert "| 1 | 1 |" in text  # the overhead row for one migration
    assert text.splitlines()[-1]  # the findings are appended
    assert "| ≤ 10 API writes per PDM outside reporting |" in proc.stdout  # the printed table

    results = json.loads((tmp_path / "latest.json").read_text())
    (run,) = results["overhead"]
    assert (run["completed"], run["duplicate_jobs"]) == (1, 0)
    assert results["objects"]["objects"] == 20
    operator = [r for r in results["outage"] if r["approach"] == "operator"]
    assert {r["fault"] for r in operator} == {"healthy", "slow", "hanging", "down"}
    assert all(r["ok"] and r["successful"] == r["deployments"] == 2 for r in operator)
    ci = {r["fault"]: r for r in results["outage"] if r["approach"] == "blocking CI"}
    assert not ci["down"]["ok"]
    assert ci["down"]["deployments"] == 0
    assert results["soak"]["migrations"] >= 1
    assert results["soak"]["duplicate_deployments"] == 0

    # The default path really ran its migrations: each arm's run counts only
    # when both databases then record every post-deployment version.
    path = results["default_path"]
    if "PDM_BENCH_LOCAL_CLUSTER" not in env:
        assert "a cluster named by KUBECONFIG has none" in path["skipped"]
        return
    assert path["ok"] == path["of"] == {"operator": 1, "bare": 1, "no pre-flight": 1}, path
    (with_preflight,) = [r for r in path["runs"] if r["arm"] == "operator"]
    assert with_preflight["preflight_jobs"] == 1
    assert path["duplicate_jobs"] == 0
    assert path["ratio"] > 0
    # The operator's writes with and without the pre-flight, as the issue compares them.
    assert path["requests"]["operator"]["operator_requests"]["POST jobs"] == 2  # pre-flight + Job
    assert path["requests"]["no pre-flight"]["operator_requests"]["POST jobs"] == 1
    assert "## The default path on the real node" in text
