"""Post-deployment migrations really run: the chart-shaped release on the real node,
the stand-in GitLab toolbox (hack/standin-toolbox/) and a real PostgreSQL.

This is the test that would have caught SKIP_POST_DEPLOYMENT_MIGRATIONS="false":
the regular deploy's Job carries the variable and applies only db/migrate; the
PostDeployMigration copies that Job and must apply db/post_migrate, each
version exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from postgres import Postgres
from tests.integration.conftest import Cluster
from tests.support import argocd, chart
from tests.support.fake_gitlab import FakeGitLab
from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, migration
from tests.support.standin import (
    CHART,
    MIGRATION_COMPONENT,
    POST,
    POST_NAMES,
    PREFLIGHT_COMPONENT,
    REGULAR,
    both,
    ci,
    gated,
    job_end,
    jobs_of,
    kubectl_pdm,
    lock_held,
    pdm_log,
    pending_rows,
    rows,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


def retry(cluster: Cluster, api: Api, name: str) -> subprocess.CompletedProcess[str]:
    """``kubectl pdm retry NAME``: the CLI's kubectl plugin entry point."""
    return kubectl_pdm(cluster, "retry", name, "-n", api.ns)


def test_post_deployment_migrations_are_applied_once_by_the_copied_chart_job(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    db, name = deployed
    # The regular deploy skipped the post-deployment migrations: they are pending.
    assert both(db, name) == (REGULAR, REGULAR)

    # A dry run asks Rails what is pending (the pre-flight, same pod as the Job)
    # and changes nothing.
    api.create(migration("pdm-real-dry", mode="DryRun", podTemplateFrom=CHART, preflight={}))
    dry = api.wait_condition("pdm-real-dry", "Succeeded", timeout=180)
    dry_status = api.get("pdm-real-dry")["status"]  # type: ignore[index]
    assert rows(dry_status) == pending_rows(name)
    assert [m["name"] for m in dry_status["pendingMigrations"]] == POST_NAMES * 2
    assert (
        "8 migrations pending: 20261115000001 Add unique index on project path" in (dry["message"])
    )
    assert both(db, name) == (REGULAR, REGULAR)  # the pre-flight read, nothing more
    assert len(jobs_of(api, "pdm-real-dry", PREFLIGHT_COMPONENT)) == 1
    assert jobs_of(api, "pdm-real-dry", MIGRATION_COMPONENT) == []

    api.create(
        migration(
            "pdm-real",
            podTemplateFrom=CHART,
            waitFor={"rolledOut": ["gitlab-toolbox"]},
            preflight={},
        )
    )
    api.wait_condition("pdm-real", "Succeeded", timeout=180)
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
    status = api.get("pdm-real")["status"]  # type: ignore[index]
    # The list recorded before the Job ran is what the Job applied.
    assert rows(status) == pending_rows(name)
    assert status["preflight"]["pendingCount"] == 8
    assert status["preflight"]["planHash"].startswith("sha256:")
    preflight = api.condition("pdm-real", "Preflight")
    assert preflight is not None
    assert (preflight["status"], preflight["reason"]) == ("True", "MigrationsPending")
    log = pdm_log(cluster, api, "pdm-real")
    for version in POST:
        assert f"== {version}" in log, log
    assert log.count("migrated (") == 2 * len(POST), log  # each in main and in ci
    # What the post-deployment migrations do, done to the real database.
    assert db.psql(
        "SELECT indexname FROM pg_indexes WHERE indexname = 'index_projects_on_path'", database=name
    ).strip()
    columns = db.psql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'projects'",
        database=name,
    ).split()
    assert "archived" not in columns
    assert db.psql(
        "SELECT indexname FROM pg_indexes WHERE indexname = 'index_ci_builds_on_status'",
        database=ci(name),
    ).strip()

    # A second run finds nothing pending: it ends without a migration Job.
    api.create(migration("pdm-real-again", podTemplateFrom=CHART, preflight={}))
    again = api.wait_condition("pdm-real-again", "Succeeded", timeout=180)
    assert again["reason"] == "NothingPending"
    assert "no migration is pending" in again["message"]
    assert "jobName" not in api.get("pdm-real-again")["status"]  # type: ignore[index]
    assert jobs_of(api, "pdm-real-again", MIGRATION_COMPONENT) == []
    assert api.get("pdm-real-again")["status"]["pendingMigrations"] == []  # type: ignore[index]
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
    api.wait_lock_free()

    # The run is in the environment's history; a rollback below its version is unsafe.
    rollback = status["rollback"]
    assert rollback["recorded"] is True
    assert (rollback["version"], rollback["floor"]) == ("v18.6.0", "v18.6.0")
    assert rollback["history"] == f"{api.ns}/pdm-history-gstg"
    assert api.get("pdm-real-again")["status"]["rollback"]["recorded"] is False  # type: ignore[index]
    unsafe = kubectl_pdm(cluster, "rollback-check", "gstg", "--to", "18.5.2", "-n", api.ns)
    assert unsafe.returncode == 1, unsafe.stderr
    assert "UNSAFE: rolling gstg back to 18.5.2" in unsafe.stdout
    assert f"pdm {api.ns}/pdm-real (succeeded at" in unsafe.stdout
    assert ", ".join(POST) in unsafe.stdout
    for at_or_after in ("18.6.0", "v18.6.0-ee", "18.6.1"):
        safe = kubectl_pdm(cluster, "rollback-check", "gstg", "--to", at_or_after, "-n", api.ns)
        assert safe.returncode == 0, safe.stdout + safe.stderr
        assert safe.stdout.startswith(f"safe: rolling gstg back to {at_or_after}")
    # The operator's metric says the same, for an SRE's dashboard.
    assert 'pdm_operator_rollback_floor_info{environment="gstg",version="v18.6.0"} 1.0' in (
        operator.metrics()
    )


