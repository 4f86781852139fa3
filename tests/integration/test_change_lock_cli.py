"""Who may change-lock an environment: ``kubectl pdm lock`` and ``unlock`` against
the shipped ValidatingAdmissionPolicy and locker ClusterRole (manifests/change-lock),
on the real API server.

No operator is needed: the policy and RBAC are the API server's, and so are
their refusals. A forged ``by`` is written with ``kubectl --as`` (the test's
admin may impersonate); the plugin runs as ServiceAccounts with tokens of
their own (the official Python client does not impersonate), whose rights come
from RBAC as a cluster would grant them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.conftest import Cluster
from tests.support.identity import service_account_kubeconfig
from tests.support.operator import pythonpath_env, repo_root
from tests.support.pdm import ENVIRONMENTS, GROUP, VERSION
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

POLICY = repo_root() / "manifests" / "change-lock"


@pytest.fixture
def change_lock_policy(cluster: Cluster, crd: None) -> Iterator[None]:
    """manifests/change-lock applied as shipped; removed afterwards (it is cluster-wide)."""
    out = cluster.run_kubectl("apply", "-k", str(POLICY))
    assert out.returncode == 0, out.stderr
    try:
        yield
    finally:
        cluster.run_kubectl("delete", "-k", str(POLICY), "--ignore-not-found")


class ClusterScoped:
    """Cluster-scoped objects a test creates (an environment, bindings), deleted after it."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.suffix = uuid.uuid4().hex[:6]
        self._undo: list[Any] = []

    def environment(self, **spec: Any) -> str:
        name = f"t-lock-{self.suffix}"
        self.custom.create_cluster_custom_object(
            GROUP, VERSION, ENVIRONMENTS,
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PostDeployEnvironment",
             "metadata": {"name": name}, "spec": {"namespaces": ["gitlab"], **spec}},
        )  # fmt: skip
        self._undo.append(
            lambda: self.custom.delete_cluster_custom_object(GROUP, VERSION, ENVIRONMENTS, name)
        )
        return name

    def role(self, name: str, verbs: list[str]) -> str:
        name = f"{name}-{self.suffix}"
        self.rbac.create_cluster_role(
            {"metadata": {"name": name},
             "rules": [{"apiGroups": [GROUP], "resources": [ENVIRONMENTS], "verbs": verbs}]}
        )  # fmt: skip
        self._undo.append(lambda: self.rbac.delete_cluster_role(name))
        return name

    def bind(self, role: str, subject: dict[str, str]) -> None:
        name = f"{role}-{subject['name'].replace(':', '-')}-{self.suffix}"[:253]
        self.rbac.create_cluster_role_binding(
            {"metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": role},
             "subjects": [subject]}
        )  # fmt: skip
        self._undo.append(lambda: self.rbac.delete_cluster_role_binding(name))

    def undo(self) -> None:
        for step in reversed(self._undo):
            try:
                step()
            except ApiException as e:
                if e.status != 404:
                    raise


@pytest.fixture
def scoped(cluster: Cluster, crd: None) -> Iterator[ClusterScoped]:
    made = ClusterScoped(cluster.api)
    try:
        yield made
    finally:
        made.undo()


def account(cluster: Cluster, namespace: str, name: str, path: Path) -> tuple[str, Path]:
    """A new ServiceAccount's user name and a kubeconfig that authenticates as it."""
    client.CoreV1Api(cluster.api).create_namespaced_service_account(
        namespace, {"metadata": {"name": name}}
    )
    return service_account_kubeconfig(cluster.api, namespace, name, path)


