"""The test cluster behaves like a real one: Jobs run through kwok, RBAC and
Pod Security admission are enforced. If these fail, nothing built on top of
the harness can be trusted."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

import localcluster
from tests.integration.conftest import Cluster
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

RESTRICTED_CONTAINER = {
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
}


def job(name: str, annotations: dict[str, str] | None = None, deadline: int | None = None) -> dict:
    spec: dict = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"annotations": annotations or {}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "main", "image": "registry.example/toolbox:v1", **RESTRICTED_CONTAINER}
                ],
            },
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def job_condition(batch: client.BatchV1Api, ns: str, name: str) -> tuple[str, str] | None:
    """The terminal condition of a Job as (type, reason), or None while it runs."""
    status = batch.read_namespaced_job_status(name, ns).status
    for cond in status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type, cond.reason or ""
    return None


def test_job_completes_through_kwok(cluster: Cluster, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job("ok"))
    end = wait_until(
        lambda: job_condition(batch, namespace, "ok"), timeout=60, what="job ok to end"
    )
    assert end[0] == "Complete"
    assert batch.read_namespaced_job_status("ok", namespace).status.succeeded == 1


def test_job_marked_to_fail_ends_failed_with_its_exit_code(
    cluster: Cluster, namespace: str
) -> None:
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    annotations = {
        "sim.pdm-operator.io/outcome": "fail",
        "sim.pdm-operator.io/exit-code": "42",
        "sim.pdm-operator.io/message": "PG::UndefinedTable: relation missing",
    }
    batch.create_namespaced_job(namespace, job("bad", annotations))
    end = wait_until(
        lambda: job_condition(batch, namespace, "bad"), timeout=60, what="job bad to end"
    )
    assert end == ("Failed", "BackoffLimitExceeded")
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=bad").items
    assert len(pods) == 1
    terminated = pods[0].status.container_statuses[0].state.terminated
    assert terminated.exit_code == 42
    assert terminated.message == "PG::UndefinedTable: relation missing"


def test_hanging_job_hits_its_active_deadline(cluster: Cluster, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(
        namespace, job("hang", {"sim.pdm-operator.io/outcome": "hang"}, deadline=2)
    )
    end = wait_until(
        lambda: job_condition(batch, namespace, "hang"), timeout=60, what="job hang to end"
    )
    assert end == ("Failed", "DeadlineExceeded")


def test_rbac_denies_a_service_account_without_a_role(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(spec={"expirationSeconds": 600})
    ).status.token
    cfg = client.Configuration()
    cfg.host = cluster.api.configuration.host
    cfg.ssl_ca_cert = cluster.api.configuration.ssl_ca_cert
    cfg.verify_ssl = cluster.api.configuration.verify_ssl
    cfg.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(cfg) as as_nobody, pytest.raises(ApiException) as denied:
        client.CoreV1Api(as_nobody).list_namespaced_pod(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in denied.value.body
    # Authentication itself worked: the identity can discover the API.
    with client.ApiClient(cfg) as as_nobody:
        assert client.VersionApi(as_nobody).get_code().major


@pytest.mark.parametrize(
    "namespace", [{"pod-security.kubernetes.io/enforce": "restricted"}], indirect=True
)
def test_restricted_namespace_rejects_an_unrestricted_pod(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    # Valid for the API, but runs as root with privilege escalation and all
    # default capabilities: "baseline" at best, never "restricted".
    unrestricted = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unrestricted"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "securityContext": {"runAsUser": 0}}]
        },
    }
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, unrestricted)
    assert rejected.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in json.loads(rejected.value.body)["message"]
    # The same namespace admits a pod that meets the restricted level.
    compliant = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "compliant"},
        "spec": {"containers": [{"name": "c", "image": "busybox", **RESTRICTED_CONTAINER}]},
    }
    assert core.create_namespaced_pod(namespace, compliant).metadata.name == "compliant"


def test_local_control_plane_reports_its_true_version(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("only the local control plane's version is known")
    version = client.VersionApi(cluster.api).get_code()
    expected = localcluster.HACK.joinpath("versions.env").read_text()
    assert f"KUBERNETES_VERSION={version.git_version}" in expected
    assert (version.major, version.minor) == ("1", "37")
