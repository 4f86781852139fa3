"""The README's first command works: it installs the CRD, runs the operator,
and takes the example migration to Succeeded."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.conftest import Cluster
from tests.support.operator import pythonpath_env, repo_root

pytestmark = pytest.mark.integration


def test_run_command_takes_the_example_to_succeeded(cluster: Cluster) -> None:
    env = {**pythonpath_env(cluster.env()), "PDM_DEMO": "1"}
    try:
        out = subprocess.run(
            [sys.executable, str(repo_root() / "hack" / "run.py"), "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "pdm/gstg-2026-11-22-1200 Succeeded" in out.stderr
        assert "Succeeded" in out.stdout  # the `kubectl get pdm` table
        pdm = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            "pdm-operator.io",
            "v1alpha1",
            "pdm-demo",
            "postdeploymigrations",
            "gstg-2026-11-22-1200",
        )
        assert pdm["status"]["state"] == "Succeeded"
    finally:
        try:
            client.CoreV1Api(cluster.api).delete_namespace("pdm-demo")
        except ApiException as e:
            if e.status != 404:
                raise
