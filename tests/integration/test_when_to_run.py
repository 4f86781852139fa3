"""When a run may start, on the real control plane: an environment's windows, a
change lock set and lifted mid-queue, and a schedule that starts exactly one run
per window opening across a restart of the operator.

Windows are placed around the clock as it is (hours away from now), so no test
waits for a time to come; the unit tests (tests/unit/test_when.py) move an
injected clock across openings, midnight and daylight-saving changes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from pdm_operator import schedule
from tests.support.operator import OperatorProcess, repo_root
from tests.support.pdm import ENVIRONMENTS, GROUP, PLURAL, VERSION, Api, migration, toolbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def hour(now: datetime, hours: int) -> str:
    return f"{(now.hour + hours) % 24:02d}:00"


def shut_window(now: datetime) -> dict[str, str]:
    """A window that opens two hours from now (every day)."""
    return {"start": hour(now, 2), "end": hour(now, 3)}


def open_window(now: datetime) -> dict[str, str]:
    """A window that opened within the last two hours and closes in one or two."""
    return {"start": hour(now, -1), "end": hour(now, 2)}


def fresh_environment() -> str:
    """A name of its own: environments are cluster-scoped, shared by every test."""
    return f"w-{uuid.uuid4().hex[:8]}"


def test_outside_its_windows_a_migration_waits_with_the_next_opening_and_runs_once_one_opens(
    api: Api, operator: OperatorProcess
) -> None:
    env = fresh_environment()
    now = datetime.now(UTC)
    api.deploy(toolbox())
    api.declare(env, windows=[shut_window(now)])
    api.create(migration("pdm-windowed", env=env))

    gated = api.wait_condition("pdm-windowed", "Gated")
    assert gated["reason"] == "OutsideWindow"
    opens = (now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert f"the next opens at {opens}" in gated["message"]
    assert (api.get("pdm-windowed") or {})["status"]["windowOpens"] == opens
    assert api.jobs() == []
    assert api.lease_holder(env) is None  # waiting outside a window takes no lock
    shown = wait_until(
        lambda: ((api.environment(env) or {}).get("status") or {}).get("nextOpening"),
        timeout=30,
        what="the environment's status to show its next opening",
    )
    assert shown == opens

    # The admin widens the window to now: the migration runs.
    api.declare(env, windows=[open_window(now)])
    api.wait_condition("pdm-windowed", "Succeeded", timeout=60)
    assert "windowOpens" not in ((api.get("pdm-windowed") or {}).get("status") or {})
    wait_until(
        lambda: "nextOpening" not in ((api.environment(env) or {}).get("status") or {}),
        timeout=30,
        what="the environment's status to show a window open (its loop runs every 10 s)",
    )


def me(api: Api) -> str:
    """The test's own user name, as the API server sees it (the change-lock policy,
    where installed, admits only that as ``by``)."""
    review = client.AuthenticationV1Api(api.core.api_client).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    return str(review.status.user_info.username)


def lock(api: Api, env: str, reason: str) -> str:
    """Lock ``env`` as the test's user; that user's name."""
    by = me(api)
    api.custom.patch_cluster_custom_object(
        GROUP, VERSION, ENVIRONMENTS, env, {"spec": {"changeLock": {"reason": reason, "by": by}}}
    )
    return by


def unlock(api: Api, env: str) -> None:
    api.custom.patch_cluster_custom_object(
        GROUP, VERSION, ENVIRONMENTS, env, {"spec": {"changeLock": None}}
    )


def test_a_change_lock_set_mid_queue_holds_the_waiters_not_the_running_job(
    api: Api, operator: OperatorProcess
) -> None:
    env = fresh_environment()
    api.deploy(toolbox())
    slow = {"podAnnotations": {"sim.pdm-operator.io/duration": "8s"}}
    api.create(migration("pdm-running", env=env, job=slow))
    api.wait_condition("pdm-running", "JobCreated")
    for name in ("pdm-queued-1", "pdm-queued-2"):
        api.create(migration(name, env=env))
        assert api.wait_condition(name, "Gated")["reason"] == "EnvironmentLocked"

    by = lock(api, env, "CR 1234: failover test")
    for name in ("pdm-queued-1", "pdm-queued-2"):
        held = api.wait_condition(name, "Gated", timeout=40)
        wait_until(
            lambda name=name: (api.condition(name, "Gated") or {}).get("reason") == "ChangeLocked",
            timeout=40,
            what=f"{name} to wait on the change lock",
        )
        held = api.condition(name, "Gated") or {}
        assert "CR 1234: failover test" in held["message"]
        assert f"change-locked by {by}" in held["message"]
    # The Job that ran when the lock was set runs to its end.
    api.wait_condition("pdm-running", "Succeeded", timeout=60)
    api.wait_lock_free(env)
    assert len(api.jobs()) == 1
    assert api.lease_holder(env) is None

    unlock(api, env)
    for name in ("pdm-queued-1", "pdm-queued-2"):
        api.wait_condition(name, "Succeeded", timeout=90)
    assert len(api.jobs()) == 3


def scheduled_runs(api: Api, env: str) -> list[dict[str, Any]]:
    found = api.custom.list_namespaced_custom_object(
        GROUP, VERSION, api.ns, PLURAL, label_selector=f"{schedule.LABEL_SCHEDULED_BY}={env}"
    )
    return list(found["items"])


def test_a_schedule_starts_exactly_one_run_per_opening_across_a_restart(
    api: Api, operator: OperatorProcess
) -> None:
    env = fresh_environment()
    now = datetime.now(UTC)
    api.deploy(toolbox())
    template = migration("template", env=env)["spec"]
    api.declare(
        env,
        windows=[open_window(now)],
        schedule={"namespace": api.ns, "template": template},
    )
    runs = wait_until(lambda: scheduled_runs(api, env), timeout=40, what="a scheduled run")
    assert len(runs) == 1
    name = runs[0]["metadata"]["name"]
    opening = runs[0]["metadata"]["annotations"][schedule.ANNOTATION_OPENING]
    assert name == f"{env}-{opening[:4]}{opening[5:7]}{opening[8:10]}-{opening[11:13]}00"
    api.wait_condition(name, "Succeeded", timeout=60)
    status = wait_until(
        lambda: ((api.environment(env) or {}).get("status") or {}).get("scheduled"),
        timeout=30,
        what="the environment's status to record the run",
    )
    assert status == {"opening": opening, "migration": f"{api.ns}/{name}"}

    # A crash between the create and the status write: the record is lost, the
    # name is the opening's, so the restarted operator makes no second run.
    api.custom.patch_cluster_custom_object_status(
        GROUP, VERSION, ENVIRONMENTS, env, {"status": {"scheduled": None}}
    )
    operator.restart()
    wait_until(
        lambda: ((api.environment(env) or {}).get("status") or {}).get("scheduled"),
        timeout=40,
        what="the restarted operator to record the opening's run again",
    )
    # A spec change after the restart: once its generation is observed, a round
    # of the restarted operator has looked at the schedule again.
    generation = api.declare(env, maxDeadlineSeconds=7200)["metadata"]["generation"]
    wait_until(
        lambda: (
            ((api.environment(env) or {}).get("status") or {}).get("observedGeneration")
            == generation
        ),
        timeout=40,
        what="the restarted operator to observe the environment",
    )
    assert [r["metadata"]["name"] for r in scheduled_runs(api, env)] == [name]
    scheduled = [
        c
        for c in ((api.environment(env) or {}).get("status") or {}).get("conditions") or []
        if c["type"] == schedule.SCHEDULED
    ]
    assert [(c["status"], c["reason"]) for c in scheduled] == [("True", "Started")]


# --- admission: what the schema and its rules refuse, naming the field ---------------------------


def admitted(api: Api, name: str, spec: dict[str, Any]) -> str:
    """'' when the API server admits a PostDeployEnvironment of ``spec``, else its message."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PostDeployEnvironment",
        "metadata": {"name": name},
        "spec": {"namespaces": [api.ns], **spec},
    }
    try:
        api.custom.create_cluster_custom_object(GROUP, VERSION, ENVIRONMENTS, body, dry_run="All")
    except ApiException as e:
        return f"{e.status}: {e.body}"
    return ""


