"""Dry runs, inside the cluster (spec.mode: DryRun) and from CI (`diff`, `wait`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

import gitlab_release
from tests.integration.conftest import Cluster
from tests.support import chart
from tests.support.operator import OperatorProcess, pythonpath_env
from tests.support.pdm import TOOLBOX_DIGEST, TOOLBOX_IMAGE, Api, migration, toolbox

pytestmark = pytest.mark.integration

PINNED = f"{TOOLBOX_IMAGE.rsplit(':', 1)[0]}@{TOOLBOX_DIGEST}"


def cli(cluster: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The console script, as CI runs it."""
    return subprocess.run(
        ["pdm-operator", *args],
        env=pythonpath_env(cluster.env()) | {"PATH": cluster.env()["PATH"] + ":" + bin_dir()},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def bin_dir() -> str:
    return str(Path(sys.executable).parent)


def manifest(body: dict[str, Any], namespace: str) -> str:
    return json.dumps({**body, "metadata": {**body["metadata"], "namespace": namespace}})


def test_dry_run_fills_the_diff_and_creates_nothing(api: Api, operator: OperatorProcess) -> None:
    api.deploy(toolbox())
    # A Run migration holds the environment: a dry run must not wait for it.
    api.create(
        migration("pdm-holder", job={"podAnnotations": {"sim.pdm-operator.io/outcome": "hang"}})
    )
    api.wait_condition("pdm-holder", "JobCreated")
    api.create(migration("pdm-dry", mode="DryRun"))

    api.wait_condition("pdm-dry", "Succeeded")
    status = api.get("pdm-dry")["status"]  # type: ignore[index]
    assert status["diff"]["changed"] is True
    assert "no previous successful run" in status["diff"]["summary"]
    assert f"image: {PINNED}" in status["diff"]["text"]
    assert "/scripts/db-migrate" in status["diff"]["text"]
    # No env var of that name; only the script that unsets it names it.
    assert "name: SKIP_POST_DEPLOYMENT_MIGRATIONS" not in status["diff"]["text"]
    # Only the holder's Job exists; the dry run made none.
    assert [j.metadata.name for j in api.jobs()] == [api.get("pdm-holder")["status"]["jobName"]]  # type: ignore[index]
    assert not [j for j in api.jobs() if j.metadata.name.startswith("pdm-dry")]


def test_dry_run_after_a_run_shows_no_change_then_only_the_image(
    cluster: Cluster, api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-run"))
    api.wait_condition("pdm-run", "Succeeded")

    api.create(migration("pdm-same", mode="DryRun"))
    api.wait_condition("pdm-same", "Succeeded")
    same = api.get("pdm-same")["status"]["diff"]  # type: ignore[index]
    assert same["changed"] is False, same
    assert same["base"] == f"{api.ns}/{api.get('pdm-run')['status']['jobName']}"  # type: ignore[index]

    api.create(
        migration(
            "pdm-newer", mode="DryRun", image={"reference": "registry.example.com/toolbox:v18.7.0"}
        )
    )
    api.wait_condition("pdm-newer", "Succeeded")
    newer = api.get("pdm-newer")["status"]["diff"]  # type: ignore[index]
    assert newer["changed"] is True
    assert newer["summary"].endswith(
        "metadata.name, spec.template.spec.containers[migrations].image"
    )
    changed = [
        line
        for line in newer["text"].splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        f"-  name: <migration>-{api.get('pdm-run')['status']['jobName'].rsplit('-', 1)[1]}",  # type: ignore[index]
        f"+  name: <migration>-{api.get('pdm-newer')['status']['jobName'].rsplit('-', 1)[1]}",  # type: ignore[index]
        f"-        image: {PINNED}",
        "+        image: registry.example.com/toolbox:v18.7.0",
    ]

    # The same checks from CI, without the operator: `diff` exit codes.
    unchanged = cli(cluster, "diff", "-f", "-", stdin=manifest(migration("ci-same"), api.ns))
    assert unchanged.returncode == 0, unchanged.stderr
    assert "no change" in unchanged.stderr
    newer_image = ["--image", "registry.example.com/toolbox:v18.7.0"]
    changed_ci = cli(
        cluster, "diff", "-f", "-", *newer_image, stdin=manifest(migration("ci-newer"), api.ns)
    )
    assert changed_ci.returncode == 1, changed_ci.stderr
    assert "+        image: registry.example.com/toolbox:v18.7.0" in changed_ci.stdout
    assert "\033[" not in changed_ci.stdout  # not a terminal: no colour
    coloured = cli(
        cluster,
        "diff",
        "-f",
        "-",
        "--color",
        "always",
        *newer_image,
        stdin=manifest(migration("ci-newer"), api.ns),
    )
    assert "\033[32m+        image: registry.example.com/toolbox:v18.7.0\033[0m" in coloured.stdout


def test_admission_rejection_fails_the_dry_run_with_the_servers_message(
    cluster: Cluster, api: Api, operator: OperatorProcess
) -> None:
    client.CoreV1Api(cluster.api).create_namespaced_resource_quota(
        api.ns,
        {"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}},
    )
    api.create(migration("pdm-refused", mode="DryRun", image={"reference": "r/toolbox:1"}))
    failed = api.wait_condition("pdm-refused", "Failed")
    assert failed["reason"] == "DryRunRejected"
    assert "exceeded quota: no-jobs" in failed["message"]

    out = cli(
        cluster,
        "diff",
        "-f",
        "-",
        stdin=manifest(migration("ci-refused", image={"reference": "r/t:1"}), api.ns),
    )
    assert out.returncode >= 2
    assert "exceeded quota: no-jobs" in out.stderr
    assert "Traceback" not in out.stderr


def test_kubectl_plugin_runs_diff(cluster: Cluster, api: Api) -> None:
    out = subprocess.run(
        [str(cluster.kubectl), "pdm", "diff", "-f", "-", "--image", "r/toolbox:1"],
        env=cluster.env() | {"PATH": bin_dir() + ":" + cluster.env()["PATH"]},
        input=manifest(migration("plugin"), api.ns),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1, out.stderr  # no previous run: all of it is new
    assert "no previous successful run" in out.stderr
    assert "+        image: r/toolbox:1" in out.stdout


def test_wait_exits_0_on_success_1_on_failure_2_on_timeout(
    cluster: Cluster, api: Api, operator: OperatorProcess
) -> None:
    api.create(migration("w-ok", image={"reference": "r/toolbox:v18.6.0"}))
    ok = cli(cluster, "wait", "w-ok", "-n", api.ns, "--timeout", "60")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "pdm/w-ok: Succeeded" in ok.stdout

    api.create(
        migration(
            "w-bad",
            image={"reference": "r/toolbox:v18.6.0"},
            job={
                "podAnnotations": {
                    "sim.pdm-operator.io/outcome": "fail",
                    "sim.pdm-operator.io/message": "boom",
                }
            },
        )
    )
    bad = cli(cluster, "wait", "w-bad", "-n", api.ns, "--timeout", "60")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Failed (BackoffLimitExceeded)" in bad.stdout
    assert "boom" in bad.stdout  # the log tail

    api.create(migration("w-held", suspend=True, image={"reference": "r/toolbox:v18.6.0"}))
    held = cli(cluster, "wait", "w-held", "-n", api.ns, "--timeout", "3")
    assert held.returncode == 2
    assert "Gated (Suspended)" in held.stdout
    assert "timed out after 3s" in held.stderr


def test_secret_values_never_reach_the_manifest_diff_or_events(
    cluster: Cluster, api: Api, operator: OperatorProcess
) -> None:
    secret_value = "glpat-SECRET-VALUE-must-not-leak-7f3a"
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        api.ns,
        {"metadata": {"name": "db"}, "stringData": {"password": secret_value}},
    )
    job = {
        "env": [
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
            }
        ],
        "envFrom": [{"secretRef": {"name": "db"}}],
    }
    api.create(migration("pdm-secret", mode="DryRun", image={"reference": "r/toolbox:1"}, job=job))
    api.wait_condition("pdm-secret", "Succeeded")
    pdm = api.get("pdm-secret")
    assert "secretKeyRef" in pdm["status"]["diff"]["text"]  # type: ignore[index]

    rendered = cli(
        cluster,
        "render",
        "-f",
        "-",
        stdin=manifest(migration("ci-s", job=job, image={"reference": "r/t:1"}), api.ns),
    )
    diffed = cli(
        cluster,
        "diff",
        "-f",
        "-",
        stdin=manifest(migration("ci-s", job=job, image={"reference": "r/t:1"}), api.ns),
    )
    assert rendered.returncode == 0
    assert diffed.returncode == 1
    done = api.wait_events("pdm-secret", pdm["status"]["reason"])  # the last to be posted
    events = " ".join(f"{e.reason} {e.message}" for e in done)
    for where, text in {
        "status": json.dumps(pdm),
        "render": rendered.stdout + rendered.stderr,
        "diff": diffed.stdout + diffed.stderr,
        "events": events,
        "operator log": operator.log(),
    }.items():
        assert secret_value not in text, f"the Secret's value leaked into the {where}"


def test_long_diff_is_cut_in_the_status_and_kept_whole_in_a_configmap(
    cluster: Cluster, api: Api, operator: OperatorProcess
) -> None:
    env = [{"name": f"SETTING_{i:03d}", "value": "x" * 120} for i in range(100)]
    api.create(
        migration("pdm-long", mode="DryRun", image={"reference": "r/toolbox:1"}, job={"env": env})
    )
    api.wait_condition("pdm-long", "Succeeded")
    diff = api.get("pdm-long")["status"]["diff"]  # type: ignore[index]
    assert diff["truncated"] is True
    assert len(diff["text"]) <= 8 * 1024
    assert diff["configMap"] == "pdm-long-diff"
    cm = client.CoreV1Api(cluster.api).read_namespaced_config_map("pdm-long-diff", api.ns)
    full = cm.data["diff"]
    assert full.startswith(diff["text"])
    assert "SETTING_099" in full
    assert "SETTING_099" not in diff["text"]
    assert cm.metadata.owner_references[0].name == "pdm-long"


def test_a_configmap_of_the_diffs_name_that_is_not_the_migrations_is_never_overwritten(
    api: Api, operator: OperatorProcess
) -> None:
    # A creator of migrations may not write ConfigMaps: naming a migration after
    # someone's ConfigMap must not make the operator overwrite it.
    api.core.create_namespaced_config_map(
        api.ns, {"metadata": {"name": "app-settings-diff"}, "data": {"keep": "me"}}
    )
    env = [{"name": f"SETTING_{i:03d}", "value": "x" * 120} for i in range(100)]
    api.create(
        migration(
            "app-settings", mode="DryRun", image={"reference": "r/toolbox:1"}, job={"env": env}
        )
    )
    api.wait_condition("app-settings", "Succeeded")
    diff = api.get("app-settings")["status"]["diff"]  # type: ignore[index]
    assert diff["truncated"] is True
    assert "configMap" not in diff
    assert api.core.read_namespaced_config_map("app-settings-diff", api.ns).data == {"keep": "me"}


def test_previous_run_whose_job_is_gone_is_rendered_again_for_the_diff(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.create(migration("pdm-old"))
    api.wait_condition("pdm-old", "Succeeded")
    old_job = api.get("pdm-old")["status"]["jobName"]  # type: ignore[index]
    api.batch.delete_namespaced_job(old_job, api.ns, propagation_policy="Background")
    api.create(migration("pdm-check", mode="DryRun"))
    api.wait_condition("pdm-check", "Succeeded")
    diff = api.get("pdm-check")["status"]["diff"]  # type: ignore[index]
    assert diff["changed"] is False, diff
    assert diff["base"] == f"{api.ns}/{old_job}"


def test_a_dry_run_and_diff_warn_before_the_deploy_of_a_rollout_that_would_wait_for_them(
    cluster: Cluster, api: Api, operator: OperatorProcess
) -> None:
    """The chart's webservice and Sidekiq without BYPASS_POST_DEPLOYMENT: their new
    pods would wait for the post-deployment migrations the PDM waits to run."""
    chart.install(api)  # the example release: its webservice and Sidekiq lack the bypass
    rails = list(gitlab_release.RAILS)
    body = migration(
        "pdm-warned", mode="DryRun", podTemplateFrom={"migrationsJob": {"release": "gitlab"}},
        preflight={"enabled": False}, waitFor={"rolledOut": [*rails, "gitlab-nowhere"]},
    )  # fmt: skip
    out = cli(
        cluster, "diff", "-f", "-", "--image", chart.TOOLBOX_IMAGE, stdin=manifest(body, api.ns)
    )
    assert out.returncode in (0, 1), out.stderr
    assert (
        "warning: BypassPostDeploymentMissing: Deployment 'gitlab-webservice-default': its "
        "'dependencies' init container has no BYPASS_POST_DEPLOYMENT"
    ) in out.stderr
    assert "gitlab.sidekiq.extraEnv.BYPASS_POST_DEPLOYMENT='true'" in out.stderr
    assert "Deployment 'gitlab-nowhere' (spec.waitFor.rolledOut) was not found" in out.stderr

    api.create(body)
    done = api.wait_condition("pdm-warned", "Succeeded", timeout=60)
    assert (
        "warning (BypassPostDeploymentMissing): Deployment 'gitlab-webservice-default'"
        in (done["message"])
    )
    warned = api.wait_events("pdm-warned", "BypassPostDeploymentMissing")
    assert {e.type for e in warned if e.reason == "BypassPostDeploymentMissing"} == {"Warning"}

    # Rendered with the bypass (the chart value set), nothing is said of them.
    for doc in gitlab_release.release(bypass=True):
        if doc["metadata"]["name"] in rails:
            api.apps.replace_namespaced_deployment(doc["metadata"]["name"], api.ns, doc)
    body["spec"]["waitFor"]["rolledOut"] = rails
    quiet = cli(
        cluster, "diff", "-f", "-", "--image", chart.TOOLBOX_IMAGE, stdin=manifest(body, api.ns)
    )
    assert "BypassPostDeploymentMissing" not in quiet.stderr, quiet.stderr
