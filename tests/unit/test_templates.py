"""A PDM Job copied from what GitLab's chart runs: every wire kept, no skip variable,
nothing of the source's identity.

The sources are the chart-shaped objects of ``examples/gitlab-chart-release.yaml``
(written from chart 9.9.1's ``charts/gitlab/charts/migrations/templates/
_jobspec.yaml`` and ``charts/gitlab/charts/toolbox/templates/deployment.yaml``),
turned into what the API server returns for them.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdm_operator import model, render, templates
from pdm_operator.model import Body
from tests.support.chart import release_object

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
IMAGE = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.6.0"
PINNED = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee@sha256:" + "5f" * 32
OLD_IMAGE = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.5.2"
SKIP = "SKIP_POST_DEPLOYMENT_MIGRATIONS"


def as_stored(obj: Body, uid: str, created: str = "2026-12-01T10:00:00Z") -> Body:
    """``obj`` as the API server returns it: identity, defaults the controllers add, status."""
    out = copy.deepcopy(obj)
    out["metadata"].update(
        {
            "namespace": "gitlab",
            "uid": uid,
            "resourceVersion": "4711",
            "creationTimestamp": created,
            "generation": 1,
            "managedFields": [{"manager": "helm", "operation": "Update"}],
        }
    )
    pod = out["spec"]["template"]
    if out["kind"] == "Job":
        controller = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
        names = {"batch.kubernetes.io/job-name": obj["metadata"]["name"]}
        names["job-name"] = obj["metadata"]["name"]
        out["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        pod["metadata"]["labels"].update({**controller, **names})
        out["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    else:
        pod["metadata"]["labels"]["pod-template-hash"] = "5d8f7c9b6"
        out["status"] = {"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
    pod["spec"].update(
        {"dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler", "nodeName": "node-7"}
    )
    return out


CHART_JOB = as_stored(release_object("Job", "gitlab-migrations-3b1f2c7"), "9f0c0b1e-job")
TOOLBOX = as_stored(release_object("Deployment", "gitlab-toolbox"), "5a6b7c8d-toolbox")


def pdm(source: Body, job: Body | None = None, **spec: Any) -> Body:
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {
            "name": "gstg-2026-12-01-1200",
            "namespace": "gitlab",
            "uid": "0b6c1e52-3f0a-4d8e-9a57-6f2d1c0e4b11",
            "generation": 1,
        },
        "spec": {
            "environment": "gstg",
            "mode": "Run",
            "pipeline": "Regular",
            "suspend": False,
            "image": {"fromDeployment": {"name": "gitlab-toolbox", "container": "toolbox"}},
            "podTemplateFrom": source,
            "job": {"activeDeadlineSeconds": 3600, "backoffLimit": 0, **(job or {})},
            **spec,
        },
    }


FROM_JOB = {"migrationsJob": {"release": "gitlab", "container": "migrations"}}
FROM_TOOLBOX = {"toolboxDeployment": {"name": "gitlab-toolbox", "container": "toolbox"}}


def job_template() -> templates.Template:
    found = templates.from_job(CHART_JOB)
    assert isinstance(found, templates.Template), found
    return found


def toolbox_template() -> templates.Template:
    found = templates.from_deployment(TOOLBOX)
    assert isinstance(found, templates.Template), found
    return found


def from_chart_job(job: Body | None = None) -> Body:
    return render.render_job(pdm(FROM_JOB, job), PINNED, job_template())


def from_toolbox(job: Body | None = None) -> Body:
    return render.render_job(pdm(FROM_TOOLBOX, job), PINNED, toolbox_template())


def pod(job: Body) -> Body:
    spec: Body = job["spec"]["template"]["spec"]
    return spec


def named(items: list[Body], name: str) -> Body:
    found = [i for i in items if i.get("name") == name]
    assert len(found) == 1, (name, [i.get("name") for i in items])
    return found[0]


def migrations(job: Body) -> Body:
    return named(pod(job)["containers"], model.MIGRATION_CONTAINER)


def env_names(container: Body) -> list[str]:
    return [e["name"] for e in container.get("env") or []]


# --- the skip variable ---------------------------------------------------------------


def test_the_charts_regular_deploy_job_carries_the_skip_variable_in_every_container() -> None:
    # The premise of everything below: the source really has it.
    spec = CHART_JOB["spec"]["template"]["spec"]
    for c in spec["initContainers"] + spec["containers"]:
        assert SKIP in env_names(c), c["name"]


@pytest.mark.parametrize(
    "entry",
    [
        {"name": SKIP, "value": "true"},
        {"name": SKIP, "value": "false"},
        {"name": SKIP, "value": "0"},
        {"name": SKIP, "value": ""},
        {"name": SKIP},
        {"name": SKIP, "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "skip"}}},
        {"name": SKIP, "valueFrom": {"secretKeyRef": {"name": "flags", "key": "skip"}}},
    ],
    ids=["true", "false", "zero", "empty", "no-value", "configmap-ref", "secret-ref"],
)
@pytest.mark.parametrize("source", ["chart-job", "toolbox", "inline"])
def test_the_skip_variable_never_reaches_the_job_in_any_form(entry: Body, source: str) -> None:
    """Rails skips db/post_migrate when the variable is *present* (any value)."""
    if source == "chart-job":
        job = copy.deepcopy(CHART_JOB)
        for c in job["spec"]["template"]["spec"]["containers"]:
            c["env"] = [entry, *c.get("env", []), entry]
        found = templates.from_job(job)
        assert isinstance(found, templates.Template)
        rendered = render.render_job(pdm(FROM_JOB, {"env": [entry]}, mode="DryRun"), IMAGE, found)
    elif source == "toolbox":
        deployment = copy.deepcopy(TOOLBOX)
        for c in deployment["spec"]["template"]["spec"]["initContainers"]:
            c["env"] = [entry]
        found = templates.from_deployment(deployment)
        assert isinstance(found, templates.Template)
        rendered = render.render_job(pdm(FROM_TOOLBOX, {"env": [entry]}), IMAGE, found)
    else:
        inline = pdm(FROM_JOB, {"env": [entry]}, mode="DryRun")
        del inline["spec"]["podTemplateFrom"]
        rendered = render.render_job(inline, IMAGE)
    # Named only where the migration container's shell unsets it, first.
    c = migrations(rendered)
    assert c["args"][2].startswith(templates.UNSET_SKIP)
    without_script = copy.deepcopy(rendered)
    del migrations(without_script)["args"]
    assert SKIP not in yaml.safe_dump(without_script)


UNSET_THEN_EXEC = ["/bin/bash", "-c", templates.UNSET_SKIP + '; exec "$@"', "--"]


@pytest.mark.parametrize(
    ("command", "args", "script_at"),
    [
        (None, ["/bin/bash", "-c", "set -e; /scripts/db-migrate"], ("args", 2)),
        (None, ["bash", "-c", "/scripts/db-migrate", "arg0"], ("args", 2)),
        (None, ["/bin/sh", "-c", "/scripts/db-migrate"], ("args", 2)),
        (None, ["sh", "-c", "/scripts/db-migrate"], ("args", 2)),
        (["/bin/sh", "-c"], ["/scripts/db-migrate"], ("args", 0)),
        (["/bin/bash", "-c", "/scripts/db-migrate"], None, ("command", 2)),
    ],
    ids=["bash-path", "bash", "sh-path", "sh", "command-sh-c", "command-bash-c-script"],
)
def test_a_shell_script_gets_the_unset_as_its_first_line_wherever_the_script_is(
    command: list[str] | None, args: list[str] | None, script_at: tuple[str, int]
) -> None:
    new_command, new_args = templates.unset_skip(command, args)
    where, index = script_at
    before = {"command": command or [], "args": args or []}
    after = {"command": new_command, "args": new_args}
    assert after[where][index] == templates.UNSET_SKIP + "\n" + before[where][index]
    # Nothing else moves: the shell, its -c, $0 and the rest stay where they were.
    for key in ("command", "args"):
        assert [x for i, x in enumerate(after[key]) if (key, i) != script_at] == [
            x for i, x in enumerate(before[key]) if (key, i) != script_at
        ]


def test_any_other_command_line_runs_under_bash_that_unsets_and_then_execs_it() -> None:
    # args alone: no command is added, so the image ENTRYPOINT still runs first.
    assert templates.unset_skip(None, ["gitlab-rake", "db:migrate:status"]) == (
        [],
        [*UNSET_THEN_EXEC, "gitlab-rake", "db:migrate:status"],
    )
    # A command (which already replaced the ENTRYPOINT) is wrapped where it is.
    assert templates.unset_skip(["/scripts/db-migrate"], ["--verbose"]) == (
        [*UNSET_THEN_EXEC, "/scripts/db-migrate"],
        ["--verbose"],
    )
    # "-ec" is not the plain "-c" form: wrapped, not edited.
    assert templates.unset_skip(None, ["bash", "-ec", "x"]) == (
        [],
        [*UNSET_THEN_EXEC, "bash", "-ec", "x"],
    )


def test_unsetting_twice_changes_nothing() -> None:
    for command, args in [
        (None, list(templates.CHART_MIGRATION_ARGS)),
        (None, ["gitlab-rake", "db:migrate:status"]),
        (["/scripts/db-migrate"], ["--verbose"]),
        (["/bin/sh", "-c"], ["x"]),
    ]:
        once = templates.unset_skip(command, args)
        assert templates.unset_skip(*once) == once


def run_container(container: Body, env: dict[str, str]) -> tuple[str, str]:
    """Run the container's command line here, as the ENTRYPOINT would exec it."""
    import subprocess  # noqa: PLC0415

    argv = [*(container.get("command") or []), *container["args"]]
    done = subprocess.run(
        argv, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True
    )
    return done.stdout, done.stderr


