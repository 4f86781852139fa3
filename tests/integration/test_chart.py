"""The Helm chart: lint, template, and install → upgrade → uninstall on the
real control plane. The least-privilege proof of its RBAC runs in
test_install.py, for the chart and the kustomize install alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
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


# values.schema.json holds image references to the grammar of
# github.com/distribution/reference regexp.go: a repository is namePat (an
# optional domain[:port]/, then lowercase path components
# [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)* separated by /), a tag is
# [\w][\w.-]{0,127}, a digest sha256:[a-f0-9]{64}. Anything else would install
# a Deployment whose pod can never pull its image, or break its YAML.
GOOD_IMAGES: dict[str, tuple[dict[str, str], str]] = {
    "registry-with-port": (
        {"repository": "registry.example.com:5000/group/pdm-operator", "tag": "v0.4.0"},
        "registry.example.com:5000/group/pdm-operator:v0.4.0",
    ),
    "rc-tag": ({"tag": "0.4.0-rc1"}, "registry.example.com/pdm-operator:0.4.0-rc1"),
    "longest-tag": ({"tag": "v" * 128}, "registry.example.com/pdm-operator:" + "v" * 128),
    "separators": ({"repository": "localhost/a__b/c--d.e_f"}, "localhost/a__b/c--d.e_f:0.1.0"),
}
BAD_IMAGES: dict[str, dict[str, str]] = {
    "uppercase-repository": {"repository": "registry.example.com/PDM-Operator"},
    "repository-with-tag": {"repository": "registry.example.com/pdm-operator:0.4.0"},
    "newline-in-repository": {"repository": "registry.example.com/pdm-operator\n"},
    "space-in-tag": {"tag": "1.0 bad"},
    "newline-in-tag": {"tag": "latest\n"},
    "colon-in-tag": {"tag": "a:b"},
    "tag-over-128": {"tag": "v" * 129},
    "tag-starting-with-a-dot": {"tag": ".1"},
    "short-digest": {"digest": "sha256:abc"},
}


def template_image(tmp_path: Path, image: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``helm template`` with ``image`` values from a file (a --set would mangle a newline)."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"image": image}))
    return subprocess.run(
        [str(helm.binary()), "template", "x", str(helm.CHART), "--values", str(values)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("case", sorted(GOOD_IMAGES))
def test_a_valid_image_reference_is_rendered(tmp_path: Path, case: str) -> None:
    image, rendered = GOOD_IMAGES[case]
    out = template_image(tmp_path, image)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert container(docs)["image"] == rendered


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_an_invalid_image_reference_is_refused_by_the_schema(tmp_path: Path, case: str) -> None:
    image = BAD_IMAGES[case]
    out = template_image(tmp_path, image)
    assert out.returncode != 0, out.stdout
    (field,) = image
    assert f"at '/image/{field}'" in out.stderr, out.stderr
    assert "does not match pattern" in out.stderr, out.stderr


def test_the_kustomize_manifests_are_what_the_chart_renders() -> None:
    """One source of truth: manifests/ is rendered from the chart (hack/manifests.py)."""
    out = subprocess.run(
        [sys.executable, str(repo_root() / "hack" / "manifests.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_charts_crds_are_the_crds() -> None:
    crds = by_kind(helm.template("--show-only", "templates/crd.yaml"), "CustomResourceDefinition")
    shipped = [
        yaml.safe_load((repo_root() / "crds" / f"pdm-operator.io_{plural}.yaml").read_text())
        for plural in ("postdeploymigrations", "postdeployenvironments")
    ]
    assert crds == shipped
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not by_kind(helm.template("--set", "crds.install=false"), "CustomResourceDefinition")


def test_values_shape_the_deployment_and_rbac() -> None:
    plain = helm.template()
    assert container(plain)["args"] == ["--all-namespaces"]
    assert by_kind(plain, "Deployment")[0]["spec"]["strategy"] == {"type": "Recreate"}
    assert [r["metadata"]["name"] for r in by_kind(plain, "ClusterRole")] == [
        "pdm-operator-approver",  # for release managers, bound by the admin
        "pdm-operator-locker",  # likewise
        "pdm-operator",
        "pdm-operator-environments",
    ]
    assert not by_kind(plain, "ServiceMonitor")
    assert not by_kind(plain, "PrometheusRule")

    ha = helm.template(*VALUE_SETS["ha"])
    assert by_kind(ha, "Deployment")[0]["spec"]["replicas"] == 2
    assert "--leader-election" in container(ha)["args"]
    assert {e["name"] for e in container(ha)["env"]} == {"POD_NAMESPACE", "POD_NAME"}
    assert by_kind(ha, "Deployment")[0]["spec"]["template"]["spec"]["affinity"]

    namespaced = helm.template(*VALUE_SETS["namespaced"])
    # Cluster-wide only what is cluster-scoped: the environments, and the approver's
    # and the locker's roles.
    assert [r["metadata"]["name"] for r in by_kind(namespaced, "ClusterRole")] == [
        "pdm-operator-approver",
        "pdm-operator-locker",
        "pdm-operator-environments",
    ]
    assert [b["metadata"]["name"] for b in by_kind(namespaced, "ClusterRoleBinding")] == [
        "pdm-operator-environments"
    ]
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


def test_environments_are_declared_from_values(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "environments": [
                    {"name": "gstg", "namespaces": ["gitlab"]},
                    {
                        "name": "gprd",
                        "namespaces": ["gitlab"],
                        "serviceAccounts": ["gitlab-migrations"],
                        "releases": ["gitlab"],
                        "approval": {"required": True},
                        "maxDeadlineSeconds": 7200,
                    },
                ]
            }
        )
    )
    envs = by_kind(helm.template("--values", str(values)), "PostDeployEnvironment")
    assert [e["metadata"]["name"] for e in envs] == ["gstg", "gprd"]
    assert envs[0]["spec"] == {"namespaces": ["gitlab"]}
    assert envs[1]["spec"] == {
        "namespaces": ["gitlab"],
        "serviceAccounts": ["gitlab-migrations"],
        "releases": ["gitlab"],
        "approval": {"required": True},
        "maxDeadlineSeconds": 7200,
    }
    assert not by_kind(helm.template(), "PostDeployEnvironment")  # none by default


def test_an_environment_without_namespaces_is_refused_by_the_schema(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"environments": [{"name": "gprd"}]}))
    out = subprocess.run(
        [str(helm.binary()), "template", "x", str(helm.CHART), "--values", str(values)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "namespaces" in out.stderr


def test_the_creator_policy_is_shipped_on_by_default() -> None:
    docs = helm.template()
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "ValidatingAdmissionPolicy")}
    assert set(policies) == {
        "pdm-operator-creator",
        "pdm-operator-status",
        "pdm-operator-approval",
        "pdm-operator-change-lock",
    }
    bindings = by_kind(docs, "ValidatingAdmissionPolicyBinding")
    assert {b["spec"]["policyName"] for b in bindings} == set(policies)
    policy = policies["pdm-operator-creator"]
    checks = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "resource('jobs')" in checks
    assert "subresource('log')" in checks
    off = helm.template(
        "--set", "creatorPolicy.enabled=false", "--set", "approvalPolicy.enabled=false",
        "--set", "changeLockPolicy.enabled=false",
    )  # fmt: skip
    assert not by_kind(off, "ValidatingAdmissionPolicy")