def test_the_example_gprd_environment_is_admitted(api: Api) -> None:
    example = yaml.safe_load((repo_root() / "examples" / "environment-gprd.yaml").read_text())
    spec = {**example["spec"], "schedule": {**example["spec"]["schedule"], "namespace": api.ns}}
    del spec["namespaces"]  # this test's namespace instead
    assert admitted(api, fresh_environment(), spec) == ""


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"windows": [{"start": "25:00", "end": "26:00"}]}, "spec.windows[0].start"),
        ({"windows": [{"start": "13:00", "end": "13:00"}]}, "start and end must differ"),
        ({"windows": [{"days": ["Monday"], "start": "13:00", "end": "14:00"}]}, "days[0]"),
        ({"changeLock": {"reason": "CR 1"}}, "spec.changeLock.by"),
        ({"changeLock": {"reason": "CR 1", "by": "a", "until": "tomorrow"}}, "until"),
        (
            {"gitlabDeployments": {"url": "gitlab.com", "project": "g", "environments": ["e"]}},
            "url",
        ),
        (
            {"gitlabDeployments": {"url": "https://g.com", "project": "g", "environments": []}},
            "environments",
        ),
        ({"schedule": {"namespace": "x", "template": {}}}, "spec.schedule needs spec.windows"),
        (
            {
                "windows": [{"start": "13:00", "end": "14:00"}],
                "schedule": {"namespace": "x", "template": {}},
            },
            "spec.schedule.namespace must be one of spec.namespaces",
        ),
    ],
)
def test_a_malformed_rule_on_when_to_run_is_refused_naming_it(
    api: Api, spec: dict[str, Any], words: str
) -> None:
    message = admitted(api, fresh_environment(), spec)
    assert message.startswith("422: "), message
    assert words in message, message
