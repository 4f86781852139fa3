"""Events about a migration: idempotent names, bounded messages, Warning for trouble."""

from __future__ import annotations

import re

import pytest

from pdm_operator import environments, events, model
from pdm_operator.model import Body

NOW = "2026-11-22T12:00:00Z"
LATER = "2026-11-22T12:00:01Z"
UID = "0b6c1e52-3f0a-4d8e-9a57-6f2d1c0e4b11"


def migration(uid: str = UID) -> Body:
    return {
        "apiVersion": "pdm-operator.io/v1alpha1",
        "kind": "PostDeployMigration",
        "metadata": {"name": "gstg-2026-11-22-1200", "namespace": "gitlab", "uid": uid},
        "spec": {"environment": "gstg"},
    }


def name_of(**overrides: str) -> str:
    uid = overrides.pop("uid", UID)
    args = {"kind": "Normal", "reason": "Created", "message": "Job created", "now": NOW}
    args.update(overrides)
    event = events.event_for(
        migration(uid),
        args["kind"],
        args["reason"],
        args["message"],
        args["now"],
    )
    name: str = event["metadata"]["name"]
    return name


# --- event_for -------------------------------------------------------------------------


def test_same_event_renders_the_same_name_so_a_retried_post_is_not_duplicated() -> None:
    first = events.event_for(migration(), "Normal", "Created", "Job created", NOW)
    second = events.event_for(migration(), "Normal", "Created", "Job created", NOW)
    assert first == second


def test_event_name_is_the_migration_name_and_a_hex_suffix() -> None:
    name = name_of()
    assert re.fullmatch(r"gstg-2026-11-22-1200\.[0-9a-f]{10}", name), name


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "Adopted"},
        {"now": LATER},
        {"message": "Job created again"},
        {"uid": "11111111-2222-3333-4444-555555555555"},
    ],
    ids=["reason", "time", "message", "uid"],
)
def test_event_name_differs_when_reason_time_message_or_object_differ(
    change: dict[str, str],
) -> None:
    assert name_of(**change) != name_of()


def test_event_describes_the_migration_it_is_about() -> None:
    event = events.event_for(migration(), "Warning", "RolloutStuck", "stuck", NOW)
    assert event["apiVersion"] == "v1"
    assert event["kind"] == "Event"
    assert event["metadata"]["namespace"] == "gitlab"
    assert event["involvedObject"] == {
        "apiVersion": "pdm-operator.io/v1alpha1",
        "kind": "PostDeployMigration",
        "name": "gstg-2026-11-22-1200",
        "namespace": "gitlab",
        "uid": UID,
    }
    assert event["type"] == "Warning"
    assert event["reason"] == "RolloutStuck"
    assert event["message"] == "stuck"
    assert event["firstTimestamp"] == NOW
    assert event["lastTimestamp"] == NOW
    assert event["count"] == 1
    assert event["source"] == {"component": "pdm-operator"}
    assert event["reportingComponent"] == "pdm-operator"


def test_long_message_is_truncated_to_1024_characters_with_an_ellipsis() -> None:
    message = "".join(f"{i:05d}" for i in range(1000))
    event = events.event_for(migration(), "Warning", "BackoffLimitExceeded", message, NOW)
    assert len(event["message"]) == 1024
    assert event["message"] == message[:1021] + "..."


def test_message_of_exactly_1024_characters_is_kept_whole() -> None:
    message = "m" * 1024
    event = events.event_for(migration(), "Normal", "Created", message, NOW)
    assert event["message"] == message


# --- kind_of ---------------------------------------------------------------------------


def c(ctype: str, status: str, reason: str = "R") -> Body:
    return {"type": ctype, "status": status, "reason": reason}


@pytest.mark.parametrize(
    "condition",
    [
        c("Failed", "True", "BackoffLimitExceeded"),
        c("Failed", "True", "DependencyFailed"),
        c("ImageResolved", "False", "DeploymentNotFound"),
        c("JobCreated", "False", "CreateFailed"),
        c("Gated", "True", "ImageChanged"),
        c("Gated", "True", "RolloutStuck"),
        c("Gated", "True", "JobNameTaken"),
    ],
    ids=lambda cond: f"{cond['type']}-{cond['status']}-{cond['reason']}",
)
def test_trouble_is_a_warning(condition: Body) -> None:
    assert events.kind_of(condition) == "Warning"


