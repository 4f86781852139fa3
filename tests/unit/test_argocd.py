"""manifests/argocd's health check and approve action, in Argo CD's own Lua
interpreter (hack/argo-lua), against objects taken from real runs
(tests/unit/golden/argocd/, written by the integration tests with
PDM_UPDATE_GOLDEN=1: test_gitops.py and test_real_migrations.py); and what
kstatus (tests/support/kstatus.py) reads from the same objects."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from pdm_operator import conditions
from tests.support import argocd, kstatus

EXPECTED = {
    "ks-pending": "Progressing",
    "ks-gated": "Suspended",
    "ks-running": "Progressing",
    "ks-reporting": "Progressing",
    "ks-ok": "Healthy",
    "ks-failed": "Degraded",
    "awaiting-approval": "Suspended",
    "plan-changed": "Suspended",
}


def fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((argocd.FIXTURES / f"{name}.json").read_text())
    return found


def test_every_stage_a_real_run_went_through_has_a_fixture() -> None:
    assert sorted(p.stem for p in argocd.FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED.items()))
def test_health_of_each_stage(name: str, status: str) -> None:
    obj = fixture(name)
    health = argocd.health(obj)
    assert health["status"] == status
    # The message leads with what `kubectl get pdm` shows: state (reason).
    assert health["message"].startswith(f"{obj['status']['state']} ({obj['status']['reason']})")


def test_a_running_migration_whose_pod_cannot_start_is_degraded() -> None:
    obj = fixture("ks-running")
    obj["status"]["conditions"].append(
        {"type": "Stalled", "status": "True", "reason": "ImagePullBackOff",
         "message": 'pod pdm-x: Back-off pulling image "registry/toolbox:v18.6.0"'}
    )  # fmt: skip
    health = argocd.health(obj)
    assert health["status"] == "Degraded"
    assert health["message"] == (
        'Running (ImagePullBackOff): pod pdm-x: Back-off pulling image "registry/toolbox:v18.6.0"'
    )


def test_a_failed_migration_says_why() -> None:
    obj = fixture("ks-failed")
    failed = next(c for c in obj["status"]["conditions"] if c["type"] == "Failed")
    assert argocd.health(obj)["message"].endswith(failed["message"])


def test_before_the_operator_has_seen_it_or_its_last_edit_it_is_progressing() -> None:
    fresh = {k: v for k, v in fixture("ks-ok").items() if k != "status"}
    assert argocd.health(fresh)["status"] == "Progressing"
    edited = fixture("ks-ok")
    edited["metadata"]["generation"] = edited["status"]["observedGeneration"] + 1
    health = argocd.health(edited)
    assert health["status"] == "Progressing"
    assert f"generation {edited['metadata']['generation']}" in health["message"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_approve_is_offered_only_while_a_plan_waits_for_it(name: str) -> None:
    waits = name in ("awaiting-approval", "plan-changed")
    assert argocd.actions(fixture(name)) == {"approve": waits}


def test_approve_writes_the_approval_kubectl_pdm_approve_writes() -> None:
    live = fixture("awaiting-approval")
    patch = argocd.merge_patch(live, argocd.run_action("approve", live))
    approved = patch["spec"]["approval"]["approved"]
    assert patch == {"spec": {"approval": {"approved": approved}}}
    status = live["status"]
    assert approved["planHash"] == status["preflight"]["planHash"]
    assert approved["jobHash"] == status["preflight"]["jobHash"]
    assert approved["migrations"] == [
        f"{m['version']} ({m['database']})" for m in status["pendingMigrations"]
    ]
    assert approved["by"] == "system:serviceaccount:argocd:argocd-server"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", approved["at"])


def test_approve_refuses_when_no_plan_waits() -> None:
    done = fixture("ks-ok")
    done["spec"]["approval"] = {"required": True}
    with pytest.raises(argocd.LuaError, match="no plan waits for an approval"):
        argocd.run_action("approve", done)


def test_an_empty_object_survives_the_action() -> None:
    """Lua has one kind of table: {} comes back as [], and Argo CD restores it."""
    live = fixture("awaiting-approval")
    live["spec"]["job"] = {"podAnnotations": {}}
    after = argocd.run_action("approve", copy.deepcopy(live))
    assert after["spec"]["job"] == {"podAnnotations": {}}


def test_the_interpreter_is_as_strict_as_argo_cds() -> None:
    """No string library in Argo CD's Lua: a script that uses one fails here too."""
    with pytest.raises(argocd.LuaError, match="string"):
        argocd._run("health", 'return {status = string.upper("healthy")}', {})
    odd = argocd._run("health", 'return {status = "Fine"}', {})
    assert odd == {"status": "Unknown", "message": "Lua returned an invalid health status"}


