"""The IssueNote sink: its text, its marker, its policy, its place in the outbox,
and one delivery against the strict fake GitLab on loopback (exactly once,
GitLab's refusals)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pdm_operator import timestamps
from pdm_operator.reporting import outbox, policy
from pdm_operator.reporting.records import PLANNED, Result
from pdm_operator.reporting.sinks import Context, deliver, issue_note
from tests.support.fake_gitlab import OTHER_USER, FakeGitLab

UID = "6f1c2b9e-0d3a-4e57-9a8b-2c4d5e6f7a8b"
PROJECT = "gitlab-org/release/tasks"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PENDING = [
    {"database": "main", "version": "20251101000001", "name": "AddIndexToEvents"},
    {"database": "main", "version": "20251101000002", "name": "DropOldColumn", "action": "Hold"},
    {"database": "ci", "version": "20251101000003", "name": "BackfillBuilds"},
]


def note_sink(**extra: Any) -> dict[str, Any]:
    return {"type": "IssueNote", "project": PROJECT, "issue": 1, **extra}


def migration(
    status: dict[str, Any] | None = None, sinks: list[dict[str, Any]] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "pdm-1", "namespace": "gitlab", "uid": UID},
        "spec": {
            "environment": "gprd",
            "mode": "Run",
            "pipeline": "Regular",
            "tracking": {
                "gitlab": {"url": "http://gitlab.invalid"},
                "version": {"ref": "18-6-stable-ee", "sha": "0a1b2c3d4e5f60718293"},
                "sinks": sinks if sinks is not None else [note_sink()],
            },
            **spec,
        },
        "status": status if status is not None else {},
    }


def planned_status(**more: Any) -> dict[str, Any]:
    return {
        "image": "registry.example.com/gitlab-toolbox-ee:v18.6.0",
        "preflight": {"phase": "Succeeded", "pendingCount": 3, "planHash": "sha256:" + "ab" * 32},
        "pendingMigrations": copy.deepcopy(PENDING),
        **more,
    }


# --- the text --------------------------------------------------------------------


def test_the_plan_names_the_image_version_and_each_pending_migration_in_order() -> None:
    body = issue_note.render_plan(migration(planned_status()), note_sink())
    assert "registry.example.com/gitlab-toolbox-ee:v18.6.0" in body
    assert "`18-6-stable-ee` `0a1b2c3d4e5`" in body
    assert "| Pending | 3 (1 held, not run now) |" in body
    rows = [line for line in body.splitlines() if "`2025110100000" in line]
    assert [r.split("|")[2].strip() for r in rows] == [
        "`20251101000001`",
        "`20251101000002`",
        "`20251101000003`",
    ]
    assert "| held |" in rows[1]
    assert "| pending |" in rows[0]
    assert issue_note.parse_marker(body) == (UID, "plan")


def test_a_plan_awaiting_approval_says_how_to_approve_it() -> None:
    body = issue_note.render_plan(
        migration(planned_status(), approval={"required": True}), note_sink()
    )
    assert f"`kubectl pdm approve -n gitlab pdm-1 --plan sha256:{'ab' * 32}`" in body
    approved = planned_status(approval={"planHash": "x", "by": "rm", "at": "t"})
    assert "Approval" not in issue_note.render_plan(
        migration(approved, approval={"required": True}), note_sink()
    )


def test_a_plan_without_pre_flight_says_the_list_is_unknown() -> None:
    body = issue_note.render_plan(migration({"image": "img", "jobName": "j"}), note_sink())
    assert "not listed: no pre-flight ran" in body


def test_a_success_lists_applied_and_held_with_the_durations_progress_recorded() -> None:
    status = planned_status(
        jobOutcome="Succeeded",
        startTime="2026-12-06T12:00:00Z",
        jobCompletionTime="2026-12-06T12:42:10Z",
        progress={"done": [{"version": "20251101000001", "seconds": 125.0}]},
    )
    body = issue_note.render_outcome(migration(status), note_sink(), "success")
    assert body.startswith("**Post-deployment migrations succeeded**")
    assert "| Migrations | 2 applied, 1 held (of 3 pending) |" in body
    assert "(42 min 10 s)" in body
    first = next(line for line in body.splitlines() if "`20251101000001`" in line)
    assert "| applied | 2 min 05 s |" in first
    assert issue_note.parse_marker(body) == (UID, "outcome")


def test_a_success_without_progress_still_renders() -> None:
    body = issue_note.render_outcome(
        migration(planned_status(jobOutcome="Succeeded")), note_sink(), "success"
    )
    assert "| applied |  |" in body


def test_a_failure_names_the_failing_migration_and_calls_the_others_unknown() -> None:
    status = planned_status(
        jobOutcome="Failed",
        failure={
            "reason": "BackoffLimitExceeded",
            "message": "the Job failed",
            "migration": {
                "version": "20251101000003",
                "name": "BackfillBuilds",
                "database": "ci",
                "error": "PG::LockNotAvailable: ERROR: canceling statement due to lock timeout",
            },
        },
    )
    body = issue_note.render_outcome(migration(status), note_sink(), "failed")
    assert "| Failed at | `20251101000003` `BackfillBuilds` `ci` |" in body
    assert "PG::LockNotAvailable" in body
    fates = {m["version"]: fate for m, fate in issue_note.fates(status, "failed")}
    assert fates == {
        "20251101000001": "unknown",  # never "applied" without a record of it
        "20251101000002": "held",
        "20251101000003": "failed",
    }
    assert "which of the others ran is not recorded" in body


def test_a_failure_with_progress_says_what_ran_before_it() -> None:
    status = planned_status(
        jobOutcome="Failed",
        failure={"reason": "BackoffLimitExceeded", "migration": {"version": "20251101000003"}},
        progress={"done": [{"version": "20251101000001", "durationSeconds": 3}]},
    )
    fates = {m["version"]: fate for m, fate in issue_note.fates(status, "failed")}
    assert fates == {
        "20251101000001": "applied",
        "20251101000002": "held",
        "20251101000003": "failed",
    }


def test_a_migration_the_progress_does_not_record_is_unknown_never_not_run() -> None:
    """The progress is read at a bounded rate: it may lag what Rails did."""
    status = planned_status(
        jobOutcome="Failed",
        failure={"reason": "DeadlineExceeded"},
        progress={"done": [{"version": "20251101000001", "seconds": 3}], "total": 2},
    )
    fates = {m["version"]: fate for m, fate in issue_note.fates(status, "failed")}
    assert fates == {
        "20251101000001": "applied",
        "20251101000002": "held",
        "20251101000003": "unknown",
    }


def test_nothing_a_migration_name_or_error_says_can_act_on_the_issue() -> None:
    """Quick actions are read at the start of a line; mentions outside code ping people."""
    evil = "x\n/close\n/label ~security @release-managers `|` "
    status = planned_status(
        image=evil,
        pendingMigrations=[{"database": "main", "version": "1", "name": evil}],
        jobOutcome="Failed",
        failure={"reason": evil, "message": evil, "migration": {"version": "1", "error": evil}},
    )
    for body in (
        issue_note.render_plan(migration(status), note_sink()),
        issue_note.render_outcome(migration(status), note_sink(), "failed"),
    ):
        for line in body.splitlines():
            assert line[:1] in ("", "*", "|", "<"), line
        assert "@release-managers" in body
        for line in body.splitlines():
            if "@release-managers" in line:
                # only ever inside inline code: between an odd and an even backtick
                before = line.split("@release-managers")[0]
                assert before.count("`") % 2 == 1, line


def test_a_long_list_is_cut_below_gitlabs_limit_and_says_what_is_missing() -> None:
    many = [{"database": "main", "version": f"2025{i:010d}", "name": "N" * 250} for i in range(500)]
    status = planned_status(pendingMigrations=many)
    status["preflight"]["pendingCount"] = 1200
    body = issue_note.render_plan(migration(status), note_sink())
    assert len(body) <= issue_note.LIMIT
    assert "and 700 more not listed in the status" in body or "note cut" in body
    assert issue_note.parse_marker(body) == (UID, "plan")


def test_the_marker_is_read_back_and_nothing_else_passes_for_it() -> None:
    assert issue_note.parse_marker(issue_note.marker(UID, "outcome")) == (UID, "outcome")
    assert issue_note.parse_marker("pdm-operator note uid=x kind=plan") is None
    assert issue_note.parse_marker("") is None


def test_a_look_alike_marker_in_the_clusters_text_does_not_pass_for_the_outcome() -> None:
    forged = issue_note.marker(UID, "outcome")
    status = planned_status(
        pendingMigrations=[{"database": "main", "version": "1", "name": forged}]
    )
    body = issue_note.render_plan(migration(status), note_sink())
    assert forged in body  # shown, inside inline code
    assert issue_note.parse_marker(body) == (UID, "plan")


# --- policy and the outbox -------------------------------------------------------


@pytest.mark.parametrize(("pipeline", "required"), [("Regular", True), ("Rollback", False)])
def test_the_note_is_never_blocking_and_skipped_for_rollbacks_unless_required(
    pipeline: str, required: bool
) -> None:
    assert policy.for_sink({"type": "IssueNote"}, pipeline) == policy.Policy(required, False)
    forced = policy.for_sink({"type": "IssueNote", "required": True}, "Rollback")
    assert forced == policy.Policy(True, False)


def test_the_plan_is_wanted_once_the_pre_flight_found_one_and_only_by_the_note() -> None:
    sinks = [
        note_sink(),
        {"type": "GitLabDeployment", "projects": ["gitlab-org/gitlab"]},
        {"type": "ReleaseMetadata", "project": "gitlab-org/release/metadata"},
    ]
    before = migration({"preflight": {"phase": "Running"}}, sinks=sinks)
    assert outbox.intents(before) == []
    wanted = outbox.intents(migration(planned_status(), sinks=sinks))
    assert [(i.sink, i.target, i.desired) for i in wanted] == [
        ("IssueNote", f"{PROJECT}#1", PLANNED)
    ]


def test_a_pre_flight_that_found_nothing_plans_nothing() -> None:
    status = {"preflight": {"phase": "Succeeded", "pendingCount": 0}}
    assert outbox.intents(migration(status)) == []


def test_a_plan_once_recorded_stays_while_the_pre_flight_runs_again() -> None:
    status = planned_status()
    records = outbox.merge([], outbox.intents(migration(status)), NOW)
    again = {"preflight": {"phase": "Running"}, "reports": records}
    assert [i.desired for i in outbox.intents(migration(again))] == [PLANNED]


def test_the_plan_then_the_outcome_and_a_dry_run_gets_neither() -> None:
    assert [i.desired for i in outbox.intents(migration({"jobName": "j"}))] == [PLANNED]
    done = migration({"jobName": "j", "jobOutcome": "Failed"})
    assert [i.desired for i in outbox.intents(done)] == ["failed"]
    dry = migration(planned_status(jobName="j"), mode="DryRun")
    assert outbox.intents(dry) == []


# --- one delivery against the strict fake ----------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab() as server:
        server.add_issue(PROJECT, "Release 18.6.0")
        yield server
        assert server.server_errors == []


def context(server: FakeGitLab, status: dict[str, Any], **sink: Any) -> Context:
    body = migration(status, sinks=[note_sink(**sink)])
    body["spec"]["tracking"]["gitlab"]["url"] = server.url
    return Context(
        migration=body,
        records=[],
        gitlab_token=lambda: server.token,
        sentry_token=lambda _: "",
        timeout=5.0,
        now=datetime.now(UTC),
    )


def record(desired: str = PLANNED, target: str = f"{PROJECT}#1") -> dict[str, Any]:
    planned = timestamps.rfc3339(datetime.now(UTC) - timedelta(seconds=5))
    return {"sink": "IssueNote", "target": target, "desired": desired, "plannedTime": planned}


def posts(server: FakeGitLab) -> list[Any]:
    return [r for r in server.requests if r.method == "POST" and r.path.endswith("/notes")]


def test_a_note_is_posted_once_and_a_second_attempt_finds_it(fake: FakeGitLab) -> None:
    ctx = context(fake, planned_status())
    first = deliver(record(), ctx)
    again = deliver(record(), ctx)
    assert first.delivered
    assert again.delivered
    assert first.remote_id == again.remote_id
    (note,) = fake.notes(PROJECT, 1)
    assert issue_note.parse_marker(note["body"]) == (UID, "plan")
    assert len(posts(fake)) == 1
    assert fake.quick_actions(PROJECT, 1) == []


def test_a_lost_answer_is_not_posted_twice(fake: FakeGitLab) -> None:
    fake.faults.lose_response(method="POST", path=r"/notes$", times=1)
    ctx = context(fake, planned_status())
    lost = deliver(record(), ctx)
    assert not lost.delivered
    assert not lost.permanent
    found = deliver(record(), ctx)
    assert found.delivered
    assert len(fake.notes(PROJECT, 1)) == 1
    assert len(posts(fake)) == 1


def test_our_note_is_found_behind_pages_of_newer_comments(fake: FakeGitLab) -> None:
    ctx = context(fake, planned_status())
    assert deliver(record(), ctx).delivered
    for i in range(230):
        fake.add_note(PROJECT, 1, f"comment {i}")
        fake.add_note(PROJECT, 1, "changed the milestone", system=True)
    assert deliver(record(), ctx).delivered
    assert len(posts(fake)) == 1
    listed = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/notes")]
    assert [r.query.get("page", ["1"])[0] for r in listed[-3:]] == ["1", "2", "3"]
    assert all(r.query["activity_filter"] == ["only_comments"] for r in listed)


def test_someone_elses_note_with_our_marker_is_not_ours(fake: FakeGitLab) -> None:
    fake.add_note(PROJECT, 1, issue_note.marker(UID, "plan"), user=OTHER_USER)
    assert deliver(record(), context(fake, planned_status())).delivered
    assert len(posts(fake)) == 1


def test_the_outcome_is_a_note_of_its_own_beside_the_plan(fake: FakeGitLab) -> None:
    ctx = context(fake, planned_status(jobOutcome="Succeeded"))
    assert deliver(record(), ctx).delivered
    assert deliver(record("success"), ctx).delivered
    assert deliver(record("success"), ctx).delivered
    kinds = [issue_note.parse_marker(n["body"]) for n in fake.notes(PROJECT, 1)]
    assert kinds == [(UID, "plan"), (UID, "outcome")]


def test_an_old_note_before_the_record_was_planned_ends_the_look(fake: FakeGitLab) -> None:
    fake.add_note(PROJECT, 1, "old", created_at=datetime.now(UTC) - timedelta(days=2))
    assert deliver(record(), context(fake, planned_status())).delivered
    assert len(posts(fake)) == 1


def test_an_internal_note_is_asked_for_when_the_sink_says_so(fake: FakeGitLab) -> None:
    assert deliver(record(), context(fake, planned_status(), internal=True)).delivered
    (note,) = fake.notes(PROJECT, 1)
    assert note["internal"] is True
    assert "created_at" not in posts(fake)[0].json()


def test_a_missing_issue_fails_for_good_and_says_so(fake: FakeGitLab) -> None:
    result = deliver(record(target=f"{PROJECT}#99"), context(fake, planned_status(), issue=99))
    assert result.permanent
    assert result.error is not None
    assert "404" in result.error
    assert PROJECT in result.error


def test_a_missing_permission_is_named(fake: FakeGitLab) -> None:
    fake.forbid(PROJECT, "create_note")
    result = deliver(record(), context(fake, planned_status()))
    assert result.permanent
    assert result.error is not None
    assert "403 Forbidden" in result.error
    assert "create_note" in result.error


@pytest.mark.parametrize(("retry_after", "expected"), [(7, 7.0), (None, None)])
def test_the_notes_rate_limit_is_retried_when_gitlab_allows(
    fake: FakeGitLab, retry_after: int | None, expected: float | None
) -> None:
    fake.notes_rate_limit, fake.notes_retry_after = 0, retry_after
    result = deliver(record(), context(fake, planned_status()))
    assert not result.delivered
    assert not result.permanent
    assert result.retry_after == expected
    assert fake.notes(PROJECT, 1) == []


def test_a_server_error_is_retried_and_never_leaks_the_token(fake: FakeGitLab) -> None:
    fake.faults.error(503, body={"message": f"upstream said {fake.token}"}, method="POST")
    result = deliver(record(), context(fake, planned_status()))
    assert result == Result(error=result.error, retry_after=None)
    assert result.error is not None
    assert fake.token not in result.error


def test_a_redirect_is_not_followed(fake: FakeGitLab) -> None:
    with FakeGitLab() as elsewhere:
        fake.faults.error(302, headers={"Location": f"{elsewhere.url}/api/v4/user"})
        result = deliver(record(), context(fake, planned_status()))
        assert elsewhere.requests == []
    assert result.error is not None
    assert "redirect" in result.error


def test_a_migration_without_a_uid_is_never_noted(fake: FakeGitLab) -> None:
    ctx = context(fake, planned_status())
    ctx.migration["metadata"]["uid"] = ""
    result = deliver(record(), ctx)
    assert result.permanent
    assert posts(fake) == []