@pytest.mark.parametrize(
    "condition",
    [
        c("Failed", "False", "JobComplete"),
        c("Succeeded", "True", "JobComplete"),
        c("Succeeded", "False", "BackoffLimitExceeded"),
        c("ImageResolved", "True", "FromDeployment"),
        c("JobCreated", "True", "Created"),
        c("Gated", "True", "Suspended"),
        c("Gated", "True", "RolloutPending"),
        c("Gated", "True", "WaitingForMigrations"),
        c("Gated", "True", "EnvironmentLocked"),
        c("Gated", "False", "GatesOpen"),
        {"type": "Gated", "status": "True"},
    ],
    ids=lambda cond: f"{cond['type']}-{cond['status']}-{cond.get('reason')}",
)
def test_progress_is_normal(condition: Body) -> None:
    assert events.kind_of(condition) == "Normal"


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [("True", "Delivered", "Normal"), ("False", "Pending", "Normal"),
     ("False", "DeliveryFailed", "Warning"), ("False", "GaveUp", "Warning")],
)  # fmt: skip
def test_reports_have_one_kind_whoever_writes_them(status: str, reason: str, kind: str) -> None:
    cond = {"type": "Reported", "status": status, "reason": reason}
    assert events.kind_of(cond) == kind
    assert events.reason_of(cond) == f"Report{reason}"


def test_companion_transitions_are_not_announced() -> None:
    failed = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    assert not events.announced({"type": "Succeeded", "status": "False", "reason": "X"}, failed)
    assert not events.announced({"type": "JobValidated", "status": "True", "reason": "X"}, [])
    assert not events.announced({"type": "Gated", "status": "False", "reason": "GatesOpen"}, [])
    resolved = {"type": "ImageResolved", "status": "True", "reason": "FromDeployment"}
    assert not events.announced(resolved, [])
    assert events.announced({**resolved, "status": "False", "reason": "DeploymentNotFound"}, [])
    assert events.announced({"type": "Gated", "status": "True", "reason": "Suspended"}, [])
    assert not events.announced({"type": "Reconciling", "status": "False", "reason": "X"}, [])
    assert not events.announced({"type": "Stalled", "status": "True", "reason": "X"}, failed)
    assert events.announced({"type": "Stalled", "status": "True", "reason": "X"}, [])
    assert events.announced(failed[0], failed)
    # An undelivered report has the reporter's own Event (ReportFailed ...).
    undelivered = {"type": "Reported", "status": "False", "reason": "DeliveryFailed"}
    assert not events.announced(undelivered, [])
    assert not events.announced({**undelivered, "reason": "GaveUp"}, [])
    assert events.announced({**undelivered, "reason": "Pending"}, [])
    assert events.announced({**undelivered, "status": "True", "reason": "Delivered"}, [])
    assert events.reason_of(failed[0]) == "BackoffLimitExceeded"


@pytest.mark.parametrize("reason", sorted(environments.HOLDS))
def test_a_migration_held_by_its_environments_rules_is_a_warning(reason: str) -> None:
    held = {"type": model.GATED, "status": "True", "reason": reason}
    assert events.kind_of(held) == "Warning"


def test_a_preflight_answer_written_with_its_job_has_the_jobs_event_only() -> None:
    answer = {"type": "Preflight", "status": "True", "reason": "MigrationsPending"}
    created = {"type": "JobCreated", "status": "True", "reason": "Created"}
    assert events.announced(answer, [answer, created])  # logged
    assert events.told_by_another(answer, [answer, created])  # but one Event: Created's
    assert not events.told_by_another(created, [answer, created])
    # An answer that waits for an approval, or ends the run, keeps its own.
    gated = {"type": "Gated", "status": "True", "reason": "AwaitingApproval"}
    assert not events.told_by_another(answer, [answer, gated])
    nothing = {**answer, "reason": "NothingPending"}
    assert not events.told_by_another(nothing, [nothing, created])
