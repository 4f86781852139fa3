"""Conditions follow the API conventions: the transition time moves only with the status."""

from __future__ import annotations

import copy

import pytest

from pdm_operator import conditions
from pdm_operator.conditions import Condition
from pdm_operator.model import Body

T0 = "2026-11-22T12:00:00Z"
T1 = "2026-11-22T12:05:00Z"


def cond(ctype: str, status: str, reason: str = "", message: str = "", at: str = T0) -> Body:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": at,
    }


# --- apply ---------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [None, []])
def test_apply_adds_a_condition_with_every_field_when_there_is_none(
    existing: list[Body] | None,
) -> None:
    out = conditions.apply(existing, Condition("Gated", "True", "Suspended", "approve me"), 3, T0)
    assert out == [
        {
            "type": "Gated",
            "status": "True",
            "reason": "Suspended",
            "message": "approve me",
            "observedGeneration": 3,
            "lastTransitionTime": T0,
        }
    ]


def test_apply_appends_a_new_type_and_keeps_the_others_in_order() -> None:
    old = [cond("ImageResolved", "True", "FromDeployment"), cond("Gated", "True", "Suspended")]
    out = conditions.apply(old, Condition("JobCreated", "True", "Created"), 1, T1)
    assert [c["type"] for c in out] == ["ImageResolved", "Gated", "JobCreated"]
    assert out[:2] == old


def test_apply_replaces_the_condition_of_the_same_type_in_place() -> None:
    old = [
        cond("ImageResolved", "True", "FromDeployment"),
        cond("Gated", "True", "Suspended"),
        cond("JobCreated", "False", "CreateFailed"),
    ]
    out = conditions.apply(old, Condition("Gated", "False", "GatesOpen", "all open"), 2, T1)
    assert [c["type"] for c in out] == ["ImageResolved", "Gated", "JobCreated"]
    assert out[1] == {
        "type": "Gated",
        "status": "False",
        "reason": "GatesOpen",
        "message": "all open",
        "observedGeneration": 2,
        "lastTransitionTime": T1,
    }
    assert out[0] == old[0]
    assert out[2] == old[2]


def test_condition_keeps_transition_time_when_only_reason_and_message_change() -> None:
    old = [cond("Gated", "True", "Suspended", "approve me", at=T0)]
    out = conditions.apply(
        old, Condition("Gated", "True", "RolloutPending", "2/3 replicas updated"), 1, T1
    )
    assert out[0]["lastTransitionTime"] == T0
    assert out[0]["reason"] == "RolloutPending"
    assert out[0]["message"] == "2/3 replicas updated"


def test_condition_transition_time_moves_when_status_changes() -> None:
    old = [cond("Gated", "True", "Suspended", at=T0)]
    out = conditions.apply(old, Condition("Gated", "False", "GatesOpen"), 1, T1)
    assert out[0]["lastTransitionTime"] == T1
    assert out[0]["status"] == "False"


def test_condition_without_a_transition_time_gets_now_even_when_status_is_unchanged() -> None:
    old = [{"type": "Gated", "status": "True", "reason": "Suspended"}]
    out = conditions.apply(old, Condition("Gated", "True", "Suspended"), 1, T1)
    assert out[0]["lastTransitionTime"] == T1


def test_observed_generation_is_updated_even_when_nothing_else_changes() -> None:
    old = [cond("Gated", "True", "Suspended", "approve me")]
    out = conditions.apply(old, Condition("Gated", "True", "Suspended", "approve me"), 7, T1)
    assert out[0]["observedGeneration"] == 7
    assert out[0]["lastTransitionTime"] == T0


def test_apply_does_not_mutate_the_input_list_or_its_conditions() -> None:
    old = [cond("ImageResolved", "True", "FromDeployment"), cond("Gated", "True", "Suspended")]
    snapshot = copy.deepcopy(old)
    out = conditions.apply(old, Condition("Gated", "False", "GatesOpen"), 2, T1)
    assert old == snapshot
    out[0]["status"] = "Unknown"
    out.append(cond("Failed", "True", "X"))
    assert old == snapshot


# --- find / is_true --------------------------------------------------------------------