def test_the_approval_is_left_out_of_argo_cds_diff() -> None:
    assert argocd.ignored_pointers() == ["/spec/approval/approved"]


#: The waits before a run starts (#31), and what Argo CD shows for each: a
#: person or a time ends the first two (Suspended), an admin's fix the third
#: (Degraded); the rest end by themselves (Progressing).
WAITS = {
    "OutsideWindow": "Suspended",
    "ChangeLocked": "Suspended",
    "InvalidWindow": "Degraded",
    "DeployInProgress": "Progressing",
    "GitLabDeploymentPending": "Progressing",
    "GitLabDeployInProgress": "Progressing",
    "GitLabUnreachable": "Progressing",
    "GitLabTokenMissing": "Progressing",
    "DeployedCommitUnknown": "Progressing",
    "DeployedCommitMismatch": "Progressing",
    "GitLabRefused": "Progressing",
    "ImageFollowed": "Progressing",
    "ChangeLockUnknown": "Progressing",
}


def waiting(reason: str, message: str) -> dict[str, Any]:
    """A real run's Gated migration (ks-gated), held by ``reason`` instead, with the
    kstatus conditions the operator writes for it (conditions.kstatus)."""
    obj = fixture("ks-gated")
    status = obj["status"]
    gated = next(c for c in status["conditions"] if c["type"] == "Gated")
    gated.update(reason=reason, message=message)
    status["reason"] = reason
    for cond in conditions.kstatus(status["conditions"], status["state"], reason):
        status["conditions"] = conditions.apply(
            status["conditions"], cond, obj["metadata"]["generation"], "2026-12-02T05:00:00Z"
        )
    return obj


@pytest.mark.parametrize(("reason", "status"), sorted(WAITS.items()))
def test_health_of_each_wait_before_a_run(reason: str, status: str) -> None:
    message = f"the next opens at 2026-12-07T13:00:00Z ({reason})"
    health = argocd.health(waiting(reason, message))
    assert health == {"status": status, "message": f"Gated ({reason}): {message}"}


@pytest.mark.parametrize("reason", sorted(WAITS))
def test_kstatus_reads_each_wait_before_a_run_as_in_progress(reason: str) -> None:
    """kstatus has no Suspended: a migration that has not ended is InProgress
    (Reconciling True), never Current (Flux would take it as done) nor Failed."""
    assert kstatus.status(waiting(reason, "waits")) == "InProgress"


@pytest.mark.parametrize("reason", sorted(WAITS))
def test_no_action_is_offered_for_a_wait_before_a_run(reason: str) -> None:
    assert argocd.actions(waiting(reason, "waits")) == {"approve": False}


@pytest.mark.parametrize("reason", ["VersionSkipped", "VersionSkipUnknown"])
def test_a_version_skip_waits_for_a_person_and_offers_approve_without_approval_required(
    reason: str,
) -> None:
    """The skip's wait is acknowledged by an approval of its plan, required or not."""
    live = fixture("awaiting-approval")
    live["spec"]["approval"] = {"required": False}
    gated = next(c for c in live["status"]["conditions"] if c["type"] == "Gated")
    gated.update(reason=reason, message="post-deployment migrations of an older minor")
    live["status"]["reason"] = reason
    assert argocd.health(live)["status"] == "Suspended"
    assert argocd.actions(live) == {"approve": True}
    live["status"]["pendingMigrations"][0]["action"] = "Hold"
    approved = argocd.run_action("approve", live)["spec"]["approval"]["approved"]
    first = live["status"]["pendingMigrations"][0]
    assert approved["migrations"][0] == f"{first['version']} ({first['database']}) [Hold]"
