"""What a migration Job's status and pods mean for the migration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pdm_operator import jobs
from pdm_operator.jobs import Outcome, PodFailure
from pdm_operator.model import Body

T_END = "2026-11-22T12:30:00Z"


def job(*conds: Body) -> Body:
    return {"metadata": {"name": "gstg-1-0a1b2c3d"}, "status": {"conditions": list(conds)}}


def jc(ctype: str, status: str = "True", reason: str = "", message: str = "") -> Body:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T_END,
    }


# --- outcome ---------------------------------------------------------------------------


def test_complete_job_is_a_success_at_its_transition_time() -> None:
    assert jobs.outcome(job(jc("Complete"))) == Outcome(
        True, "JobComplete", "the migration Job completed", T_END
    )


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        ("DeadlineExceeded", "Job was active longer than specified deadline"),
    ],
)
def test_failed_job_is_a_failure_with_the_jobs_reason_and_message(
    reason: str, message: str
) -> None:
    assert jobs.outcome(job(jc("Failed", reason=reason, message=message))) == Outcome(
        False, reason, message, T_END
    )


def test_failed_job_without_reason_or_message_gets_generic_ones() -> None:
    out = jobs.outcome(job({"type": "Failed", "status": "True"}))
    assert out == Outcome(False, "JobFailed", "the migration Job failed", None)


@pytest.mark.parametrize(
    "cond",
    [
        jc("FailureTarget", reason="BackoffLimitExceeded"),
        jc("SuccessCriteriaMet", reason="CompletionsReached"),
    ],
)
def test_interim_conditions_alone_do_not_end_the_migration(cond: Body) -> None:
    # Kubernetes sets these first, while the Job's pods are still terminating.
    assert jobs.outcome(job(cond)) is None


def test_failure_target_followed_by_failed_is_a_failure() -> None:
    out = jobs.outcome(
        job(
            jc("FailureTarget", reason="BackoffLimitExceeded"),
            jc("Failed", reason="BackoffLimitExceeded", message="backoff limit"),
        )
    )
    assert out is not None
    assert out.succeeded is False
    assert out.reason == "BackoffLimitExceeded"


def test_success_criteria_met_followed_by_complete_is_a_success() -> None:
    out = jobs.outcome(job(jc("SuccessCriteriaMet"), jc("Complete")))
    assert out is not None
    assert out.succeeded is True


@pytest.mark.parametrize("ctype", ["Complete", "Failed"])
def test_terminal_conditions_with_status_false_are_ignored(ctype: str) -> None:
    assert jobs.outcome(job(jc(ctype, status="False", reason="X"))) is None


def test_running_job_has_no_outcome() -> None:
    assert jobs.outcome({"metadata": {"name": "j"}}) is None
    assert jobs.outcome({"metadata": {"name": "j"}, "status": {"active": 1}}) is None
    assert jobs.outcome(job()) is None


# --- pod_failure -----------------------------------------------------------------------


def terminated(exit_code: int, finished: str, message: str = "", reason: str = "Error") -> Body:
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason,
            "message": message,
            "finishedAt": finished,
        }
    }


def pod(name: str, *statuses: Body) -> Body:
    return {"metadata": {"name": name}, "status": {"containerStatuses": list(statuses)}}


def migrations(state: Body, last_state: Body | None = None) -> Body:
    status: Body = {"name": "migrations", "state": state}
    if last_state is not None:
        status["lastState"] = last_state
    return status


def test_pod_failure_reads_exit_code_reason_and_termination_message() -> None:
    pods = [
        pod(
            "gstg-1-abc",
            migrations(terminated(1, T_END, "PG::UndefinedTable: relation missing\n")),
        )
    ]
    assert jobs.pod_failure(pods) == PodFailure(
        pod="gstg-1-abc",
        exit_code=1,
        reason="Error",
        message="PG::UndefinedTable: relation missing\n",
    )


@pytest.mark.parametrize("reverse", [False, True])
def test_pod_failure_picks_the_most_recently_finished_pod(reverse: bool) -> None:
    pods = [
        # Pod names sort in another order than their finish times.
        pod("gstg-1-mmm", migrations(terminated(1, "2026-11-22T12:00:00Z", "middle"))),
        pod("gstg-1-aaa", migrations(terminated(2, "2026-11-22T12:10:00Z", "latest"))),
        pod("gstg-1-zzz", migrations(terminated(3, "2026-11-22T11:50:00Z", "oldest"))),
    ]
    if reverse:
        pods.reverse()
    failure = jobs.pod_failure(pods)
    assert failure is not None
    assert (failure.pod, failure.exit_code, failure.message) == ("gstg-1-aaa", 2, "latest")


def test_pod_failure_ignores_containers_other_than_migrations() -> None:
    sidecar = {"name": "cloudsql-proxy", "state": terminated(137, "2026-11-22T13:00:00Z", "oom")}
    pods = [
        pod("gstg-1-abc", sidecar, migrations(terminated(1, T_END, "migration failed"))),
        pod("gstg-1-def", {**sidecar}),
    ]
    failure = jobs.pod_failure(pods)
    assert failure is not None
    assert (failure.pod, failure.exit_code, failure.message) == (
        "gstg-1-abc",
        1,
        "migration failed",
    )


def test_pod_failure_ignores_a_successful_exit() -> None:
    pods = [pod("gstg-1-abc", migrations(terminated(0, T_END, "done", reason="Completed")))]
    assert jobs.pod_failure(pods) is None


def test_pod_failure_ignores_a_newer_successful_exit_and_keeps_the_failed_one() -> None:
    pods = [
        pod("failed", migrations(terminated(1, "2026-11-22T12:00:00Z", "boom"))),
        pod("ok", migrations(terminated(0, "2026-11-22T12:10:00Z", reason="Completed"))),
    ]
    failure = jobs.pod_failure(pods)
    assert failure is not None
    assert failure.pod == "failed"


def test_pod_failure_falls_back_to_the_last_state() -> None:
    pods = [
        pod(
            "gstg-1-abc",
            migrations({"waiting": {"reason": "CrashLoopBackOff"}}, terminated(3, T_END, "again")),
        )
    ]
    assert jobs.pod_failure(pods) == PodFailure("gstg-1-abc", 3, "Error", "again", previous=True)


def test_pod_failure_is_none_without_failed_migration_containers() -> None:
    assert jobs.pod_failure([]) is None
    assert jobs.pod_failure([{"metadata": {"name": "p"}, "status": {}}]) is None
    assert jobs.pod_failure([{"metadata": {"name": "p"}}]) is None
    assert jobs.pod_failure([pod("p", migrations({"running": {}}))]) is None


def test_pod_failure_message_is_limited_to_the_tail() -> None:
    message = "".join(f"line {i}\n" for i in range(2000))
    failure = jobs.pod_failure([pod("p", migrations(terminated(1, T_END, message)))])
    assert failure is not None
    assert len(failure.message) <= jobs.LOG_TAIL_LIMIT
    assert failure.message.endswith("line 1999\n")


def test_pod_failure_without_a_message_has_an_empty_one() -> None:
    failure = jobs.pod_failure(
        [pod("p", migrations({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))]
    )
    assert failure == PodFailure("p", 137, "OOMKilled", "")


# --- tail ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "short", "x" * 20])
def test_tail_keeps_text_within_the_limit_unchanged(text: str) -> None:
    assert jobs.tail(text, 20) == text


def test_tail_keeps_the_last_characters_of_a_long_text() -> None:
    text = "".join(f"{i:04d}" for i in range(1000))  # no newline anywhere
    out = jobs.tail(text, 100)
    assert out == text[-100:]


def test_tail_cuts_at_a_line_start_when_one_is_near_the_cut() -> None:
    last_lines = "y" * 10 + "\nlast\n"  # 16 characters
    text = "header line\nabcdef\n" + last_lines
    # The last 20 characters start mid-line ("def\n..."); the result starts on a line.
    assert text[-20:] == "def\n" + last_lines
    assert jobs.tail(text, 20) == last_lines


def test_tail_cuts_mid_line_rather_than_lose_more_than_half_the_limit() -> None:
    text = "a" * 50 + "b" * 12 + "\n" + "c" * 7
    # The first newline in the window is past half of it: keep the window as is.
    assert jobs.tail(text, 20) == "b" * 12 + "\n" + "c" * 7


def test_tail_result_is_never_longer_than_the_limit() -> None:
    text = "\n".join("z" * (i % 37) for i in range(500))
    for limit in (10, 64, 333, 2048):
        out = jobs.tail(text, limit)
        assert len(out) <= limit
        assert text.endswith(out)


def test_tail_keeps_a_whole_first_line_when_the_cut_falls_on_a_line_start() -> None:
    text = "dropped\n" + "kept\n" + "y" * 15
    assert len("kept\n" + "y" * 15) == 20
    assert jobs.tail(text, 20) == "kept\n" + "y" * 15


# --- a pod that does not start ------------------------------------------------------------


def _pod(waiting: str | None = None, unschedulable: bool = False, init: bool = False) -> Body:
    status: Body = {"conditions": []}
    if waiting:
        key = "initContainerStatuses" if init else "containerStatuses"
        status[key] = [
            {
                "name": "certificates" if init else "migrations",
                "state": {"waiting": {"reason": waiting, "message": "why"}},
            }
        ]
    if unschedulable:
        status["conditions"].append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes",
            }
        )
    return {"metadata": {"name": "job-abc12"}, "status": status}


@pytest.mark.parametrize(
    ("waiting", "permanent"),
    [
        ("InvalidImageName", True),
        ("ErrImagePull", False),
        ("ImagePullBackOff", False),
        ("CreateContainerConfigError", False),
    ],
)
def test_a_waiting_container_is_diagnosed_with_its_reason(waiting: str, permanent: bool) -> None:
    found = jobs.stuck([_pod(waiting)], [])
    assert found == jobs.Stuck(waiting, "pod job-abc12, container migrations: why", permanent)


def test_a_waiting_init_container_counts_too() -> None:
    found = jobs.stuck([_pod("ImagePullBackOff", init=True)], [])
    assert found is not None
    assert "container certificates" in found.message


def test_an_unschedulable_pod_is_transient() -> None:
    assert jobs.stuck([_pod(unschedulable=True)], []) == jobs.Stuck(
        "Unschedulable", "pod job-abc12: 0/2 nodes", False
    )


def test_a_running_pod_is_not_stuck() -> None:
    assert jobs.stuck([_pod()], []) is None


def _event(message: str, when: str) -> Body:
    return {"reason": "FailedCreate", "message": message, "lastTimestamp": when}


def test_no_pod_and_a_failed_create_is_permanent_unless_it_is_a_quota() -> None:
    refused = jobs.stuck(
        [],
        [
            _event("exceeded quota: no-jobs", "2026-12-01T10:00:00Z"),
            _event('pods "x" is forbidden: violates PodSecurity', "2026-12-01T10:00:05Z"),
        ],
    )
    assert refused == jobs.Stuck(
        "PodCreateFailed", 'pods "x" is forbidden: violates PodSecurity', True
    )
    quota = jobs.stuck([], [_event('pods "x" is forbidden: exceeded quota: pods', "t")])
    assert quota is not None
    assert quota.permanent is False


def test_no_pod_and_no_event_is_not_stuck_yet() -> None:
    assert jobs.stuck([], []) is None


RAILS_FAILURE = """\
== 20261115000001 AddUniqueIndexOnProjectPath: migrating ======================
-- add_index(:projects, :path, {unique: true})
rails aborted!
StandardError: An error has occurred, this and all later migrations canceled: (StandardError)

