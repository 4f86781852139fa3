"""A restart at any instant leads to the same end state, with exactly one Job."""

from __future__ import annotations

import pytest

from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, migration, toolbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_sigkill_right_after_job_creation_keeps_exactly_one_job(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(
        migration("pdm-crash", job={"podAnnotations": {"sim.pdm-operator.io/duration": "3s"}})
    )
    # Kill the moment the Job exists: the status may or may not say so yet.
    wait_until(api.jobs, timeout=60, what="the migration Job to exist", interval=0.02)
    operator.kill()
    operator.start()
    api.wait_condition("pdm-crash", "Succeeded", timeout=60)
    jobs = api.jobs()
    assert len(jobs) == 1
    assert api.get("pdm-crash")["status"]["jobName"] == jobs[0].metadata.name  # type: ignore[index]


def test_sigkill_mid_run_resumes_following_the_same_job(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(
        migration(
            "pdm-midrun",
            job={
                "podAnnotations": {
                    "sim.pdm-operator.io/duration": "3s",
                    "sim.pdm-operator.io/outcome": "fail",
                    "sim.pdm-operator.io/exit-code": "7",
                }
            },
        )
    )
    api.wait_condition("pdm-midrun", "JobCreated")
    operator.kill()
    # The Job ends while no operator runs; the next one must notice.
    wait_until(lambda: any(j.status.failed for j in api.jobs()), timeout=60, what="the Job to fail")
    operator.start()
    failed = api.wait_condition("pdm-midrun", "Failed", timeout=60)
    assert failed["reason"] == "BackoffLimitExceeded"
    assert api.get("pdm-midrun")["status"]["failure"]["exitCode"] == 7  # type: ignore[index]
    assert len(api.jobs()) == 1


def test_restart_while_gated_keeps_waiting_and_lock_survives(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(
        migration("pdm-holder", job={"podAnnotations": {"sim.pdm-operator.io/outcome": "hang"}})
    )
    api.wait_condition("pdm-holder", "JobCreated")
    api.create(migration("pdm-waiter"))
    assert api.wait_condition("pdm-waiter", "Gated")["reason"] == "EnvironmentLocked"

    operator.kill()
    operator.start()
    # Still one migration per environment after the restart: the Lease is durable.
    assert api.wait_condition("pdm-waiter", "Gated")["reason"] == "EnvironmentLocked"
    assert len(api.jobs()) == 1

    # The holder ends (its Job is deleted): the waiter takes the lock and runs.
    holder_job = api.get("pdm-holder")["status"]["jobName"]  # type: ignore[index]
    api.batch.delete_namespaced_job(holder_job, api.ns, propagation_policy="Background")
    assert api.wait_condition("pdm-holder", "Failed")["reason"] == "JobDeleted"
    api.wait_condition("pdm-waiter", "Succeeded", timeout=60)


def test_graceful_shutdown_exits_cleanly(operator: OperatorProcess) -> None:
    assert operator.stop() == 0
