"""The migration Job rendered from a PostDeployMigration: pure, deterministic, restricted."""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdm_operator import model, render, templates
from pdm_operator.model import Body

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("PDM_UPDATE_GOLDEN") == "1"

NAME = "gstg-2026-11-22-1200"
NAMESPACE = "gitlab"
UID = "0b6c1e52-3f0a-4d8e-9a57-6f2d1c0e4b11"
IMAGE = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee:v17.5.0"
OTHER_IMAGE = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee:v17.5.1"
PINNED_IMAGE = "registry.example.com:5000/gitlab/toolbox@sha256:" + "ab" * 32


def migration(
    job: Body | None = None,
    *,
    name: str = NAME,
    uid: str | None = UID,
    environment: str = "gstg",
) -> Body:
    """A PostDeployMigration as the API server stores it (CRD defaults applied)."""
    meta: Body = {"name": name, "namespace": NAMESPACE, "generation": 1}
    if uid is not None:
        meta["uid"] = uid
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": meta,
        "spec": {
            "environment": environment,
            "mode": "Run",
            "pipeline": "Regular",
            "suspend": False,
            "image": {"fromDeployment": {"name": "gitlab-toolbox", "container": "toolbox"}},
            "job": {"activeDeadlineSeconds": 3600, "backoffLimit": 0, **(job or {})},
        },
    }


def everything() -> Body:
    """A ``spec.job`` that sets every field the CRD allows."""
    return {
        "command": ["/bin/sh", "-c"],
        "args": ["/scripts/db-migrate --verbose"],
        "env": [
            {"name": "GITLAB_LOG_LEVEL", "value": "debug"},
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "gitlab-postgres", "key": "password"}},
            },
        ],
        "envFrom": [{"configMapRef": {"name": "gitlab-toolbox-env"}}],
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"memory": "4Gi"},
        },
        "serviceAccountName": "gitlab-migrations",
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "volumes": [
            {"name": "config", "configMap": {"name": "gitlab-toolbox"}},
            {"name": "secrets", "secret": {"secretName": "gitlab-rails-secrets"}},
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": "/srv/gitlab/config", "readOnly": True},
            {"name": "secrets", "mountPath": "/etc/gitlab"},
        ],
        "nodeSelector": {"workload": "support"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "support", "effect": "NoSchedule"}
        ],
        "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
        "podLabels": {"team": "database", "tier": "migrations"},
        "priorityClassName": "gitlab-critical",
        "activeDeadlineSeconds": 7200,
        "backoffLimit": 2,
        "ttlSecondsAfterFinished": 86400,
    }


def pod_spec(job: Body) -> Body:
    spec: Body = job["spec"]["template"]["spec"]
    return spec


def container(job: Body) -> Body:
    containers = pod_spec(job)["containers"]
    assert len(containers) == 1
    only: Body = containers[0]
    return only


