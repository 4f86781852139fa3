"""The reporting policy and outbox, as pure decisions."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pdm_operator import timestamps
from pdm_operator.reporting import outbox, policy
from pdm_operator.reporting.records import Result
from pdm_operator.reporting.sinks import common, gitlab_deployment, mr_labels

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ALL_SINKS = [
    {"type": "GitLabDeployment", "projects": ["gitlab-org/gitlab", "gitlab-org/omnibus-gitlab"]},
    {"type": "ReleaseMetadata", "project": "gitlab-org/release/metadata"},
    {
        "type": "SentryDeploy",
        "org": "gitlab",
        "release": "18.6.0",
        "tokenSecretRef": {"name": "s", "key": "t"},
    },
    {"type": "QAIssue", "project": "gitlab-org/quality/release"},
    {"type": "MergeRequestLabels", "label": "workflow::post-deploy-db-gstg"},
]


def migration(pipeline: str = "Regular", sinks: list[dict] | None = None, **status: Any) -> dict:
    return {
        "metadata": {"name": "m", "namespace": "gitlab", "uid": "u"},
        "spec": {
            "environment": "gstg",
            "mode": "Run",
            "pipeline": pipeline,
            "tracking": {
                "gitlab": {"url": "http://g", "tokenSecretRef": {"name": "g", "key": "t"}},
                "version": {"ref": "master", "sha": "0a1b2c3d"},
                "blockingDeadlineSeconds": 600,
                "sinks": sinks if sinks is not None else copy.deepcopy(ALL_SINKS),
            },
        },
        "status": status,
    }


@pytest.mark.parametrize(
    ("pipeline", "kind", "required", "blocking"),
    [
        ("Regular", "GitLabDeployment", True, False),
        ("Regular", "MergeRequestLabels", True, False),
        ("Regular", "QAIssue", True, True),
        ("Regular", "SentryDeploy", True, False),
        ("Regular", "ReleaseMetadata", True, True),
        ("Rollback", "GitLabDeployment", True, False),
        ("Rollback", "MergeRequestLabels", False, False),
        ("Rollback", "QAIssue", False, False),
        ("Rollback", "SentryDeploy", True, False),
        ("Rollback", "ReleaseMetadata", True, True),
    ],
)
def test_default_policy_is_the_products_table(
    pipeline: str, kind: str, required: bool, blocking: bool
) -> None:
    assert policy.for_sink({"type": kind}, pipeline) == policy.Policy(required, blocking)


def test_sink_overrides_the_policy_and_a_skipped_sink_never_blocks() -> None:
    assert (
        policy.for_sink({"type": "ReleaseMetadata", "blocking": False}, "Rollback").blocking
        is False
    )
    assert (
        policy.for_sink({"type": "GitLabDeployment", "blocking": True}, "Regular").blocking is True
    )
    skipped = policy.for_sink({"type": "QAIssue", "required": False, "blocking": True}, "Regular")
    assert skipped == policy.Policy(required=False, blocking=False)


def test_nothing_is_reported_before_the_job_exists_or_for_a_dry_run() -> None:
    assert outbox.intents(migration()) == []
    dry = migration(jobName="j")
    dry["spec"]["mode"] = "DryRun"
    assert outbox.intents(dry) == []


def test_job_started_reports_running_deployments_only() -> None:
    wanted = outbox.intents(migration(jobName="j"))
    assert {(i.sink, i.target, i.desired) for i in wanted} == {
        ("GitLabDeployment", "gitlab-org/gitlab", "running"),
        ("GitLabDeployment", "gitlab-org/omnibus-gitlab", "running"),
        ("ReleaseMetadata", "gitlab-org/release/metadata", "running"),
    }


def test_success_reports_everything_and_mr_labels_default_to_the_deployment_projects() -> None:
    wanted = outbox.intents(migration(jobName="j", jobOutcome="Succeeded"))
    assert {(i.sink, i.target, i.desired) for i in wanted} == {
        ("GitLabDeployment", "gitlab-org/gitlab", "success"),
        ("GitLabDeployment", "gitlab-org/omnibus-gitlab", "success"),
        ("ReleaseMetadata", "gitlab-org/release/metadata", "success"),
        ("SentryDeploy", "gitlab/18.6.0", "created"),
        ("QAIssue", "gitlab-org/quality/release", "created"),
        ("MergeRequestLabels", "gitlab-org/gitlab", "labelled"),
        ("MergeRequestLabels", "gitlab-org/omnibus-gitlab", "labelled"),
    }


NOTHING_PENDING = [
    {"type": "JobCreated", "status": "False", "reason": "NothingPending"},
    {"type": "Succeeded", "status": "True", "reason": "NothingPending"},
]


@pytest.mark.parametrize(
    ("when", "reported"), [("Finish", False), ("FinishAndReport", True), (None, False)]
)
def test_nothing_pending_reports_a_success_only_when_asked_to(
    when: str | None, reported: bool
) -> None:
    m = migration(conditions=NOTHING_PENDING)
    if when:
        m["spec"]["preflight"] = {"whenNonePending": when}
    wanted = outbox.intents(m)
    if not reported:
        assert wanted == []
        return
    assert ("GitLabDeployment", "gitlab-org/gitlab", "success") in {
        (i.sink, i.target, i.desired) for i in wanted
    }
    assert all(i.desired != "running" for i in wanted)


def test_failure_reports_failed_deployments_and_nothing_of_success() -> None:
    wanted = outbox.intents(migration(jobName="j", jobOutcome="Failed"))
    assert {i.sink for i in wanted} == {"GitLabDeployment", "ReleaseMetadata"}
    assert {i.desired for i in wanted} == {"failed"}


def test_new_desired_state_restarts_delivery_but_keeps_the_remote_id() -> None:
    running = outbox.merge(None, outbox.intents(migration(jobName="j")), NOW)
    delivered = [
        outbox.after_attempt(r, Result(delivered=True, remote_id="41"), NOW, 86400) for r in running
    ]
    final = outbox.merge(
        delivered, outbox.intents(migration(jobName="j", jobOutcome="Succeeded")), NOW
    )
    dep = next(r for r in final if r["target"] == "gitlab-org/gitlab")
    assert dep["desired"] == "success"
    assert dep["state"] == "Pending"
    assert dep["attempts"] == 0
    assert dep["remoteId"] == "41"


def test_merge_keeps_progress_of_unchanged_records() -> None:
    records = outbox.merge(None, outbox.intents(migration(jobName="j")), NOW)
    tried = [
        outbox.after_attempt(r, Result(error="503"), NOW, 86400, jitter=lambda: 0.5)
        for r in records
    ]
    assert outbox.merge(tried, outbox.intents(migration(jobName="j")), NOW) == tried


def test_rollback_skips_what_it_does_not_require() -> None:
    records = outbox.merge(
        None, outbox.intents(migration("Rollback", jobName="j", jobOutcome="Succeeded")), NOW
    )
    states = {(r["sink"], r["state"]) for r in records}
    assert ("QAIssue", "Pending") not in states
    assert all(
        r["state"] != "Pending" for r in records if r["sink"] in ("QAIssue", "MergeRequestLabels")
    )


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    assert outbox.backoff(1, jitter=lambda: 0.5) == 2.0
    assert outbox.backoff(3, jitter=lambda: 0.5) == 8.0
    assert outbox.backoff(30, jitter=lambda: 0.5) == outbox.BACKOFF_CAP
    assert outbox.backoff(1, jitter=lambda: 0.0) == pytest.approx(1.6)
    assert outbox.backoff(1, jitter=lambda: 1.0) == pytest.approx(2.4)


def test_retry_after_is_honoured_instead_of_backoff() -> None:
    rec = {
        "sink": "GitLabDeployment",
        "target": "p",
        "desired": "running",
        "state": "Pending",
        "attempts": 0,
    }
    after = outbox.after_attempt(rec, Result(error="429", retry_after=42.0), NOW, 86400)
    assert after["nextAttemptTime"] == timestamps.rfc3339(NOW + timedelta(seconds=42))
    assert after["state"] == "Pending"
    assert after["attempts"] == 1
    assert after["lastError"] == "429"


def test_permanent_error_fails_the_record_and_old_ones_are_given_up() -> None:
    rec = {
        "sink": "GitLabDeployment",
        "target": "p",
        "desired": "running",
        "state": "Pending",
        "attempts": 0,
    }
    failed = outbox.after_attempt(rec, Result(error="403 Forbidden", permanent=True), NOW, 86400)
    assert failed["state"] == "Failed"
    assert "nextAttemptTime" not in failed
    old = {**rec, "attempts": 9, "firstAttemptTime": timestamps.rfc3339(NOW - timedelta(hours=25))}
    assert outbox.after_attempt(old, Result(error="503"), NOW, 86400)["state"] == "GaveUp"


def test_due_and_next_wakeup() -> None:
    later = {"state": "Pending", "nextAttemptTime": timestamps.rfc3339(NOW + timedelta(seconds=30))}
    now = {"state": "Pending"}
    done = {"state": "Delivered"}
    assert outbox.due([later, now, done], NOW) == [now]
    assert outbox.next_wakeup([later, done], NOW) == 30.0
    assert outbox.next_wakeup([done], NOW) is None


def test_reported_condition_tells_what_is_pending() -> None:
    pending = {"sink": "GitLabDeployment", "target": "p", "desired": "success", "state": "Pending"}
    records = [
        {**pending, "attempts": 3, "lastError": "connection failed"},
        {"sink": "SentryDeploy", "target": "o/r", "desired": "created", "state": "Delivered"},
    ]
    cond = outbox.reported_condition(records)
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", "Pending")
    assert "GitLabDeployment p (success): attempt 3: connection failed" in cond.message
    records[0]["state"] = "Delivered"
    cond = outbox.reported_condition(records)
    assert cond is not None
    assert (cond.status, cond.reason) == ("True", "Delivered")


def test_blocking_reports_hold_then_fail_after_the_deadline() -> None:
    m = migration(jobName="j", jobOutcome="Succeeded", jobCompletionTime=timestamps.rfc3339(NOW))
    m["status"]["reports"] = outbox.merge(None, outbox.intents(m), NOW)
    held = outbox.blocking_state(m, NOW + timedelta(seconds=10))
    assert (held.done, held.failed) == (False, False)
    assert "ReleaseMetadata gitlab-org/release/metadata" in held.message
    late = outbox.blocking_state(m, NOW + timedelta(seconds=601))
    assert late.failed is True
    assert "not delivered within 600s" in late.message
    for rec in m["status"]["reports"]:
        if rec["blocking"]:
            rec["state"] = "Delivered"
    assert outbox.blocking_state(m, NOW + timedelta(seconds=601)).done is True


def test_non_blocking_sinks_never_hold_the_migration() -> None:
    sinks = [
        {"type": "GitLabDeployment", "projects": ["p"]},
        {"type": "ReleaseMetadata", "project": "m", "blocking": False},
    ]
    m = migration(
        "Rollback",
        sinks=sinks,
        jobName="j",
        jobOutcome="Succeeded",
        jobCompletionTime=timestamps.rfc3339(NOW),
    )
    assert outbox.blocking_state(m, NOW).done is True


def test_needs_reporting_until_every_record_is_settled() -> None:
    m = migration(jobName="j")
    assert outbox.needs_reporting(m) is True
    m["status"]["reports"] = [
        {**r, "state": "Delivered"} for r in outbox.merge(None, outbox.intents(m), NOW)
    ]
    assert outbox.needs_reporting(m) is False
    m["status"]["jobOutcome"] = "Succeeded"
    assert outbox.needs_reporting(m) is True  # the final states are new intents


def test_a_new_desired_state_still_waits_for_the_servers_retry_after() -> None:
    running = outbox.merge(None, outbox.intents(migration(jobName="j")), NOW)
    limited = [
        outbox.after_attempt(r, Result(error="429", retry_after=30.0), NOW, 86400) for r in running
    ]
    final = outbox.merge(
        limited, outbox.intents(migration(jobName="j", jobOutcome="Succeeded")), NOW
    )
    dep = next(r for r in final if r["target"] == "gitlab-org/gitlab")
    assert dep["desired"] == "success"
    assert dep["nextAttemptTime"] == timestamps.rfc3339(NOW + timedelta(seconds=30))
    assert outbox.due(final, NOW + timedelta(seconds=29)) == [
        r for r in final if r["sink"] not in ("GitLabDeployment", "ReleaseMetadata")
    ]


def test_next_attempt_is_rounded_up_never_early() -> None:
    rec = {
        "sink": "GitLabDeployment",
        "target": "p",
        "desired": "running",
        "state": "Pending",
        "attempts": 0,
    }
    now = NOW + timedelta(microseconds=900_000)
    after = outbox.after_attempt(rec, Result(error="429", retry_after=4.0), now, 86400)
    assert timestamps.parse(after["nextAttemptTime"]) >= now + timedelta(seconds=4)


def test_each_target_carries_its_own_version_and_falls_back_to_the_shared_one() -> None:
    own = {"ref": "18-6-stable", "sha": "1234567"}
    sink = {
        "type": "GitLabDeployment",
        "projects": ["gitlab-org/gitlab"],
        "targets": [{"project": "gitlab-org/gitaly", "version": own}, {"project": "x/y"}],
    }
    spec = migration(sinks=[sink])["spec"]
    assert gitlab_deployment.projects(sink) == ["gitlab-org/gitlab", "gitlab-org/gitaly", "x/y"]
    assert common.version(spec, sink, "gitlab-org/gitaly") == own
    assert common.version(spec, sink, "gitlab-org/gitlab") == {"ref": "master", "sha": "0a1b2c3d"}
    assert common.version(spec, sink, "x/y") == {"ref": "master", "sha": "0a1b2c3d"}
    del spec["tracking"]["version"]
    assert common.version(spec, sink, "gitlab-org/gitlab") is None
    metadata = {"type": "ReleaseMetadata", "project": "m", "version": own}
    assert common.version(spec, metadata, "m") == own
    targets = {i.target for i in outbox.intents(migration(sinks=[sink], jobName="j"))}
    assert targets == {"gitlab-org/gitlab", "gitlab-org/gitaly", "x/y"}


def test_gitlab_environment_defaults_to_gitlab_com_convention() -> None:
    spec = migration()["spec"]
    assert common.gitlab_environment(spec) == "db/gstg"
    spec["tracking"]["gitlab"]["environment"] = "post-deploy/gstg"
    assert common.gitlab_environment(spec) == "post-deploy/gstg"


@pytest.mark.parametrize(
    ("environment", "label"),
    [
        ("gstg", "workflow::post-deploy-db-staging"),
        ("gprd", "workflow::post-deploy-db-production"),
        ("pre", None),
    ],
)
def test_default_merge_request_label_follows_gitlab_com(environment: str, label: str) -> None:
    spec = {**migration()["spec"], "environment": environment}
    assert mr_labels.label({"type": "MergeRequestLabels"}, spec) == label
    assert mr_labels.label({"type": "MergeRequestLabels", "label": "mine"}, spec) == "mine"


def test_planned_time_is_kept_across_desired_states() -> None:
    running = outbox.merge(None, outbox.intents(migration(jobName="j")), NOW)
    assert {r["plannedTime"] for r in running} == {"2026-11-22T12:00:00Z"}
    later = NOW + timedelta(minutes=5)
    final = outbox.merge(
        running, outbox.intents(migration(jobName="j", jobOutcome="Succeeded")), later
    )
    dep = next(r for r in final if r["sink"] == "GitLabDeployment")
    assert dep["desired"] == "success"
    assert dep["plannedTime"] == "2026-11-22T12:00:00Z"
    qa = next(r for r in final if r["sink"] == "QAIssue")
    assert qa["plannedTime"] == "2026-11-22T12:05:00Z"


def test_no_merge_requests_is_settled_but_not_delivered() -> None:
    m = migration(jobName="j", jobOutcome="Succeeded", jobCompletionTime="2026-11-22T12:00:00Z")
    records = [{**r, "state": "Delivered"} for r in outbox.merge(None, outbox.intents(m), NOW)]
    labels = next(r for r in records if r["sink"] == "MergeRequestLabels")
    waiting = outbox.after_attempt(
        labels, Result(waiting=True, retry_after=7, note="waiting for GitLab to link"), NOW, 86400
    )
    assert waiting["state"] == "Waiting"
    assert waiting["nextAttemptTime"] == "2026-11-22T12:00:07Z"
    assert waiting["note"] == "waiting for GitLab to link"
    none = outbox.after_attempt(
        waiting, Result(no_merge_requests=True, error="none linked in 900s"), NOW, 86400
    )
    assert none["state"] == "NoMergeRequests"
    assert "note" not in none
    records = [none if r is labels else r for r in records]
    cond = outbox.reported_condition(records)
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", "NoMergeRequestsLinked")
    assert "none linked in 900s" in cond.message
    m["status"]["reports"] = records
    assert not outbox.needs_reporting(m)


def test_conflict_is_kept_in_the_record() -> None:
    rec = outbox.merge(None, outbox.intents(migration(jobName="j")), NOW)[0]
    after = outbox.after_attempt(
        rec, Result(delivered=True, remote_id="9", conflict="deployment 7 by @x"), NOW, 86400
    )
    assert (after["state"], after["conflict"]) == ("Delivered", "deployment 7 by @x")
