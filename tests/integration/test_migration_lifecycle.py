"""A PostDeployMigration from creation to its end, with the operator as a process."""

from __future__ import annotations

import pytest

from pdm_operator import render
from tests.integration.conftest import Cluster
from tests.support.operator import OperatorProcess
from tests.support.pdm import TOOLBOX_DIGEST, TOOLBOX_IMAGE, Api, migration, toolbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PINNED = f"{TOOLBOX_IMAGE.rsplit(':', 1)[0]}@{TOOLBOX_DIGEST}"


def test_migration_runs_the_deployed_image_and_succeeds(
    cluster: Cluster, api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-ok", waitFor={"rolledOut": ["gitlab-toolbox"]}))

    # What a CI pipeline does: kubectl wait on the Succeeded condition.
    waited = cluster.run_kubectl(
        "wait", "-n", api.ns, "--for=condition=Succeeded", "pdm/pdm-ok", "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr

    pdm = api.get("pdm-ok")
    assert pdm is not None
    status = pdm["status"]
    assert status["state"] == "Succeeded"
    assert status["image"] == PINNED  # pinned by the digest the running pods report
    assert status["sourceImage"] == TOOLBOX_IMAGE
    assert status["completionTime"] >= status["startTime"]

    (job,) = api.jobs()
    assert job.metadata.name == status["jobName"]
    assert job.metadata.name.startswith("pdm-ok-")
    container = job.spec.template.spec.containers[0]
    assert container.image == PINNED
    # The image ENTRYPOINT renders the configuration: no command, the script in args.
    assert container.command is None
    assert container.args[-1].endswith("/scripts/db-migrate;\n")
    env = {e.name: e.value for e in container.env}
    assert "SKIP_POST_DEPLOYMENT_MIGRATIONS" not in env
    assert env["BYPASS_SCHEMA_VERSION"] == "true"
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == (
        "PostDeployMigration",
        "pdm-ok",
        pdm["metadata"]["uid"],
    )
    assert job.metadata.labels["pdm-operator.io/environment"] == "gstg"

    posted = api.wait_events("pdm-ok", "Created", "JobComplete")
    # One Event per step that matters: the checks passed on the way and the
    # gates opening are in the conditions; the Created Event names the image.
    assert not {e.reason for e in posted} & {"FromDeployment", "GatesOpen", "DryRunAccepted"}
    created = next(e for e in posted if e.reason == "Created")
    assert PINNED in created.message


def test_failing_migration_ends_failed_with_exit_code_and_message(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    annotations = {
        "sim.pdm-operator.io/outcome": "fail",
        "sim.pdm-operator.io/exit-code": "3",
        "sim.pdm-operator.io/message": "PG::LockNotAvailable: canceling statement (lock timeout)",
    }
    api.create(migration("pdm-bad", job={"podAnnotations": annotations}))

    failed = api.wait_condition("pdm-bad", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "exit code 3" in failed["message"]
    pdm = api.get("pdm-bad")
    assert pdm is not None
    failure = pdm["status"]["failure"]
    assert failure["exitCode"] == 3
    assert "PG::LockNotAvailable" in failure["logTail"]
    assert pdm["status"]["state"] == "Failed"
    assert api.condition("pdm-bad", "Succeeded")["status"] == "False"  # type: ignore[index]
    warnings = [
        e for e in api.wait_events("pdm-bad", "BackoffLimitExceeded") if e.type == "Warning"
    ]
    assert any(e.reason == "BackoffLimitExceeded" and "exit code 3" in e.message for e in warnings)


def test_hanging_migration_fails_when_its_deadline_passes(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(
        migration(
            "pdm-hang",
            job={
                "activeDeadlineSeconds": 2,
                "podAnnotations": {"sim.pdm-operator.io/outcome": "hang"},
            },
        )
    )
    failed = api.wait_condition("pdm-hang", "Failed")
    assert failed["reason"] == "DeadlineExceeded"


def test_missing_deployment_is_reported_and_no_job_is_created(
    api: Api, operator: OperatorProcess
) -> None:
    api.create(migration("pdm-nodeploy"))
    cond = api.wait_condition("pdm-nodeploy", "ImageResolved", status="False")
    assert cond["reason"] == "DeploymentNotFound"
    assert "gitlab-toolbox" in cond["message"]
    assert api.jobs() == []
    # It keeps trying: once the Deployment exists, the migration runs.
    api.deploy(toolbox())
    api.wait_condition("pdm-nodeploy", "Succeeded", timeout=60)
    assert len(api.jobs()) == 1


def test_missing_container_is_named_in_the_condition(api: Api, operator: OperatorProcess) -> None:
    api.deploy(toolbox())
    api.create(
        migration(
            "pdm-nocontainer",
            image={"fromDeployment": {"name": "gitlab-toolbox", "container": "tb"}},
        )
    )
    cond = api.wait_condition("pdm-nocontainer", "ImageResolved", status="False")
    assert cond["reason"] == "ContainerNotFound"
    assert "'tb'" in cond["message"]
    assert "toolbox" in cond["message"]
    assert api.jobs() == []


def test_job_deleted_while_running_fails_the_migration_and_is_not_recreated(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(
        migration("pdm-del", job={"podAnnotations": {"sim.pdm-operator.io/outcome": "hang"}})
    )
    api.wait_condition("pdm-del", "JobCreated")
    (job,) = api.jobs()
    api.batch.delete_namespaced_job(job.metadata.name, api.ns, propagation_policy="Background")

    failed = api.wait_condition("pdm-del", "Failed")
    assert failed["reason"] == "JobDeleted"
    wait_until(lambda: api.jobs() == [], timeout=30, what="the deleted Job to be gone")
    # Still gone after another look from the operator (a poke by a fresh event).
    api.patch("pdm-del", {"metadata": {"labels": {"poke": "1"}}})
    pdm = api.get("pdm-del")
    assert pdm is not None
    assert pdm["status"]["state"] == "Failed"
    assert api.jobs() == []


def test_explicit_image_reference_is_used_as_given(api: Api, operator: OperatorProcess) -> None:
    ref = "registry.example.com/gitlab-toolbox-ee:v18.6.1"
    api.create(migration("pdm-ref", image={"reference": ref}))
    api.wait_condition("pdm-ref", "Succeeded")
    (job,) = api.jobs()
    assert job.spec.template.spec.containers[0].image == ref


@pytest.mark.parametrize("look_alike", [False, True], ids=["its-own", "a-look-alike"])
def test_a_job_found_with_the_migrations_labels_is_adopted_only_if_it_is_the_one_it_would_create(
    api: Api, operator: OperatorProcess, look_alike: bool
) -> None:
    """Adoption finds a create whose answer was lost; the API server's own defaults
    (a dry run) say whether the Job found is that Job, field for field."""
    ref = "registry.example.com/gitlab-toolbox-ee:v18.6.1"
    created = api.create(migration("pdm-adopt", suspend=True, image={"reference": ref}))
    body = {**created, "status": {"image": ref}}
    job = render.render_job(body, ref)  # what the operator would create, owner and labels
    if look_alike:
        pod = job["spec"]["template"]["spec"]
        pod["hostAliases"] = [{"ip": "10.0.0.9", "hostnames": ["gitlab-postgresql"]}]
    api.batch.create_namespaced_job(api.ns, job)
    api.patch("pdm-adopt", {"spec": {"suspend": False}})
    if look_alike:
        failed = api.wait_condition("pdm-adopt", "Failed", timeout=60)
        assert failed["reason"] == "JobNotOurs"
        assert "hostAliases" in failed["message"]
        assert "jobName" not in api.get("pdm-adopt")["status"]  # type: ignore[index]
        return
    api.wait_condition("pdm-adopt", "Succeeded", timeout=60)
    status = api.get("pdm-adopt")["status"]  # type: ignore[index]
    assert status["jobName"] == job["metadata"]["name"]
    created_cond = api.condition("pdm-adopt", "JobCreated")
    assert created_cond is not None
    assert created_cond["reason"] == "Adopted"
    assert len(api.jobs()) == 1
