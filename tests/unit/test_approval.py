"""Approval of a plan: what is approved is what runs, or the migration waits naming why."""

from __future__ import annotations

from typing import Any

import pytest

from pdm_operator import approval, preflight
from pdm_operator.model import Body
from pdm_operator.preflight import Pending

A = [Pending("main", "20261115000001", "Add index"), Pending("main", "20261115000002", "Drop x")]


IMAGE = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.6.0"
#: Pre-flight args that print a one-row table, whatever is pending.
ONE_ROW = [
    "/bin/sh",
    "-c",
    "printf '\\ndatabase: main\\n\\n Status   Migration ID    Migration Name\\n"
    + "-" * 50
    + "\\n  down    20261115000001  Add index\\n\\n'",
]


def plan(
    pending: list[Pending],
    job_hash: str = "a" * 64,
    args: list[str] | None = None,
    image: str = IMAGE,
) -> tuple[Body, list[Body]]:
    """What the operator records once a pre-flight with ``args`` in ``image`` answered."""
    args = list(preflight.DEFAULT_ARGS) if args is None else args
    pf = {
        "phase": "Succeeded",
        "jobHash": job_hash,
        "args": args,
        "image": image,
        "planHash": preflight.plan_hash(job_hash, pending, args=args, image=image),
        "pendingCount": len(pending),
    }
    return pf, [p.as_status() for p in pending]


def pdm(pf: Body | None, entries: list[Body], **approval_spec: object) -> Body:
    return {
        "metadata": {"name": "gprd-1", "namespace": "gitlab"},
        "spec": {"approval": {"required": True, **approval_spec}},
        "status": {"preflight": pf or {}, "pendingMigrations": entries, "state": "Gated"},
    }


def test_without_required_nothing_waits() -> None:
    pf, entries = plan(A)
    assert approval.check({}, pf, entries, "gprd-1") is None


def test_the_shown_plan_waits_for_an_approval_saying_how() -> None:
    pf, entries = plan(A)
    hold = approval.check({"approval": {"required": True}}, pf, entries, "gprd-1")
    assert hold is not None
    assert hold.reason == "AwaitingApproval"
    assert "2 migrations pending: 20261115000001 Add index (main)" in hold.message
    assert "kubectl pdm approve gprd-1" in hold.message


def test_an_approval_of_exactly_this_plan_lets_it_run() -> None:
    pf, entries = plan(A)
    given = approval.approval_for(pdm(pf, entries), "alice", "2026-12-02T10:00:00Z", None)
    assert given["by"] == "alice"
    assert given["migrations"] == ["20261115000001 (main)", "20261115000002 (main)"]
    assert given["jobName"] == "gprd-1-aaaaaaaa"
    spec = {"approval": {"required": True, "approved": given}}
    assert approval.check(spec, pf, entries, "gprd-1") is None


def test_an_approval_of_plan_a_does_not_run_plan_b_and_names_the_difference() -> None:
    pf_a, entries_a = plan(A)
    given = approval.approval_for(pdm(pf_a, entries_a), "alice", "2026-12-02T10:00:00Z", None)
    spec = {"approval": {"required": True, "approved": given}}
    # Someone applied the first migration meanwhile, and a new one appeared.
    b = [A[1], Pending("main", "20261115000003", "Backfill")]
    pf_b, entries_b = plan(b)
    hold = approval.check(spec, pf_b, entries_b, "gprd-1")
    assert hold is not None
    assert hold.reason == "PlanChanged"
    assert "not what alice approved at 2026-12-02T10:00:00Z" in hold.message
    assert "now pending as well: 20261115000003 (main)" in hold.message
    assert "no longer pending: 20261115000001 (main)" in hold.message
    # The same migrations under another Job (a new image) is another plan too.
    pf_c, entries_c = plan(A, job_hash="b" * 64)
    other = approval.check(spec, pf_c, entries_c, "gprd-1")
    assert other is not None
    assert "the Job changed (approved gprd-1-aaaaaaaa; the inputs hash is now bbbbbbbb)" in (
        other.message
    )