PROBE = 'echo "skip=${SKIP_POST_DEPLOYMENT_MIGRATIONS-unset}"'


@pytest.mark.parametrize(
    "job",
    [
        {"args": ["/bin/bash", "-c", "set -e;\n" + PROBE]},
        {"args": ["/bin/sh", "-c", PROBE]},
        {"command": ["/bin/sh", "-c"], "args": [PROBE]},
        {"args": ["/bin/sh", "-c", PROBE.replace("echo", "exec echo")]},
        {"args": ["/usr/bin/env"]},
    ],
    ids=["bash-script", "sh-script", "command-sh", "exec", "plain-args"],
)
@pytest.mark.parametrize("value", ["true", "false", ""])
def test_the_variable_from_envfrom_or_the_image_is_unset_before_anything_runs(
    job: Body, value: str
) -> None:
    """The env is scrubbed; envFrom (the chart's extraEnvFrom) or the image's ENV
    still put it in the process environment, where the script must drop it."""
    inline = pdm(FROM_JOB, {**job, "envFrom": [{"configMapRef": {"name": "gitlab-extra-env"}}]})
    del inline["spec"]["podTemplateFrom"]
    c = migrations(render.render_job(inline, IMAGE))
    out, err = run_container(c, {SKIP: value})
    assert SKIP not in out
    assert "skip=unset" in out or "skip=" not in out
    assert err.splitlines() == [templates.SKIP_MARKER]  # said once, its value never
    # Absent, nothing is said.
    assert run_container(c, {})[1] == ""


