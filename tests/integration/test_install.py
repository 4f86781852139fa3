"""The install manifests and the Helm chart work as shipped: least-privilege
RBAC that is enough for everything the operator does, and restricted Pod
Security for the operator's pod and the migration Jobs. Each proof runs for
both install paths: `kubectl apply -k manifests/overlays/cluster-wide` and
`helm install charts/pdm-operator`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.conftest import Cluster
from tests.support import chart, helm, identity
from tests.support.fake_gitlab import FakeGitLab
from tests.support.operator import OperatorProcess, pythonpath_env, repo_root
from tests.support.pdm import Api, migration, toolbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

OPERATOR_NS = "pdm-operator"
SA = f"system:serviceaccount:{OPERATOR_NS}:pdm-operator"
TOKEN = "glpat-install-test-0c1d"


def rendered(cluster: Cluster, overlay: str) -> list[dict[str, Any]]:
    out = cluster.run_kubectl("kustomize", str(repo_root() / "manifests" / "overlays" / overlay))
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def namespace_gone(cluster: Cluster) -> bool:
    try:
        client.CoreV1Api(cluster.api).read_namespace(OPERATOR_NS)
    except ApiException as e:
        return e.status == 404
    return False


@pytest.fixture(scope="module", params=["kustomize", "helm"])
def installed(
    cluster: Cluster, crd: None, request: pytest.FixtureRequest
) -> Iterator[list[dict[str, Any]]]:
    """The operator installed cluster-wide, the way a platform engineer would:
    the kustomize overlay with `kubectl apply -k`, or the chart with `helm
    install` into a namespace labelled restricted. Removed afterwards, but
    the CRD. Yields the objects installed."""
    wait_until(
        lambda: namespace_gone(cluster),
        timeout=120,
        what=f"an earlier {OPERATOR_NS} namespace to go",
    )
    if request.param == "kustomize":
        out = cluster.run_kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            str(repo_root() / "manifests" / "overlays" / "cluster-wide"),
        )
        assert out.returncode == 0, out.stderr
        docs = rendered(cluster, "cluster-wide")
    else:
        client.CoreV1Api(cluster.api).create_namespace(
            {"metadata": {"name": OPERATOR_NS, "labels": helm.RESTRICTED}}
        )
        docs = helm.install(cluster, "pdm-operator", OPERATOR_NS)
    try:
        yield docs
    finally:
        if request.param == "helm":
            helm.run(cluster, "uninstall", "pdm-operator", "-n", OPERATOR_NS, "--wait")
        cluster.run_kubectl("delete", "namespace", OPERATOR_NS, "--wait=false")
        helm.remove_cluster_scoped(cluster, docs)
        wait_until(
            lambda: namespace_gone(cluster), timeout=120, what=f"namespace {OPERATOR_NS} to go"
        )


def operator_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (TokenRequest API)."""
    return identity.service_account_kubeconfig(cluster.api, OPERATOR_NS, "pdm-operator", path)[1]


