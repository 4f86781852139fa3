"""Gates that hold a migration before its Job exists: suspension, dependencies, rollouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pdm_operator import gates
from pdm_operator.gates import Hold
from pdm_operator.model import Body

IMAGE = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee:v17.5.0"
NEW_IMAGE = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee:v17.6.0"


# --- suspended -------------------------------------------------------------------------


def test_suspended_migration_is_held_until_approved() -> None:
    hold = gates.suspended({"environment": "gstg", "suspend": True})
    assert hold is not None
    assert hold.reason == "Suspended"
    assert "spec.suspend" in hold.message
    assert hold.fatal is False


@pytest.mark.parametrize("spec", [{"suspend": False}, {}])
def test_unsuspended_migration_is_not_held(spec: Body) -> None:
    assert gates.suspended(spec) is None


# --- dependencies ----------------------------------------------------------------------


def pdm(*conds: tuple[str, str], state: str | None = None) -> Body:
    status: Body = {"conditions": [{"type": t, "status": s, "reason": "R"} for t, s in conds]}
    if state:
        status["state"] = state
    return {"metadata": {"name": "x"}, "status": status}


SUCCEEDED = pdm(("Succeeded", "True"), ("Failed", "False"), state="Succeeded")
FAILED = pdm(("Succeeded", "False"), ("Failed", "True"), state="Failed")
RUNNING = pdm(("JobCreated", "True"), state="Running")


def test_missing_dependency_holds_the_migration_naming_it() -> None:
    hold = gates.dependencies(["first"], {"first": None})
    assert hold == Hold("WaitingForMigrations", "waiting for first (not found) to succeed")


def test_dependency_absent_from_the_lookup_counts_as_not_found() -> None:
    hold = gates.dependencies(["first"], {})
    assert hold is not None
    assert hold.reason == "WaitingForMigrations"
    assert "first (not found)" in hold.message


def test_unfinished_dependencies_hold_the_migration_naming_each_with_its_state() -> None:
    hold = gates.dependencies(
        ["first", "second", "third"],
        {"first": RUNNING, "second": {"metadata": {"name": "second"}}, "third": SUCCEEDED},
    )
    assert hold is not None
    assert hold.reason == "WaitingForMigrations"
    assert hold.fatal is False
    assert hold.message == "waiting for first (Running), second (Pending) to succeed"


def test_failed_dependency_fails_the_migration_for_good() -> None:
    hold = gates.dependencies(["first", "second"], {"first": None, "second": FAILED})
    assert hold is not None
    assert hold.reason == "DependencyFailed"
    assert hold.fatal is True
    assert "'second'" in hold.message


def test_dependency_is_not_done_until_succeeded_is_true() -> None:
    hold = gates.dependencies(["first"], {"first": pdm(("Succeeded", "False"), state="Running")})
    assert hold is not None
    assert hold.reason == "WaitingForMigrations"


def test_all_dependencies_succeeded_opens_the_gate() -> None:
    assert (
        gates.dependencies(["first", "second"], {"first": SUCCEEDED, "second": SUCCEEDED}) is None
    )


def test_no_dependencies_opens_the_gate() -> None:
    assert gates.dependencies([], {}) is None


# --- rollout ---------------------------------------------------------------------------


def deployment(
    *,
    replicas: int | None = 3,
    generation: int = 4,
    observed: int = 4,
    updated: int = 3,
    available: int = 3,
    total: int = 3,
    image: str = IMAGE,
    conditions: list[Body] | None = None,
) -> Body:
    """A Deployment whose status says it is fully rolled out, unless told otherwise."""
    spec: dict[str, Any] = {
        "template": {"spec": {"containers": [{"name": "toolbox", "image": image}]}}
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "metadata": {"name": "gitlab-toolbox", "generation": generation},
        "spec": spec,
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "replicas": total,
            "conditions": conditions
            if conditions is not None
            else [
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": "ReplicaSet has successfully progressed.",
                },
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            ],
        },
    }


def test_fully_rolled_out_deployment_opens_the_gate() -> None:
    assert gates.rollout("gitlab-toolbox", deployment()) is None


def test_fully_rolled_out_deployment_still_running_the_resolved_image_opens_the_gate() -> None:
    assert gates.rollout("gitlab-toolbox", deployment(), ("toolbox", IMAGE)) is None


def test_missing_deployment_holds_naming_it() -> None:
    hold = gates.rollout("gitlab-webservice-default", None)
    assert hold is not None
    assert hold.reason == "RolloutPending"
    assert "'gitlab-webservice-default'" in hold.message
    assert "not found" in hold.message


def test_generation_not_yet_observed_holds() -> None:
    hold = gates.rollout("gitlab-toolbox", deployment(generation=5, observed=4))
    assert hold is not None
    assert hold.reason == "RolloutPending"
    assert "not yet observed" in hold.message


def test_deployment_without_status_holds() -> None:
    dep = deployment()
    del dep["status"]
    hold = gates.rollout("gitlab-toolbox", dep)
    assert hold is not None
    assert hold.reason == "RolloutPending"


def test_replicas_not_all_updated_hold() -> None:
    hold = gates.rollout("gitlab-toolbox", deployment(updated=2, total=3))
    assert hold is not None
    assert hold.reason == "RolloutPending"
    assert "2/3 replicas updated" in hold.message


def test_replicas_not_all_available_hold() -> None:
    hold = gates.rollout("gitlab-toolbox", deployment(available=2))
    assert hold is not None
    assert hold.reason == "RolloutPending"
    assert "2/3 available" in hold.message


def test_old_replicas_still_running_hold() -> None:
    hold = gates.rollout("gitlab-toolbox", deployment(updated=3, available=3, total=4))
    assert hold is not None
    assert hold.reason == "RolloutPending"
    assert "1 old" in hold.message


def test_progress_deadline_exceeded_is_a_stuck_rollout() -> None:
    stuck = deployment(
        updated=1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "gitlab-toolbox-7d9f" has timed out progressing.',
            }
        ],
    )
    hold = gates.rollout("gitlab-toolbox", stuck)
    assert hold is not None
    assert hold.reason == "RolloutStuck"
    assert hold.fatal is False
    assert "'gitlab-toolbox'" in hold.message
    assert "has timed out progressing" in hold.message


def test_changed_image_holds_as_image_changed_naming_both_images() -> None:
    hold = gates.rollout("gitlab-toolbox", deployment(image=NEW_IMAGE), ("toolbox", IMAGE))
    assert hold is not None
    assert hold.reason == "ImageChanged"
    assert repr(NEW_IMAGE) in hold.message
    assert repr(IMAGE) in hold.message
    assert "'toolbox'" in hold.message


def test_image_changed_is_reported_even_while_the_new_version_rolls_out() -> None:
    rolling = deployment(image=NEW_IMAGE, generation=6, observed=5, updated=1)
    hold = gates.rollout("gitlab-toolbox", rolling, ("toolbox", IMAGE))
    assert hold is not None
    assert hold.reason == "ImageChanged"


def test_missing_expected_container_is_image_changed() -> None:
    hold = gates.rollout("gitlab-toolbox", deployment(), ("migrations", IMAGE))
    assert hold is not None
    assert hold.reason == "ImageChanged"


def test_replicas_default_to_one_when_the_spec_leaves_them_out() -> None:
    assert (
        gates.rollout("gitlab-toolbox", deployment(replicas=None, updated=1, available=1, total=1))
        is None
    )
    hold = gates.rollout(
        "gitlab-toolbox", deployment(replicas=None, updated=0, available=0, total=0)
    )
    assert hold is not None
    assert "0/1 replicas updated" in hold.message


def test_deployment_scaled_to_zero_counts_as_rolled_out() -> None:
    assert (
        gates.rollout("gitlab-toolbox", deployment(replicas=0, updated=0, available=0, total=0))
        is None
    )


# --- cycles in waitFor.migrations ------------------------------------------------------


def test_a_two_migration_cycle_is_found_from_either_end() -> None:
    graph = {"a": ["b"], "b": ["a"]}
    assert gates.cycle("a", graph) == ["a", "b", "a"]
    assert gates.cycle("b", graph) == ["b", "a", "b"]


def test_a_longer_cycle_is_named_in_order() -> None:
    graph = {"a": ["x", "b"], "x": [], "b": ["c"], "c": ["a"]}
    assert gates.cycle("a", graph) == ["a", "b", "c", "a"]


def test_waiting_on_a_cycle_one_is_not_part_of_is_not_a_cycle_through_it() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["b"]}
    assert gates.cycle("a", graph) is None


def test_a_finished_migration_breaks_the_cycle() -> None:
    # "b" has ended, so it is not in the graph: its end decides the gate.
    assert gates.cycle("a", {"a": ["b"]}) is None


# --- a rollout held in the chart's dependencies check ---------------------------------
NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
#: What CNG's check prints per database (scripts/lib/checks/postgresql.rb).
BEHIND = (
    "Checking: main, ci\n"
    "Database Schema - main (gitlabhq_production) - current: 20261101000003, "
    "codebase: 20261115000004\n"
    "Database Schema - ci (gitlabhq_production_ci) - current: 20261101000003, "
    "codebase: 20261115000004\n"
    "WARNING: Not all services were operational, with data migrations completed.\n"
)


def chart_deployment(app: str = "webservice", bypass: str | None = None, **init: Any) -> Body:
    """A chart Deployment whose pods wait for the database in ``dependencies``."""
    dependencies: Body = {"name": "dependencies", "args": ["/scripts/wait-for-deps"], **init}
    if bypass is not None:
        dependencies["env"] = [{"name": "BYPASS_POST_DEPLOYMENT", "value": bypass}]
    return {
        "metadata": {"name": f"gitlab-{app}-default", "labels": {"app": app}},
        "spec": {"template": {"spec": {"initContainers": [dependencies], "containers": []}}},
    }


def pod(name: str, restarts: int = 0, since: int = 5, **state: Body) -> Body:
    """A pod whose ``dependencies`` init container is in ``state`` (running ``since`` s)."""
    started = (NOW - timedelta(seconds=since)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": name},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "dependencies",
                    "restartCount": restarts,
                    "state": state or {"running": {"startedAt": started}},
                }
            ]
        },
    }


def test_without_the_bypass_the_dependencies_check_waits_for_post_deployment_migrations() -> None:
    missing = gates.bypass_missing("gitlab-webservice-default", chart_deployment())
    assert missing is not None
    assert "has no BYPASS_POST_DEPLOYMENT" in missing
    assert "gitlab.webservice.extraEnv.BYPASS_POST_DEPLOYMENT='true'" in missing
    sidekiq = gates.bypass_missing("gitlab-sidekiq-all-in-1-v2", chart_deployment("sidekiq"))
    assert sidekiq is not None
    assert "gitlab.sidekiq.extraEnv.BYPASS_POST_DEPLOYMENT" in sidekiq


def test_only_the_documented_value_counts_as_the_bypass() -> None:
    assert gates.bypass_missing("w", chart_deployment(bypass="true")) is None
    assert gates.bypass_missing("w", chart_deployment(bypass="True")) is None
    said = gates.bypass_missing("w", chart_deployment(bypass="1"))
    assert said is not None
    assert "BYPASS_POST_DEPLOYMENT='1'" in said


def test_a_bypass_only_from_env_from_is_not_taken_on_trust() -> None:
    said = gates.bypass_missing(
        "w", chart_deployment(envFrom=[{"configMapRef": {"name": "extra"}}])
    )
    assert said is not None
    assert "envFrom is not read" in said


def test_a_deployment_without_the_dependencies_check_cannot_wait_for_migrations() -> None:
    assert gates.bypass_missing("gitlab-toolbox", deployment()) is None


def test_a_pod_is_held_after_one_failure_or_thirty_seconds_in_the_check() -> None:
    starting = pod("a", since=5)
    long = pod("b", since=31)
    failed_once = pod("c", restarts=1, since=1)
    backing_off = pod("d", restarts=2, waiting={"reason": "CrashLoopBackOff"})
    passed = pod("e", terminated={"exitCode": 0})
    going = {**pod("f", since=99), "metadata": {"name": "f", "deletionTimestamp": "x"}}
    no_check = {"metadata": {"name": "g"}, "status": {}}
    held = gates.held_in_dependencies(
        [starting, long, failed_once, backing_off, passed, going, no_check], NOW
    )
    assert [p["metadata"]["name"] for p in held] == ["b", "c", "d"]


def test_the_checks_own_lines_say_which_databases_are_behind() -> None:
    assert gates.schema_behind(BEHIND) == [
        "main: current 20261101000003, codebase 20261115000004",
        "ci: current 20261101000003, codebase 20261115000004",
    ]
    caught_up = BEHIND + (
        "Database Schema - main (gitlabhq_production) - current: 20261115000004, "
        "codebase: 20261115000004\n"
    )
    assert gates.schema_behind(caught_up) == ["ci: current 20261101000003, codebase 20261115000004"]
    assert gates.schema_behind("Error checking main: connection refused\n") == []


def test_held_pods_without_the_bypass_name_the_deadlock_and_the_chart_value() -> None:
    held = [pod("gitlab-webservice-default-7d9-x", restarts=1)]
    hold = gates.rollout_waits(
        "gitlab-webservice-default",
        chart_deployment(),
        held,
        {"gitlab-webservice-default-7d9-x": BEHIND},
    )
    assert hold.reason == "RolloutWaitsForMigrations"
    assert not hold.fatal
    assert "neither can finish" in hold.message
    assert "main: current 20261101000003, codebase 20261115000004" in hold.message
    assert "gitlab.webservice.extraEnv.BYPASS_POST_DEPLOYMENT='true'" in hold.message


def test_without_the_bypass_held_pods_are_the_deadlock_whatever_their_log_says() -> None:
    # Newer CNG prints other lines (CNG MR !1548); the decision does not rest on them.
    for log in ("", "Error checking main: timeout\n"):
        hold = gates.rollout_waits("w", chart_deployment(), [pod("p", restarts=1)], {"p": log})
        assert hold.reason == "RolloutWaitsForMigrations"
        assert "current" not in hold.message  # no evidence quoted that was not there


def test_held_pods_waiting_for_something_else_point_at_their_log() -> None:
    # The bypass is set: they wait for a regular migration or the database.
    with_bypass = gates.rollout_waits(
        "w", chart_deployment(bypass="true"), [pod("p", restarts=1)], {"p": BEHIND}
    )
    assert with_bypass.reason == "RolloutPending"
    assert "kubectl logs -c dependencies p" in with_bypass.message


def test_only_a_bounded_database_name_and_versions_reach_the_status_from_a_pods_log() -> None:
    forged = (
        f"Database Schema - {'x' * 5000} (db) - current: 1, codebase: 2\n"
        "Database Schema - main;rm (db) - current: 1, codebase: 2\n"
        f"Database Schema - main (db) - current: 1, codebase: {'9' * 500}\n"
    )
    assert gates.schema_behind(forged) == []


def test_bypass_schema_version_lets_the_check_pass_whatever_is_pending() -> None:
    # CNG reads it for presence; the chart's zero-downtime procedure sets it globally.
    for value in ("true", "false", ""):
        deployment = chart_deployment()
        init = deployment["spec"]["template"]["spec"]["initContainers"][0]
        init["env"] = [{"name": "BYPASS_SCHEMA_VERSION", "value": value}]
        assert gates.bypass_missing("w", deployment) is None


def test_the_last_entry_of_a_repeated_name_is_the_one_kubernetes_sets() -> None:
    deployment = chart_deployment()
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    init["env"] = [
        {"name": "BYPASS_POST_DEPLOYMENT", "value": "true"},
        {"name": "BYPASS_POST_DEPLOYMENT", "value": "no"},
    ]
    said = gates.bypass_missing("w", deployment)
    assert said is not None
    assert "BYPASS_POST_DEPLOYMENT='no'" in said
    init["env"].reverse()
    assert gates.bypass_missing("w", deployment) is None


def test_a_bypass_from_value_from_is_not_taken_on_trust_and_said_so() -> None:
    deployment = chart_deployment()
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    init["env"] = [
        {"name": "BYPASS_POST_DEPLOYMENT", "valueFrom": {"configMapKeyRef": {"name": "x"}}}
    ]
    said = gates.bypass_missing("w", deployment)
    assert said is not None
    assert "from valueFrom, which is not read" in said


def test_held_pods_are_judged_by_their_own_spec_not_the_template() -> None:
    # The template has the bypass now (a fix on its way); this older pod does not.
    old_pod = pod("p", restarts=1)
    old_pod["spec"] = {"initContainers": [{"name": "dependencies", "env": []}]}
    hold = gates.rollout_waits("w", chart_deployment(bypass="true"), [old_pod], {})
    assert hold.reason == "RolloutWaitsForMigrations"
    new_pod = pod("q", restarts=1)
    new_pod["spec"] = {
        "initContainers": [
            {"name": "dependencies", "env": [{"name": "BYPASS_POST_DEPLOYMENT", "value": "true"}]}
        ]
    }
    assert gates.rollout_waits("w", chart_deployment(), [new_pod], {}).reason == "RolloutPending"


def test_an_ended_pod_is_not_held_even_if_its_check_failed() -> None:
    evicted = pod("e", restarts=3)
    evicted["status"]["phase"] = "Failed"
    assert gates.held_in_dependencies([evicted], NOW) == []


def test_a_just_restarted_check_has_its_last_runs_lines_to_read() -> None:
    assert gates.just_restarted(pod("a", restarts=1, waiting={"reason": "CrashLoopBackOff"}), NOW)
    assert gates.just_restarted(pod("b", restarts=1, since=3), NOW)
    assert not gates.just_restarted(pod("c", restarts=1, since=45), NOW)
    assert not gates.just_restarted(pod("d", restarts=0, since=45), NOW)


def test_a_dry_run_says_when_a_deployment_it_waits_for_cannot_be_checked() -> None:
    warnings = gates.bypass_warnings(
        ["gitlab-webservice-default", "gitlab-toolbox"],
        {"gitlab-webservice-default": None, "gitlab-toolbox": deployment()},
    )
    assert len(warnings) == 1
    assert "'gitlab-webservice-default' (spec.waitFor.rolledOut) was not found" in warnings[0]
    assert "cannot be checked" in warnings[0]