def test_the_sources_that_can_bring_the_variable_back_are_named() -> None:
    container = {
        "envFrom": [
            {"configMapRef": {"name": "gitlab-extra-env"}},
            {"secretRef": {"name": "gitlab-secrets"}, "prefix": "SKIP_"},
            {"configMapRef": {"name": "prefixed"}, "prefix": "GITLAB_"},  # cannot make the name
        ]
    }
    assert templates.skip_sources(container) == [
        "ConfigMap gitlab-extra-env (envFrom)",
        "Secret gitlab-secrets (envFrom)",
        "the image's ENV (or what its ENTRYPOINT exports)",
    ]
    assert templates.skip_sources({}) == ["the image's ENV (or what its ENTRYPOINT exports)"]


# --- everything else of the wiring survives ---------------------------------------------


def test_every_init_container_volume_mount_and_env_var_of_the_chart_job_survives() -> None:
    source = CHART_JOB["spec"]["template"]["spec"]
    job = from_chart_job()
    copied = pod(job)
    assert [c["name"] for c in copied["initContainers"]] == ["certificates", "configure"]
    for original in source["initContainers"]:
        mine = named(copied["initContainers"], original["name"])
        assert mine == {**original, "env": [e for e in original["env"] if e["name"] != SKIP]} or (
            mine == {k: v for k, v in original.items() if k != "env"}
        )
    assert copied["volumes"] == source["volumes"]
    original = named(source["containers"], "migrations")
    mine = migrations(job)
    assert mine["volumeMounts"] == original["volumeMounts"]
    assert mine["args"] == templates.unset_skip(None, original["args"])[1]
    assert "command" not in mine
    assert mine["env"] == [e for e in original["env"] if e["name"] != SKIP]
    assert mine["resources"] == original["resources"]
    assert mine["securityContext"] == original["securityContext"]
    assert mine["image"] == PINNED
    assert copied["securityContext"] == source["securityContext"]
    assert copied["automountServiceAccountToken"] is False
    assert copied["dnsPolicy"] == "ClusterFirst"