def can_i(cluster: Cluster, user: str, namespace: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs from `kubectl auth can-i --list` for a user in a namespace."""
    out = cluster.run_kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace)
    assert out.returncode == 0, out.stderr
    pairs = set()
    for line in out.stdout.splitlines()[1:]:
        resource = line.split("[", 1)[0].strip()
        groups = re.findall(r"\[([^\]]*)\]", line)
        if not resource or len(groups) != 3:  # non-resource URLs (discovery)
            continue
        pairs |= {(resource, verb) for verb in groups[2].split()}
    return pairs


def rule_pairs(docs: list[dict[str, Any]], kinds: tuple[str, ...]) -> set[tuple[str, str]]:
    """The rules of the install's roles of ``kinds`` that are bound to the operator's
    ServiceAccount (the install also ships roles for people: the approver's)."""
    account = SA.rsplit(":", 1)[1]
    bound = {
        (doc["roleRef"]["kind"], doc["roleRef"]["name"])
        for doc in docs
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s.get("name") == account for s in doc.get("subjects") or [])
    }
    pairs = set()
    for doc in docs:
        if doc["kind"] not in kinds or (doc["kind"], doc["metadata"]["name"]) not in bound:
            continue
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    base, _, sub = resource.partition("/")
                    name = f"{base}.{group}" if group else base  # as kubectl prints it
                    name += f"/{sub}" if sub else ""
                    pairs |= {(name, verb) for verb in rule["verbs"]}
    return pairs


@pytest.mark.parametrize(
    "namespace", [{"pod-security.kubernetes.io/enforce": "restricted"}], indirect=True
)
def test_operator_runs_end_to_end_with_only_its_service_accounts_rights(
    cluster: Cluster, api: Api, namespace: str, installed: list[dict[str, Any]], tmp_path: Path
) -> None:
    # The operator's own pod is admitted in its restricted namespace.
    apps = client.AppsV1Api(cluster.api)
    wait_until(
        lambda: (
            (
                apps.read_namespaced_deployment_status(
                    "pdm-operator", OPERATOR_NS
                ).status.ready_replicas
                or 0
            )
            == 1
        ),
        timeout=60,
        what="the operator Deployment's pod to be admitted and ready",
    )

    # What the ServiceAccount may do, beyond what any account may: exactly the documented rules.
    client.CoreV1Api(cluster.api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    baseline = can_i(cluster, f"system:serviceaccount:{namespace}:nobody", namespace)
    granted_here = can_i(cluster, SA, namespace) - baseline
    granted_home = can_i(cluster, SA, OPERATOR_NS) - baseline
    cluster_rules = rule_pairs(installed, ("ClusterRole",))
    lock_rules = rule_pairs(installed, ("Role",))
    assert granted_here == cluster_rules
    assert granted_home == cluster_rules | lock_rules

    # Run everything that needs a permission, as the ServiceAccount.
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "gitlab-api"}, "stringData": {"token": TOKEN}}
    )
    kubeconfig = operator_kubeconfig(cluster, tmp_path / "sa.kubeconfig")
    env = pythonpath_env({**cluster.env(), "KUBECONFIG": str(kubeconfig)})
    operator = OperatorProcess(env, namespace, tmp_path / "operator.log")
    operator.scope_args = ["--all-namespaces", "--lock-namespace", OPERATOR_NS]
    with FakeGitLab(token=TOKEN) as gitlab:
        gitlab.add_commits("gitlab-org/gitlab", shas=["0a1b2c3d4e5f" + "0" * 28])
        operator.start()
        try:
            api.deploy(toolbox())
            tracking = {
                "gitlab": {
                    "url": gitlab.url,
                    "tokenSecretRef": {"name": "gitlab-api", "key": "token"},
                },
                "version": {"ref": "master", "sha": "0a1b2c3d4e5f" + "0" * 28},
                "sinks": [{"type": "GitLabDeployment", "projects": ["gitlab-org/gitlab"]}],
            }
            api.create(migration("rbac-run", tracking=tracking))
            api.create(
                migration(
                    "rbac-fail",
                    env="gprd",
                    job={"podAnnotations": {"sim.pdm-operator.io/outcome": "fail"}},
                )
            )
            # The pod template paths: the chart's Job (listed by selector), checked by
            # a server-side dry run while suspended; the toolbox Deployment (read).
            api.batch.create_namespaced_job(namespace, chart.chart_job())
            api.create(
                migration(
                    "rbac-chart",
                    env="gchart",
                    suspend=True,
                    podTemplateFrom={"migrationsJob": {"release": "gitlab"}},
                )
            )
            api.create(
                migration(
                    "rbac-toolbox",
                    env="gtoolbox",
                    podTemplateFrom={"toolboxDeployment": {"name": "gitlab-toolbox"}},
                )
            )
            api.wait_condition("rbac-chart", "JobValidated", timeout=60)
            api.patch("rbac-chart", {"spec": {"suspend": False}})
            env_vars = [{"name": f"V{i:03d}", "value": "x" * 120} for i in range(100)]
            api.create(migration("rbac-dry", env="gdry", mode="DryRun", job={"env": env_vars}))

            api.wait_condition("rbac-run", "Succeeded", timeout=90)
            api.wait_condition("rbac-run", "Reported", timeout=90)
            api.wait_condition("rbac-fail", "Failed", timeout=90)
            api.wait_condition("rbac-dry", "Succeeded", timeout=90)
            api.wait_condition("rbac-chart", "Succeeded", timeout=90)
            api.wait_condition("rbac-toolbox", "Succeeded", timeout=90)
            assert api.get("rbac-dry")["status"]["diff"]["configMap"] == "rbac-dry-diff"  # type: ignore[index]
            assert api.get("rbac-run")["status"]["image"].count("@sha256:") == 1  # type: ignore[index]
            # The eviction protection was made under the ServiceAccount too.
            run_job = api.get("rbac-run")["status"]["jobName"]  # type: ignore[index]
            budget = client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget(
                run_job, namespace
            )
            assert budget.spec.min_available == 1
            assert [d["status"] for d in gitlab.deployments("gitlab-org/gitlab")] == ["success"]
            # Jobs of a restricted namespace ran: their pods were admitted.
            assert all(j.status.succeeded or j.status.failed for j in api.jobs())
            api.wait_events("rbac-run", "JobComplete")
        finally:
            operator.stop()
            print(f"----- operator log -----\n{operator.log()[-20000:]}")
    log = operator.log()
    assert "Forbidden" not in log
    # A 403 as an HTTP status, not three digits of a uid or a resourceVersion.
    assert not re.search(r"(?<![0-9a-f-])403(?![0-9a-f-])", log)


