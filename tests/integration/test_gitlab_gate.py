"""The whole environment, across clusters, from GitLab's record: a strict GitLab
(the finder's rules, 5xx) answers the Deployments API for four "clusters" of
gprd, and the migration on the real control plane starts only after the last.

The gate keeps GitLab's answers (and errors) 15 s per GitLab environment and a
held migration looks again every 10 s, so each step is seen within about 25 s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.conftest import Cluster
from tests.support.fake_gitlab import FakeGitLab
from tests.support.operator import OperatorProcess, pythonpath_env
from tests.support.pdm import Api, migration
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TOKEN = "glpat-gate-" + "x" * 12
PROJECT = "gitlab-org/gitlab"
#: GitLab.com's gprd as release tooling records it: canary, the regional
#: cluster and the zonal ones, deployed in this order.
CLUSTERS = ["gprd-cny", "gprd-regional", "gprd-zone-b", "gprd-zone-c"]
IMAGE = {"reference": "registry.example.com/gitlab-toolbox-ee:v18.6.0"}


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    with FakeGitLab(token=TOKEN) as server:
        yield server


@pytest.fixture
def gate_operator(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace, {"metadata": {"name": "gitlab-read"}, "stringData": {"token": TOKEN}}
    )
    proc = OperatorProcess(pythonpath_env(cluster.env()), namespace, tmp_path / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        log = proc.log()
        print(f"----- operator log -----\n{log[-20000:]}")
        assert TOKEN not in log


def reason(api: Api, name: str) -> str:
    return str((api.condition(name, "Gated") or {}).get("reason") or "")


def wait_gated(api: Api, name: str, why: str, *words: str) -> dict[str, Any]:
    held = wait_until(
        lambda: (
            (c := api.condition(name, "Gated"))
            and c["status"] == "True"
            and c["reason"] == why
            and all(w in c["message"] for w in words)
            and c
        ),
        timeout=60,
        what=f"pdm/{name} Gated {why} {words}",
    )
    assert api.jobs() == []
    return dict(held)


def gate_errors(operator: OperatorProcess) -> float:
    text = operator.metrics()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pdm_operator_gitlab_gate_errors_total{")
    )


def test_the_gate_opens_only_when_the_last_cluster_runs_the_commit_and_none_deploys(
    api: Api, gate_operator: OperatorProcess, gitlab: FakeGitLab
) -> None:
    env = f"gprd-{uuid.uuid4().hex[:6]}"
    old, new = gitlab.add_commits(PROJECT, 2)
    for each in CLUSTERS:  # every cluster runs the old version
        gitlab.add_api_deployment(PROJECT, each, "master", old)
    api.declare(
        env,
        gitlabDeployments={
            "url": gitlab.url,
            "project": PROJECT,
            "environments": CLUSTERS,
            "tokenSecretRef": {"name": "gitlab-read", "key": "token"},
        },
    )
    api.create(
        migration(
            "pdm-gprd",
            env=env,
            image=IMAGE,
            # An auto-deploy version carries the GitLab commit (its first 11 hex digits).
            gitlabVersion=f"18.7.202612061300-{new[:11]}.{'0' * 11}",
        )
    )

    # The canary runs it, the rest still the old version.
    gitlab.add_api_deployment(PROJECT, "gprd-cny", "master", new)
    wait_gated(api, "pdm-gprd", "GitLabDeploymentPending", "gprd-regional", old[:11])

    # Regional and zone b done, zone c deploying.
    gitlab.add_api_deployment(PROJECT, "gprd-regional", "master", new)
    gitlab.add_api_deployment(PROJECT, "gprd-zone-b", "master", new)
    zone_c = gitlab.add_api_deployment(PROJECT, "gprd-zone-c", "master", new, status="running")
    wait_gated(api, "pdm-gprd", "GitLabDeploymentPending", "gprd-zone-c")

    # GitLab goes down: the gate stays shut, says so, and counts it.
    gitlab.faults.error(500, path=r".*/deployments.*")
    wait_gated(api, "pdm-gprd", "GitLabUnreachable", "500")
    assert gate_errors(gate_operator) > 0
    gitlab.faults.clear()

    # Zone c finishes, but the next version's canary deployment is already running.
    gitlab.move_deployment(PROJECT, zone_c["id"], "success")
    newer = gitlab.add_api_deployment(PROJECT, "gprd-cny", "master", new, status="running")
    wait_gated(api, "pdm-gprd", "GitLabDeployInProgress", "gprd-cny", str(newer["id"]))

    # It is canceled: every cluster runs the commit, nothing deploys: the run starts.
    gitlab.move_deployment(PROJECT, newer["id"], "canceled")
    api.wait_condition("pdm-gprd", "Succeeded", timeout=90)
    assert len(api.jobs()) == 1


def test_an_open_change_request_in_gitlab_locks_the_environment_until_it_is_closed(
    api: Api, gate_operator: OperatorProcess, gitlab: FakeGitLab
) -> None:
    env = f"gprd-{uuid.uuid4().hex[:6]}"
    production = "gitlab-com/gl-infra/production"
    labels = ["change::in-progress", "blocks deployments"]
    change = gitlab.add_issue(production, "Failover test of the main database", labels=labels)
    api.declare(
        env,
        changeLockFrom={
            "url": gitlab.url,
            "project": production,
            "labels": labels,
            "tokenSecretRef": {"name": "gitlab-read", "key": "token"},
        },
    )
    api.create(migration("pdm-locked", env=env, image=IMAGE))
    wait_gated(api, "pdm-locked", "ChangeLocked", f"#{change['iid']}", "Failover test")

    # GitLab down: whether it is locked cannot be known, so it stays held.
    gitlab.faults.error(502, path=r".*/issues.*")
    wait_gated(api, "pdm-locked", "ChangeLockUnknown", "502")
    gitlab.faults.clear()
    wait_gated(api, "pdm-locked", "ChangeLocked", f"#{change['iid']}")

    gitlab.close_issue(production, change["iid"])
    api.wait_condition("pdm-locked", "Succeeded", timeout=90)
