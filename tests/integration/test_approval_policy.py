"""Who may approve a plan: the shipped ValidatingAdmissionPolicy, on the real API server.

No operator is needed: the policy is the API server's, and so is its
refusal. Users are impersonated (the test's admin may), and their rights come
from RBAC as a cluster would grant them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.integration.conftest import Cluster
from tests.support import argocd
from tests.support.operator import repo_root
from tests.support.pdm import Api, migration
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PLAN = "sha256:" + "ab" * 32


@pytest.fixture
def approval_policy(cluster: Cluster, crd: None) -> Iterator[None]:
    """manifests/approval applied as shipped; removed afterwards (it is cluster-wide)."""
    out = cluster.run_kubectl("apply", "-k", str(repo_root() / "manifests" / "approval"))
    assert out.returncode == 0, out.stderr
    try:
        yield
    finally:
        cluster.run_kubectl(
            "delete", "-k", str(repo_root() / "manifests" / "approval"), "--ignore-not-found"
        )


def approve_as(cluster: Cluster, api: Api, user: str, by: str) -> Any:
    """``kubectl --as USER patch`` of spec.approval.approved (what kubectl pdm approve writes)."""
    patch = {
        "spec": {
            "approval": {
                "approved": {
                    "planHash": PLAN,
                    "by": by,
                    # A new time each attempt: always a change the policy looks at.
                    "at": f"2026-12-02T10:{uuid.uuid4().int % 60:02d}:00Z",
                    "migrations": [f"attempt {uuid.uuid4().hex[:6]}"],
                }
            }
        }
    }
    return cluster.run_kubectl(
        f"--as={user}", "-n", api.ns, "patch", "pdm", "pdm-gate", "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip


def may_patch(rbac: Any, ns: str, who: str, subject: dict[str, str]) -> None:
    """``subject`` may get and patch PostDeployMigrations in ``ns``, nothing more."""
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": f"{who}-edits"},
            "rules": [
                {
                    "apiGroups": ["pdm-operator.io"],
                    "resources": ["postdeploymigrations"],
                    "verbs": ["get", "patch"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": f"{who}-edits"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": f"{who}-edits"},
            "subjects": [subject],
        },
    )  # fmt: skip


def test_only_an_approver_may_approve_and_only_in_their_own_name(
    cluster: Cluster, api: Api, approval_policy: None
) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    # alice approves (the shipped ClusterRole); bob may patch migrations, nothing more.
    rbac.create_namespaced_role_binding(
        api.ns,
        {
            "metadata": {"name": "alice-approves"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "pdm-operator-approver",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}
            ],
        },
    )
    may_patch(
        rbac,
        api.ns,
        "bob",
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"},
    )
    api.create(migration("pdm-gate", suspend=True, preflight={}, approval={"required": True}))

    # The policy takes effect within seconds of being created.
    refused = wait_until(
        lambda: (out := approve_as(cluster, api, "bob", "bob")).returncode != 0 and out,
        timeout=60,
        what="the approval policy to refuse bob",
    )
    assert "user bob may not approve PostDeployMigrations in namespace" in refused.stderr
    assert 'needs the verb "approve"' in refused.stderr

    # An approver cannot approve in someone else's name...
    forged = approve_as(cluster, api, "alice", "bob")
    assert forged.returncode != 0
    assert "spec.approval.approved.by must be the approver's own user name (alice)" in (
        forged.stderr
    )
    # ...only in their own.
    ok = approve_as(cluster, api, "alice", "alice")
    assert ok.returncode == 0, ok.stderr
    assert api.get("pdm-gate")["spec"]["approval"]["approved"]["by"] == "alice"  # type: ignore[index]
    # Changing anything else stays open to whoever may patch (suspend is not an approval).
    other = cluster.run_kubectl(
        "--as=bob", "-n", api.ns, "patch", "pdm", "pdm-gate", "--type=merge",
        "-p", '{"spec":{"suspend":false}}',
    )  # fmt: skip
    assert other.returncode == 0, other.stderr


ARGO_CD = "system:serviceaccount:argocd:argocd-server"


def test_argo_cds_approve_action_is_admitted_once_its_service_account_may_approve(
    cluster: Cluster, api: Api, approval_policy: None
) -> None:
    """manifests/argocd's approve action, run in Argo CD's Lua interpreter and
    sent as Argo CD sends it (a merge patch, as argocd-server's ServiceAccount,
    which may patch anything: its ClusterRole in Argo CD's install)."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    argo_sa = {"kind": "ServiceAccount", "name": "argocd-server", "namespace": "argocd"}
    may_patch(rbac, api.ns, "argocd-server", argo_sa)
    api.create(migration("pdm-argo", preflight={}, approval={"required": True}))
    # What the operator shows while it waits (no operator runs in this test).
    api.custom.patch_namespaced_custom_object_status(
        "pdm-operator.io", "v1alpha1", api.ns, "postdeploymigrations", "pdm-argo",
        {"status": {
            "observedGeneration": 1, "state": "Gated", "reason": "AwaitingApproval",
            "preflight": {"phase": "Succeeded", "planHash": PLAN, "jobHash": "cd" * 32},
            "pendingMigrations": [{"version": "20261115000001", "database": "main",
                                   "name": "Add unique index on project path"}],
        }},
    )  # fmt: skip
    live = api.get("pdm-argo") or {}
    assert argocd.actions(live) == {"approve": True}
    patch = argocd.merge_patch(live, argocd.run_action("approve", live))

    def send(*dry_run: str) -> Any:
        return cluster.run_kubectl(
            f"--as={ARGO_CD}", "-n", api.ns, "patch", "pdm", "pdm-argo", "--type=merge",
            "-p", json.dumps(patch), *dry_run,
        )  # fmt: skip

    # Asked with a server-side dry run (admission runs, nothing is written)
    # until the policy, created for this test, is in effect.
    refused = wait_until(
        lambda: (out := send("--dry-run=server")).returncode != 0 and out,
        timeout=60,
        what="the approval policy to refuse Argo CD's ServiceAccount",
    )
    assert f"user {ARGO_CD} may not approve PostDeployMigrations" in refused.stderr
    assert send().returncode != 0
    assert "approved" not in ((api.get("pdm-argo") or {})["spec"].get("approval") or {})

    rbac.create_namespaced_role_binding(
        api.ns,
        {
            "metadata": {"name": "argocd-server-approves"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "pdm-operator-approver"},
            "subjects": [argo_sa],
        },
    )  # fmt: skip
    admitted = wait_until(
        lambda: (out := send()).returncode == 0 and out,
        timeout=30,
        what="the policy to admit Argo CD's approval once its ServiceAccount may approve",
    )
    assert admitted.returncode == 0
    approved = (api.get("pdm-argo") or {})["spec"]["approval"]["approved"]
    assert (approved["planHash"], approved["by"]) == (PLAN, ARGO_CD)
    assert approved["migrations"] == ["20261115000001 (main)"]
    assert approved["jobHash"] == "cd" * 32


def test_a_mark_executed_is_recorded_only_in_its_creators_own_name(
    cluster: Cluster, api: Api, approval_policy: None
) -> None:
    """markExecuted.by is what the history keeps as who skipped a migration."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role(
        api.ns,
        {
            "metadata": {"name": "carol-creates"},
            "rules": [
                {
                    "apiGroups": ["pdm-operator.io"],
                    "resources": ["postdeploymigrations"],
                    "verbs": ["create"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        api.ns,
        {
            "metadata": {"name": "carol-creates"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "carol-creates"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": "carol"}],
        },
    )  # fmt: skip

    def create_as_carol(name: str, by: str, *dry_run: str) -> Any:
        body = migration(
            name,
            suspend=True,
            preflight={},
            migrations={
                "markExecuted": {"versions": ["20261115000002"], "reason": "INC-1", "by": by}
            },
        )
        body["metadata"]["namespace"] = api.ns
        return cluster.run_kubectl(
            "--as=carol", "-n", api.ns, "create", *dry_run, "-f", "-", input=json.dumps(body)
        )

    # Until the policy is in force, probe with server-side dry runs: a probe that
    # got through before it was would leave the name taken (AlreadyExists).
    wait_until(
        lambda: create_as_carol("pdm-forged", "alice", "--dry-run=server").returncode != 0,
        timeout=60,
        what="the approval policy to refuse a mark in another's name",
    )
    refused = create_as_carol("pdm-forged", "alice")
    assert refused.returncode != 0
    assert "spec.migrations.markExecuted.by must be the creator's own user name (carol)" in (
        refused.stderr
    )
    ok = create_as_carol("pdm-own", "carol")
    assert ok.returncode == 0, ok.stderr