@pytest.mark.parametrize(
    ("status_pf", "why"),
    [
        ({}, "shows no plan yet"),
        ({"phase": "Running"}, "shows no plan yet"),
    ],
)
def test_no_plan_no_approval(status_pf: Body, why: str) -> None:
    with pytest.raises(approval.Refused, match=why):
        approval.approval_for(pdm(status_pf, []), "alice", "t", None)


def test_an_approval_is_for_the_plan_the_approver_reviewed() -> None:
    pf, entries = plan(A)
    with pytest.raises(approval.Refused, match="review it again"):
        approval.approval_for(pdm(pf, entries), "alice", "t", "sha256:" + "0" * 64)
    assert approval.approval_for(pdm(pf, entries), "alice", "t", pf["planHash"])


def test_a_running_or_unrequired_migration_is_not_approved() -> None:
    pf, entries = plan(A)
    running = pdm(pf, entries)
    running["status"]["jobName"] = "gprd-1-aaaaaaaa"
    with pytest.raises(approval.Refused, match="already runs"):
        approval.approval_for(running, "alice", "t", None)
    plain = pdm(pf, entries)
    plain["spec"] = {}
    with pytest.raises(approval.Refused, match="does not ask for an approval"):
        approval.approval_for(plain, "alice", "t", None)


def test_a_shown_unapproved_plan_holds_before_the_lock_without_a_new_preflight() -> None:
    pf, entries = plan(A)
    status = {"preflight": pf, "pendingMigrations": entries}
    spec = {"approval": {"required": True}}
    hold = approval.unapproved_shown_plan(spec, status, "a" * 64, "gprd-1")
    assert hold is not None
    assert hold.reason == "AwaitingApproval"
    # Another Job than the one shown: ask Rails again (show the new plan).
    assert approval.unapproved_shown_plan(spec, status, "c" * 64, "gprd-1") is None
    # Approved: take the lock and ask Rails again, to compare.
    given = approval.approval_for(pdm(pf, entries), "alice", "t", None)
    spec_ok = {"approval": {"required": True, "approved": given}}
    assert approval.unapproved_shown_plan(spec_ok, status, "a" * 64, "gprd-1") is None


@pytest.mark.parametrize(
    "other",
    [{"args": ONE_ROW}, {"image": IMAGE.replace("v18.6.0", "v18.6.1")}],
    ids=["other-preflight-args", "other-preflight-image"],
)
def test_a_plan_approved_with_another_preflight_no_longer_matches(other: dict[str, Any]) -> None:
    """The list is what the pre-flight printed: who approved a list approved the pod too."""
    pf_a, entries = plan(A[:1])
    given = approval.approval_for(pdm(pf_a, entries), "alice", "2026-12-02T10:00:00Z", None)
    spec = {"approval": {"required": True, "approved": given}}
    pf_b, _ = plan(A[:1], **other)
    hold = approval.check(spec, pf_b, entries, "gprd-1")
    assert hold is not None
    assert hold.reason == "PlanChanged"
    assert "found now by the pre-flight (image " in hold.message


def test_non_default_preflight_args_are_a_warning_before_the_plan_awaiting_approval() -> None:
    pf, entries = plan(A[:1], args=ONE_ROW)
    hold = approval.check({"approval": {"required": True}}, pf, entries, "gprd-1")
    assert hold is not None
    assert hold.reason == "AwaitingApproval"
    assert hold.message.startswith("WARNING: non-default pre-flight args (spec.preflight.args [")
    assert '"/bin/sh", "-c", "printf' in hold.message
    assert f"found by the pre-flight (image {IMAGE}, args [" in hold.message


def test_the_default_preflight_is_named_without_a_warning() -> None:
    pf, entries = plan(A)
    hold = approval.check({"approval": {"required": True}}, pf, entries, "gprd-1")
    assert hold is not None
    assert "WARNING" not in hold.message
    assert f"found by the pre-flight (image {IMAGE}, the default args (db:migrate:status))" in (
        hold.message
    )
