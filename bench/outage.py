"""A rollback's end-to-end time while GitLab is healthy, slow, hanging or down.

Two ways to run the same rollback on the same cluster, each timed from the
CI job's first command to its last, as a pipeline would see it:

* **operator**: ``kubectl apply`` a Rollback PostDeployMigration that tracks
  a GitLab Deployment in two projects, then ``kubectl wait`` for Succeeded.
  The reports go through the operator's outbox;
* **blocking CI** (the baseline, what a deployer's CI does today):
  ``kubectl apply`` the migration Job, ``kubectl wait`` for it to complete,
  then record the deployment in both projects synchronously with
  python-gitlab (``bench/ci_record.py``, 30 s per call).

GitLab is the test server of ``tests/support`` on 127.0.0.1, which follows
GitLab's deployments API, with its faults: ``slow`` answers every call 10 s
late, ``hanging`` never answers until the fault is cleared, ``down`` refuses
connections. After each faulty run GitLab recovers, and the deployments each
rollback left are counted (the operator's outbox delivers once GitLab is
back; the baseline's lost or late calls stay lost or half-done).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.fake_gitlab import FakeGitLab

from harness import GROUP, PLURAL, ROOT, VERSION, Bench, bare_job, is_true, tracked, wait_for

TOKEN = "glpat-BENCH-outage-token"
SHA = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
PROJECTS = ["gitlab-org/gitlab", "gitlab-org/omnibus-gitlab"]
FAULTS = ("healthy", "slow", "hanging", "down")
APPROACHES = ("operator", "blocking CI")
SLOW_SECONDS = 10.0
#: The blocking CI job's per-call timeout (python-gitlab has none by default).
CI_TIMEOUT = 30.0


def _inject(gitlab: FakeGitLab, fault: str) -> None:
    if fault == "slow":
        gitlab.faults.slow(SLOW_SECONDS)
    elif fault == "hanging":
        gitlab.faults.hang()
    elif fault == "down":
        gitlab.down()


def _recover(gitlab: FakeGitLab) -> None:
    if not gitlab.is_up:
        gitlab.up()
    gitlab.faults.clear()


def _timed(bench: Bench, commands: list[list[str]], env: dict[str, str]) -> tuple[float, bool]:
    """Run the CI job's commands in order, stopping at the first failure."""
    start = time.monotonic()
    ok = True
    for argv in commands:
        if subprocess.run(argv, env=env, capture_output=True, check=False).returncode != 0:
            ok = False
            break
    return time.monotonic() - start, ok


def one(
    bench: Bench,
    ns: str,
    gitlab: FakeGitLab,
    fault: str,
    approach: str,
    i: int,
    ci_timeout: float = CI_TIMEOUT,
) -> dict:
    environment = f"rb-{fault}-{'op' if approach == 'operator' else 'ci'}-{i}"
    name = environment
    if approach == "operator":
        bench.declare(ns, {environment})
    k = [bench.kubectl, "-n", ns]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        body = (
            tracked(name, environment, gitlab.url, SHA, PROJECTS, pipeline="Rollback")
            if approach == "operator"
            else bare_job(name)
        )
        json.dump(body, f)
    if approach == "operator":
        commands = [
            [*k, "apply", "-f", f.name],
            [*k, "wait", "--for=condition=Succeeded", f"pdm/{name}", "--timeout=600s"],
        ]
    else:
        commands = [
            [*k, "apply", "-f", f.name],
            [*k, "wait", "--for=condition=complete", f"job/{name}", "--timeout=600s"],
            [sys.executable, str(ROOT / "bench" / "ci_record.py"), gitlab.url, f"db/{environment}",
             SHA, *PROJECTS, "--timeout", str(ci_timeout)],
        ]  # fmt: skip
    _inject(gitlab, fault)
    try:
        seconds, ok = _timed(bench, commands, {**bench.env, "GITLAB_TOKEN": TOKEN})
    finally:
        _recover(gitlab)
    Path(f.name).unlink()
    if approach == "operator" and ok:
        wait_for(lambda: _reported(bench, ns, name), 600, f"{name} to be Reported", 1.0)
    else:
        time.sleep(1.0)  # requests released by the recovery land; not measured
    deployments = [
        d
        for project in PROJECTS
        for d in gitlab.deployments(project)
        if d["environment"]["name"] == f"db/{environment}"  # the operator's default
    ]
    return {
        "fault": fault,
        "approach": approach,
        "seconds": seconds,
        "ok": ok,
        "deployments": len(deployments),
        "successful": sum(1 for d in deployments if d["status"] == "success"),
        "expected": len(PROJECTS),
    }


def _reported(bench: Bench, ns: str, name: str) -> bool:
    obj = bench.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return is_true(obj, "Reported")


def measure(
    bench: Bench, runs: int, faults: tuple[str, ...] = FAULTS, ci_timeout: float = CI_TIMEOUT
) -> list[dict[str, Any]]:
    ns = bench.namespace("bench-outage")
    gitlab = FakeGitLab(token=TOKEN).start()
    for project in PROJECTS:  # the version exists in each project (GitLab checks)
        gitlab.add_commits(project, shas=[SHA])
    results = []
    try:
        bench.gitlab_token(ns, TOKEN)
        with bench.operator(ns):
            for i in range(runs):
                for fault in faults:
                    for approach in APPROACHES:
                        results.append(one(bench, ns, gitlab, fault, approach, i, ci_timeout))
    finally:
        gitlab.stop()
        bench.delete_namespace(ns)
    return results
