"""Reporting to GitLab and Sentry never blocks a migration, and is delivered
exactly once: real HTTP servers on loopback stand in for GitLab and Sentry,
with their documented answers and faults."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.conftest import Cluster
from tests.support.fake_gitlab import FakeGitLab
from tests.support.fake_sentry import FakeSentry
from tests.support.operator import OperatorProcess, pythonpath_env
from tests.support.pdm import Api, migration
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

GITLAB_TOKEN = "glpat-PDMTEST-do-not-leak-4f1e"
SENTRY_TOKEN = "sntrys-PDMTEST-do-not-leak-9b2c"
GITLAB_PROJECTS = ["gitlab-org/gitlab", "gitlab-org/omnibus-gitlab"]
METADATA = "gitlab-org/release/metadata"
QA = "gitlab-org/quality/release"
IMAGE = {"reference": "registry.example.com/gitlab-toolbox-ee:v18.6.0"}
#: Long per-call timeout: an implementation that waited on GitLab would take
#: at least this long, far beyond the tolerance of the timing tests.
CALL_TIMEOUT = "10"


@pytest.fixture
def gitlab_server() -> Iterator[FakeGitLab]:
    with FakeGitLab(token=GITLAB_TOKEN) as server:
        # Each project has a history of its own: a version is only valid in its project.
        for project in [*GITLAB_PROJECTS, METADATA, QA]:
            server.add_commits(project, 3)
        for project in GITLAB_PROJECTS:  # something for GitLab to link to a deployment
            server.add_merge_request(project, f"Merged into {project}")
        yield server


def version(server: FakeGitLab, project: str) -> dict[str, Any]:
    """The version deployed from ``project``: its master, as it exists in that project."""
    return {"ref": "master", "sha": server.head(project)}


@pytest.fixture
def sentry_server() -> Iterator[FakeSentry]:
    with FakeSentry(token=SENTRY_TOKEN, releases=[("gitlab", "18.6.0")]) as server:
        yield server


@pytest.fixture
def tokens(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "gitlab-api"}, "stringData": {"token": GITLAB_TOKEN}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "sentry-api"}, "stringData": {"token": SENTRY_TOKEN}}
    )


@pytest.fixture
def reporting_operator(
    cluster: Cluster, namespace: str, crd: None, tokens: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        pythonpath_env(cluster.env()),
        namespace,
        tmp_path / "operator.log",
        "--report-timeout",
        CALL_TIMEOUT,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"----- operator log -----\n{proc.log()[-20000:]}")


def sinks(
    server: FakeGitLab,
    sentry_url: str,
    *,
    rollback: bool = False,
    metadata_blocking: bool | None = None,
    qa_blocking: bool | None = None,
) -> list[dict[str, Any]]:
    """Every sink, each GitLab project with its own version (no shared one)."""
    out: list[dict[str, Any]] = [
        {
            "type": "GitLabDeployment",
            "targets": [{"project": p, "version": version(server, p)} for p in GITLAB_PROJECTS],
        },
        {
            "type": "SentryDeploy",
            "url": sentry_url,
            "org": "gitlab",
            "release": "18.6.0",
            "tokenSecretRef": {"name": "sentry-api", "key": "token"},
        },
    ]
    if not rollback:
        qa: dict[str, Any] = {"type": "QAIssue", "project": QA}
        if qa_blocking is not None:
            qa["blocking"] = qa_blocking
        out += [qa, {"type": "MergeRequestLabels"}]
    if metadata_blocking is not None:
        out.append(
            {
                "type": "ReleaseMetadata",
                "project": METADATA,
                "version": version(server, METADATA),
                "blocking": metadata_blocking,
            }
        )
    return out


def one_project(server: FakeGitLab, project: str = GITLAB_PROJECTS[0]) -> list[dict[str, Any]]:
    return [
        {
            "type": "GitLabDeployment",
            "targets": [{"project": project, "version": version(server, project)}],
        }
    ]


def tracked(
    name: str, gitlab_url: str, sink_list: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    tracking = {
        "gitlab": {"url": gitlab_url, "tokenSecretRef": {"name": "gitlab-api", "key": "token"}},
        "sinks": sink_list,
        **spec.pop("tracking_extra", {}),
    }
    return migration(name, image=IMAGE, tracking=tracking, **spec)


def reports(api: Api, name: str) -> list[dict[str, Any]]:
    return list((api.get(name) or {}).get("status", {}).get("reports") or [])


def time_to_succeed(api: Api, name: str, body: dict[str, Any]) -> float:
    start = time.monotonic()
    api.create(body)
    api.wait_condition(name, "Succeeded", timeout=120)
    return time.monotonic() - start


def test_regular_run_reports_everything_exactly_once(
    api: Api,
    reporting_operator: OperatorProcess,
    gitlab_server: FakeGitLab,
    sentry_server: FakeSentry,
) -> None:
    gitlab = GITLAB_PROJECTS[0]
    # Two merged merge requests: GitLab links them to the first successful
    # deployment of the environment, asynchronously.
    iids = [gitlab_server.add_merge_request(gitlab, f"MR {i}") for i in range(2)]
    # Someone else already recorded this version on db/gstg through the API:
    # it is theirs, and stays as it is.
    theirs = gitlab_server.add_api_deployment(
        gitlab, "db/gstg", "master", gitlab_server.head(gitlab), status="running"
    )

    api.create(
        tracked(
            "pdm-report",
            gitlab_server.url,
            sinks(gitlab_server, sentry_server.url, metadata_blocking=True),
        )
    )
    api.wait_condition("pdm-report", "Succeeded", timeout=60)
    api.wait_condition("pdm-report", "Reported", timeout=60)

    for project in GITLAB_PROJECTS:
        ours = [d for d in gitlab_server.deployments(project) if d["user"]["username"] == "pdm-bot"]
        assert [(d["status"], d["sha"], d["ref"], d["environment"]["name"]) for d in ours] == [
            ("success", gitlab_server.head(project), "master", "db/gstg")
        ]
    left_alone = next(d for d in gitlab_server.deployments(gitlab) if d["id"] == theirs["id"])
    assert left_alone["status"] == "running"
    (meta,) = gitlab_server.deployments(METADATA)
    assert (meta["status"], meta["sha"]) == ("success", gitlab_server.head(METADATA))
    (issue,) = gitlab_server.issues(QA)
    assert "gstg" in issue["title"]
    for iid in iids:
        assert (
            "workflow::post-deploy-db-staging" in gitlab_server.merge_request(gitlab, iid)["labels"]
        )
    (deploy,) = sentry_server.deploys("gitlab", "18.6.0")
    assert deploy["environment"] == "gstg"
    assert deploy["dateStarted"]
    assert deploy["dateFinished"]

    records = reports(api, "pdm-report")
    assert {r["state"] for r in records} == {"Delivered"}
    assert {r["sink"] for r in records} == {
        "GitLabDeployment", "ReleaseMetadata", "QAIssue", "MergeRequestLabels", "SentryDeploy",
    }  # fmt: skip
    conflict = next(
        r for r in records if r["sink"] == "GitLabDeployment" and r["target"] == gitlab
    ).get("conflict", "")
    assert f"deployment {theirs['id']} (running, @release-tools)" in conflict
    # Never a status the deployment already had.
    puts = [r for r in gitlab_server.requests if r.method == "PUT" and "/deployments/" in r.path]
    assert all(r.status == 200 for r in puts)


@pytest.mark.parametrize("fault", ["down", "hanging", "slow"])
def test_rollback_completes_while_gitlab_and_sentry_fail_as_fast_as_when_healthy(
    api: Api,
    reporting_operator: OperatorProcess,
    gitlab_server: FakeGitLab,
    sentry_server: FakeSentry,
    fault: str,
) -> None:
    rollback_sinks = sinks(gitlab_server, sentry_server.url, rollback=True)
    healthy = time_to_succeed(
        api,
        "rb-healthy",
        tracked("rb-healthy", gitlab_server.url, rollback_sinks, pipeline="Rollback"),
    )
    api.wait_condition("rb-healthy", "Reported", timeout=60)

    for server in (gitlab_server, sentry_server):
        if fault == "down":
            server.down()
        elif fault == "hanging":
            server.faults.hang()
        else:
            server.faults.slow(10)
    faulty = time_to_succeed(
        api,
        "rb-faulty",
        tracked(
            "rb-faulty", gitlab_server.url, rollback_sinks, pipeline="Rollback", environment="gprd"
        ),
    )
    # Tolerance from the healthy run: scheduling noise, never a GitLab call
    # (each would cost the 10 s call timeout).
    assert faulty <= healthy + 3.0, (
        f"rollback took {faulty:.1f}s with GitLab {fault}, {healthy:.1f}s healthy"
    )
    cond = api.condition("rb-faulty", "Reported")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "Pending")

    for server in (gitlab_server, sentry_server):
        if fault == "down":
            server.up()
        else:
            server.faults.clear()
    api.wait_condition("rb-faulty", "Reported", timeout=120)
    gprd = [
        d
        for d in gitlab_server.deployments(GITLAB_PROJECTS[0])
        if d["environment"]["name"] == "db/gprd"
    ]
    assert [d["status"] for d in gprd] == ["success"]
    assert len(sentry_server.deploys("gitlab", "18.6.0")) == 2


def test_lost_create_answer_leaves_exactly_one_deployment(
    api: Api,
    reporting_operator: OperatorProcess,
    gitlab_server: FakeGitLab,
    sentry_server: FakeSentry,
) -> None:
    gitlab_server.faults.lose_response(method="POST", path=r"/deployments$", times=2)
    sentry_server.faults.lose_response(method="POST", path=r"/deploys/$", times=1)
    api.create(
        tracked(
            "pdm-lost", gitlab_server.url, sinks(gitlab_server, sentry_server.url, rollback=True)
        )
    )
    api.wait_condition("pdm-lost", "Succeeded", timeout=60)
    api.wait_condition("pdm-lost", "Reported", timeout=120)
    for project in GITLAB_PROJECTS:
        assert [d["status"] for d in gitlab_server.deployments(project)] == ["success"]
    assert len(sentry_server.deploys("gitlab", "18.6.0")) == 1
    lost = [r for r in gitlab_server.requests if r.fault == "lose_response"]
    assert len(lost) == 2


def test_restart_in_the_middle_of_the_outbox_loses_and_duplicates_nothing(
    api: Api,
    reporting_operator: OperatorProcess,
    gitlab_server: FakeGitLab,
    sentry_server: FakeSentry,
) -> None:
    gitlab_server.faults.error(503)
    api.create(
        tracked(
            "pdm-restart",
            gitlab_server.url,
            sinks(gitlab_server, sentry_server.url, qa_blocking=False),
        )
    )
    api.wait_condition("pdm-restart", "Succeeded", timeout=60)
    wait_until(
        lambda: any(
            r.get("attempts", 0) >= 1 and r["sink"] == "GitLabDeployment"
            for r in reports(api, "pdm-restart")
        ),
        timeout=60,
        what="a failed GitLab attempt recorded in the outbox",
    )
    reporting_operator.kill()
    gitlab_server.faults.clear()
    reporting_operator.start()
    api.wait_condition("pdm-restart", "Reported", timeout=120)
    for project in GITLAB_PROJECTS:
        assert [d["status"] for d in gitlab_server.deployments(project)] == ["success"]
    assert len(gitlab_server.issues(QA)) == 1
    assert len(sentry_server.deploys("gitlab", "18.6.0")) == 1


def test_blocking_metadata_sink_that_stays_down_fails_the_migration(
    api: Api,
    reporting_operator: OperatorProcess,
    gitlab_server: FakeGitLab,
    sentry_server: FakeSentry,
) -> None:
    gitlab_server.faults.error(503, path="metadata")
    body = tracked(
        "pdm-blocked",
        gitlab_server.url,
        sinks(gitlab_server, sentry_server.url, rollback=True, metadata_blocking=True),
        tracking_extra={"blockingDeadlineSeconds": 3},
    )
    api.create(body)
    reporting = api.wait_state("pdm-blocked", "Reporting", timeout=60)
    assert reporting["status"]["jobOutcome"] == "Succeeded"
    failed = api.wait_condition("pdm-blocked", "Failed", timeout=60)
    assert failed["reason"] == "BlockingReportFailed"
    assert "ReleaseMetadata gitlab-org/release/metadata" in failed["message"]
    status = api.get("pdm-blocked")["status"]  # type: ignore[index]
    assert status["jobOutcome"] == "Succeeded"  # the migration's own outcome stays recorded
    assert status["failure"]["reason"] == "BlockingReportFailed"
    # The non-blocking sinks were delivered regardless.
    assert [d["status"] for d in gitlab_server.deployments(GITLAB_PROJECTS[0])] == ["success"]


def test_retry_after_is_honoured(
    api: Api,
    reporting_operator: OperatorProcess,
    gitlab_server: FakeGitLab,
    sentry_server: FakeSentry,
) -> None:
    gitlab_server.faults.error(
        429, times=1, method="GET", path=r"/deployments$", headers={"Retry-After": "4"}
    )
    api.create(tracked("pdm-429", gitlab_server.url, one_project(gitlab_server)))
    api.wait_condition("pdm-429", "Reported", timeout=60)
    calls = [
        r for r in gitlab_server.requests if r.path.endswith("/deployments") and r.method == "GET"
    ]
    limited = next(r for r in calls if r.status == 429)
    after = [r for r in calls if r.timestamp > limited.timestamp]
    assert after, "no attempt after the 429"
    assert after[0].timestamp - limited.timestamp >= 4.0 - 0.05  # not before the server allowed it


def test_ci_made_deployment_is_not_updated(
    api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab
) -> None:
    # GitLab CI recorded this version's success on db/gstg. It is never
    # updated (GitLab would answer 403) nor taken as ours; a create equal to
    # the environment's last success is answered with it, and the record says so.
    ci = gitlab_server.add_ci_deployment(
        GITLAB_PROJECTS[0], "db/gstg", "master", gitlab_server.head(GITLAB_PROJECTS[0]), "success"
    )
    api.create(tracked("pdm-ci", gitlab_server.url, one_project(gitlab_server)))
    api.wait_condition("pdm-ci", "Succeeded", timeout=60)
    api.wait_condition("pdm-ci", "Reported", timeout=60)
    deps = gitlab_server.deployments(GITLAB_PROJECTS[0])
    assert next(d for d in deps if d["id"] == ci["id"])["status"] == "success"
    # Ours, if the running report made one before the Job ended, is apart.
    assert [(d["status"], d["deployable"]) for d in deps if d["id"] != ci["id"]] in (
        [],
        [("success", None)],
    )
    (record,) = reports(api, "pdm-ci")
    assert record["state"] == "Delivered"
    assert f"deployment {ci['id']} (success, @pdm-bot by GitLab CI)" in record["conflict"]
    assert not [r for r in gitlab_server.requests if r.status == 403]


def test_tokens_never_appear_in_status_events_or_logs(
    cluster: Cluster,
    api: Api,
    reporting_operator: OperatorProcess,
    gitlab_server: FakeGitLab,
    sentry_server: FakeSentry,
) -> None:
    gitlab_server.faults.error(401, times=2)  # errors are where tokens leak
    api.create(
        tracked(
            "pdm-tokens",
            gitlab_server.url,
            sinks(gitlab_server, sentry_server.url, metadata_blocking=False),
        )
    )
    api.wait_condition("pdm-tokens", "Succeeded", timeout=60)
    api.wait_condition("pdm-tokens", "Reported", timeout=120)
    # The tokens were used...
    assert any(r.headers.get("PRIVATE-TOKEN") == GITLAB_TOKEN for r in gitlab_server.requests)
    assert any(
        r.headers.get("Authorization") == f"Bearer {SENTRY_TOKEN}" for r in sentry_server.requests
    )
    # ...and are nowhere to be read.
    events = client.CoreV1Api(cluster.api).list_namespaced_event(api.ns).items
    texts = {
        "status": json.dumps(api.get("pdm-tokens")),
        "events": " ".join(f"{e.reason} {e.message}" for e in events),
        "operator log": reporting_operator.log(),
    }
    for where, text in texts.items():
        for token in (GITLAB_TOKEN, SENTRY_TOKEN):
            assert token not in text, f"a token leaked into the {where}"


def test_regular_run_with_non_blocking_sinks_succeeds_while_gitlab_is_down(
    api: Api,
    reporting_operator: OperatorProcess,
    gitlab_server: FakeGitLab,
    sentry_server: FakeSentry,
) -> None:
    non_blocking = sinks(
        gitlab_server, sentry_server.url, metadata_blocking=False, qa_blocking=False
    )
    healthy = time_to_succeed(
        api, "reg-healthy", tracked("reg-healthy", gitlab_server.url, non_blocking)
    )
    gitlab_server.down()
    sentry_server.down()
    faulty = time_to_succeed(
        api,
        "reg-faulty",
        tracked("reg-faulty", gitlab_server.url, non_blocking, environment="gprd"),
    )
    assert faulty <= healthy + 3.0, f"took {faulty:.1f}s with GitLab down, {healthy:.1f}s healthy"
    assert api.condition("reg-faulty", "Reported")["reason"] == "Pending"  # type: ignore[index]
    gitlab_server.up()
    sentry_server.up()
    api.wait_condition("reg-faulty", "Reported", timeout=120)
    assert len(gitlab_server.issues(QA)) == 2  # one per migration, none twice


def warnings_about(cluster: Cluster, api: Api, name: str) -> list[str]:
    events = client.CoreV1Api(cluster.api).list_namespaced_event(api.ns).items
    return [
        f"{e.reason}: {e.message}"
        for e in events
        if e.involved_object.name == name and e.type == "Warning"
    ]


def test_a_ref_unknown_to_its_project_is_named_with_the_project(
    cluster: Cluster, api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab
) -> None:
    # The shared version is gitlab's; omnibus has no such sha.
    gitlab, omnibus = GITLAB_PROJECTS
    body = tracked(
        "pdm-badref",
        gitlab_server.url,
        [{"type": "GitLabDeployment", "projects": GITLAB_PROJECTS}],
        tracking_extra={"version": {"ref": "18-6-stable-ee", "sha": gitlab_server.head(gitlab)}},
    )
    gitlab_server.add_ref(gitlab, "18-6-stable-ee", gitlab_server.head(gitlab))
    api.create(body)
    api.wait_condition("pdm-badref", "Succeeded", timeout=60)
    cond = wait_until(
        lambda: (
            (c := api.condition("pdm-badref", "Reported")) and c["reason"] == "DeliveryFailed" and c
        ),
        timeout=60,
        what="Reported=False DeliveryFailed",
    )
    records = {r["target"]: r for r in reports(api, "pdm-badref")}
    assert records[gitlab]["state"] == "Delivered"
    assert records[omnibus]["state"] == "Failed"
    error = records[omnibus]["lastError"]
    assert omnibus in error
    assert "ref '18-6-stable-ee' does not exist in that project" in error
    assert error in cond["message"]
    assert any(
        omnibus in w and "18-6-stable-ee" in w for w in warnings_about(cluster, api, "pdm-badref")
    )
    assert GITLAB_TOKEN not in json.dumps(records)
    # Nothing was made in omnibus.
    assert gitlab_server.deployments(omnibus) == []


def test_a_missing_permission_is_named(
    cluster: Cluster, api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab
) -> None:
    gitlab_server.forbid(GITLAB_PROJECTS[0], "create_environment")
    api.create(tracked("pdm-403", gitlab_server.url, one_project(gitlab_server)))
    api.wait_condition("pdm-403", "Succeeded", timeout=60)
    record = wait_until(
        lambda: next(
            (
                r
                for r in reports(api, "pdm-403")
                if r["desired"] == "success" and r["state"] == "Failed"
            ),
            None,
        ),
        timeout=60,
        what="the success report failed",
    )
    assert "403 Forbidden" in record["lastError"]
    assert "create_environment" in record["lastError"]
    assert "'db/gstg'" in record["lastError"]
    cond = api.condition("pdm-403", "Reported")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "DeliveryFailed")
    assert "create_environment" in cond["message"]
    # One Warning event per undelivered record (the reporter's, ReportFailed),
    # none for the condition that names the first of them. Events are posted
    # in order from one thread: the condition's would come before the record's.
    warnings = wait_until(
        lambda: (
            (w := warnings_about(cluster, api, "pdm-403"))
            and any(x.startswith("ReportFailed: ") and "create_environment" in x for x in w)
            and w
        ),
        timeout=30,
        what="a ReportFailed event",
    )
    messages = [w.split(": ", 1)[1] for w in warnings if "create_environment" in w]
    assert len(messages) == len(set(messages)), warnings
    assert not any(w.startswith("ReportDeliveryFailed") for w in warnings), warnings


def test_merge_requests_are_labelled_once_gitlab_has_linked_them(
    api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab
) -> None:
    gitlab = GITLAB_PROJECTS[0]
    iid = gitlab_server.add_merge_request(gitlab, "Adds a post-deployment migration")
    gitlab_server.hold_linking()  # Sidekiq is busy: the deployment succeeds unlinked
    body = tracked(
        "pdm-link",
        gitlab_server.url,
        [*one_project(gitlab_server), {"type": "MergeRequestLabels"}],
        environment="gprd",
    )
    api.create(body)
    api.wait_condition("pdm-link", "Succeeded", timeout=60)
    waiting = wait_until(
        lambda: next(
            (
                r
                for r in reports(api, "pdm-link")
                if r["sink"] == "MergeRequestLabels" and "link" in r.get("note", "")
            ),
            None,
        ),
        timeout=60,
        what="the label report waiting for GitLab to link merge requests",
    )
    assert waiting["state"] == "Waiting"
    assert "link merge requests" in waiting["note"]
    assert gitlab_server.merge_request(gitlab, iid)["labels"] == []
    cond = api.condition("pdm-link", "Reported")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "Pending")

    gitlab_server.release_linking()
    api.wait_condition("pdm-link", "Reported", timeout=60)
    assert gitlab_server.merge_request(gitlab, iid)["labels"] == [
        "workflow::post-deploy-db-production"
    ]


def test_no_merge_requests_linked_in_time_is_an_outcome_not_a_delivery(
    api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab
) -> None:
    # Older GitLab never links environments in a folder, like db/gprd.
    gitlab_server.legacy_folder_linking = True
    gitlab_server.add_merge_request(GITLAB_PROJECTS[0], "Never linked")
    body = tracked(
        "pdm-nolink",
        gitlab_server.url,
        [*one_project(gitlab_server), {"type": "MergeRequestLabels", "linkTimeoutSeconds": 10}],
        environment="gprd",
    )
    api.create(body)
    api.wait_condition("pdm-nolink", "Succeeded", timeout=60)
    cond = wait_until(
        lambda: (
            (c := api.condition("pdm-nolink", "Reported"))
            and c["status"] == "False"
            and c["reason"] != "Pending"
            and c
        ),
        timeout=60,
        what="the Reported condition settled",
    )
    assert cond["reason"] == "NoMergeRequestsLinked"
    labels = next(r for r in reports(api, "pdm-nolink") if r["sink"] == "MergeRequestLabels")
    assert labels["state"] == "NoMergeRequests"
    assert "within 10s" in labels["lastError"]


# --- IssueNote: the plan and the outcome on the release task issue ---------------

TASKS = "gitlab-org/release/tasks"


def note_sinks(**extra: Any) -> list[dict[str, Any]]:
    return [{"type": "IssueNote", "project": TASKS, "issue": 1, **extra}]


def note_kinds(server: FakeGitLab) -> list[str]:
    """The kind of each note our marker is on, oldest first."""
    return [
        m.group(1)
        for n in server.notes(TASKS, 1)
        if (m := re.search(r"<!-- pdm-operator note uid=\S+ kind=(\w+) -->", n["body"]))
    ]


def note_posts(server: FakeGitLab) -> list[Any]:
    return [r for r in server.requests if r.method == "POST" and r.path.endswith("/notes")]


def note_record(api: Api, name: str) -> dict[str, Any] | None:
    return next((r for r in reports(api, name) if r["sink"] == "IssueNote"), None)


@pytest.fixture
def task_issue(gitlab_server: FakeGitLab) -> None:
    gitlab_server.add_issue(TASKS, "Release 18.6.0: post-deploy migrations")


def running_for(seconds: int) -> dict[str, Any]:
    """A Job whose simulated pod runs ``seconds`` (the plan is noted meanwhile)."""
    return {"podAnnotations": {"sim.pdm-operator.io/duration": f"{seconds}s"}}


def test_the_plan_and_the_outcome_are_each_noted_once_on_the_issue(
    api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab, task_issue: None
) -> None:
    api.create(tracked("pdm-note", gitlab_server.url, note_sinks(), job=running_for(15)))
    planned = wait_until(
        lambda: plan_delivered(api, "pdm-note"),
        timeout=60,
        what="the plan noted while the Job runs",
    )
    assert planned["desired"] == "planned"
    assert api.get("pdm-note")["status"].get("jobOutcome") is None  # type: ignore[index]
    api.wait_condition("pdm-note", "Succeeded", timeout=120)
    api.wait_condition("pdm-note", "Reported", timeout=60)
    assert note_kinds(gitlab_server) == ["plan", "outcome"]
    outcome = gitlab_server.notes(TASKS, 1)[-1]
    assert outcome["body"].startswith("**Post-deployment migrations succeeded** in `gstg`")
    assert outcome["author"]["username"] == "pdm-bot"
    assert len(note_posts(gitlab_server)) == 2
    assert gitlab_server.quick_actions(TASKS, 1) == []
    record = note_record(api, "pdm-note")
    assert record is not None
    assert (record["desired"], record["state"]) == ("success", "Delivered")
    assert record["remoteId"] == str(outcome["id"])


def test_a_failed_run_is_noted_as_failed(
    api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab, task_issue: None
) -> None:
    job = {"podAnnotations": {"sim.pdm-operator.io/outcome": "fail"}}
    api.create(tracked("pdm-note-failed", gitlab_server.url, note_sinks(), job=job))
    api.wait_condition("pdm-note-failed", "Failed", timeout=120)
    api.wait_condition("pdm-note-failed", "Reported", timeout=60)
    assert note_kinds(gitlab_server)[-1] == "outcome"
    body = gitlab_server.notes(TASKS, 1)[-1]["body"]
    assert body.startswith("**Post-deployment migrations failed**")
    assert "| Reason |" in body


def test_a_lost_note_answer_leaves_exactly_one_note_of_each_kind(
    api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab, task_issue: None
) -> None:
    gitlab_server.faults.lose_response(method="POST", path=r"/notes$", times=2)
    api.create(tracked("pdm-note-lost", gitlab_server.url, note_sinks(), job=running_for(10)))
    api.wait_condition("pdm-note-lost", "Succeeded", timeout=120)
    api.wait_condition("pdm-note-lost", "Reported", timeout=120)
    kinds = note_kinds(gitlab_server)
    assert "outcome" in kinds
    assert len(kinds) == len(set(kinds)), kinds  # no kind twice
    assert len([r for r in note_posts(gitlab_server) if r.fault == "lose_response"]) == 2
    # Each note stored was made by one POST: none was posted again after a lost answer.
    stored = [r for r in note_posts(gitlab_server) if r.handled_status == 201]
    assert len(stored) == len(kinds)


def outcome_attempted(api: Api, name: str, at_least: int) -> bool:
    record = note_record(api, name)
    return bool(record and record["desired"] == "success" and record.get("attempts", 0) >= at_least)


def test_a_restart_after_a_lost_note_answer_posts_nothing_twice(
    api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab, task_issue: None
) -> None:
    # GitLab fails all through the run: the plan is never noted, the outcome waits.
    gitlab_server.faults.error(503)
    api.create(tracked("pdm-note-restart", gitlab_server.url, note_sinks()))
    api.wait_condition("pdm-note-restart", "Succeeded", timeout=120)
    wait_until(
        lambda: outcome_attempted(api, "pdm-note-restart", 1),
        timeout=60,
        what="a failed attempt at the outcome note recorded in the outbox",
    )
    reporting_operator.kill()
    # The next operator's post is stored, and its answer lost; it dies right after.
    gitlab_server.faults.clear()
    gitlab_server.faults.lose_response(method="POST", path=r"/notes$", times=1)
    reporting_operator.start()
    wait_until(
        lambda: any(r.fault == "lose_response" for r in note_posts(gitlab_server)),
        timeout=60,
        what="the outcome note posted with its answer lost",
    )
    reporting_operator.kill()
    reporting_operator.start()
    api.wait_condition("pdm-note-restart", "Reported", timeout=120)
    assert note_kinds(gitlab_server) == ["outcome"]
    assert len([r for r in note_posts(gitlab_server) if r.handled_status == 201]) == 1
    record = note_record(api, "pdm-note-restart")
    assert record is not None
    assert record["remoteId"] == str(gitlab_server.notes(TASKS, 1)[0]["id"])


def plan_delivered(api: Api, name: str) -> dict[str, Any] | None:
    record = note_record(api, name)
    return record if record and record["state"] == "Delivered" else None


def test_a_hanging_gitlab_never_delays_a_migration_with_a_note(
    api: Api, reporting_operator: OperatorProcess, gitlab_server: FakeGitLab, task_issue: None
) -> None:
    healthy = time_to_succeed(
        api, "note-healthy", tracked("note-healthy", gitlab_server.url, note_sinks())
    )
    gitlab_server.faults.hang()
    faulty = time_to_succeed(
        api,
        "note-faulty",
        tracked(
            "note-faulty",
            gitlab_server.url,
            note_sinks(required=True),
            environment="gprd",
            pipeline="Rollback",
        ),
    )
    assert faulty <= healthy + 3.0, f"took {faulty:.1f}s with GitLab hanging, {healthy:.1f}s"
    assert api.condition("note-faulty", "Reported")["reason"] == "Pending"  # type: ignore[index]
    gitlab_server.faults.clear()
    api.wait_condition("note-faulty", "Reported", timeout=120)
    assert note_kinds(gitlab_server).count("outcome") == 2