def test_nothing_of_the_sources_identity_reaches_the_job() -> None:
    for job in (from_chart_job(), from_toolbox()):
        text = yaml.safe_dump(job)
        for leaked in (
            "9f0c0b1e-job",
            "5a6b7c8d-toolbox",
            "gitlab-migrations-3b1f2c7",
            "controller-uid",
            "job-name",
            "pod-template-hash",
            "heritage",
            "chart:",
            "checksum/",
            "node-7",
            "nodeName",
            "4711",
            "helm",
        ):
            assert leaked not in text, leaked
        assert "selector" not in job["spec"]
        assert "status" not in job
        labels = job["spec"]["template"]["metadata"]["labels"]
        # What the pod *is* stays: NetworkPolicies select on it.
        assert labels["release"] == "gitlab"
        assert labels["app.kubernetes.io/managed-by"] == "pdm-operator"


def test_the_job_follows_the_pdm_for_restarts_retries_and_deadline_not_the_chart() -> None:
    job = from_chart_job()
    assert pod(job)["restartPolicy"] == "Never"  # the chart's Job: OnFailure
    assert job["spec"]["backoffLimit"] == 0  # the chart's Job: 6
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    chosen = from_chart_job({"restartPolicy": "OnFailure", "backoffLimit": 3})
    assert pod(chosen)["restartPolicy"] == "OnFailure"
    assert chosen["spec"]["backoffLimit"] == 3


def test_the_migration_pod_is_never_safe_to_evict() -> None:
    # The toolbox pods are annotated "true" by the chart; a migration must not be.
    assert TOOLBOX["spec"]["template"]["metadata"]["annotations"][render.SAFE_TO_EVICT] == "true"
    for job in (from_chart_job(), from_toolbox()):
        annotations = job["spec"]["template"]["metadata"]["annotations"]
        assert annotations[render.SAFE_TO_EVICT] == "false"


def test_spec_job_overrides_the_copied_fields() -> None:
    job = from_chart_job(
        {
            "env": [
                {"name": "BYPASS_SCHEMA_VERSION", "value": "false"},
                {"name": "GITLAB_LOG_LEVEL", "value": "debug"},
            ],
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
            "serviceAccountName": "gitlab-migrations",
            "nodeSelector": {"workload": "support"},
            "volumes": [{"name": "migrations-config", "configMap": {"name": "other"}}],
            "podLabels": {"team": "database"},
        }
    )
    c = migrations(job)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BYPASS_SCHEMA_VERSION"] == "false"
    assert env["GITLAB_LOG_LEVEL"] == "debug"
    assert env_names(c).index("BYPASS_SCHEMA_VERSION") == 2  # replaced in place
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert pod(job)["serviceAccountName"] == "gitlab-migrations"
    assert pod(job)["nodeSelector"] == {"workload": "support"}
    assert named(pod(job)["volumes"], "migrations-config") == {
        "name": "migrations-config",
        "configMap": {"name": "other"},
    }
    assert len(pod(job)["volumes"]) == len(CHART_JOB["spec"]["template"]["spec"]["volumes"])
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "database"


def test_command_is_set_only_when_the_pdm_says_so() -> None:
    assert "command" not in migrations(from_chart_job())
    assert "command" not in migrations(from_toolbox())
    chosen = from_chart_job({"command": ["/scripts/db-migrate"], "args": ["--verbose"]})
    unset_then_exec = ["/bin/bash", "-c", templates.UNSET_SKIP + '; exec "$@"', "--"]
    assert migrations(chosen)["command"] == [*unset_then_exec, "/scripts/db-migrate"]
    assert migrations(chosen)["args"] == ["--verbose"]


