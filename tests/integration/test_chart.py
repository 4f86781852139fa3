"""The Helm chart: lint, template, and install → upgrade → uninstall on the
real control plane. The least-privilege proof of its RBAC runs in
test_install.py, for the chart and the kustomize install alike."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.conftest import Cluster
from tests.support import helm
from tests.support.operator import repo_root
from tests.support.pdm import Api, migration
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

VALUE_SETS = {
    "defaults": [],
    "ha": ["--set", "replicaCount=2"],
    "namespaced": ["--set", "watchNamespaces={gitlab,gitlab-ci}"],
    "monitoring": [
        "--set", "monitoring.serviceMonitor.enabled=true",
        "--set", "monitoring.prometheusRule.enabled=true",
    ],
}  # fmt: skip


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs, "Deployment")
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_the_chart_lints_strictly(values: str) -> None:
    out = subprocess.run(
        [str(helm.binary()), "lint", "--strict", str(helm.CHART), *VALUE_SETS[values]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_misspelt_value_is_refused_by_the_schema() -> None:
    out = subprocess.run(
        [str(helm.binary()), "template", "x", str(helm.CHART), "--set", "replicas=2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "additional properties 'replicas' not allowed" in out.stderr


def test_the_kustomize_manifests_are_what_the_chart_renders() -> None:
    """One source of truth: manifests/ is rendered from the chart (hack/manifests.py)."""
    out = subprocess.run(
        [sys.executable, str(repo_root() / "hack" / "manifests.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_charts_crd_is_the_crd() -> None:
    (crd,) = by_kind(helm.template("--show-only", "templates/crd.yaml"), "CustomResourceDefinition")
    shipped = yaml.safe_load(
        (repo_root() / "crds" / "pdm-operator.io_postdeploymigrations.yaml").read_text()
    )
    assert crd == shipped
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not by_kind(helm.template("--set", "crds.install=false"), "CustomResourceDefinition")


def test_values_shape_the_deployment_and_rbac() -> None:
    plain = helm.template()
    assert container(plain)["args"] == ["--all-namespaces"]
    assert by_kind(plain, "Deployment")[0]["spec"]["strategy"] == {"type": "Recreate"}
    assert [r["metadata"]["name"] for r in by_kind(plain, "ClusterRole")] == ["pdm-operator"]
    assert not by_kind(plain, "ServiceMonitor")
    assert not by_kind(plain, "PrometheusRule")

    ha = helm.template(*VALUE_SETS["ha"])
    assert by_kind(ha, "Deployment")[0]["spec"]["replicas"] == 2
    assert "--leader-election" in container(ha)["args"]
    assert {e["name"] for e in container(ha)["env"]} == {"POD_NAMESPACE", "POD_NAME"}
    assert by_kind(ha, "Deployment")[0]["spec"]["template"]["spec"]["affinity"]

    namespaced = helm.template(*VALUE_SETS["namespaced"])
    assert not by_kind(namespaced, "ClusterRole")
    assert not by_kind(namespaced, "ClusterRoleBinding")
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(namespaced, "Role")
    }
    assert roles == {
        ("gitlab", "pdm-operator"),
        ("gitlab-ci", "pdm-operator"),
        ("pdm-operator", "pdm-operator-locks"),
    }
    assert container(namespaced)["args"] == ["--namespace=gitlab", "--namespace=gitlab-ci"]

    monitored = helm.template(*VALUE_SETS["monitoring"])
    (rule,) = by_kind(monitored, "PrometheusRule")
    # Prometheus' own templates pass through Helm untouched.
    assert "{{ $labels.environment }}" in str(rule["spec"])
    assert by_kind(monitored, "ServiceMonitor")

    pinned = helm.template("--set", "image.digest=sha256:" + "a" * 64)
    assert container(pinned)["image"] == "registry.example.com/pdm-operator@sha256:" + "a" * 64
    assert container(helm.template())["image"] == "registry.example.com/pdm-operator:0.1.0"


def gone(read: Any) -> bool:
    try:
        read()
    except ApiException as e:
        return e.status == 404
    return False


def test_install_upgrade_uninstall_keeps_the_crd_and_every_migration(
    cluster: Cluster, api: Api, crd: None
) -> None:
    release, ns = "pdm-helm", f"pdm-helm-{api.ns[-5:]}"
    fullname = "pdm-helm-pdm-operator"
    core = client.CoreV1Api(cluster.api)
    apps = client.AppsV1Api(cluster.api)
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": ns, "labels": helm.RESTRICTED}})
    try:
        docs = helm.install(cluster, release, ns)
        assert {d["kind"] for d in docs} >= {
            "CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding",
            "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
        }  # fmt: skip
        deployment = apps.read_namespaced_deployment(fullname, ns)
        assert deployment.status.ready_replicas == 1
        rbac.read_cluster_role(fullname)

        # Upgrade: HA, and watching only the test's namespace.
        out = helm.run(
            cluster, "upgrade", release, str(helm.CHART), "-n", ns, "--wait", "--timeout", "120s",
            "--set", "replicaCount=2", "--set", f"watchNamespaces={{{api.ns}}}",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        deployment = apps.read_namespaced_deployment(fullname, ns)
        assert deployment.spec.replicas == 2
        args = deployment.spec.template.spec.containers[0].args
        assert args == [f"--namespace={api.ns}", "--leader-election"]
        wait_until(
            lambda: gone(lambda: rbac.read_cluster_role(fullname)),
            timeout=30,
            what="the ClusterRole to go with watchNamespaces set",
        )
        rbac.read_namespaced_role(fullname, api.ns)
        history = helm.run(cluster, "history", release, "-n", ns, "-o", "json")
        assert history.returncode == 0, history.stderr
        assert history.stdout.count('"revision"') == 2

        # A migration exists when the release goes.
        api.create(migration("kept-by-uninstall", suspend=True))
        out = helm.run(cluster, "uninstall", release, "-n", ns, "--wait")
        assert out.returncode == 0, out.stderr
        assert "postdeploymigrations.pdm-operator.io" in out.stdout + out.stderr  # kept, said so
        assert gone(lambda: apps.read_namespaced_deployment(fullname, ns))
        assert gone(lambda: rbac.read_namespaced_role(fullname, api.ns))
        assert gone(lambda: core.read_namespaced_service_account(fullname, ns))
        client.ApiextensionsV1Api(cluster.api).read_custom_resource_definition(
            "postdeploymigrations.pdm-operator.io"
        )
        assert api.get("kept-by-uninstall") is not None
    finally:
        helm.run(cluster, "uninstall", release, "-n", ns)
        cluster.run_kubectl(
            "delete", "clusterrole,clusterrolebinding", fullname, "--ignore-not-found"
        )
        core.delete_namespace(ns)
