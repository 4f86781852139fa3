"""What a declared environment allows, and the status the operator keeps of it (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from pdm_operator import environments, envstatus, gates, history
from pdm_operator.model import Body

NOW = "2026-12-06T10:00:00Z"


def declared(**spec: Any) -> Body:
    return {
        "metadata": {"name": "gprd", "generation": 3},
        "spec": {"namespaces": ["gitlab"], **spec},
    }


def job(**pod: Any) -> Body:
    deadline = pod.pop("deadline", 3600)
    return {
        "spec": {
            "activeDeadlineSeconds": deadline,
            "template": {"spec": {"containers": [{"name": "migrations"}], **pod}},
        }
    }


def policy(**spec: Any) -> environments.Policy:
    found = environments.admits("gprd", declared(**spec), "gitlab")
    assert isinstance(found, environments.Policy)
    return found


def test_an_undeclared_environment_holds_and_names_the_fix() -> None:
    hold = environments.admits("gprd", None, "gitlab")
    assert isinstance(hold, gates.Hold)
    assert hold.reason == "EnvironmentNotDeclared"
    assert "PostDeployEnvironment 'gprd'" in hold.message
    assert "'gitlab'" in hold.message
    assert not hold.fatal


def test_a_namespace_the_environment_does_not_list_is_held() -> None:
    hold = environments.admits("gprd", declared(namespaces=["gitlab-prod"]), "attacker")
    assert isinstance(hold, gates.Hold)
    assert hold.reason == "NamespaceNotAllowed"
    assert "'attacker'" in hold.message
    assert "gitlab-prod" in hold.message


def test_the_schema_defaults_are_the_policy_of_a_bare_declaration() -> None:
    found = policy()
    assert found.service_accounts == frozenset()
    assert not found.mount_token
    assert not found.approval_required
    assert found.max_deadline == environments.DEFAULT_MAX_DEADLINE


@pytest.mark.parametrize(
    ("pod", "spec", "reason"),
    [
        ({"serviceAccountName": "cluster-admin"}, {}, "ServiceAccountNotAllowed"),
        ({"serviceAccount": "cluster-admin"}, {}, "ServiceAccountNotAllowed"),
        (
            {"serviceAccountName": "other"},
            {"serviceAccounts": ["gitlab-migrations"]},
            "ServiceAccountNotAllowed",
        ),
        ({"automountServiceAccountToken": True}, {}, "TokenNotAllowed"),
        (
            {"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {}}]}}]},
            {},
            "TokenNotAllowed",
        ),
        ({"deadline": 43201}, {}, "DeadlineNotAllowed"),
        ({"deadline": 7201}, {"maxDeadlineSeconds": 7200}, "DeadlineNotAllowed"),
    ],
)
def test_a_job_outside_the_environment_is_held(pod: Body, spec: Body, reason: str) -> None:
    hold = environments.job_hold(policy(**spec), job(**pod))
    assert hold is not None
    assert hold.reason == reason
    assert "PostDeployEnvironment 'gprd'" in hold.message


@pytest.mark.parametrize(
    ("pod", "spec"),
    [
        ({}, {}),
        ({"serviceAccountName": "default"}, {}),
        ({"serviceAccountName": "gitlab-migrations"}, {"serviceAccounts": ["gitlab-migrations"]}),
        ({"automountServiceAccountToken": False}, {}),
        ({"automountServiceAccountToken": True}, {"mountServiceAccountToken": True}),
        ({"deadline": 43200}, {}),
        (
            {"volumes": [{"name": "c", "projected": {"sources": [{"configMap": {"name": "x"}}]}}]},
            {},
        ),
    ],
)
def test_a_job_inside_the_environment_passes(pod: Body, spec: Body) -> None:
    assert environments.job_hold(policy(**spec), job(**pod)) is None


@pytest.mark.parametrize(
    ("kind", "labels", "release", "spec", "says"),
    [
        ("Job", {"app": "billing", "release": "gitlab"}, None, {}, "app='billing'"),
        ("Job", {"app": "migrations"}, None, {}, "release=None"),
        ("Deployment", {"app": "migrations", "release": "gitlab"}, None, {}, "app='migrations'"),
        ("Job", {"app": "migrations", "release": "other"}, "gitlab", {}, "'other', not 'gitlab'"),
        (
            "Job",
            {"app": "migrations", "release": "other"},
            None,
            {"releases": ["gitlab"]},
            "does not list",
        ),
    ],
)
def test_a_template_that_is_not_the_charts_own_is_held(
    kind: str, labels: Body, release: str | None, spec: Body, says: str
) -> None:
    hold = environments.template_hold(policy(**spec), kind, "x", labels, release)
    assert hold is not None
    assert hold.reason == "TemplateNotFromRelease"
    assert says in hold.message


def test_the_charts_own_templates_pass() -> None:
    p = policy(releases=["gitlab"])
    assert (
        environments.template_hold(
            p, "Job", "j", {"app": "migrations", "release": "gitlab"}, "gitlab"
        )
        is None
    )
    assert (
        environments.template_hold(
            p, "Deployment", "d", {"app": "toolbox", "release": "gitlab"}, None
        )
        is None
    )


def test_an_environment_that_requires_approval_makes_the_spec_require_it() -> None:
    spec: Body = {"environment": "gprd", "approval": {"required": False}}
    out = environments.effective_spec(policy(approval={"required": True}), spec)
    assert out["approval"]["required"] is True
    assert spec["approval"]["required"] is False  # the stored spec is not changed
    assert environments.effective_spec(policy(), spec) is spec


def test_approval_without_the_preflight_is_held() -> None:
    p = policy(approval={"required": True})
    hold = environments.approval_hold(p, {"mode": "Run", "preflight": {"enabled": False}})
    assert hold is not None
    assert hold.reason == "ApprovalNeedsPreflight"
    assert environments.approval_hold(p, {"mode": "Run", "preflight": {"enabled": True}}) is None


# --- the environment's status ------------------------------------------------------------
def record(
    name: str, version: str, completed: str, migrations: list[str] | None
) -> tuple[str, str]:
    run = history.Run(
        "gitlab", name, f"uid-{name}", version, "img", completed, "Succeeded", migrations
    )
    return run.key, run.encode()


def test_the_status_shows_holder_line_history_floor_and_last_runs() -> None:
    cm = {
        "data": dict(
            [
                record("a", "18.6.1", "2026-12-01T10:00:00Z", ["1"]),
                record("b", "18.7.0", "2026-12-02T10:00:00Z", ["2", "3"]),
            ]
        )
    }
    lease = {"spec": {"holderIdentity": "gitlab/c/uid-c"}}
    status = envstatus.compute(
        declared(), lease, cm, ["gitlab/d", "gitlab/e"], "pdm/pdm-history-gprd", NOW
    )
    assert status["holder"] == "gitlab/c"
    assert (status["queued"], status["queue"]) == (2, ["gitlab/d", "gitlab/e"])
    assert status["floor"] == "18.7.0"
    assert status["history"] == "pdm/pdm-history-gprd"
    assert status["lastRun"] == "gitlab/b (Succeeded)"
    assert [r["migration"] for r in status["runs"]] == ["gitlab/b", "gitlab/a"]
    assert status["runs"][0]["migrations"] == 2
    assert status["observedGeneration"] == 3


def test_a_free_environment_without_runs_says_so_and_its_floor_is_unknown() -> None:
    status = envstatus.compute(declared(), None, None, [], "pdm/pdm-history-gprd", NOW)
    assert status["holder"] is None
    # No record is not "nothing ran": rollback-check says unknown, and so does the floor.
    assert status["floor"] == history.UNKNOWN
    assert status["lastRun"] is None
    assert status["queued"] == 0


def test_an_unchanged_status_is_not_written_again() -> None:
    body = declared()
    first = envstatus.compute(body, None, None, [], "pdm/h", NOW)
    body["status"] = first
    again = envstatus.compute(body, None, None, [], "pdm/h", "2026-12-06T10:05:00Z")
    assert envstatus.changes(first, again) == {}
    moved = envstatus.compute(
        body, {"spec": {"holderIdentity": "gitlab/x/u"}}, None, [], "pdm/h", NOW
    )
    assert envstatus.changes(first, moved) == {"holder": "gitlab/x"}


def test_an_operator_serves_only_environments_its_namespaces_run() -> None:
    assert envstatus.serves(declared(), [])
    assert envstatus.serves(declared(), ["gitlab", "other"])
    assert not envstatus.serves(declared(), ["other"])


def test_an_environment_another_operator_records_is_never_taken_over() -> None:
    body = declared()
    body["status"] = envstatus.compute(body, None, None, [], "ops-a/pdm-history-gprd", NOW)
    other = envstatus.compute(body, None, None, [], "ops-b/pdm-history-gprd", NOW)
    assert other["history"] == "ops-a/pdm-history-gprd"
    ready = {c["type"]: c for c in other["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "HistoryElsewhere")
    assert "one operator per environment" in ready["message"]