def test_is_true_only_for_a_present_condition_with_status_true() -> None:
    conds = [cond("Succeeded", "True", "JobComplete"), cond("Failed", "False", "JobComplete")]
    assert conditions.is_true(conds, "Succeeded")
    assert not conditions.is_true(conds, "Failed")
    assert not conditions.is_true(conds, "Gated")
    assert not conditions.is_true(None, "Succeeded")
    assert conditions.find(conds, "Failed") is conds[1]
    assert conditions.find(conds, "Gated") is None


# --- transitions -----------------------------------------------------------------------


def test_transitions_report_every_condition_when_there_were_none() -> None:
    new = [cond("ImageResolved", "True", "FromDeployment"), cond("Gated", "True", "Suspended")]
    assert conditions.transitions(None, new) == new
    assert conditions.transitions([], new) == new


def test_transitions_report_a_status_change() -> None:
    old = [cond("Gated", "True", "GatesOpen")]
    new = [cond("Gated", "False", "GatesOpen")]
    assert conditions.transitions(old, new) == new


def test_transitions_report_a_reason_change_with_the_same_status() -> None:
    old = [cond("Gated", "True", "Suspended")]
    new = [cond("Gated", "True", "RolloutPending")]
    assert conditions.transitions(old, new) == new


def test_transitions_ignore_message_time_and_generation_changes() -> None:
    old = [cond("Gated", "True", "RolloutPending", "1/3 updated", at=T0)]
    new = [
        {**cond("Gated", "True", "RolloutPending", "2/3 updated", at=T1), "observedGeneration": 2}
    ]
    assert conditions.transitions(old, new) == []


def test_transitions_report_only_the_conditions_that_changed() -> None:
    old = [cond("ImageResolved", "True", "FromDeployment"), cond("Gated", "True", "Suspended")]
    new = [
        cond("ImageResolved", "True", "FromDeployment"),
        cond("Gated", "False", "GatesOpen"),
        cond("JobCreated", "True", "Created"),
    ]
    assert conditions.transitions(old, new) == new[1:]


# --- summarize -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conds", "expected"),
    [
        pytest.param(
            [
                cond("ImageResolved", "True", "FromDeployment"),
                cond("Gated", "False", "GatesOpen"),
                cond("JobCreated", "True", "Created"),
                cond("Succeeded", "False", "BackoffLimitExceeded"),
                cond("Failed", "True", "BackoffLimitExceeded"),
            ],
            ("Failed", "BackoffLimitExceeded"),
            id="failed-job",
        ),
        pytest.param(
            [cond("Succeeded", "True", "JobComplete"), cond("Failed", "True", "JobDeleted")],
            ("Failed", "JobDeleted"),
            id="failed-wins-over-succeeded",
        ),
        pytest.param(
            [
                cond("JobCreated", "True", "Created"),
                cond("Succeeded", "True", "JobComplete"),
                cond("Failed", "False", "JobComplete"),
            ],
            ("Succeeded", "JobComplete"),
            id="succeeded-wins-over-running",
        ),
        pytest.param(
            [cond("Gated", "True", "RolloutPending"), cond("JobCreated", "True", "Adopted")],
            ("Running", "Adopted"),
            id="running-wins-over-gated",
        ),
        pytest.param(
            [cond("Gated", "False", "GatesOpen"), cond("JobCreated", "True", "Created")],
            ("Running", "Created"),
            id="running",
        ),
        pytest.param(
            [
                cond("ImageResolved", "True", "FromDeployment"),
                cond("Gated", "True", "EnvironmentLocked"),
                cond("JobCreated", "False", "CreateFailed"),
            ],
            ("Gated", "EnvironmentLocked"),
            id="gated-when-job-not-created",
        ),
        pytest.param(
            [cond("ImageResolved", "False", "DeploymentNotFound")],
            ("Pending", "DeploymentNotFound"),
            id="pending-on-unresolved-image",
        ),
        pytest.param(
            [cond("ImageResolved", "True", "FromDeployment"), cond("Gated", "False", "GatesOpen")],
            ("Pending", "GatesOpen"),
            id="pending-with-resolved-image",
        ),
        pytest.param([], ("Pending", "Progressing"), id="no-conditions"),
        pytest.param(None, ("Pending", "Progressing"), id="no-conditions-list"),
    ],
)
def test_summarize_orders_failed_succeeded_running_gated_pending(
    conds: list[Body] | None, expected: tuple[str, str]
) -> None:
    assert conditions.summarize(conds) == expected
