"""The helm CLI (built from Go modules like the control plane) against the cluster under test."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from localcluster import build_tool
from tests.support.operator import repo_root

CHART = repo_root() / "charts" / "pdm-operator"
#: The operator's namespace, as docs/operations.md tells to create it for the chart.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@functools.cache
def binary() -> Path:
    return build_tool("helm")


def run(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``helm ARGS`` with the cluster's kubeconfig; the caller checks the outcome."""
    return subprocess.run(
        [str(binary()), *args], env=cluster.env(), capture_output=True, text=True, check=False
    )


def template(*args: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart (no cluster needed), as objects."""
    proc = subprocess.run(
        [str(binary()), "template", "pdm-operator", str(CHART), "-n", "pdm-operator", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def install(cluster: Any, release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    """``helm install --wait`` of the chart; returns the objects of the release.

    The CRD is already there (the suite applies crds/ server-side once), as
    on a cluster moving from ``kubectl apply -k`` to the chart: Helm adopts it
    (``--take-ownership``) and takes its fields from kubectl's field manager
    (``--force-conflicts``), as docs/operations.md tells.
    """
    out = run(
        cluster, "install", release, str(CHART), "-n", namespace,
        "--take-ownership", "--force-conflicts", "--wait", "--timeout", "120s", *args,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return manifest(cluster, release, namespace)


def manifest(cluster: Any, release: str, namespace: str) -> list[dict[str, Any]]:
    out = run(cluster, "get", "manifest", release, "-n", namespace)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


#: Cluster-scoped kinds an install brings besides the CRDs, which a test removes
#: after it: the admission policies especially would judge every later test.
CLUSTER_SCOPED = (
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)


def remove_cluster_scoped(cluster: Any, docs: list[dict[str, Any]]) -> None:
    """Delete the cluster-scoped objects of an install (not its CRDs, nor what they hold)."""
    for doc in docs:
        if doc.get("kind") in CLUSTER_SCOPED:
            cluster.run_kubectl(
                "delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found"
            )
