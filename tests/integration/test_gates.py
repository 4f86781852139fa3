"""Gates hold a migration before any Job exists, and let it go when they open."""

from __future__ import annotations

import pytest
from kubernetes import client, watch

from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, deployment, migration, toolbox

pytestmark = pytest.mark.integration

WEBSERVICE = "registry.example.com/gitlab-org/build/cng/gitlab-webservice-ee:v18.6.0"


def test_rollout_in_progress_holds_the_migration(api: Api, operator: OperatorProcess) -> None:
    api.deploy(toolbox())
    # Pods that cannot be scheduled: the rollout cannot finish.
    api.deploy(
        deployment(
            "gitlab-webservice-default",
            "webservice",
            WEBSERVICE,
            replicas=2,
            node_selector={"pool": "nowhere"},
        ),
        wait=False,
    )
    api.create(
        migration(
            "pdm-gated", waitFor={"rolledOut": ["gitlab-webservice-default", "gitlab-toolbox"]}
        )
    )
    gated = api.wait_condition("pdm-gated", "Gated")
    assert gated["reason"] == "RolloutPending"
    assert "gitlab-webservice-default" in gated["message"]
    assert api.get("pdm-gated")["status"]["state"] == "Gated"  # type: ignore[index]
    assert api.jobs() == []

    # Finish the rollout: the migration runs.
    api.apps.patch_namespaced_deployment(
        "gitlab-webservice-default",
        api.ns,
        {"spec": {"template": {"spec": {"nodeSelector": None}}}},
    )
    api.wait_condition("pdm-gated", "Succeeded", timeout=90)
    assert api.condition("pdm-gated", "Gated")["status"] == "False"  # type: ignore[index]
    assert len(api.jobs()) == 1


def test_second_migration_of_an_environment_waits_for_the_first(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    leases = client.CoordinationV1Api(api.core.api_client)
    since = leases.list_namespaced_lease(api.ns).metadata.resource_version
    # Long enough that the second one is seen waiting while the first runs.
    api.create(
        migration("pdm-first", job={"podAnnotations": {"sim.pdm-operator.io/duration": "6s"}})
    )
    api.wait_condition("pdm-first", "JobCreated")
    api.create(migration("pdm-second"))
    # An unrelated environment is not held by gstg's migration.
    api.create(migration("pdm-other-env", env="gprd"))

    gated = api.wait_condition("pdm-second", "Gated")
    assert gated["reason"] == "EnvironmentLocked"
    # The message points at the lock, and the lock names the holder.
    assert f"Lease {api.ns}/pdm-env-gstg" in gated["message"]
    lease = leases.read_namespaced_lease("pdm-env-gstg", api.ns)
    assert lease.spec.holder_identity.startswith(f"{api.ns}/pdm-first/")
    api.wait_condition("pdm-other-env", "Succeeded")
    assert api.condition("pdm-first", "Succeeded") is None  # still running

    first = api.wait_condition("pdm-first", "Succeeded", timeout=60)
    api.wait_condition("pdm-second", "Succeeded", timeout=60)
    second_status = api.get("pdm-second")["status"]  # type: ignore[index]
    first_status = api.get("pdm-first")["status"]  # type: ignore[index]
    assert second_status["startTime"] >= first_status["completionTime"]
    assert first["status"] == "True"
    assert len(api.jobs()) == 3
    # The lock went from the first to the second in one update of its Lease
    # (not a delete and a create), and was deleted when nobody waited: the
    # Lease's history, replayed by a watch from before the first was created.
    history = lease_history(leases, api.ns, "pdm-env-gstg", since)
    assert history == [
        ("ADDED", f"{api.ns}/pdm-first"),
        ("MODIFIED", f"{api.ns}/pdm-second"),
        ("DELETED", f"{api.ns}/pdm-second"),
    ]


def test_a_waiter_behind_an_identical_job_is_validated_by_its_create(
    api: Api, operator: OperatorProcess
) -> None:
    """The waiters of one deployment render the first one's Job but for its
    name: the API server accepted that create, so they need no dry run."""
    api.deploy(toolbox())
    job = {"podAnnotations": {"sim.pdm-operator.io/duration": "4s"}}
    api.create(migration("pdm-first", job=job))
    api.wait_condition("pdm-first", "JobCreated")
    api.create(migration("pdm-second", job=job))
    validated = api.wait_condition("pdm-second", "JobValidated")
    assert api.condition("pdm-second", "Gated")["reason"] == "EnvironmentLocked"  # type: ignore[index]
    assert validated["reason"] == "IdenticalJobAccepted"
    assert api.get("pdm-first")["status"]["jobName"] in validated["message"]  # type: ignore[index]
    api.wait_condition("pdm-second", "Succeeded", timeout=60)
    assert len(api.jobs()) == 2


def lease_history(
    leases: client.CoordinationV1Api, namespace: str, name: str, since: str
) -> list[tuple[str, str]]:
    """Each change of Lease ``name`` after resourceVersion ``since``, until it is
    deleted: (event type, holder's namespace/name)."""
    seen: list[tuple[str, str]] = []
    stream = watch.Watch().stream(
        leases.list_namespaced_lease,
        namespace,
        resource_version=since,
        field_selector=f"metadata.name={name}",
        timeout_seconds=30,
    )
    for event in stream:
        holder = event["object"].spec.holder_identity or ""
        seen.append((event["type"], holder.rsplit("/", 1)[0]))
        if event["type"] == "DELETED":
            break
    return seen


def test_suspend_holds_until_released(api: Api, operator: OperatorProcess) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-suspended", suspend=True))
    gated = api.wait_condition("pdm-suspended", "Gated")
    assert gated["reason"] == "Suspended"
    assert api.jobs() == []

    api.patch("pdm-suspended", {"spec": {"suspend": False}})
    api.wait_condition("pdm-suspended", "Succeeded")
    assert len(api.jobs()) == 1


def test_dependency_gate_waits_for_success_and_fails_with_a_failed_dependency(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-after", env="gprd", waitFor={"migrations": ["pdm-before"]}))
    gated = api.wait_condition("pdm-after", "Gated")
    assert gated["reason"] == "WaitingForMigrations"
    assert "pdm-before (not found)" in gated["message"]

    api.create(migration("pdm-before"))
    api.wait_condition("pdm-after", "Succeeded", timeout=60)

    api.create(
        migration("pdm-broken", job={"podAnnotations": {"sim.pdm-operator.io/outcome": "fail"}})
    )
    api.create(migration("pdm-doomed", env="gprd", waitFor={"migrations": ["pdm-broken"]}))
    failed = api.wait_condition("pdm-doomed", "Failed", timeout=60)
    assert failed["reason"] == "DependencyFailed"
    assert not [j for j in api.jobs() if j.metadata.name.startswith("pdm-doomed")]
