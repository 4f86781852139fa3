"""Bad input is refused at admission, by the CRD schema and its CEL rules,
with a message that names the field. Nothing is stored, nothing runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.pdm import Api, migration

pytestmark = pytest.mark.integration


def without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    node = body
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return body


VERSION = {"ref": "master", "sha": "0a1b2c3d"}


def tracking(
    sinks: list[dict[str, Any]], *, version: dict[str, Any] | None = None, environment: str = ""
) -> dict[str, Any]:
    gitlab: dict[str, Any] = {
        "url": "https://gitlab.example.com",
        "tokenSecretRef": {"name": "t", "key": "k"},
    }
    if environment:
        gitlab["environment"] = environment
    out: dict[str, Any] = {"gitlab": gitlab, "sinks": sinks}
    if version is not None:
        out["version"] = version
    return out


MALFORMED = [
    (
        "no-environment",
        without(migration("x"), "spec", "environment"),
        "spec.environment: Required",
    ),
    (
        "both-image-sources",
        migration(
            "x", image={"reference": "r/t:1", "fromDeployment": {"name": "d", "container": "c"}}
        ),
        "exactly one of spec.image.fromDeployment and spec.image.reference",
    ),
    ("no-image-source", migration("x", image={}), "exactly one of spec.image.fromDeployment"),
    ("unknown-mode", migration("x", mode="Maybe"), 'spec.mode: Unsupported value: "Maybe"'),
    ("unknown-pipeline", migration("x", pipeline="Hotfix"), "spec.pipeline: Unsupported value"),
    (
        "negative-deadline",
        migration("x", job={"activeDeadlineSeconds": -5}),
        "activeDeadlineSeconds",
    ),
    ("zero-deadline", migration("x", job={"activeDeadlineSeconds": 0}), "activeDeadlineSeconds"),
    ("negative-backoff", migration("x", job={"backoffLimit": -1}), "spec.job.backoffLimit"),
    ("environment-not-dns", migration("x", env="GSTG_Main"), "spec.environment"),
    (
        "container-not-dns",
        migration("x", image={"fromDeployment": {"name": "d", "container": "Tool_Box"}}),
        "spec.image.fromDeployment.container",
    ),
    ("over-long-name", migration("m" * 55), "metadata.name must be at most 54 characters"),
    ("image-with-space", migration("x", image={"reference": "a b"}), "spec.image.reference"),
    (
        "rolledout-not-a-list",
        migration("x", waitFor={"rolledOut": "gitlab-webservice"}),
        "spec.waitFor.rolledOut",
    ),
    ("env-without-name", migration("x", job={"env": [{"value": "1"}]}), "spec.job.env[0].name"),
    (
        "skip-variable-false",
        migration(
            "x", job={"env": [{"name": "SKIP_POST_DEPLOYMENT_MIGRATIONS", "value": "false"}]}
        ),
        "spec.job.env must not set SKIP_POST_DEPLOYMENT_MIGRATIONS: Rails skips every "
        "post-deployment migration when the variable is present",
    ),
    (
        "skip-variable-from-secret",
        migration(
            "x",
            job={
                "env": [
                    {"name": "A", "value": "1"},
                    {
                        "name": "SKIP_POST_DEPLOYMENT_MIGRATIONS",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    },
                ]
            },
        ),
        "spec.job.env must not set SKIP_POST_DEPLOYMENT_MIGRATIONS",
    ),
    (
        "both-template-sources",
        migration(
            "x",
            podTemplateFrom={
                "migrationsJob": {"release": "gitlab"},
                "toolboxDeployment": {"name": "gitlab-toolbox"},
            },
        ),
        "exactly one of spec.podTemplateFrom.migrationsJob and "
        "spec.podTemplateFrom.toolboxDeployment",
    ),
    (
        "template-job-without-release",
        migration("x", podTemplateFrom={"migrationsJob": {}}),
        "spec.podTemplateFrom.migrationsJob needs release or selector",
    ),
    (
        "template-selector-not-a-selector",
        migration("x", podTemplateFrom={"migrationsJob": {"selector": "app in (a b)"}}),
        "spec.podTemplateFrom.migrationsJob.selector",
    ),
    (
        "waits-for-itself",
        migration("x", waitFor={"migrations": ["a", "x"]}),
        "spec.waitFor.migrations must not name the PostDeployMigration itself",
    ),
    (
        "image-not-a-reference",
        migration("x", image={"reference": "UPPER/Case::tag@@sha256:zz"}),
        "spec.image.reference in body should match",
    ),
    (
        "env-value-a-number",
        migration("x", job={"env": [{"name": "X", "value": 5}]}),
        'spec.job.env[0].value: Invalid value: "integer"',
    ),
    (
        "env-value-too-long",
        migration("x", job={"env": [{"name": "X", "value": "x" * 40000}]}),
        "spec.job.env[0].value: Too long",
    ),
    (
        "host-path-volume",
        migration("x", job={"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
        "hostPath volumes are not allowed",
    ),
    (
        "root-user",
        migration("x", job={"securityContext": {"runAsUser": 0}}),
        "spec.job.securityContext.runAsUser must not be 0",
    ),
    (
        "root-pod",
        migration("x", job={"podSecurityContext": {"runAsUser": 0}}),
        "spec.job.podSecurityContext.runAsUser must not be 0",
    ),
    (
        "privileged",
        migration("x", job={"securityContext": {"privileged": True}}),
        "spec.job.securityContext.privileged must not be true",
    ),
    (
        "sys-admin",
        migration("x", job={"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        "capabilities.add may only hold NET_BIND_SERVICE",
    ),
    (
        "restart-policy-always",
        migration("x", job={"restartPolicy": "Always"}),
        'spec.job.restartPolicy: Unsupported value: "Always"',
    ),
    (
        "deployment-project-without-version",
        migration("x", tracking=tracking([{"type": "GitLabDeployment", "projects": ["a/b"]}])),
        "every GitLabDeployment project and the ReleaseMetadata project needs a version",
    ),
    (
        "deployment-target-without-version",
        migration(
            "x", tracking=tracking([{"type": "GitLabDeployment", "targets": [{"project": "a/b"}]}])
        ),
        "every GitLabDeployment project and the ReleaseMetadata project needs a version",
    ),
    (
        "metadata-without-version",
        migration("x", tracking=tracking([{"type": "ReleaseMetadata", "project": "m"}])),
        "every GitLabDeployment project and the ReleaseMetadata project needs a version",
    ),
    (
        "project-twice",
        migration(
            "x",
            tracking=tracking(
                [
                    {
                        "type": "GitLabDeployment",
                        "projects": ["a/b"],
                        "targets": [{"project": "a/b", "version": VERSION}],
                    }
                ],
                version=VERSION,
            ),
        ),
        "a project appears once in a sink's projects and targets",
    ),
    (
        "gitlab-environment-ends-with-slash",
        migration("x", tracking=tracking([], environment="db/")),
        "spec.tracking.gitlab.environment in body should match",
    ),
    (
        "not-before-not-a-time",
        migration("x", notBefore="tomorrow at one"),
        "spec.notBefore",
    ),
    (
        "labels-without-label-outside-gstg-gprd",
        migration(
            "x", env="pre", tracking=tracking([{"type": "MergeRequestLabels"}], version=VERSION)
        ),
        "a MergeRequestLabels sink needs label",
    ),
]


@pytest.mark.parametrize(("case", "body", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_migration_is_rejected_naming_the_field(
    api: Api, case: str, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        api.create(body)
    assert rejected.value.status == 422, rejected.value.body
    message = json.loads(rejected.value.body)["message"]
    assert field in message, message
    assert api.get(body["metadata"]["name"]) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"environment": "gprd"}, "spec.environment is immutable"),
        ({"mode": "DryRun"}, "spec.mode is immutable"),
        ({"pipeline": "Rollback"}, "spec.pipeline is immutable"),
        ({"image": {"reference": "r/toolbox:2"}}, "spec.image is immutable"),
        ({"waitFor": {"rolledOut": ["late"]}}, "spec.waitFor is immutable"),
        ({"job": {"backoffLimit": 3}}, "spec.job is immutable"),
        (
            {"podTemplateFrom": {"toolboxDeployment": {"name": "gitlab-toolbox"}}},
            "spec.podTemplateFrom is immutable",
        ),
        ({"notBefore": "2026-12-07T13:00:00Z"}, "spec.notBefore is immutable"),
    ],
    ids=[
        "environment",
        "mode",
        "pipeline",
        "image",
        "waitFor",
        "job",
        "podTemplateFrom",
        "notBefore",
    ],
)
def test_spec_is_immutable_after_creation(api: Api, change: dict[str, Any], field: str) -> None:
    api.create(migration("frozen", suspend=True, image={"reference": "r/toolbox:1"}))
    with pytest.raises(ApiException) as rejected:
        api.patch("frozen", {"spec": change})
    assert rejected.value.status == 422
    assert field in json.loads(rejected.value.body)["message"]


def test_suspend_may_change_after_creation(api: Api) -> None:
    api.create(migration("thawed", suspend=True, image={"reference": "r/toolbox:1"}))
    assert api.patch("thawed", {"spec": {"suspend": False}})["spec"]["suspend"] is False


def test_defaults_are_applied(api: Api) -> None:
    created = api.create(migration("defaults", suspend=True, image={"reference": "r/toolbox:1"}))
    spec = created["spec"]
    assert (spec["mode"], spec["pipeline"]) == ("Run", "Regular")
    assert spec["job"] == {
        "activeDeadlineSeconds": 3600,
        "backoffLimit": 0,
        "restartPolicy": "Never",
    }


def test_a_dry_run_may_carry_the_skip_variable_it_is_shown_without(api: Api) -> None:
    """Only a Run is refused: a DryRun renders the Job, and the Job never has it."""
    skip = [{"name": "SKIP_POST_DEPLOYMENT_MIGRATIONS", "value": "true"}]
    created = api.create(
        migration(
            "dry-skip", mode="DryRun", suspend=True, job={"env": skip}, image={"reference": "r/t:1"}
        )
    )
    assert created["spec"]["mode"] == "DryRun"


def test_template_source_defaults_to_the_charts_container_names(api: Api) -> None:
    created = api.create(
        migration(
            "tpl-defaults",
            suspend=True,
            image={"reference": "r/toolbox:1"},
            podTemplateFrom={"migrationsJob": {"release": "gitlab"}},
        )
    )
    assert created["spec"]["podTemplateFrom"] == {
        "migrationsJob": {"release": "gitlab", "container": "migrations"}
    }


def test_every_schema_field_has_a_description(api: Api) -> None:
    crd = client.ApiextensionsV1Api(api.custom.api_client).read_custom_resource_definition(
        "postdeploymigrations.pdm-operator.io"
    )
    schema = crd.to_dict()["spec"]["versions"][0]["schema"]["open_apiv3_schema"]
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, prop in (node.get("properties") or {}).items():
            here = f"{path}.{name}"
            if name != "metadata" and not prop.get("description"):
                missing.append(here)
            walk(prop, here)
        if node.get("items"):
            walk(node["items"], path + "[]")

    walk(schema, "")
    assert missing == []


def test_per_target_versions_and_the_gitlab_environment_are_accepted(api: Api) -> None:
    body = migration(
        "per-target",
        env="gprd",
        tracking=tracking(
            [
                {
                    "type": "GitLabDeployment",
                    "targets": [
                        {"project": "gitlab-org/gitlab", "version": VERSION},
                        {
                            "project": "gitlab-org/gitaly",
                            "version": {"ref": "v18.6.0", "sha": "abcdef1", "tag": True},
                        },
                    ],
                },
                {
                    "type": "ReleaseMetadata",
                    "project": "gitlab-org/release/metadata",
                    "version": VERSION,
                },
                {"type": "MergeRequestLabels"},
            ],
            environment="db/gprd",
        ),
    )
    api.create(body)
    spec = api.get("per-target")["spec"]  # type: ignore[index]
    assert spec["tracking"]["gitlab"]["environment"] == "db/gprd"
    assert spec["tracking"]["sinks"][0]["targets"][0]["version"]["tag"] is False


RETRY = {"classes": ["LockContention"], "attempts": 2, "after": "10m"}


@pytest.mark.parametrize(
    ("retry", "field"),
    [
        ({**RETRY, "classes": ["DataError"]}, "spec.retry.classes[0]: Unsupported value"),
        ({**RETRY, "classes": ["Unknown"]}, "spec.retry.classes[0]: Unsupported value"),
        ({**RETRY, "attempts": 6}, "spec.retry.attempts: Invalid value"),
        ({**RETRY, "attempts": 0}, "spec.retry.attempts: Invalid value"),
        ({**RETRY, "after": "0s"}, "spec.retry.after must be from 1s to 24h"),
        ({**RETRY, "after": "25h"}, "spec.retry.after must be from 1s to 24h"),
        ({**RETRY, "after": "ten minutes"}, "spec.retry.after in body should match"),
    ],
    ids=["data-error", "unknown", "too-many", "none", "no-delay", "over-a-day", "words"],
)
def test_a_retry_policy_beyond_its_bounds_is_rejected_naming_the_field(
    api: Api, retry: dict[str, Any], field: str
) -> None:
    body = {
        "apiVersion": "pdm-operator.io/v1alpha1",
        "kind": "PostDeployEnvironment",
        "metadata": {"name": f"retry-{api.ns}"[:63]},
        "spec": {"namespaces": [api.ns], "retry": retry},
    }
    with pytest.raises(ApiException) as rejected:
        api.custom.create_cluster_custom_object(
            "pdm-operator.io", "v1alpha1", "postdeployenvironments", body
        )
    assert rejected.value.status == 422, rejected.value.body
    message = json.loads(rejected.value.body)["message"]
    assert field in message, message