PG::UniqueViolation: ERROR:  could not create unique index "index_projects_on_path"
DETAIL:  Key (path)=(gitlab-org/gitlab) is duplicated.
Tasks: TOP => db:migrate
"""


def test_the_failed_migration_is_read_from_rails_lines() -> None:
    log = (
        "== 20261115000000 DropOldColumn: migrating =====\n"
        "== 20261115000000 DropOldColumn: migrated (0.0101s) =====\n" + RAILS_FAILURE
    )
    found = jobs.failed_migration(log)
    assert found == jobs.FailedMigration(
        "20261115000001",
        "AddUniqueIndexOnProjectPath",
        'PG::UniqueViolation: ERROR:  could not create unique index "index_projects_on_path"',
    )
    assert found.as_status()["version"] == "20261115000001"
    assert found.describe().startswith(
        "migration 20261115000001 AddUniqueIndexOnProjectPath failed: PG::UniqueViolation"
    )


@pytest.mark.parametrize(
    "log",
    [
        "Timed out waiting for dependencies\n",
        "== 20261115000000 DropOldColumn: migrating ===\n"
        "== 20261115000000 DropOldColumn: migrated (0.01s) ===\nsomething else broke\n",
        "",
    ],
    ids=["never-migrated", "all-migrated", "empty"],
)
def test_no_migration_is_named_when_the_failure_was_elsewhere(log: str) -> None:
    assert jobs.failed_migration(log) is None


def test_a_migration_killed_without_rails_error_is_named_without_error() -> None:
    found = jobs.failed_migration("== 20261115000003 BackfillNamespaces: migrating ===\n")
    assert found is not None
    assert (found.version, found.error) == ("20261115000003", "")
    assert found.describe() == "migration 20261115000003 BackfillNamespaces failed"


def test_only_the_pods_the_job_controller_made_for_the_job_are_its_pods() -> None:
    ours = {
        "metadata": {
            "name": "a",
            "ownerReferences": [
                {"kind": "Job", "uid": "job-uid", "controller": True, "name": "pf"}
            ],
        }
    }
    # A look-alike: the Job's labels copied onto a pod of another Job (a manual
    # selector), or onto a pod with a non-controller reference to the Job.
    other_job = {
        "metadata": {
            "name": "0",
            "ownerReferences": [
                {"kind": "Job", "uid": "evil-uid", "controller": True, "name": "evil"}
            ],
        }
    }
    not_controller = {
        "metadata": {
            "name": "1",
            "ownerReferences": [
                {"kind": "Job", "uid": "job-uid", "controller": False, "name": "pf"}
            ],
        }
    }
    bare = {"metadata": {"name": "2"}}
    found = jobs.controlled_by([other_job, not_controller, bare, ours], "job-uid")
    assert found == [ours]
    assert jobs.controlled_by([ours], "") == []


def test_a_job_as_the_server_stored_it_is_the_one_made_whatever_it_generated() -> None:
    made = {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "migrations", "image": "t:1"}]},
            },
        }
    }
    found = {
        "metadata": {"name": "pdm-1-abc", "uid": "u"},
        "spec": {
            "backoffLimit": 0,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
            "suspend": True,
            "template": {
                "metadata": {
                    "labels": {
                        "app": "x",
                        "batch.kubernetes.io/job-name": "pdm-1-abc",
                        "job-name": "pdm-1-abc",
                    }
                },
                "spec": {"containers": [{"name": "migrations", "image": "t:1"}]},
            },
        },
    }
    assert jobs.template_differs(made, found) == []
    found["spec"]["template"]["spec"]["hostAliases"] = [{"ip": "10.0.0.9"}]
    found["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "v"}]
    assert jobs.template_differs(made, found) == [
        "spec.template.spec.containers[0].volumeMounts",
        "spec.template.spec.hostAliases",
    ]


def test_a_young_job_is_looked_at_as_often_as_it_is_old_between_5_s_and_the_resync() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)

    def created(seconds_ago: int) -> Body:
        at = (now - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"metadata": {"creationTimestamp": at}}

    assert jobs.next_look(created(1), now, 30.0) == 5.0
    assert jobs.next_look(created(12), now, 30.0) == 12.0
    assert jobs.next_look(created(600), now, 30.0) == 30.0
    assert jobs.next_look({"metadata": {}}, now, 30.0) == 30.0