# --- the toolbox Deployment as the source -------------------------------------------------


def test_toolbox_deployment_becomes_the_charts_migration_job() -> None:
    job = from_toolbox()
    c = migrations(job)
    script = "\n".join([templates.UNSET_SKIP, templates.CHART_MIGRATION_ARGS[2]])
    assert c["args"] == ["/bin/bash", "-c", script]
    assert {"name": "BYPASS_SCHEMA_VERSION", "value": "true"} in c["env"]
    assert {"name": "CONFIG_DIRECTORY", "value": "/srv/gitlab/config"} in c["env"]
    assert c["image"] == PINNED
    assert [i["name"] for i in pod(job)["initContainers"]] == ["certificates", "configure"]
    source = TOOLBOX["spec"]["template"]["spec"]
    assert [v["name"] for v in pod(job)["volumes"]] == [v["name"] for v in source["volumes"]]
    assert c["volumeMounts"] == named(source["containers"], "toolbox")["volumeMounts"]


def test_toolbox_pvc_becomes_an_empty_dir_and_probes_are_dropped() -> None:
    deployment = copy.deepcopy(TOOLBOX)
    spec = deployment["spec"]["template"]["spec"]
    tmp = named(spec["volumes"], "toolbox-tmp")
    del tmp["emptyDir"]
    tmp["persistentVolumeClaim"] = {"claimName": "gitlab-toolbox-tmp"}  # persistence.enabled
    named(spec["containers"], "toolbox")["livenessProbe"] = {"exec": {"command": ["true"]}}
    found = templates.from_deployment(deployment)
    assert isinstance(found, templates.Template)
    job = render.render_job(pdm(FROM_TOOLBOX), IMAGE, found)
    assert named(pod(job)["volumes"], "toolbox-tmp") == {"name": "toolbox-tmp", "emptyDir": {}}
    assert "livenessProbe" not in migrations(job)
    assert "persistentVolumeClaim" not in yaml.safe_dump(job)


# --- choosing the source ---------------------------------------------------------------------


def test_the_newest_of_the_charts_jobs_is_the_template() -> None:
    older = as_stored(CHART_JOB, "old", created="2026-11-01T10:00:00Z")
    older["metadata"]["name"] = "gitlab-migrations-0aa0aa0"
    newest = templates.newest_job([older, CHART_JOB], "app=migrations,release=gitlab")
    assert newest is CHART_JOB


def test_two_equally_new_jobs_are_ambiguous_and_named() -> None:
    twin = copy.deepcopy(CHART_JOB)
    twin["metadata"]["name"] = "gitlab-migrations-ffff000"
    found = templates.newest_job([CHART_JOB, twin], "app=migrations,release=gitlab")
    assert isinstance(found, templates.Missing)
    assert found.reason == "TemplateAmbiguous"
    assert "gitlab-migrations-3b1f2c7" in found.message
    assert "gitlab-migrations-ffff000" in found.message


def test_no_matching_job_says_what_was_looked_for() -> None:
    found = templates.newest_job([], "app=migrations,release=gitlab")
    assert isinstance(found, templates.Missing)
    assert found.reason == "TemplateNotFound"
    assert "app=migrations,release=gitlab" in found.message
    assert "toolboxDeployment" in found.message


def test_the_operators_own_jobs_and_deleted_jobs_are_never_a_template() -> None:
    ours = copy.deepcopy(CHART_JOB)
    ours["metadata"]["labels"][model.LABEL_MANAGED_BY] = "pdm-operator"
    going = copy.deepcopy(CHART_JOB)
    going["metadata"]["deletionTimestamp"] = "2026-12-01T11:00:00Z"
    found = templates.newest_job([ours, going], "app=migrations,release=gitlab")
    assert isinstance(found, templates.Missing)
    assert found.reason == "TemplateNotFound"


def bbm_check(created: str) -> Body:
    """The chart's batched-background-migrations wait Job: ``app: migrations`` too."""
    job = as_stored(CHART_JOB, "bbm", created=created)
    job["metadata"]["name"] = "gitlab-bbm-check-1a2b3c4"
    job["metadata"]["labels"][templates.BBM_CHECK_LABEL] = "true"
    return job