def test_namespaced_overlay_grants_nothing_outside_its_namespace(cluster: Cluster) -> None:
    docs = rendered(cluster, "namespaced")
    # Cluster-wide only what is cluster-scoped: the PostDeployEnvironments (read,
    # and their status written), and the approver's and the locker's roles, bound
    # to nobody.
    cluster_roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    assert set(cluster_roles) == {
        "pdm-operator-environments",
        "pdm-operator-approver",
        "pdm-operator-locker",
    }
    assert {
        (tuple(r["resources"]), tuple(r["verbs"]))
        for r in cluster_roles["pdm-operator-environments"]["rules"]
    } == {
        (("postdeployenvironments",), ("get", "list")),
        (("postdeployenvironments/status",), ("patch",)),
    }
    bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in bindings] == ["pdm-operator-environments"]
    roles = [d for d in docs if d["kind"] == "Role"]
    assert {r["metadata"]["namespace"] for r in roles} == {"gitlab", OPERATOR_NS}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["--namespace=gitlab"]
    # Server-side dry-run: the API server accepts every object as rendered.
    manifest = "\n---\n".join(
        yaml.safe_dump(d) for d in docs if d["kind"] != "CustomResourceDefinition"
    )
    out = subprocess.run(
        [str(cluster.kubectl), "apply", "--dry-run=server", "-f", "-"],
        input=manifest,
        env=cluster.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 or 'namespaces "gitlab" not found' in out.stderr, out.stderr


def test_the_operators_pod_spec_meets_the_restricted_level(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    deployment = next(d for d in installed if d["kind"] == "Deployment")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pdm-operator-check"},
        "spec": deployment["spec"]["template"]["spec"],
    }
    try:
        created = client.CoreV1Api(cluster.api).create_namespaced_pod(
            OPERATOR_NS, pod, dry_run="All"
        )
    except ApiException as e:
        pytest.fail(
            f"the restricted namespace rejected the operator's pod: {json.loads(e.body)['message']}"
        )
    assert created.spec.security_context.run_as_non_root is True


def test_ha_overlay_runs_two_replicas_with_leader_election(cluster: Cluster) -> None:
    docs = rendered(cluster, "ha")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--leader-election" in container["args"]
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    lock_role = next(d for d in docs if d["kind"] == "Role")
    assert any("leases" in r["resources"] for r in lock_role["rules"])
