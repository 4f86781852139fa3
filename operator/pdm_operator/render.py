"""Render the migration Job from a PostDeployMigration, as pure functions.

Same inputs, same bytes: the Job name carries a hash of everything that goes
into the Job, so a restart renders the same name and a create that races with
an earlier one gets 409 instead of a second Job. The CLI (``pdm-operator
render``) and the operator share this code.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pdm_operator import model
from pdm_operator.model import Body

#: GitLab's chart runs its migration Job at the restricted Pod Security level.
RESTRICTED_POD_SECURITY: Body = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: Body = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}

HASH_LENGTH = 8
MAX_NAME_LENGTH = 63


def job_name(migration_name: str, inputs_hash: str) -> str:
    """``<migration>-<hash>``; the CRD caps migration names so this fits in 63."""
    name = f"{migration_name}-{inputs_hash[:HASH_LENGTH]}"
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"Job name {name!r} is longer than {MAX_NAME_LENGTH} characters")
    return name


def inputs_hash(job_spec: Body) -> str:
    """A stable hash of the Job's spec: canonical JSON, sorted keys."""
    canonical = json.dumps(job_spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _without_identity(job_spec: Body) -> Body:
    """The Job spec minus the migration's own name: the same inputs under
    another migration hash the same, so a dry-run diff of an unchanged
    deployment is empty and a changed one shows only what changed."""
    out = copy.deepcopy(job_spec)
    out["template"]["metadata"]["labels"].pop(model.LABEL_MIGRATION, None)
    return out


def migration_env(user_env: list[Body] | None) -> list[Body]:
    """The user's env with SKIP_POST_DEPLOYMENT_MIGRATIONS forced to "false".

    GitLab reads the variable as a boolean; any user value for it is dropped,
    because a PDM Job that skips post-deployment migrations is not one.
    """
    env = [copy.deepcopy(e) for e in user_env or [] if e.get("name") != model.SKIP_PDM_ENV]
    env.append({"name": model.SKIP_PDM_ENV, "value": "false"})
    return env


def labels_for(migration: Body) -> dict[str, str]:
    meta = migration["metadata"]
    return {
        model.LABEL_MANAGED_BY: "pdm-operator",
        model.LABEL_COMPONENT: "post-deploy-migration",
        model.LABEL_MIGRATION: meta["name"],
        model.LABEL_ENVIRONMENT: migration["spec"]["environment"],
    }


def _drop_empty(d: Body) -> Body:
    return {k: v for k, v in d.items() if v not in (None, [], {})}


def render_job(migration: Body, image: str) -> Body:
    """The batch/v1 Job that runs ``migration`` with ``image``.

    ``migration`` is the PostDeployMigration as stored (defaults applied);
    ``image`` is the resolved image. Only ``metadata.uid`` is read from the
    migration's metadata besides name and namespace, for the owner reference.
    """
    meta = migration["metadata"]
    spec = migration["spec"]
    job: Body = spec.get("job") or {}
    labels = labels_for(migration)
    pod_labels = {**(job.get("podLabels") or {}), **labels}

    container = _drop_empty(
        {
            "name": model.MIGRATION_CONTAINER,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": list(job.get("command") or model.DEFAULT_COMMAND),
            "args": list(job.get("args") or []),
            "env": migration_env(job.get("env")),
            "envFrom": copy.deepcopy(job.get("envFrom") or []),
            "resources": copy.deepcopy(job.get("resources") or {}),
            "volumeMounts": copy.deepcopy(job.get("volumeMounts") or []),
            "securityContext": copy.deepcopy(
                job.get("securityContext") or RESTRICTED_CONTAINER_SECURITY
            ),
            # The termination message carries the log tail on error, so a
            # failure can be explained without log access.
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
    )
    pod_spec = _drop_empty(
        {
            "restartPolicy": "Never",
            # Migrations talk to the database, not to Kubernetes.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "serviceAccountName": job.get("serviceAccountName"),
            "securityContext": copy.deepcopy(
                job.get("podSecurityContext") or RESTRICTED_POD_SECURITY
            ),
            "containers": [container],
            "volumes": copy.deepcopy(job.get("volumes") or []),
            "nodeSelector": dict(job.get("nodeSelector") or {}),
            "tolerations": copy.deepcopy(job.get("tolerations") or []),
            "imagePullSecrets": copy.deepcopy(job.get("imagePullSecrets") or []),
            "priorityClassName": job.get("priorityClassName"),
        }
    )
    job_spec: Body = _drop_empty(
        {
            "activeDeadlineSeconds": int(job.get("activeDeadlineSeconds", 3600)),
            "backoffLimit": int(job.get("backoffLimit", 0)),
            "ttlSecondsAfterFinished": job.get("ttlSecondsAfterFinished"),
            "template": {
                "metadata": _drop_empty(
                    {"labels": pod_labels, "annotations": dict(job.get("podAnnotations") or {})}
                ),
                "spec": pod_spec,
            },
        }
    )
    digest = inputs_hash(_without_identity(job_spec))
    metadata: dict[str, Any] = {
        "name": job_name(meta["name"], digest),
        "namespace": meta.get("namespace"),
        "labels": labels,
        "annotations": {model.ANNOTATION_INPUTS_HASH: digest},
    }
    if meta.get("uid"):
        metadata["labels"] = {**labels, model.LABEL_MIGRATION_UID: meta["uid"]}
        metadata["ownerReferences"] = [
            {
                "apiVersion": model.API_VERSION,
                "kind": model.KIND,
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _drop_empty(metadata),
        "spec": job_spec,
    }
