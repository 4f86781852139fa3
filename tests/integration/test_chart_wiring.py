"""The migration Job is the chart's own, copied from what runs in the cluster:
from the migrations Job, from the toolbox Deployment, or inline; a stale
template waits, a Job the API server would refuse fails at once, and a missing
template says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cluster
from tests.support import chart
from tests.support.operator import OperatorProcess, pythonpath_env
from tests.support.pdm import Api, deployment, migration

pytestmark = pytest.mark.integration


def skip_in_env(job: dict[str, Any]) -> list[str]:
    """Containers whose env sets the skip variable (the script names it, to unset it)."""
    pod = job["spec"]["template"]["spec"]
    return [
        str(c["name"])
        for c in [*pod.get("initContainers", []), *pod["containers"]]
        if chart.SKIP in chart.env_names(c)
    ]


OLD_IMAGE = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.5.2"
FROM_JOB = {"migrationsJob": {"release": "gitlab"}}
FROM_TOOLBOX = {"toolboxDeployment": {"name": "gitlab-toolbox"}}


def chart_pdm(name: str, source: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """The ten-line PostDeployMigration of a chart install (examples/pdm.yaml)."""
    return migration(
        name,
        podTemplateFrom=source or FROM_JOB,
        waitFor={"rolledOut": ["gitlab-webservice-default", "gitlab-toolbox"]},
        **spec,
    )


def job_of(api: Api, name: str) -> dict[str, Any]:
    obj = api.get(name)
    assert obj is not None
    raw = api.batch.read_namespaced_job(obj["status"]["jobName"], api.ns, _preload_content=False)
    return dict(json.loads(raw.data))


def test_migration_from_the_charts_job_runs_the_charts_wiring_without_the_skip_variable(
    api: Api, operator: OperatorProcess
) -> None:
    chart.install(api)
    api.create(chart_pdm("pdm-chart"))
    api.wait_condition("pdm-chart", "Succeeded", timeout=90)

    status = api.get("pdm-chart")["status"]  # type: ignore[index]
    source = api.batch.read_namespaced_job(chart.CHART_JOB, api.ns)
    assert status["podTemplate"] == {
        "kind": "Job",
        "name": chart.CHART_JOB,
        "uid": source.metadata.uid,
        "image": chart.TOOLBOX_IMAGE,
    }
    resolved = api.condition("pdm-chart", "TemplateResolved")
    assert resolved is not None
    assert (resolved["status"], resolved["reason"]) == ("True", "FromJob")

    job = job_of(api, "pdm-chart")
    pod = job["spec"]["template"]["spec"]
    original = source.to_dict()["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["certificates", "configure"]
    assert [v["name"] for v in pod["volumes"]] == [v["name"] for v in original["volumes"]]
    (migrations,) = pod["containers"]
    assert "command" not in migrations
    assert migrations["args"][:2] == ["/bin/bash", "-c"]
    assert "/scripts/db-migrate" in migrations["args"][2]
    assert migrations["image"].startswith("registry.example.com/gitlab-org/build/cng/")
    # The source carries the variable in every container; the copy in none.
    for c in original["init_containers"] + original["containers"]:
        assert chart.SKIP in [e["name"] for e in c["env"]]
    assert not skip_in_env(job)
    assert f"unset {chart.SKIP}" in " ".join(migrations["args"])
    assert (
        job["spec"]["template"]["metadata"]["annotations"][
            "cluster-autoscaler.kubernetes.io/safe-to-evict"
        ]
        == "false"
    )
    assert "controller-uid" not in json.dumps(job["metadata"]["labels"])
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pdm-operator"


def test_migration_from_the_toolbox_deployment_runs_the_migration_script(
    api: Api, operator: OperatorProcess
) -> None:
    chart.install(api, with_job=False)
    api.create(chart_pdm("pdm-toolbox", FROM_TOOLBOX))
    api.wait_condition("pdm-toolbox", "Succeeded", timeout=90)
    status = api.get("pdm-toolbox")["status"]  # type: ignore[index]
    assert status["podTemplate"]["kind"] == "Deployment"
    assert status["podTemplate"]["name"] == "gitlab-toolbox"
    job = job_of(api, "pdm-toolbox")
    (migrations,) = job["spec"]["template"]["spec"]["containers"]
    assert migrations["name"] == "migrations"
    assert "sleep" not in json.dumps(migrations["args"])
    assert {"name": "BYPASS_SCHEMA_VERSION", "value": "true"} in migrations["env"]
    assert [i["name"] for i in job["spec"]["template"]["spec"]["initContainers"]] == [
        "certificates",
        "configure",
    ]


def test_inline_migration_keeps_the_entrypoint_and_carries_no_skip_variable(
    api: Api, operator: OperatorProcess
) -> None:
    chart.install(api, with_job=False)
    api.create(migration("pdm-inline"))
    api.wait_condition("pdm-inline", "Succeeded", timeout=90)
    job = job_of(api, "pdm-inline")
    (migrations,) = job["spec"]["template"]["spec"]["containers"]
    assert "command" not in migrations
    assert not skip_in_env(job)
    assert f"unset {chart.SKIP}" in " ".join(migrations["args"])
    assert api.condition("pdm-inline", "TemplateResolved") is None


def test_stale_template_waits_without_the_lock_then_runs_the_new_charts_job(
    api: Api, operator: OperatorProcess
) -> None:
    # The chart has not been applied for this version yet: its Job is v18.5.2.
    chart.install(api, job=chart.chart_job("gitlab-migrations-0ld0ld0", OLD_IMAGE))
    api.create(chart_pdm("pdm-stale"))
    gated = api.wait_condition("pdm-stale", "Gated")
    assert gated["reason"] == "TemplateStale"
    assert OLD_IMAGE in gated["message"]
    assert "gitlab-migrations-0ld0ld0" in gated["message"]
    assert api.get("pdm-stale")["status"]["reason"] == "TemplateStale"  # type: ignore[index]
    assert [j.metadata.name for j in api.jobs()] == ["gitlab-migrations-0ld0ld0"]
    api.wait_lock_free()  # waiting on the chart, it keeps no one else waiting

    # `helm upgrade` for the new version: the new Job replaces the old one.
    api.batch.delete_namespaced_job(
        "gitlab-migrations-0ld0ld0", api.ns, propagation_policy="Background"
    )
    api.batch.create_namespaced_job(api.ns, chart.chart_job("gitlab-migrations-7e57e57"))
    api.wait_condition("pdm-stale", "Succeeded", timeout=90)
    status = api.get("pdm-stale")["status"]  # type: ignore[index]
    assert status["podTemplate"]["name"] == "gitlab-migrations-7e57e57"


def test_a_job_the_api_server_would_refuse_fails_at_once_not_after_the_rollout(
    api: Api, operator: OperatorProcess
) -> None:
    chart.install(api)
    # A rollout that cannot finish: without the fail-fast check this would wait.
    api.deploy(
        deployment(
            "gitlab-sidekiq-catchall-v2",
            "sidekiq",
            chart.TOOLBOX_IMAGE,
            node_selector={"pool": "nowhere"},
        ),
        wait=False,
    )
    api.create(
        migration(
            "pdm-refused",
            podTemplateFrom=FROM_JOB,
            waitFor={"rolledOut": ["gitlab-sidekiq-catchall-v2"]},
            job={"volumes": [{"name": "Not_A_DNS_Label", "emptyDir": {}}]},
        )
    )
    failed = api.wait_condition("pdm-refused", "Failed", timeout=30)
    assert failed["reason"] == "JobInvalid"
    assert "server-side dry run" in failed["message"]
    assert "Not_A_DNS_Label" in failed["message"]
    assert [j.metadata.name for j in api.jobs()] == [chart.CHART_JOB]
    api.wait_lock_free()


def test_a_valid_gated_migration_is_checked_once_and_keeps_waiting(
    api: Api, operator: OperatorProcess
) -> None:
    chart.install(api)
    api.create(chart_pdm("pdm-approved-later", suspend=True))
    validated = api.wait_condition("pdm-approved-later", "JobValidated")
    assert validated["reason"] == "DryRunAccepted"
    assert api.condition("pdm-approved-later", "Gated")["reason"] == "Suspended"  # type: ignore[index]
    assert [j.metadata.name for j in api.jobs()] == [chart.CHART_JOB]
    api.patch("pdm-approved-later", {"spec": {"suspend": False}})
    api.wait_condition("pdm-approved-later", "Succeeded", timeout=90)


def test_a_missing_template_says_what_it_looks_for_then_runs_once_it_appears(
    api: Api, operator: OperatorProcess
) -> None:
    chart.install(api, with_job=False)
    api.create(chart_pdm("pdm-no-template"))
    missing = api.wait_condition("pdm-no-template", "TemplateResolved", status="False")
    assert missing["reason"] == "TemplateNotFound"
    assert "app=migrations,release=gitlab" in missing["message"]
    obj = api.wait_state("pdm-no-template", "Pending")
    assert obj["status"]["reason"] == "TemplateNotFound"
    api.wait_lock_free()
    assert "Traceback" not in operator.log()

    api.batch.create_namespaced_job(api.ns, chart.chart_job())
    api.wait_condition("pdm-no-template", "Succeeded", timeout=90)


def test_dry_run_and_cli_diff_show_the_copied_job(
    api: Api, operator: OperatorProcess, cluster: Cluster, tmp_path: Path
) -> None:
    chart.install(api)
    api.create(chart_pdm("pdm-preview", mode="DryRun"))
    done = api.wait_condition("pdm-preview", "Succeeded")
    assert done["reason"] == "DryRunSucceeded"
    status = api.get("pdm-preview")["status"]  # type: ignore[index]
    assert status["podTemplate"]["name"] == chart.CHART_JOB
    assert "initContainers" in status["diff"]["text"]
    assert "init-migrations-secrets" in status["diff"]["text"]
    # No env var of that name; only the script that unsets it names it.
    assert f"name: {chart.SKIP}" not in status["diff"]["text"]
    assert [j.metadata.name for j in api.jobs()] == [chart.CHART_JOB]

    manifest = tmp_path / "pdm.yaml"
    manifest.write_text(json.dumps(chart_pdm("pdm-ci")))
    out = subprocess.run(
        [sys.executable, "-m", "pdm_operator.cli", "diff", "-f", str(manifest), "-n", api.ns],
        env=pythonpath_env(cluster.env()),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1, out.stderr  # changes: there is no earlier run
    assert f"pod template: Job {chart.CHART_JOB}" in out.stderr
    assert "init-migrations-secrets" in out.stdout
    assert f"name: {chart.SKIP}" not in out.stdout
    assert [j.metadata.name for j in api.jobs()] == [chart.CHART_JOB]
