"""An environment that starts its own runs, one per window opening, on an injected clock."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from pdm_operator import envstatus, model, schedule, timestamps, when
from pdm_operator.model import Body
from pdm_operator.statuses import Scheduled

WEDNESDAY_NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WEDNESDAY_1310 = datetime(2026, 12, 2, 13, 10, tzinfo=UTC)
TEMPLATE = {
    "image": {"fromDeployment": {"name": "gitlab-toolbox", "container": "toolbox"}},
    "waitFor": {"rolledOut": ["gitlab-toolbox"]},
}


def environment(**spec: Any) -> Body:
    return {
        "metadata": {"name": "gprd", "generation": 3},
        "spec": {
            "namespaces": ["gitlab"],
            "windows": [
                {"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "13:00", "end": "16:00"}
            ],
            "schedule": {"namespace": "gitlab", "template": TEMPLATE},
            **spec,
        },
    }


def test_nothing_is_due_before_the_window_opens_and_the_condition_says_when() -> None:
    found = schedule.due(environment(), WEDNESDAY_NOON)
    assert isinstance(found, schedule.Wait)
    assert found.reason == "WaitingForWindow"
    assert "2026-12-02T13:00:00Z" in found.message


def test_inside_the_window_a_run_is_due_for_its_opening_named_after_it() -> None:
    opening = schedule.due(environment(), WEDNESDAY_1310)
    assert opening == datetime(2026, 12, 2, 13, 0, tzinfo=UTC)
    started = schedule.start(environment(), opening, [])
    assert isinstance(started, schedule.Start)
    made = started.migration
    assert made["apiVersion"] == model.API_VERSION
    assert made["kind"] == model.KIND
    assert made["metadata"]["name"] == "gprd-20261202-1300"
    assert made["metadata"]["namespace"] == "gitlab"
    assert made["metadata"]["labels"][schedule.LABEL_SCHEDULED_BY] == "gprd"
    assert made["metadata"]["annotations"][schedule.ANNOTATION_OPENING] == "2026-12-02T13:00:00Z"
    following = {
        "fromDeployment": {"name": "gitlab-toolbox", "container": "toolbox", "follow": True}
    }
    assert made["spec"] == {**TEMPLATE, "image": following, "environment": "gprd"}


def test_the_template_cannot_name_another_environment() -> None:
    env = environment(schedule={"namespace": "gitlab", "template": {"environment": "gstg"}})
    opening = schedule.due(env, WEDNESDAY_1310)
    assert isinstance(opening, datetime)
    started = schedule.start(env, opening, [])
    assert isinstance(started, schedule.Start)
    assert started.migration["spec"]["environment"] == "gprd"


def test_once_started_the_same_opening_is_done_the_next_one_is_due() -> None:
    env = environment()
    env["status"] = {"scheduled": {"opening": "2026-12-02T13:00:00Z", "migration": "gitlab/x"}}
    assert schedule.due(env, WEDNESDAY_1310) is None
    thursday = datetime(2026, 12, 3, 13, 0, 30, tzinfo=UTC)
    assert schedule.due(env, thursday) == datetime(2026, 12, 3, 13, 0, tzinfo=UTC)


def test_a_change_lock_starts_nothing_and_says_so() -> None:
    env = environment(changeLock={"reason": "CR 42", "by": "alice"})
    found = schedule.due(env, WEDNESDAY_1310)
    assert isinstance(found, schedule.Wait)
    assert found.reason == when.CHANGE_LOCKED
    assert "CR 42" in found.message


def test_an_unfinished_scheduled_run_starts_nothing_new() -> None:
    found = schedule.start(environment(), WEDNESDAY_1310, ["gitlab/gprd-20261201-1300"])
    assert isinstance(found, schedule.Wait)
    assert found.reason == "PreviousRunUnfinished"
    assert "gitlab/gprd-20261201-1300" in found.message


def test_a_suspended_schedule_starts_nothing() -> None:
    env = environment(schedule={"namespace": "gitlab", "template": TEMPLATE, "suspend": True})
    found = schedule.due(env, WEDNESDAY_1310)
    assert isinstance(found, schedule.Wait)
    assert found.reason == "Suspended"


def test_a_long_environment_name_still_makes_a_name_the_crd_admits() -> None:
    name = schedule.name_for("e" * 63, WEDNESDAY_1310)
    assert len(name) == schedule.MAX_NAME
    assert name.endswith("-20261202-1310")


def test_the_environment_status_shows_the_window_and_the_run_started() -> None:
    now = timestamps.rfc3339(WEDNESDAY_NOON)
    shut = envstatus.compute(environment(), None, None, [], "pdm/h", now)
    assert shut["windowOpen"] is False
    assert shut["nextOpening"] == "2026-12-02T13:00:00Z"
    said = envstatus._said("True", "Started", "started gitlab/gprd-20261202-1300")
    started: Scheduled = {
        "opening": "2026-12-02T13:00:00Z",
        "migration": "gitlab/gprd-20261202-1300",
    }
    open_ = envstatus.compute(
        environment(),
        None,
        None,
        [],
        "pdm/h",
        timestamps.rfc3339(WEDNESDAY_1310),
        (said, started),
    )
    assert open_["windowOpen"] is True
    assert open_["nextOpening"] is None
    assert open_["scheduled"] == started
    scheduled = [c for c in open_["conditions"] if c["type"] == schedule.SCHEDULED]
    assert [(c["status"], c["reason"]) for c in scheduled] == [("True", "Started")]


def test_without_windows_the_status_says_nothing_of_them() -> None:
    env = copy.deepcopy(environment())
    del env["spec"]["windows"], env["spec"]["schedule"]
    status = envstatus.compute(env, None, None, [], "pdm/h", timestamps.rfc3339(WEDNESDAY_NOON))
    assert status["windowOpen"] is None
    assert status["nextOpening"] is None
