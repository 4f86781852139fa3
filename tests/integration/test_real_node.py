"""Migration Jobs in real containers on a real node: real exit codes, real logs,
Pod Security as the kubelet enforces it, no service-account token."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

import operator_image
from tests.integration.conftest import Cluster
from tests.support import helm
from tests.support.operator import OperatorProcess, repo_root
from tests.support.pdm import Api, migration, toolbox
from tests.support.realnode import BUSYBOX
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

#: The version the runs are recorded at: the busybox and pause images' tags are none.
VERSION = "18.6.0"

TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def shell(placement: dict[str, Any], script: str, **job: Any) -> dict[str, Any]:
    """``spec.job`` running ``script`` in the busybox image on the real node."""
    return {**placement, "command": ["/bin/sh", "-c"], "args": [script], **job}


def test_a_failing_migration_fails_with_the_containers_exit_code_and_log(
    api: Api, operator: OperatorProcess, real_node: dict[str, Any]
) -> None:
    script = (
        "echo '== 20261201000001 AddIndexToCiBuilds: migrating'; "
        "echo 'PG::DuplicateTable: relation already exists' >&2; exit 7"
    )
    api.create(
        migration(
            "pdm-real-fail",
            image={"reference": BUSYBOX},
            gitlabVersion=VERSION,
            job=shell(real_node, script),
        )
    )
    failed = api.wait_condition("pdm-real-fail", "Failed", timeout=120)
    assert failed["reason"] == "BackoffLimitExceeded"
    failure = api.get("pdm-real-fail")["status"]["failure"]  # type: ignore[index]
    assert failure["exitCode"] == 7
    assert "20261201000001 AddIndexToCiBuilds" in failure["logTail"]
    assert "PG::DuplicateTable" in failure["logTail"]
    # Announced as migrating, never as migrated: the one that failed.
    assert failure["migration"] == {"version": "20261201000001", "name": "AddIndexToCiBuilds"}


def test_a_drain_cannot_evict_the_running_migration_pod(
    cluster: Cluster, api: Api, operator: OperatorProcess, real_node: dict[str, Any]
) -> None:
    script = "trap 'exit 0' TERM; echo migrating; sleep 600 & wait"
    api.create(
        migration(
            "pdm-no-evict",
            image={"reference": BUSYBOX},
            gitlabVersion=VERSION,
            job=shell(real_node, script),
        )
    )
    api.wait_condition("pdm-no-evict", "JobCreated", timeout=60)
    job_name = api.get("pdm-no-evict")["status"]["jobName"]  # type: ignore[index]
    core, policy = client.CoreV1Api(cluster.api), client.PolicyV1Api(cluster.api)

    def ready_pod() -> str | None:
        pods = core.list_namespaced_pod(
            api.ns, label_selector=f"batch.kubernetes.io/job-name={job_name}"
        ).items
        for pod in pods:
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            if pod.status.phase == "Running" and ready:
                return str(pod.metadata.name)
        return None

    pod = wait_until(ready_pod, timeout=120, what="the migration pod running and ready")
    budget = wait_until(
        lambda: (
            (
                b := policy.read_namespaced_pod_disruption_budget(job_name, api.ns)
            ).status.current_healthy
            == 1
            and b
        ),
        timeout=60,
        what="the disruption controller counting the migration pod",
    )
    assert budget.status.disruptions_allowed == 0
    assert budget.metadata.owner_references[0].kind == "Job"

    def evict() -> None:
        core.create_namespaced_pod_eviction(
            pod, api.ns, client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=api.ns))
        )

    # What `kubectl drain` does for each pod: refused, the pod keeps running.
    with pytest.raises(ApiException) as refused:
        evict()
    assert refused.value.status == 429
    assert "disruption budget" in refused.value.body
    assert ready_pod() == pod
    # The budget is what protects it: without it, the same eviction goes through.
    policy.delete_namespaced_pod_disruption_budget(job_name, api.ns)
    wait_until(lambda: _evicted(evict), timeout=30, what="the eviction accepted without the budget")


def _evicted(evict: Any) -> bool:
    try:
        evict()
    except ApiException as e:
        if e.status == 429:  # the deleted budget may still be cached for a moment
            return False
        raise
    return True


def test_the_migration_pod_really_has_no_service_account_token(
    api: Api, operator: OperatorProcess, real_node: dict[str, Any]
) -> None:
    script = f"if [ -e {TOKEN} ]; then echo 'a token is mounted'; exit 1; fi; echo no token"
    api.create(
        migration(
            "pdm-no-token",
            image={"reference": BUSYBOX},
            gitlabVersion=VERSION,
            job=shell(real_node, script),
        )
    )
    api.wait_condition("pdm-no-token", "Succeeded", timeout=120)


def test_the_kubelet_refuses_a_pod_that_would_run_as_root(
    api: Api, operator: OperatorProcess, real_node: dict[str, Any]
) -> None:
    # runAsNonRoot without a user: the operator's own check passes, and the
    # kubelet, seeing the image's user is root, refuses to start the container.
    security = {
        "podSecurityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    api.create(
        migration(
            "pdm-as-root",
            image={"reference": "localhost/pdm/pause:1"},
            gitlabVersion=VERSION,
            job=shell(real_node, "id", **security),
        )
    )
    stalled = api.wait_condition("pdm-as-root", "Stalled", timeout=90)
    assert stalled["reason"] == "CreateContainerConfigError"
    assert "runAsNonRoot and image will run as root" in stalled["message"]
    assert api.get("pdm-as-root")["status"]["state"] == "Running"  # type: ignore[index]


OPERATOR_NS = "pdm-operator"


def test_the_operator_runs_in_the_cluster_from_its_image_under_its_service_account(
    cluster: Cluster, api: Api, real_node: dict[str, Any], tmp_path: Path
) -> None:
    """The path hack/kind-e2e.sh takes on a Docker machine: the image built from the
    Dockerfile, installed with `kubectl apply -k` over the shipped namespaced overlay."""
    if cluster.local_cluster is None:
        pytest.skip("the local real node builds and imports the image; kind: hack/kind-e2e.sh")
    local = cluster.local_cluster
    archive = operator_image.build()  # minutes the first time, then cached by content
    ports = local.state()["ports"]
    local.node(int(ports["apiserver"])).import_archive(archive)  # type: ignore[index]
    node_ip = local.node(0).node_ip
    wait_until(lambda: namespace_gone(cluster, OPERATOR_NS), timeout=120, what="no old install")

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shipped = os.path.relpath(repo_root() / "manifests" / "overlays" / "namespaced", overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [shipped],
                "images": [
                    {
                        "name": "registry.example.com/pdm-operator",
                        "newName": operator_image.IMAGE.rsplit(":", 1)[0],
                        "newTag": "dev",
                    }
                ],
                "patches": [
                    {
                        "target": {"kind": kind, "name": "pdm-operator", "namespace": "gitlab"},
                        "patch": yaml.safe_dump(
                            [{"op": "replace", "path": "/metadata/namespace", "value": api.ns}]
                        ),
                    }
                    for kind in ("Role", "RoleBinding")
                ]
                + [
                    {
                        "target": {"kind": "Deployment", "name": "pdm-operator"},
                        "patch": yaml.safe_dump(
                            [
                                {
                                    "op": "replace",
                                    "path": "/spec/template/spec/containers/0/args",
                                    "value": ["--namespace", api.ns],
                                },
                                {
                                    "op": "add",
                                    "path": "/spec/template/spec/nodeSelector",
                                    "value": real_node["nodeSelector"],
                                },
                                {
                                    "op": "add",
                                    "path": "/spec/template/spec/tolerations",
                                    "value": real_node["tolerations"],
                                },
                                # No kube-proxy here: the API server at the node's address.
                                {
                                    "op": "add",
                                    "path": "/spec/template/spec/containers/0/env/-",
                                    "value": {"name": "KUBERNETES_SERVICE_HOST", "value": node_ip},
                                },
                                {
                                    "op": "add",
                                    "path": "/spec/template/spec/containers/0/env/-",
                                    "value": {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
                                },
                            ]
                        ),
                    }
                ],
            }
        )
    )
    out = cluster.run_kubectl("apply", "--server-side", "--force-conflicts", "-k", str(overlay))
    assert out.returncode == 0, out.stderr
    try:
        out = cluster.run_kubectl(
            "-n", OPERATOR_NS, "rollout", "status", "deployment/pdm-operator", "--timeout=180s"
        )
        assert out.returncode == 0, out.stdout + out.stderr
        api.deploy(toolbox())
        script = "echo '== 20261201000002 Backfill: migrated'"
        # The pre-flight's answer is read from its pod's log, under the
        # ServiceAccount: Rails' status table, as db:migrate:status prints it.
        status_table = (
            "printf '\\ndatabase: gitlab\\n\\n Status   Migration ID    Migration Name\\n"
            + "-" * 50
            + "\\n  down    20261201000002  Backfill\\n\\n"
            # and the listing the version-skip check reads (the default args print it).
            + "pdm-operator: db/post_migrate milestones\\n"
            + "/srv/gitlab/db/post_migrate/20261201000002_backfill.rb 18.6\\n"
            + "pdm-operator: end of db/post_migrate milestones\\n'"
        )
        api.create(
            migration(
                "pdm-in-cluster",
                image={"reference": BUSYBOX},
                gitlabVersion=VERSION,
                job={**real_node, "command": ["/bin/sh", "-c"], "args": [script]},
                # Run by the migration's command (`/bin/sh -c`), which the
                # pre-flight keeps: it runs its args.
                preflight={"args": [status_table]},
            )
        )
        api.wait_condition("pdm-in-cluster", "Succeeded", timeout=120)
        assert api.get("pdm-in-cluster")["status"]["pendingMigrations"] == [  # type: ignore[index]
            {"database": "gitlab", "version": "20261201000002", "name": "Backfill"}
        ]
        pods = cluster.run_kubectl(
            "-n", OPERATOR_NS, "get", "pods", "-o", "jsonpath={.items[*].spec.nodeName}"
        )
        assert pods.stdout.split() == ["real-node-0"]
        logs = cluster.run_kubectl("-n", OPERATOR_NS, "logs", "deployment/pdm-operator")
        assert "pdm-in-cluster" in logs.stdout
        assert "Forbidden" not in logs.stdout
        assert "Traceback" not in logs.stdout
    finally:
        log = cluster.run_kubectl(
            "-n", OPERATOR_NS, "logs", "deployment/pdm-operator", "--tail=200"
        )
        print(f"----- in-cluster operator log -----\n{log.stdout}{log.stderr}")
        client.CoreV1Api(cluster.api).delete_namespace(OPERATOR_NS)
        rendered = cluster.run_kubectl("kustomize", str(overlay))
        helm.remove_cluster_scoped(cluster, [d for d in yaml.safe_load_all(rendered.stdout) if d])


def namespace_gone(cluster: Cluster, name: str) -> bool:
    try:
        client.CoreV1Api(cluster.api).read_namespace(name)
    except ApiException as e:
        return e.status == 404
    return False