@contextmanager
def job_controller_paused(cluster: Cluster) -> Iterator[None]:
    """The local control plane's kube-controller-manager stopped (SIGSTOP), so no Job
    is marked finished meanwhile; it runs with --leader-elect=false, and goes on."""
    assert cluster.local_cluster is not None
    pids = cluster.local_cluster.state()["pids"]
    assert isinstance(pids, dict)
    pid = int(pids["kube-controller-manager"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_the_migration_job_starts_at_the_preflight_pods_end_not_at_its_jobs_complete(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    if cluster.local_cluster is None:
        pytest.skip("pauses the local control plane's Job controller")
    db, name = deployed

    def preflight_pod_running() -> bool:
        pods = api.core.list_namespaced_pod(
            api.ns, label_selector=f"app.kubernetes.io/component={PREFLIGHT_COMPONENT}"
        ).items
        return any(pod.status.phase == "Running" for pod in pods)

    api.create(migration("pdm-pod-end", podTemplateFrom=CHART, preflight={}))
    wait_until(preflight_pod_running, timeout=120, what="the pre-flight pod to run")
    # From here the Job controller cannot mark the pre-flight Job Complete: the
    # migration Job can only come from the pod's own end, read by the operator.
    with job_controller_paused(cluster):
        created = api.wait_condition("pdm-pod-end", "JobCreated", timeout=120)
        (pjob,) = jobs_of(api, "pdm-pod-end", PREFLIGHT_COMPONENT)
        assert not any(c.type == "Complete" for c in pjob.status.conditions or [])
        assert "the pre-flight found 8 pending" in created["message"]
        assert len(jobs_of(api, "pdm-pod-end", MIGRATION_COMPONENT)) == 1
    api.wait_condition("pdm-pod-end", "Succeeded", timeout=180)
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)


def test_progress_shows_each_migration_as_rails_announces_it(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    db, name = deployed
    # The first post-deployment migration builds an index on projects: while
    # another session holds a lock that conflicts with it, Rails has announced
    # it as migrating and waits there.
    with lock_held(db, name, "projects", "EXCLUSIVE"):
        api.create(migration("pdm-progress", podTemplateFrom=CHART, preflight={}))

        def running_first() -> dict[str, Any] | None:
            shown = (api.get("pdm-progress") or {}).get("status", {}).get("progress") or {}
            current = shown.get("current") or {}
            return shown if current.get("version") == POST[0] else None

        shown = wait_until(running_first, timeout=180, what="progress naming the first migration")
        assert shown["summary"] == "0/8"
        assert shown["current"]["database"] == "main"
        assert shown["current"]["name"] == "AddUniqueIndexOnProjectPath"
        listed = kubectl_pdm(cluster, "wait", "pdm-progress", "-n", api.ns, "--timeout", "1")
        assert (
            "0/8 migrations done, running 20261115000001 AddUniqueIndexOnProjectPath on main"
            in (listed.stdout)
        ), listed.stdout + listed.stderr
    api.wait_condition("pdm-progress", "Succeeded", timeout=180)
    shown = api.get("pdm-progress")["status"]["progress"]  # type: ignore[index]
    assert (shown["summary"], shown["done"], shown["total"]) == ("8/8", 8, 8)
    assert "current" not in shown
    # Each step as Rails announced it: main's, then ci's, with Rails' own durations.
    assert [(s["database"], s["version"]) for s in shown["completed"]] == [
        (database, version) for database in ("main", "ci") for version in POST
    ]
    backfill = next(s for s in shown["completed"] if s["name"] == "BackfillProjectStatistics")
    assert float(backfill["seconds"]) >= 3.0  # db/post_migrate's pg_sleep(3) on main
    table = subprocess.run(
        ["kubectl", "get", "pdm", "pdm-progress", "-n", api.ns],
        env=cluster.env(), capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "PROGRESS" in table.splitlines()[0]
    assert " 8/8 " in table.splitlines()[1]
    metrics = operator.metrics()
    assert 'pdm_migration_step_duration_seconds_count{database="main",environment="gstg"} 4.0' in (
        metrics
    )


def test_nothing_pending_reports_a_success_only_when_asked_to(
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    db, name = deployed
    # Every post-deployment migration has run already (an earlier run, by hand).
    for each in (name, ci(name)):
        db.psql(
            "INSERT INTO schema_migrations (version) SELECT unnest(ARRAY["
            "'20261115000001', '20261115000002', '20261115000003', '20261115000004'])",
            database=each,
        )
    token, sha = "glpat-nothing-pending-7e1f", "4f5e6d7c" * 5
    api.core.create_namespaced_secret(
        api.ns, {"metadata": {"name": "gitlab-api"}, "stringData": {"token": token}}
    )
    with FakeGitLab(token=token) as gitlab:
        gitlab.add_commits("gitlab-org/gitlab", shas=[sha])
        tracking = {
            "gitlab": {"url": gitlab.url, "tokenSecretRef": {"name": "gitlab-api", "key": "token"}},
            "version": {"ref": "master", "sha": sha},
            "sinks": [{"type": "GitLabDeployment", "projects": ["gitlab-org/gitlab"]}],
        }
        api.create(
            migration("pdm-nothing-quiet", podTemplateFrom=CHART, preflight={}, tracking=tracking)
        )
        quiet = api.wait_condition("pdm-nothing-quiet", "Succeeded", timeout=180)
        assert quiet["reason"] == "NothingPending"
        api.wait_lock_free()
        api.create(
            migration(
                "pdm-nothing-reported",
                podTemplateFrom=CHART,
                preflight={"whenNonePending": "FinishAndReport"},
                tracking=tracking,
            )
        )
        reported = api.wait_condition("pdm-nothing-reported", "Succeeded", timeout=180)
        assert reported["reason"] == "NothingPending"
        api.wait_condition("pdm-nothing-reported", "Reported", timeout=60)
        # One deployment, a success, from the second; none from the first.
        assert [d["status"] for d in gitlab.deployments("gitlab-org/gitlab")] == ["success"]
    for quiet_or_not in ("pdm-nothing-quiet", "pdm-nothing-reported"):
        assert jobs_of(api, quiet_or_not, MIGRATION_COMPONENT) == []
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)


def test_an_approval_of_plan_a_never_runs_plan_b(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    db, name = deployed
    api.create(
        migration("pdm-approve", podTemplateFrom=CHART, preflight={}, approval={"required": True})
    )
    waiting = gated(api, "pdm-approve", "AwaitingApproval")
    assert (
        "8 migrations pending: 20261115000001 Add unique index on project path"
        in (waiting["message"])
    )
    assert "kubectl pdm approve pdm-approve" in waiting["message"]
    assert jobs_of(api, "pdm-approve", MIGRATION_COMPONENT) == []
    api.wait_lock_free()  # nobody holds the environment while waiting for an approval
    # Argo CD shows it waiting for a person, and offers its approve action.
    live = api.get("pdm-approve") or {}
    argocd.save_fixture("awaiting-approval", live)
    assert argocd.health(live)["status"] == "Suspended"
    assert argocd.actions(live) == {"approve": True}

    # Held while the release manager reviews and approves plan A (eight migrations)...
    api.patch("pdm-approve", {"spec": {"suspend": True}})
    gated(api, "pdm-approve", "Suspended")
    approved = kubectl_pdm(cluster, "approve", "pdm-approve", "-n", api.ns)
    assert approved.returncode == 0, approved.stderr
    assert "  20261115000001  Add unique index on project path  (" in approved.stdout
    plan_a = api.get("pdm-approve")["spec"]["approval"]["approved"]  # type: ignore[index]
    assert plan_a["migrations"] == [f"{v} ({db})" for db, v in pending_rows(name)]
    # ...and meanwhile someone applies the first one by hand on main: plan B is seven.
    db.psql("INSERT INTO schema_migrations (version) VALUES ('20261115000001')", database=name)
    api.patch("pdm-approve", {"spec": {"suspend": False}})
    changed = gated(api, "pdm-approve", "PlanChanged")
    assert f"no longer pending: 20261115000001 ({name})" in changed["message"]
    assert f"not what {plan_a['by']} approved at {plan_a['at']}" in changed["message"]
    assert jobs_of(api, "pdm-approve", MIGRATION_COMPONENT) == []
    assert both(db, name) == ([*REGULAR, POST[0]], REGULAR)  # plan B did not run
    api.wait_lock_free()

    # Plan B approved, this time through Argo CD's approve action: the Lua's
    # result, sent as the merge patch Argo CD sends, changes only the approval.
    live = api.get("pdm-approve") or {}
    argocd.save_fixture("plan-changed", live)
    assert argocd.health(live)["status"] == "Suspended"
    assert argocd.actions(live) == {"approve": True}
    patch = argocd.merge_patch(live, argocd.run_action("approve", live))
    assert list(patch) == ["spec"], patch
    assert list(patch["spec"]) == ["approval"], patch
    assert (
        patch["spec"]["approval"]["approved"]["planHash"] == live["status"]["preflight"]["planHash"]
    )
    api.patch("pdm-approve", patch)
    api.wait_condition("pdm-approve", "Succeeded", timeout=180)
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
    log = pdm_log(cluster, api, "pdm-approve")
    assert log.count("migrated (") == 7, log
    done = api.get("pdm-approve") or {}
    status = done["status"]
    assert status["approval"]["by"] == "system:serviceaccount:argocd:argocd-server"
    assert status["approval"]["planHash"] == status["preflight"]["planHash"]
    approved_events = [
        e for e in api.wait_events("pdm-approve", "PlanApproved") if e.reason == "PlanApproved"
    ]
    assert "system:serviceaccount:argocd:argocd-server" in approved_events[-1].message
    assert argocd.health(done)["status"] == "Healthy"
    assert argocd.actions(done) == {"approve": False}


def test_a_failing_post_deployment_migration_fails_with_its_version_and_the_real_log(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    db, name = deployed
    # Data the unique index cannot be built on.
    db.psql(
        "INSERT INTO projects (path) VALUES ('gitlab-org/gitlab'), ('gitlab-org/gitlab')",
        database=name,
    )

    api.create(migration("pdm-real-fail", podTemplateFrom=CHART, preflight={}))
    failed = api.wait_condition("pdm-real-fail", "Failed", timeout=180)
    assert failed["reason"] == "BackoffLimitExceeded"
    failure = api.get("pdm-real-fail")["status"]["failure"]  # type: ignore[index]
    assert failure["exitCode"] == 1
    assert "== 20261115000001 AddUniqueIndexOnProjectPath: migrating" in failure["logTail"]
    assert "could not create unique index" in failure["logTail"]
    # The migration that failed, named from Rails' own lines, and in the condition.
    assert failure["migration"]["version"] == "20261115000001"
    assert failure["migration"]["name"] == "AddUniqueIndexOnProjectPath"
    assert failure["migration"]["error"].startswith("PG::UniqueViolation: ERROR:")
    assert failure["migration"]["database"] == "main"  # GitLab's "main: == ..." lines
    assert (
        "migration 20261115000001 AddUniqueIndexOnProjectPath failed on main: PG::"
        in failed["message"]
    )
    # What is kept is the failing migration through Rails' error, not Rake's backtrace.
    assert "rake aborted!" in failure["logTail"]
    assert ":in `" not in failure["logTail"]
    # Nothing after the failing version ran (ci's turn never came); it is still pending.
    assert both(db, name) == (REGULAR, REGULAR)
    assert json.dumps(failure).count("SKIP_POST_DEPLOYMENT_MIGRATIONS") == 0

    # Retried explicitly, as a new PostDeployMigration (kubectl pdm retry), once
    # the data is fixed: the remaining migrations run, each once.
    db.psql(
        "DELETE FROM projects WHERE ctid NOT IN (SELECT min(ctid) FROM projects GROUP BY path)",
        database=name,
    )
    retried = retry(cluster, api, "pdm-real-fail")
    assert retried.returncode == 0, retried.stderr
    assert (
        retried.stdout.strip() == "pdm/pdm-real-fail-retry-1 created (retry of pdm/pdm-real-fail)"
    )
    again = api.get("pdm-real-fail-retry-1")
    assert again["metadata"]["annotations"]["pdm-operator.io/retry-of"] == "pdm-real-fail"  # type: ignore[index]
    api.wait_condition("pdm-real-fail-retry-1", "Succeeded", timeout=180)
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
    # Its own pre-flight listed what remained: all of them, the failed one first.
    retried_status = api.get("pdm-real-fail-retry-1")["status"]  # type: ignore[index]
    assert rows(retried_status) == pending_rows(name)
    log = pdm_log(cluster, api, "pdm-real-fail-retry-1")
    assert log.count("migrated (") == 2 * len(POST), log
    # The failed one stays as it was; retrying a migration that did not fail is refused.
    assert api.get("pdm-real-fail")["status"]["state"] == "Failed"  # type: ignore[index]
    refused = retry(cluster, api, "pdm-real-fail-retry-1")
    assert refused.returncode == 1
    assert "is Succeeded, not Failed" in refused.stderr


@pytest.mark.parametrize("value", ["false", ""])
def test_rails_skips_post_deployment_migrations_when_the_variable_is_set_to_anything(
    api: Api, real_node: dict[str, Any], deployed: tuple[Postgres, str], value: str
) -> None:
    """The defect this round fixed, reproduced by Rails itself: SKIP_POST_DEPLOYMENT_MIGRATIONS
    set to "false", or to nothing, is still *set*, so GitLab's rule (the stand-in's
    initializer, config/initializers/0_post_deployment_migrations.rb) leaves
    db/post_migrate out of Rails' migration paths and db:migrate exits 0."""
    db, name = deployed
    old_bug = chart.chart_job("gitlab-migrations-0ldbug0")
    old_bug["metadata"]["labels"]["app"] = "not-migrations"  # not the chart's
    container = old_bug["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        e if e["name"] != chart.SKIP else {"name": chart.SKIP, "value": value}
        for e in container["env"]
    ]
    chart.on_real_node(old_bug["spec"]["template"]["spec"], real_node)
    api.batch.create_namespaced_job(api.ns, old_bug)
    job = job_end(api, "gitlab-migrations-0ldbug0")
    assert job.status.succeeded == 1  # "success"...
    assert both(db, name) == (REGULAR, REGULAR)  # ...and not one post-deployment migration ran


def test_a_sigkilled_operator_leaves_one_job_and_each_migration_applied_once(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    db, name = deployed
    db.psql("INSERT INTO projects (path) VALUES ('a/one'), ('b/two')", database=name)
    api.create(migration("pdm-killed", podTemplateFrom=CHART, preflight={}))
    api.wait_condition("pdm-killed", "JobCreated", timeout=120)
    # Mid-migration: the backfill sleeps 3 s inside its transaction.
    wait_until(
        lambda: "20261115000003" in pdm_log(cluster, api, "pdm-killed"),
        timeout=60,
        what="the backfill to start",
    )
    operator.restart()  # SIGKILL, then a new process
    api.wait_condition("pdm-killed", "Succeeded", timeout=180)
    assert len(jobs_of(api, "pdm-killed", MIGRATION_COMPONENT)) == 1
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
    assert db.psql("SELECT count(*) FROM project_statistics", database=name).strip() == "2"
    # Once in main, once (a no-op there) in ci: one run of the Job.
    assert (
        pdm_log(cluster, api, "pdm-killed").count(
            "20261115000003 BackfillProjectStatistics: migrating"
        )
        == 2
    )


def test_the_skip_variable_from_an_env_from_configmap_does_not_stop_the_migrations(
    api: Api,
    operator: OperatorProcess,
    real_node: dict[str, Any],
    gitlab_db: tuple[Postgres, str],
) -> None:
    """The chart's extraEnvFrom brings SKIP_POST_DEPLOYMENT_MIGRATIONS in a ConfigMap.

    The regular deploy's Job reads it and skips (as Rails would); the
    PostDeployMigration copies that Job, envFrom included, and its script
    unsets the variable before Rails starts: the pre-flight lists the
    post-deployment migrations and the Job applies them.
    """
    db, name = gitlab_db
    api.core.create_namespaced_config_map(
        api.ns,
        {
            "metadata": {"name": "gitlab-extra-env"},
            "data": {"SKIP_POST_DEPLOYMENT_MIGRATIONS": "true"},
        },
    )
    job = chart.chart_job()
    for c in job["spec"]["template"]["spec"]["containers"]:
        if c["name"] == "migrations":
            c["env"] = [
                e for e in c.get("env") or [] if e["name"] != "SKIP_POST_DEPLOYMENT_MIGRATIONS"
            ]
            c["envFrom"] = [{"configMapRef": {"name": "gitlab-extra-env"}}]
    chart.install(
        api, job=job, database=chart.Database(db.host, db.port, name), placement=real_node
    )
    regular = job_end(api, chart.CHART_JOB)
    assert regular.status.succeeded == 1, regular.status
    # The variable came through envFrom: skipped.
    assert both(db, name) == (REGULAR, REGULAR)

    api.create(migration("pdm-env-from", podTemplateFrom=CHART, preflight={}))
    api.wait_condition("pdm-env-from", "Succeeded", timeout=180)
    status = api.get("pdm-env-from")["status"]  # type: ignore[index]
    assert rows(status) == pending_rows(name)
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
    (made,) = jobs_of(api, "pdm-env-from", MIGRATION_COMPONENT)
    container = made.spec.template.spec.containers[0]
    # The source is still there (the Job is the chart's wiring), the script unsets it.
    assert [s.config_map_ref.name for s in container.env_from] == ["gitlab-extra-env"]
    assert "unset SKIP_POST_DEPLOYMENT_MIGRATIONS" in container.args[-1]


def test_holds_only_and_mark_executed_act_on_just_the_versions_they_name(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    """Real Rails applies one version, then all but a held one, and a mark records the
    held one in schema_migrations without running it; the history and rollback-check
    say what was held and who marked what."""
    db, name = deployed
    first, held, *rest = POST

    # `only` runs just the one it names, on both databases.
    api.create(
        migration("pdm-only", podTemplateFrom=CHART, preflight={}, migrations={"only": [first]})
    )
    api.wait_condition("pdm-only", "Succeeded", timeout=180)
    assert both(db, name) == ([*REGULAR, first], [*REGULAR, first])
    log = pdm_log(cluster, api, "pdm-only")
    assert {line.split(" == ")[1].split(" ")[0] for line in log.splitlines() if " == " in line} == {
        first
    }, log
    actions = {
        m["version"]: m["action"] for m in api.get("pdm-only")["status"]["pendingMigrations"]
    }  # type: ignore[index]
    assert actions == {first: "Apply", held: "Hold", **dict.fromkeys(rest, "Hold")}
    api.wait_lock_free()

    # A hold leaves its version pending and applies the rest.
    api.create(
        migration("pdm-hold", podTemplateFrom=CHART, preflight={}, migrations={"hold": [held]})
    )
    api.wait_condition("pdm-hold", "Succeeded", timeout=180)
    assert both(db, name) == ([*REGULAR, first, *rest], [*REGULAR, first, *rest])
    log = pdm_log(cluster, api, "pdm-hold")
    assert f"== {held}" not in log, log
    preflight = api.condition("pdm-hold", "Preflight") or {}
    assert f"holds 1: {held} (spec.migrations.hold)" in preflight["message"]
    columns = db.psql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'projects'",
        database=name,
    ).split()
    assert "archived" in columns  # what the held migration drops is still there
    api.wait_lock_free()

    # The held one, marked executed from the run that held it: recorded, never run.
    marked = kubectl_pdm(
        cluster, "mark-executed", "pdm-hold", held, "--reason", "INC-42: drop by hand", "-n", api.ns
    )
    assert marked.returncode == 0, marked.stderr
    made = marked.stdout.split()[0].removeprefix("pdm/")
    api.wait_condition(made, "Succeeded", timeout=180)
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
    columns = db.psql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'projects'",
        database=name,
    ).split()
    assert "archived" in columns  # recorded as executed, not executed
    log = pdm_log(cluster, api, made)
    assert f"Successfully marked '{held}' as complete on database main" in log, log
    assert " == " not in log, log
    check = kubectl_pdm(cluster, "rollback-check", "gstg", "--to", "18.5.2", "-n", api.ns)
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"held: {held}" in check.stdout  # pdm-hold's record
    assert f"marked executed without running: {held} by " in check.stdout
    assert "(INC-42: drop by hand)" in check.stdout


def test_post_deployment_migrations_of_an_older_minor_wait_for_an_approval_of_the_skip(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    """18.8 is deployed, and the pre-flight finds 18.6's post-deployment migrations
    pending (their milestone, as the real migration files name it): no Job until an
    approval of that plan acknowledges the skip."""
    db, name = deployed
    api.create(migration("pdm-skip", podTemplateFrom=CHART, preflight={}, gitlabVersion="18.8.0"))
    skipped = gated(api, "pdm-skip", "VersionSkipped")
    for version in POST:
        assert f"{version} (18.6)" in skipped["message"], skipped["message"]
    assert "kubectl pdm approve pdm-skip" in skipped["message"]
    assert jobs_of(api, "pdm-skip", MIGRATION_COMPONENT) == []
    assert both(db, name) == (REGULAR, REGULAR)
    api.wait_lock_free()

    approved = kubectl_pdm(cluster, "approve", "pdm-skip", "-n", api.ns)
    assert approved.returncode == 0, approved.stderr
    assert "VERSION SKIP (VersionSkipped)" in approved.stdout
    api.wait_condition("pdm-skip", "Succeeded", timeout=180)
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