def differences(a: Any, b: Any, path: str = "") -> set[str]:
    """The paths (``a.b[0].c``) at which two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in a.keys() | b.keys():
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.add(sub)
            else:
                out |= differences(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = set()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out |= differences(x, y, f"{path}[{i}]")
        return out
    return set() if a == b else {path}


# --- determinism and the Job name ---------------------------------------------------


def test_same_inputs_render_identical_jobs_and_job_names() -> None:
    first = render.render_job(migration(everything()), IMAGE)
    second = render.render_job(migration(everything()), IMAGE)
    assert first == second
    assert first["metadata"]["name"] == second["metadata"]["name"]
    assert yaml.safe_dump(first, sort_keys=True) == yaml.safe_dump(second, sort_keys=True)


def test_job_name_does_not_depend_on_key_order_in_the_spec() -> None:
    forward = migration(everything())
    backward = copy.deepcopy(forward)
    backward["spec"]["job"] = dict(reversed(list(forward["spec"]["job"].items())))
    backward["spec"]["job"]["resources"] = dict(
        reversed(list(forward["spec"]["job"]["resources"].items()))
    )
    assert list(backward["spec"]["job"]) != list(forward["spec"]["job"])
    assert (
        render.render_job(forward, IMAGE)["metadata"]["name"]
        == render.render_job(backward, IMAGE)["metadata"]["name"]
    )


def test_job_name_is_migration_name_and_eight_hex_of_the_inputs_hash() -> None:
    job = render.render_job(migration(), IMAGE)
    name = job["metadata"]["name"]
    digest = job["metadata"]["annotations"][model.ANNOTATION_INPUTS_HASH]
    assert re.fullmatch(rf"{re.escape(NAME)}-[0-9a-f]{{8}}", name), name
    assert re.fullmatch(r"[0-9a-f]{64}", digest), digest
    assert name == f"{NAME}-{digest[:8]}"
    spec = copy.deepcopy(job["spec"])
    del spec["template"]["metadata"]["labels"][model.LABEL_MIGRATION]
    assert digest == render.inputs_hash(spec)


def test_same_inputs_under_another_migration_name_hash_the_same() -> None:
    a = render.render_job(migration(name="gstg-a"), IMAGE)
    b = render.render_job(migration(name="gstg-b"), IMAGE)
    assert a["metadata"]["annotations"] == b["metadata"]["annotations"]
    assert a["metadata"]["name"].removeprefix("gstg-a") == b["metadata"]["name"].removeprefix(
        "gstg-b"
    )


def test_longest_migration_name_allowed_by_the_crd_gives_a_63_character_job_name() -> None:
    longest = "m" * 54  # the CRD's x-kubernetes-validations cap
    name = render.render_job(migration(name=longest), IMAGE)["metadata"]["name"]
    assert len(name) == 63
    assert name.startswith(longest + "-")


def test_job_name_longer_than_63_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 63"):
        render.job_name("m" * 55, "0" * 64)


def test_changed_image_changes_only_the_image_and_the_name_hash() -> None:
    before = render.render_job(migration(everything()), IMAGE)
    after = render.render_job(migration(everything()), OTHER_IMAGE)
    assert differences(before, after) == {
        "metadata.name",
        f"metadata.annotations.{model.ANNOTATION_INPUTS_HASH}",
        "spec.template.spec.containers[0].image",
    }
    assert container(after)["image"] == OTHER_IMAGE
    assert before["metadata"]["name"] != after["metadata"]["name"]
    assert after["metadata"]["name"].startswith(NAME + "-")


def test_changed_job_spec_changes_the_job_name() -> None:
    plain = render.render_job(migration({"args": ["--one"]}), IMAGE)
    changed = render.render_job(migration({"args": ["--two"]}), IMAGE)
    assert plain["metadata"]["name"] != changed["metadata"]["name"]


def test_image_is_rendered_exactly_as_resolved_including_a_digest() -> None:
    job = render.render_job(migration(), PINNED_IMAGE)
    assert container(job)["image"] == PINNED_IMAGE
    assert container(job)["name"] == model.MIGRATION_CONTAINER


# --- the migration container ---------------------------------------------------------


def test_inline_job_runs_the_charts_script_in_args_and_keeps_the_image_entrypoint() -> None:
    c = container(render.render_job(migration(), IMAGE))
    # A command would replace the ENTRYPOINT that renders GitLab's configuration.
    assert "command" not in c
    assert c["args"] == [
        "/bin/bash",
        "-c",
        templates.UNSET_SKIP + "\nset -e;\n/scripts/wait-for-deps;\n/scripts/db-migrate;\n",
    ]


def test_the_script_unsets_the_skip_variable_before_anything_else_it_runs() -> None:
    script = container(render.render_job(migration(), IMAGE))["args"][2]
    first, _, rest = script.partition("\n")
    assert first == (
        'if [ -n "${SKIP_POST_DEPLOYMENT_MIGRATIONS+set}" ]; then echo '
        "'pdm-operator: SKIP_POST_DEPLOYMENT_MIGRATIONS was set in the pod and is unset "
        "before the migrations' >&2; fi; unset SKIP_POST_DEPLOYMENT_MIGRATIONS"
    )
    assert rest == "set -e;\n/scripts/wait-for-deps;\n/scripts/db-migrate;\n"


def test_user_args_that_are_not_a_shell_script_run_after_the_unset_without_a_command() -> None:
    c = container(render.render_job(migration({"args": ["/scripts/db-migrate"]}), IMAGE))
    assert "command" not in c  # the ENTRYPOINT still runs, and execs these
    assert c["args"] == [
        "/bin/bash",
        "-c",
        templates.UNSET_SKIP + '; exec "$@"',
        "--",
        "/scripts/db-migrate",
    ]


def test_user_command_and_args_replace_the_default_command() -> None:
    c = container(
        render.render_job(
            migration({"command": ["/bin/sh", "-c"], "args": ["/scripts/db-migrate"]}), IMAGE
        )
    )
    assert c["command"] == ["/bin/sh", "-c"]
    assert c["args"] == [templates.UNSET_SKIP + "\n/scripts/db-migrate"]
    other = container(
        render.render_job(
            migration({"command": ["/scripts/db-migrate"], "args": ["--verbose"]}), IMAGE
        )
    )
    assert other["command"] == [
        "/bin/bash",
        "-c",
        templates.UNSET_SKIP + '; exec "$@"',
        "--",
        "/scripts/db-migrate",
    ]
    assert other["args"] == ["--verbose"]


def test_inline_job_has_the_charts_env_and_no_skip_variable() -> None:
    c = container(render.render_job(migration(), IMAGE))
    assert c["env"] == [
        {"name": "CONFIG_TEMPLATE_DIRECTORY", "value": "/var/opt/gitlab/templates"},
        {"name": "CONFIG_DIRECTORY", "value": "/srv/gitlab/config"},
        {"name": "BYPASS_SCHEMA_VERSION", "value": "true"},
    ]


def test_skip_post_deployment_migrations_from_the_spec_never_reaches_the_job() -> None:
    # Refused at admission in Run mode; a DryRun (or an older object) still renders without it.
    env = [
        {"name": "BEFORE", "value": "1"},
        {"name": "SKIP_POST_DEPLOYMENT_MIGRATIONS", "value": "true"},
        {"name": "MIDDLE", "value": "2"},
        {
            "name": "SKIP_POST_DEPLOYMENT_MIGRATIONS",
            "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "skip"}},
        },
        {"name": "AFTER", "value": "3"},
    ]
    job = render.render_job(migration({"env": env}), IMAGE)
    rendered = container(job)["env"]
    assert [e["name"] for e in rendered][-3:] == ["BEFORE", "MIDDLE", "AFTER"]
    # Named only in the script that unsets it.
    del container(job)["args"]
    assert "SKIP_POST_DEPLOYMENT_MIGRATIONS" not in yaml.safe_dump(job)


def test_user_env_passes_through_in_order_with_secret_references_kept() -> None:
    job = everything()
    rendered = container(render.render_job(migration(job), IMAGE))["env"]
    assert rendered[3:] == job["env"]
    assert rendered[4]["valueFrom"] == {
        "secretKeyRef": {"name": "gitlab-postgres", "key": "password"}
    }


def test_user_container_settings_pass_through() -> None:
    job = everything()
    c = container(render.render_job(migration(job), IMAGE))
    assert c["envFrom"] == job["envFrom"]
    assert c["volumeMounts"] == job["volumeMounts"]
    assert c["resources"] == job["resources"]


def test_user_pod_settings_pass_through() -> None:
    job = everything()
    rendered = render.render_job(migration(job), IMAGE)
    pod = pod_spec(rendered)
    assert pod["serviceAccountName"] == "gitlab-migrations"
    assert pod["volumes"] == job["volumes"]
    assert pod["nodeSelector"] == {"workload": "support"}
    assert pod["tolerations"] == job["tolerations"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["priorityClassName"] == "gitlab-critical"
    assert rendered["spec"]["template"]["metadata"]["annotations"] == {
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"
    }


def test_user_job_limits_pass_through() -> None:
    spec = render.render_job(migration(everything()), IMAGE)["spec"]
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["backoffLimit"] == 2
    assert spec["ttlSecondsAfterFinished"] == 86400


def test_unset_optional_fields_are_left_out_of_the_job() -> None:
    rendered = render.render_job(migration(), IMAGE)
    pod = pod_spec(rendered)
    for key in (
        "serviceAccountName",
        "volumes",
        "nodeSelector",
        "tolerations",
        "imagePullSecrets",
        "priorityClassName",
    ):
        assert key not in pod, key
    for key in ("command", "envFrom", "resources", "volumeMounts"):
        assert key not in container(rendered), key
    assert rendered["spec"]["template"]["metadata"]["annotations"] == {
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"
    }
    assert "ttlSecondsAfterFinished" not in rendered["spec"]


def test_zero_backoff_limit_and_zero_ttl_are_kept_not_dropped_as_empty() -> None:
    spec = render.render_job(migration({"ttlSecondsAfterFinished": 0}), IMAGE)["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 0


def test_job_defaults_to_one_hour_deadline_and_no_retry_when_job_is_unset() -> None:
    bare = migration()
    del bare["spec"]["job"]
    spec = render.render_job(bare, IMAGE)["spec"]
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["backoffLimit"] == 0


# --- security and pod behaviour ------------------------------------------------------


def test_pod_runs_at_the_restricted_security_level_by_default() -> None:
    rendered = render.render_job(migration(), IMAGE)
    pod_sc = pod_spec(rendered)["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 1000
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    c_sc = container(rendered)["securityContext"]
    assert c_sc["allowPrivilegeEscalation"] is False
    assert c_sc["capabilities"] == {"drop": ["ALL"]}
    assert c_sc["runAsNonRoot"] is True
    assert c_sc["runAsUser"] == 1000
    assert c_sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_user_security_contexts_replace_the_restricted_defaults() -> None:
    pod_sc = {"runAsUser": 998, "runAsNonRoot": True, "fsGroup": 998}
    c_sc = {"runAsUser": 998, "readOnlyRootFilesystem": True}
    rendered = render.render_job(
        migration({"podSecurityContext": pod_sc, "securityContext": c_sc}), IMAGE
    )
    assert pod_spec(rendered)["securityContext"] == pod_sc
    assert container(rendered)["securityContext"] == c_sc


def test_changing_a_rendered_job_does_not_change_the_next_rendering() -> None:
    first = render.render_job(migration(), IMAGE)
    container(first)["securityContext"]["capabilities"]["drop"].clear()
    container(first)["securityContext"]["allowPrivilegeEscalation"] = True
    pod_spec(first)["securityContext"]["runAsUser"] = 0
    container(first)["args"].append("--evil")
    second = render.render_job(migration(), IMAGE)
    assert container(second)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container(second)["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod_spec(second)["securityContext"]["runAsUser"] == 1000
    assert "--evil" not in container(second)["args"]


def test_pod_never_restarts_and_gets_no_service_account_token() -> None:
    pod = pod_spec(render.render_job(migration(), IMAGE))
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_restart_policy_follows_the_spec() -> None:
    pod = pod_spec(render.render_job(migration({"restartPolicy": "OnFailure"}), IMAGE))
    assert pod["restartPolicy"] == "OnFailure"


def test_migration_pod_is_never_safe_to_evict_whatever_the_user_annotates() -> None:
    annotations = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true", "team": "db"}
    rendered = render.render_job(migration({"podAnnotations": annotations}), IMAGE)
    assert rendered["spec"]["template"]["metadata"]["annotations"] == {
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
        "team": "db",
    }


def test_termination_message_falls_back_to_logs_on_error() -> None:
    c = container(render.render_job(migration(), IMAGE))
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


# --- ownership and labels --------------------------------------------------------------


def test_job_is_owned_by_its_migration_as_controller() -> None:
    meta = render.render_job(migration(), IMAGE)["metadata"]
    assert meta["namespace"] == NAMESPACE
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "pdm-operator.io/v1alpha1",
            "kind": "PostDeployMigration",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_labels_tie_the_job_to_its_migration_uid_and_environment() -> None:
    labels = render.render_job(migration(environment="gprd"), IMAGE)["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/managed-by": "pdm-operator",
        "app.kubernetes.io/component": "post-deploy-migration",
        "pdm-operator.io/migration": NAME,
        "pdm-operator.io/migration-uid": UID,
        "pdm-operator.io/environment": "gprd",
    }


def test_pod_labels_tie_the_pod_to_its_migration_and_environment() -> None:
    labels = render.render_job(migration(environment="gprd"), IMAGE)["spec"]["template"][
        "metadata"
    ]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "pdm-operator"
    assert labels["pdm-operator.io/migration"] == NAME
    assert labels["pdm-operator.io/environment"] == "gprd"


def test_operator_labels_win_over_user_pod_labels() -> None:
    pod_labels = {
        "app.kubernetes.io/managed-by": "helm",
        "pdm-operator.io/migration": "someone-else",
        "pdm-operator.io/environment": "gprd",
        "team": "database",
    }
    rendered = render.render_job(migration({"podLabels": pod_labels}, environment="gstg"), IMAGE)
    labels = rendered["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "pdm-operator"
    assert labels["pdm-operator.io/migration"] == NAME
    assert labels["pdm-operator.io/environment"] == "gstg"
    assert labels["team"] == "database"
    assert "team" not in rendered["metadata"]["labels"]


def test_migration_without_uid_renders_a_job_without_owner() -> None:
    meta = render.render_job(migration(uid=None), IMAGE)["metadata"]
    assert "ownerReferences" not in meta
    assert model.LABEL_MIGRATION_UID not in meta["labels"]
    assert meta["labels"][model.LABEL_MIGRATION] == NAME


def test_rendering_does_not_mutate_the_migration() -> None:
    pdm = migration(everything())
    snapshot = copy.deepcopy(pdm)
    rendered = render.render_job(pdm, IMAGE)
    assert pdm == snapshot
    # Nor does the rendered Job share structure with the migration.
    c, pod = container(rendered), pod_spec(rendered)
    c["command"].append("x")
    c["args"].append("x")
    c["env"][3]["value"] = "x"
    c["env"][0]["value"] = "x"
    c["env"][4]["valueFrom"]["secretKeyRef"]["key"] = "x"
    c["envFrom"][0]["configMapRef"]["name"] = "x"
    c["resources"]["limits"]["memory"] = "x"
    c["volumeMounts"][0]["mountPath"] = "x"
    pod["volumes"][0]["configMap"]["name"] = "x"
    pod["nodeSelector"]["workload"] = "x"
    pod["tolerations"][0]["value"] = "x"
    pod["imagePullSecrets"][0]["name"] = "x"
    rendered["spec"]["template"]["metadata"]["annotations"]["x"] = "x"
    rendered["spec"]["template"]["metadata"]["labels"]["x"] = "x"
    assert pdm == snapshot


# --- golden files ------------------------------------------------------------------------

GOLDEN_CASES: dict[str, tuple[Body, str]] = {
    # spec.job alone, as an install without the chart writes it.
    "inline": (migration({"env": [{"name": "GITLAB_LOG_LEVEL", "value": "info"}]}), IMAGE),
    "every-field": (migration(everything(), environment="gprd"), PINNED_IMAGE),
    # `pdm-operator render` on a manifest that was never applied: no uid.
    "without-uid": (migration(uid=None), IMAGE),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_rendered_job_matches_its_golden_file_byte_for_byte(case: str) -> None:
    pdm, image = GOLDEN_CASES[case]
    actual = yaml.safe_dump(render.render_job(pdm, image), sort_keys=True).encode()
    path = GOLDEN / f"render-{case}.yaml"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
    assert path.exists(), (
        f"{path} is missing; create it with: "
        "PDM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render.py"
    )
    expected = path.read_bytes()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.decode().splitlines(keepends=True),
                actual.decode().splitlines(keepends=True),
                fromfile=str(path),
                tofile="rendered",
            )
        )
        pytest.fail(
            f"the rendered Job for case {case!r} differs from {path}.\n"
            "If the change is intended, regenerate the golden files with\n"
            "  PDM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render.py\n"
            f"and review their diff.\n{diff}"
        )


def test_the_disruption_budget_guards_exactly_the_jobs_pod_and_lives_with_the_job() -> None:
    job = render.render_job(
        {
            "metadata": {"name": "m", "namespace": "gitlab", "uid": "u-1"},
            "spec": {"environment": "gstg", "image": {"reference": "r/t:1"}},
        },
        "r/t:1",
    )
    job["metadata"]["uid"] = "job-uid-1"  # as the API server returns it
    budget = render.disruption_budget(job)
    assert budget["metadata"]["name"] == job["metadata"]["name"]
    assert budget["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "job-uid-1"}},
    }
    (owner,) = budget["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Job", "job-uid-1")
    assert "blockOwnerDeletion" not in owner  # needs no rights on the Job's finalizers


def test_a_dry_runs_full_diff_configmap_is_owned_by_and_labelled_for_its_migration() -> None:
    m = migration(uid="uid-1")
    cm = render.diff_configmap(m, "gstg-2026-12-01-1200-diff", "-a\n+b\n")
    assert cm["metadata"]["name"] == "gstg-2026-12-01-1200-diff"
    assert cm["metadata"]["namespace"] == m["metadata"]["namespace"]
    assert cm["metadata"]["labels"] == render.labels_for(m)
    (owner,) = cm["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "PostDeployMigration",
        m["metadata"]["name"],
        "uid-1",
        True,
    )
    assert cm["data"] == {"diff": "-a\n+b\n"}