def kubectl_pdm(cluster: Cluster, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl pdm ARGS`` (the plugin's entry point) with ``kubeconfig``'s identity."""
    env = pythonpath_env(cluster.env()) | {
        "KUBECONFIG": str(kubeconfig),
        "PATH": cluster.env()["PATH"] + ":" + str(Path(sys.executable).parent),
    }
    return subprocess.run(
        ["kubectl-pdm", *args, "--kubeconfig", str(kubeconfig)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lock_as(
    cluster: Cluster, user: str, env: str, by: str, *flags: str, reason: str = "CR 1"
) -> Any:
    """``kubectl --as USER patch`` of spec.changeLock (what kubectl pdm lock writes)."""
    lock = {"reason": reason, "by": by, "at": "2026-12-02T10:00:00Z"}
    return cluster.run_kubectl(
        f"--as={user}", "patch", "pdenv", env, "--type=merge",
        "-p", json.dumps({"spec": {"changeLock": lock}}), *flags,
    )  # fmt: skip


def policy_in_effect(cluster: Cluster, env: str) -> None:
    """Wait until the policy, created for this test, refuses a forged lock: asked
    with a server-side dry run (admission runs, nothing is written), as alice,
    who may patch environments (bound to the locker role)."""
    wait_until(
        lambda: (
            "must be the locker's own user name"
            in (lock_as(cluster, "alice", env, "bob", "--dry-run=server").stderr)
        ),
        timeout=60,
        what="the change-lock policy to refuse a lock in someone else's name",
    )


def change_lock(scoped: ClusterScoped, env: str) -> Any:
    found = scoped.custom.get_cluster_custom_object(GROUP, VERSION, ENVIRONMENTS, env)
    return found["spec"].get("changeLock")


def user(name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def test_a_lock_is_admitted_only_in_its_writers_own_name(
    cluster: Cluster, scoped: ClusterScoped, change_lock_policy: None
) -> None:
    env = scoped.environment()
    for name in ("alice", "carol"):
        scoped.bind("pdm-operator-locker", user(name))
    # The policy takes effect within seconds of being created.
    policy_in_effect(cluster, env)
    forged = lock_as(cluster, "alice", env, "bob")
    assert forged.returncode != 0
    assert "spec.changeLock.by must be the locker's own user name (alice), not bob" in (
        forged.stderr
    )
    assert change_lock(scoped, env) is None

    own = lock_as(cluster, "alice", env, "alice")
    assert own.returncode == 0, own.stderr
    assert change_lock(scoped, env)["by"] == "alice"
    # Another locker may not rewrite alice's lock and leave her name on it...
    taken = lock_as(cluster, "carol", env, "alice", reason="CR 2")
    assert taken.returncode != 0
    assert "(carol), not alice" in taken.stderr
    # ...while the rest of the spec stays the platform admin's to edit, lock or no lock.
    edited = cluster.run_kubectl(
        "patch", "pdenv", env, "--type=merge", "-p", '{"spec":{"namespaces":["gitlab","ops"]}}'
    )
    assert edited.returncode == 0, edited.stderr
    assert change_lock(scoped, env)["reason"] == "CR 1"


def test_a_locker_may_change_the_lock_and_nothing_else_of_the_environment(
    cluster: Cluster, scoped: ClusterScoped, change_lock_policy: None
) -> None:
    env = scoped.environment()
    scoped.bind("pdm-operator-locker", user("alice"))
    policy_in_effect(cluster, env)
    # Patch covers the whole object: without the policy, a locker could let
    # another namespace run this environment's migrations.
    widened = cluster.run_kubectl(
        "--as=alice", "patch", "pdenv", env, "--type=merge",
        "-p", '{"spec":{"namespaces":["gitlab","mine"]}}',
    )  # fmt: skip
    assert widened.returncode != 0
    assert "alice may change only spec.changeLock" in widened.stderr
    both = cluster.run_kubectl(
        "--as=alice", "patch", "pdenv", env, "--type=merge",
        "-p", json.dumps({"spec": {"changeLock": {"reason": "CR 3", "by": "alice"},
                                   "serviceAccounts": ["gitlab-migrations"]}}),
    )  # fmt: skip
    assert both.returncode != 0
    assert change_lock(scoped, env) is None
    found = scoped.custom.get_cluster_custom_object(GROUP, VERSION, ENVIRONMENTS, env)
    assert found["spec"]["namespaces"] == ["gitlab"]
    assert found["spec"]["serviceAccounts"] == []
    # Nor may a locker hold up its deletion, or hand it to the garbage collector.
    for metadata in (
        {"finalizers": ["example.com/keep"]},
        {"ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": "gone",
                              "uid": "00000000-0000-0000-0000-000000000000"}]},
    ):  # fmt: skip
        refused = cluster.run_kubectl(
            "--as=alice", "patch", "pdenv", env, "--type=merge",
            "-p", json.dumps({"metadata": metadata}),
        )  # fmt: skip
        assert refused.returncode != 0
        assert "alice may change only spec.changeLock" in refused.stderr
    assert lock_as(cluster, "alice", env, "alice").returncode == 0


def test_kubectl_pdm_lock_and_unlock_by_a_user_bound_to_the_locker_role(
    cluster: Cluster,
    namespace: str,
    scoped: ClusterScoped,
    change_lock_policy: None,
    tmp_path: Path,
) -> None:
    env = scoped.environment()
    me, kubeconfig = account(cluster, namespace, "release-manager", tmp_path / "rm.kubeconfig")
    scoped.bind("pdm-operator-locker", {"kind": "ServiceAccount", "name": "release-manager",
                                        "namespace": namespace})  # fmt: skip
    scoped.bind("pdm-operator-locker", user("alice"))
    policy_in_effect(cluster, env)

    locked = kubectl_pdm(
        cluster, kubeconfig, "lock", env, "--reason", "CR 1234: database failover", "--for", "2h"
    )
    assert locked.returncode == 0, locked.stderr
    assert f"postdeployenvironment/{env} locked by {me} at " in locked.stdout
    written = change_lock(scoped, env)
    assert (written["by"], written["reason"]) == (me, "CR 1234: database failover")
    assert written["until"] > written["at"]
    listed = kubectl_pdm(cluster, kubeconfig, "locks")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(env))
    assert row.split()[1:3] == ["locked", me]

    unlocked = kubectl_pdm(cluster, kubeconfig, "unlock", env)
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stdout == (
        f"postdeployenvironment/{env} unlocked (it was locked by {me} since {written['at']} "
        f"until {written['until']}: CR 1234: database failover)\n"
    )
    assert change_lock(scoped, env) is None
    again = kubectl_pdm(cluster, kubeconfig, "unlock", env)
    assert (again.returncode, again.stdout) == (
        0,
        f"postdeployenvironment/{env} is not locked: nothing to do\n",
    )

    # Someone else's lock: refused without --force, taken over with it, in our name.
    assert lock_as(cluster, "alice", env, "alice", reason="incident 42").returncode == 0
    refused = kubectl_pdm(cluster, kubeconfig, "lock", env, "--reason", "CR 7")
    assert refused.returncode == 1
    assert f"refused: {env}: already locked by alice since 2026-12-02T10:00:00Z: incident 42" in (
        refused.stderr
    )
    assert change_lock(scoped, env)["by"] == "alice"
    forced = kubectl_pdm(cluster, kubeconfig, "lock", env, "--reason", "CR 7", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"{env}: replaces the lock by alice since 2026-12-02T10:00:00Z: incident 42" in (
        forced.stdout
    )
    assert change_lock(scoped, env)["by"] == me

    undeclared = kubectl_pdm(cluster, kubeconfig, "lock", f"{env}-x", "--reason", "CR 7")
    assert undeclared.returncode == 2
    assert f"environment '{env}-x' is not declared" in undeclared.stderr


def test_a_user_who_may_not_patch_the_environment_is_told_what_is_missing(
    cluster: Cluster,
    namespace: str,
    scoped: ClusterScoped,
    change_lock_policy: None,
    tmp_path: Path,
) -> None:
    env = scoped.environment()
    scoped.bind("pdm-operator-locker", user("alice"))
    assert lock_as(cluster, "alice", env, "alice").returncode == 0
    who, kubeconfig = account(cluster, namespace, "watcher", tmp_path / "watcher.kubeconfig")
    scoped.bind(scoped.role("pdm-env-reader", ["get", "list"]),
                {"kind": "ServiceAccount", "name": "watcher", "namespace": namespace})  # fmt: skip

    # RBAC reads its bindings from a watch: the reader may get the environment
    # a moment after the binding is created.
    refused = wait_until(
        lambda: (
            (out := kubectl_pdm(cluster, kubeconfig, "lock", env, "--reason", "x", "--force"))
            .returncode == 2 and "cannot patch" in out.stderr and out
        ),
        timeout=30,
        what="the reader's binding in effect, and its patch refused",
    )  # fmt: skip
    assert f"error: locking '{env}' was refused: " in refused.stderr
    assert f'User "{who}" cannot patch resource "postdeployenvironments"' in refused.stderr
    assert "it needs patch on postdeployenvironments.pdm-operator.io" in refused.stderr
    assert "ClusterRole <release>-locker (pdm-operator-locker by default)" in refused.stderr

    unlock = kubectl_pdm(cluster, kubeconfig, "unlock", env)
    assert unlock.returncode == 2
    assert "it needs patch on postdeployenvironments.pdm-operator.io" in unlock.stderr
    assert change_lock(scoped, env)["by"] == "alice"
