"""The chart's whole upgrade on the real node, with real Rails (hack/standin-toolbox/).

The regular deploy is what the chart does: its migrations Job with
SKIP_POST_DEPLOYMENT_MIGRATIONS, then the rollout of the webservice and
Sidekiq, whose new pods wait in their ``dependencies`` init container (CNG's
wait-for-deps) until the schema is what the code needs. A PostDeployMigration
waits for that rollout. Without ``BYPASS_POST_DEPLOYMENT=true`` in their
extraEnv the rollout waits for the post-deployment migrations: the deadlock
the operator names instead of waiting out.
"""

from __future__ import annotations

import copy
import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

import gitlab_release
from postgres import Postgres
from tests.integration.conftest import Cluster
from tests.support import chart
from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, migration
from tests.support.standin import (
    CHART,
    MIGRATION_COMPONENT,
    POST,
    PREFLIGHT_COMPONENT,
    REGULAR,
    both,
    ci,
    gated,
    job_end,
    jobs_of,
    lock_held,
    pending_rows,
    rows,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

RAILS = gitlab_release.RAILS
BBM_CHECK = "gitlab-migrations-bbm-3b1f2c7"


def bbm_check_job() -> dict[str, Any]:
    """A newer chart's batched-background-migrations wait Job (chart MR !5372): the
    migrations Job's labels plus its own, and another script."""
    job = chart.chart_job(BBM_CHECK)
    job["metadata"]["labels"]["gitlab.com/batched-background-migrations-check"] = "true"
    pod = job["spec"]["template"]
    pod["metadata"]["labels"]["gitlab.com/batched-background-migrations-check"] = "true"
    pod["spec"]["containers"][0]["args"] = ["/scripts/wait-for-batched-background-migrations"]
    return job


def helm_upgrade_with_bypass(api: Api, db: Postgres, name: str, real_node: dict[str, Any]) -> None:
    """``helm upgrade --set gitlab.{webservice,sidekiq}.extraEnv.BYPASS_POST_DEPLOYMENT=true``:
    the webservice and Sidekiq Deployments as the chart renders them with it."""
    for doc in gitlab_release.release(
        chart.Database(db.host, db.port, name), bypass=True, replicas=1
    ):
        if doc["metadata"]["name"] in RAILS:
            chart.on_real_node(doc["spec"]["template"]["spec"], real_node)
            api.apps.replace_namespaced_deployment(doc["metadata"]["name"], api.ns, doc)


def test_a_rollout_waiting_for_the_post_deployment_migrations_is_named_and_the_bypass_ends_it(
    api: Api,
    operator: OperatorProcess,
    real_node: dict[str, Any],
    gitlab_db: tuple[Postgres, str],
) -> None:
    db, name = gitlab_db
    # The regular deploy, its webservice and Sidekiq without the bypass.
    chart.install(
        api,
        database=chart.Database(db.host, db.port, name),
        placement=real_node,
        run=RAILS,
        replicas=1,
    )
    # A newer chart's BBM check Job beside the migrations Job, and newer than it.
    api.batch.create_namespaced_job(api.ns, bbm_check_job())
    regular = job_end(api, chart.CHART_JOB)
    assert regular.status.succeeded == 1, regular.status
    assert both(db, name) == (REGULAR, REGULAR)

    api.create(
        migration(
            "pdm-upgrade", podTemplateFrom=CHART, preflight={}, waitFor={"rolledOut": list(RAILS)}
        )
    )
    held = gated(api, "pdm-upgrade", "RolloutWaitsForMigrations", timeout=120)
    message = held["message"]
    assert f"Deployment {gitlab_release.WEBSERVICE!r}" in message
    assert "neither can finish" in message
    assert "gitlab.webservice.extraEnv.BYPASS_POST_DEPLOYMENT='true'" in message
    # The check's own lines, as evidence: both databases behind the code.
    assert "main: current 20261101000003, codebase 20261115000004" in message
    assert "ci: current 20261101000003, codebase 20261115000004" in message
    warned = api.wait_events("pdm-upgrade", "RolloutWaitsForMigrations")
    assert any(e.type == "Warning" for e in warned if e.reason == "RolloutWaitsForMigrations")
    # Nothing ran while the old code serves: no pre-flight, no Job, no lock.
    assert jobs_of(api, "pdm-upgrade", PREFLIGHT_COMPONENT) == []
    assert jobs_of(api, "pdm-upgrade", MIGRATION_COMPONENT) == []
    assert both(db, name) == (REGULAR, REGULAR)
    api.wait_lock_free()

    helm_upgrade_with_bypass(api, db, name, real_node)
    api.wait_condition("pdm-upgrade", "Succeeded", timeout=300)
    status = api.get("pdm-upgrade")["status"]  # type: ignore[index]
    # The migrations Job was copied, not the newer BBM check.
    assert status["podTemplate"]["name"] == chart.CHART_JOB
    assert rows(status) == pending_rows(name)
    assert both(db, name) == (REGULAR + POST, REGULAR + POST)
    # Both rolled out with the bypass; the webservice's readiness (the regular
    # schema) passed on the real node.
    for deployment in RAILS:
        assert api.rolled_out(deployment), deployment


def toolbox_status(cluster: Cluster, api: Api) -> str:
    """Rails' own ``gitlab-rake db:migrate:status``, run in the toolbox pod by hand."""
    out = cluster.run_kubectl(
        "exec", "-n", api.ns, f"deploy/{gitlab_release.TOOLBOX}", "-c", "toolbox", "--",
        "gitlab-rake", "db:migrate:status",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def down_rows(table: str) -> list[tuple[str, str, str]]:
    """``(database, version, name)`` of each ``down`` row, read from the table as printed."""
    found, database = [], ""
    for line in table.splitlines():
        if line.startswith("database: "):
            database = line.removeprefix("database: ").strip()
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0] == "down":
            found.append((database, parts[1], parts[2].strip()))
    return found


def test_the_preflight_lists_exactly_the_down_rows_rails_prints_for_both_databases(
    cluster: Cluster, api: Api, operator: OperatorProcess, deployed: tuple[Postgres, str]
) -> None:
    db, name = deployed
    wait_until(lambda: api.rolled_out(gitlab_release.TOOLBOX), timeout=120, what="the toolbox pod")
    table = toolbox_status(cluster, api)
    expected = down_rows(table)
    assert {d for d, _, _ in expected} == {name, ci(name)}

    api.create(migration("pdm-plan", mode="DryRun", podTemplateFrom=CHART, preflight={}))
    api.wait_condition("pdm-plan", "Succeeded", timeout=180)
    status = api.get("pdm-plan")["status"]  # type: ignore[index]
    assert [(m["database"], m["version"], m["name"]) for m in status["pendingMigrations"]] == (
        expected
    )
    assert status["preflight"]["pendingCount"] == len(expected) == 2 * len(POST)
    assert both(db, name) == (REGULAR, REGULAR)


def test_a_migration_that_times_out_on_a_held_lock_is_named_from_rails_own_abort(
    api: Api, operator: OperatorProcess, deployed: tuple[Postgres, str]
) -> None:
    db, name = deployed
    # A long read on projects (ACCESS SHARE, open transaction): the unique index
    # (SHARE) is built beside it, dropping a column (ACCESS EXCLUSIVE) waits for
    # it and gives up at the migration's lock_timeout.
    with lock_held(db, name, "projects", "ACCESS SHARE"):
        api.create(migration("pdm-locked", podTemplateFrom=CHART, preflight={}))
        failed = api.wait_condition("pdm-locked", "Failed", timeout=180)
    failure = copy.deepcopy(api.get("pdm-locked")["status"]["failure"])  # type: ignore[index]
    assert failure["migration"] == {
        "version": "20261115000002",
        "name": "RemoveArchivedFromProjects",
        "database": "main",
        "error": "PG::LockNotAvailable: ERROR:  canceling statement due to lock timeout",
    }
    assert (
        "migration 20261115000002 RemoveArchivedFromProjects failed on main: "
        "PG::LockNotAvailable: ERROR:  canceling statement due to lock timeout"
    ) in failed["message"]
    assert failure["logTail"].startswith(
        "main: == 20261115000002 RemoveArchivedFromProjects: migrating"
    )
    assert ":in `" not in failure["logTail"]
    # The index before it was built and recorded; nothing after it ran, ci's turn never came.
    assert both(db, name) == ([*REGULAR, POST[0]], REGULAR)


def test_a_lock_contention_failure_is_classed_and_retried_by_policy_as_often_as_declared(
    api: Api, operator: OperatorProcess, deployed: tuple[Postgres, str]
) -> None:
    db, name = deployed
    # Its own environment: a policy on a shared one would retry other tests' failures.
    env = "gretry"
    api.declare(env, retry={"classes": ["LockContention"], "attempts": 2, "after": "1s"})
    retries = ["pdm-contended-retry-1", "pdm-contended-retry-2"]
    # The lock stays held through the chain: each retry meets it as the first did.
    with lock_held(db, name, "projects", "ACCESS SHARE"):
        api.create(migration("pdm-contended", env=env, podTemplateFrom=CHART))
        first = api.wait_condition("pdm-contended", "Failed", timeout=180)
        for retry in retries:
            api.wait_condition(retry, "Failed", timeout=180)
    chain = [api.get(n) or {} for n in ["pdm-contended", *retries]]
    for pdm in chain:
        failure = pdm["status"]["failure"]
        assert failure["class"] == "LockContention", failure
        assert failure["migration"]["error"].startswith("PG::LockNotAvailable"), failure
    # Each retry: the first's spec, linked to it, not started before its delay.
    for attempt, (before, after) in enumerate(itertools.pairwise(chain), start=1):
        assert after["metadata"]["annotations"] == {
            "pdm-operator.io/retry-of": before["metadata"]["name"],
            "pdm-operator.io/retry-first": "pdm-contended",
            "pdm-operator.io/retry-attempt": str(attempt),
        }
        ended = datetime.fromisoformat(before["status"]["jobCompletionTime"])
        not_before = ended + timedelta(seconds=1)
        assert after["spec"]["notBefore"] == not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert datetime.fromisoformat(after["status"]["startTime"]) >= not_before
        spec = {k: v for k, v in after["spec"].items() if k != "notBefore"}
        assert spec == chain[0]["spec"]
        assert before["status"]["failure"]["retry"]["name"] == after["metadata"]["name"]
    assert "failure class LockContention; retry 1 of 2" in first["message"]
    # As many as declared, no more: the last says so, and no third exists.
    assert "retried 2 time(s)" in chain[-1]["status"]["failure"]["retry"]["message"]
    made = api.custom.list_namespaced_custom_object(
        "pdm-operator.io", "v1alpha1", api.ns, "postdeploymigrations"
    )["items"]
    assert sorted(m["metadata"]["name"] for m in made if "retry" in m["metadata"]["name"]) == (
        retries
    )
    events = api.wait_events("pdm-contended", "BackoffLimitExceeded")
    assert any("failure class LockContention" in e.message for e in events if e.type == "Warning")
    # The index before it was built once; the locked migration never applied, ci never reached.
    assert both(db, name) == ([*REGULAR, POST[0]], REGULAR)
