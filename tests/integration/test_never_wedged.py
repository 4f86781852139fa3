"""No migration that cannot make progress holds its environment, and no mistake
leaves a migration stuck without a reason."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.support import kstatus
from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, migration, toolbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

#: A field the official client refuses before sending it (a typo the CRD cannot see:
#: securityContext keeps unknown fields), in an otherwise restricted container.
TYPO = {
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "readOnlyRootFilesytem": True,
    }
}


def test_a_job_the_client_refuses_fails_the_migration_and_frees_the_environment(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-refused", job=TYPO))
    failed = api.wait_condition("pdm-refused", "Failed", timeout=30)
    assert failed["reason"] == "JobInvalid"
    assert "securityContext.readOnlyRootFilesytem" in failed["message"]
    assert api.get("pdm-refused")["status"]["reason"] == "JobInvalid"  # type: ignore[index]
    wait_until(
        lambda: [e for e in api.events("pdm-refused") if e.reason == "JobInvalid"],
        timeout=10,
        what="a JobInvalid event",
    )
    api.wait_lock_free()
    # The environment is free: the next migration runs.
    api.create(migration("pdm-next"))
    api.wait_condition("pdm-next", "Succeeded", timeout=60)


def test_a_dry_run_the_client_refuses_ends_with_the_reason(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-dry-refused", mode="DryRun", job=TYPO))
    failed = api.wait_condition("pdm-dry-refused", "Failed", timeout=30)
    assert failed["reason"] == "DryRunRejected"
    assert "securityContext.readOnlyRootFilesytem" in failed["message"]


def test_a_migration_that_cannot_create_its_job_waits_without_the_lock(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.core.create_namespaced_resource_quota(
        api.ns,
        {"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}},
    )
    api.create(migration("pdm-quota"))
    created = api.wait_condition("pdm-quota", "JobCreated", status="False", timeout=30)
    assert created["reason"] == "CreateFailed"
    assert "exceeded quota" in created["message"]
    pending = api.wait_state("pdm-quota", "Pending")
    assert pending["status"]["reason"] == "CreateFailed"
    # Each retry takes the lock for the instant of its create, and gives it back.
    api.wait_lock_free()  # each retry takes it for the instant of its create

    # Suspended before its Job exists: still holding nothing.
    api.patch("pdm-quota", {"spec": {"suspend": True}})
    assert api.wait_condition("pdm-quota", "Gated")["reason"] == "Suspended"
    api.wait_lock_free()

    # Another migration of the environment runs once Jobs may be created.
    api.core.delete_namespaced_resource_quota("no-jobs", api.ns)
    api.create(migration("pdm-unblocked"))
    api.wait_condition("pdm-unblocked", "Succeeded", timeout=60)
    assert api.condition("pdm-quota", "Gated")["reason"] == "Suspended"  # type: ignore[index]


def test_a_deleted_lease_does_not_let_a_second_job_of_the_environment_start(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(
        migration("pdm-running", job={"podAnnotations": {"sim.pdm-operator.io/duration": "8s"}})
    )
    api.wait_condition("pdm-running", "JobCreated")
    api.create(migration("pdm-waiting"))
    assert api.wait_condition("pdm-waiting", "Gated")["reason"] == "EnvironmentLocked"

    client.CoordinationV1Api(api.core.api_client).delete_namespaced_lease("pdm-env-gstg", api.ns)
    busy = wait_until(
        lambda: (
            (c := api.condition("pdm-waiting", "Gated")) and c["reason"] == "EnvironmentBusy" and c
        ),
        timeout=30,
        what="pdm-waiting held by the running Job",
    )
    assert "pdm-running-" in busy["message"]
    assert [j.metadata.name for j in api.jobs() if j.metadata.name.startswith("pdm-waiting")] == []

    api.wait_condition("pdm-waiting", "Succeeded", timeout=60)
    first = api.get("pdm-running")["status"]  # type: ignore[index]
    second = api.get("pdm-waiting")["status"]  # type: ignore[index]
    assert second["startTime"] >= first["jobCompletionTime"]


def test_a_dependency_cycle_fails_every_migration_in_it_naming_the_cycle(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-a", waitFor={"migrations": ["pdm-b"]}))
    api.create(migration("pdm-b", env="gprd", waitFor={"migrations": ["pdm-a"]}))
    for name, cycle in (("pdm-a", "pdm-a -> pdm-b -> pdm-a"), ("pdm-b", "pdm-b -> pdm-a -> pdm-b")):
        failed = api.wait_condition(name, "Failed", timeout=30)
        assert failed["reason"] == "DependencyCycle"
        assert cycle in failed["message"]
    assert api.jobs() == []


def test_a_template_asking_for_root_and_host_access_is_refused_before_any_job(
    api: Api, operator: OperatorProcess
) -> None:
    # The namespace enforces nothing; the operator still does.
    hostile = toolbox()
    pod = hostile["spec"]["template"]["spec"]
    pod["securityContext"] = {"runAsUser": 0}
    pod["containers"][0]["securityContext"] = {"capabilities": {"add": ["SYS_ADMIN"]}}
    pod["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
    api.deploy(hostile)
    for mode in ("Run", "DryRun"):
        name = f"pdm-hostile-{mode.lower()}"
        api.create(
            migration(
                name,
                mode=mode,
                podTemplateFrom={"toolboxDeployment": {"name": "gitlab-toolbox"}},
            )
        )
        failed = api.wait_condition(name, "Failed", timeout=30)
        assert failed["reason"] == "PodSecurityViolation"
        for field in (
            "spec.template.spec.volumes[root].hostPath",
            "spec.template.spec.securityContext.runAsUser: 0",
            "containers[migrations].securityContext.capabilities.add: ['SYS_ADMIN']",
        ):
            assert field in failed["message"], failed["message"]
    assert api.jobs() == []
    api.wait_lock_free()


def test_a_pod_the_cluster_refuses_to_create_fails_the_migration_within_a_minute(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    # Allowed by its environment, missing from the namespace: the pod create fails.
    api.declare("gsa", serviceAccounts=["does-not-exist"])
    api.create(migration("pdm-no-sa", env="gsa", job={"serviceAccountName": "does-not-exist"}))
    failed = api.wait_condition("pdm-no-sa", "Failed", timeout=60)
    assert failed["reason"] == "PodCreateFailed"
    assert 'serviceaccount "does-not-exist" not found' in failed["message"]
    job = api.jobs()[0]
    assert job.spec.suspend is True  # no pod can start after the failure
    api.wait_lock_free("gsa")
    api.create(migration("pdm-after-no-sa", env="gsa"))
    api.wait_condition("pdm-after-no-sa", "Succeeded", timeout=60)


def test_an_unschedulable_pod_shows_as_running_with_the_schedulers_reason(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-nowhere", job={"nodeSelector": {"pool": "nowhere"}}))
    stalled = api.wait_condition("pdm-nowhere", "Stalled", timeout=60)
    assert stalled["reason"] == "Unschedulable"
    assert "node(s) didn't match" in stalled["message"]
    status = api.get("pdm-nowhere")["status"]  # type: ignore[index]
    assert (status["state"], status["reason"]) == ("Running", "Unschedulable")
    wait_until(
        lambda: [e for e in api.events("pdm-nowhere") if e.reason == "Unschedulable"],
        timeout=10,
        what="an Unschedulable event",
    )
    assert "pdm_stalled_total" in operator.metrics()


@pytest.mark.parametrize(
    ("waiting", "outcome"),
    [("ImagePullBackOff", "Stalled"), ("InvalidImageName", "Failed")],
)
def test_a_container_that_cannot_start_is_diagnosed_and_a_permanent_cause_fails_at_once(
    api: Api, operator: OperatorProcess, waiting: str, outcome: str
) -> None:
    api.deploy(toolbox())
    annotations = {
        "sim.pdm-operator.io/waiting": waiting,
        "sim.pdm-operator.io/message": f"{waiting}: the kubelet's own words",
    }
    api.create(migration("pdm-waiting", job={"podAnnotations": annotations}))
    cond = api.wait_condition("pdm-waiting", outcome, timeout=60)
    assert cond["reason"] == waiting
    assert "the kubelet's own words" in cond["message"]
    if outcome == "Failed":
        assert api.jobs()[0].spec.suspend is True
        api.wait_lock_free()
        assert kstatus.status(api.get("pdm-waiting") or {}) == "Failed"
    else:
        assert api.get("pdm-waiting")["status"]["state"] == "Running"  # type: ignore[index]
        # Stuck, not failed: Flux and kpt keep waiting (the registry may recover).
        assert kstatus.status(api.get("pdm-waiting") or {}) == "InProgress"