def test_the_bbm_check_job_is_never_the_template_even_when_newer() -> None:
    found = templates.newest_job(
        [CHART_JOB, bbm_check("2030-01-01T00:00:00Z")], "app=migrations,release=gitlab"
    )
    assert found is CHART_JOB


def test_a_release_with_only_the_bbm_check_job_says_so_and_how_to_do_without() -> None:
    found = templates.newest_job(
        [bbm_check("2026-12-01T10:00:00Z")], "app=migrations,release=gitlab"
    )
    assert isinstance(found, templates.Missing)
    assert found.reason == "TemplateNotFound"
    assert "gitlab-bbm-check-1a2b3c4" in found.message
    assert "never a template" in found.message
    assert "podTemplateFrom.toolboxDeployment" in found.message


def test_a_missing_migration_container_is_named_with_the_ones_there_are() -> None:
    found = templates.from_job(CHART_JOB, "toolbox")
    assert isinstance(found, templates.Missing)
    assert found.reason == "ContainerNotFound"
    assert "['migrations']" in found.message


def test_default_selector_is_the_charts_labels() -> None:
    assert templates.job_selector({"release": "gitlab"}) == "app=migrations,release=gitlab"
    assert templates.job_selector({"release": "x", "selector": "a=b"}) == "a=b"


def test_status_records_the_source_kind_name_uid_and_image() -> None:
    assert job_template().status() == {
        "kind": "Job",
        "name": "gitlab-migrations-3b1f2c7",
        "uid": "9f0c0b1e-job",
        "image": IMAGE,
    }


# --- the stale template ------------------------------------------------------------------------


def test_a_template_of_the_deployed_version_is_not_stale() -> None:
    assert templates.stale(job_template(), IMAGE, PINNED) is None
    # Short names are compared in the form runtimes report.
    short = templates.Template("Job", "j", "u", "migrations", "toolbox:v1", {}, {})
    assert templates.stale(short, "docker.io/library/toolbox:v1", "toolbox:v1") is None


def test_a_template_of_an_earlier_version_is_stale_and_says_which() -> None:
    old = copy.deepcopy(CHART_JOB)
    named(old["spec"]["template"]["spec"]["containers"], "migrations")["image"] = OLD_IMAGE
    found = templates.from_job(old)
    assert isinstance(found, templates.Template)
    why = templates.stale(found, IMAGE, PINNED)
    assert why is not None
    assert OLD_IMAGE in why
    assert IMAGE in why
    assert "gitlab-migrations-3b1f2c7" in why


# --- determinism -----------------------------------------------------------------------------


def test_the_same_sources_give_the_same_bytes() -> None:
    assert yaml.safe_dump(from_chart_job()) == yaml.safe_dump(from_chart_job())
    assert yaml.safe_dump(from_toolbox()) == yaml.safe_dump(from_toolbox())


def test_the_job_name_hash_covers_the_copied_pod() -> None:
    changed = copy.deepcopy(CHART_JOB)
    named(changed["spec"]["template"]["spec"]["initContainers"], "configure")["image"] = "x:1"
    found = templates.from_job(changed)
    assert isinstance(found, templates.Template)
    other = render.render_job(pdm(FROM_JOB), PINNED, found)
    assert other["metadata"]["name"] != from_chart_job()["metadata"]["name"]


def test_rendering_from_a_template_does_not_change_the_template() -> None:
    template = job_template()
    before = copy.deepcopy(template.spec)
    job = render.render_job(pdm(FROM_JOB), PINNED, template)
    pod(job)["initContainers"][0]["image"] = "changed"
    migrations(job)["env"].clear()
    assert template.spec == before


GOLDEN_CASES = {"chart-job": from_chart_job, "toolbox-deployment": from_toolbox}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_the_copied_job_matches_its_golden_file_byte_for_byte(case: str) -> None:
    actual = yaml.safe_dump(GOLDEN_CASES[case](), sort_keys=True)
    path = GOLDEN / f"template-{case}.yaml"
    if os.environ.get("PDM_UPDATE_GOLDEN") == "1":
        path.write_text(actual)
    expected = path.read_text()
    assert actual == expected, "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True), str(path)
        )
    )
