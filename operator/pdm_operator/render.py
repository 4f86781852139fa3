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

from pdm_operator import model, templates
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

#: cluster-autoscaler does not evict a pod with this annotation set to "false"
#: (https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/FAQ.md,
#: "What types of pods can prevent CA from removing a node?").
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"

#: The migration Job's component label (the pre-flight Job has its own).
COMPONENT = "post-deploy-migration"
#: The managed-by label of every Job and pod this operator makes.
MANAGED_BY = "pdm-operator"

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


def hash_of(job: Body) -> str:
    """The inputs hash a rendered Job carries (:func:`render_job`)."""
    return str(job["metadata"]["annotations"][model.ANNOTATION_INPUTS_HASH])


def _without_identity(job_spec: Body) -> Body:
    """The Job spec minus the migration's own name: the same inputs under
    another migration hash the same, so a dry-run diff of an unchanged
    deployment is empty and a changed one shows only what changed."""
    out = copy.deepcopy(job_spec)
    out["template"]["metadata"]["labels"].pop(model.LABEL_MIGRATION, None)
    return out


def renamed(job: Body, migration_name: str) -> Body:
    """``job`` after a change of its spec: the name and inputs hash of what it is now."""
    digest = inputs_hash(_without_identity(job["spec"]))
    job["metadata"]["name"] = job_name(migration_name, digest)
    job["metadata"]["annotations"] = {
        **(job["metadata"].get("annotations") or {}),
        model.ANNOTATION_INPUTS_HASH: digest,
    }
    return job


def labels_for(migration: Body) -> dict[str, str]:
    meta = migration["metadata"]
    return {
        model.LABEL_MANAGED_BY: MANAGED_BY,
        model.LABEL_COMPONENT: COMPONENT,
        model.LABEL_MIGRATION: meta["name"],
        model.LABEL_ENVIRONMENT: migration["spec"]["environment"],
    }


def _drop_empty(d: Body) -> Body:
    return {k: v for k, v in d.items() if v not in (None, [], {})}


def _base(template: templates.Template | None) -> tuple[Body, Body, str]:
    """Pod metadata, pod spec and migration container name to build on.

    Without a template (``spec.job`` alone), the base is the chart's
    migrations container: the chart's script in ``args`` (no ``command``, so
    the image ENTRYPOINT renders the configuration first), its fixed env, and
    the restricted security contexts the chart uses.
    """
    if template is not None:
        return copy.deepcopy(template.metadata), copy.deepcopy(template.spec), template.container
    container: Body = {
        "name": model.MIGRATION_CONTAINER,
        "args": list(templates.CHART_MIGRATION_ARGS),
        "env": [{"name": k, "value": v} for k, v in templates.CHART_MIGRATION_ENV],
    }
    spec: Body = {
        # Migrations talk to the database, not to Kubernetes.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
    }
    return {}, spec, model.MIGRATION_CONTAINER


def _migration_container(c: Body, job: Body, image: str) -> Body:
    """The migration container with the resolved image and ``spec.job``'s overrides."""
    c = copy.deepcopy(c)
    c["name"] = model.MIGRATION_CONTAINER
    c["image"] = image
    c.setdefault("imagePullPolicy", "IfNotPresent")
    if job.get("command"):
        c["command"] = list(job["command"])
    if job.get("args"):
        c["args"] = list(job["args"])
    # A Run-mode PDM that sets the variable is refused at admission; a DryRun
    # or an older object that carries it still never passes it on. envFrom
    # and the image can still bring it: the container's shell unsets it
    # before anything runs (no command is added: the ENTRYPOINT runs first).
    c["env"] = templates.without_skip(templates.merge_by("name", c.get("env"), job.get("env")))
    c["command"], c["args"] = templates.unset_skip(c.get("command"), c.get("args"))
    c["envFrom"] = [*(c.get("envFrom") or []), *copy.deepcopy(job.get("envFrom") or [])]
    if job.get("resources"):
        c["resources"] = copy.deepcopy(job["resources"])
    c["volumeMounts"] = templates.merge_by(
        "mountPath", c.get("volumeMounts"), job.get("volumeMounts")
    )
    c["securityContext"] = copy.deepcopy(
        job.get("securityContext") or c.get("securityContext") or RESTRICTED_CONTAINER_SECURITY
    )
    # The termination message carries the log tail on error, so a failure
    # can be explained without log access.
    c["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return _drop_empty(c)


def _pod(migration: Body, image: str, template: templates.Template | None) -> Body:
    """The Job's pod template: the base, ``spec.job`` on top, the operator's labels last."""
    job: Body = migration["spec"].get("job") or {}
    metadata, pod, container = _base(template)
    pod["containers"] = [
        _migration_container(c, job, image) if c.get("name") == container else c
        for c in pod.get("containers") or []
    ]
    pod["restartPolicy"] = job.get("restartPolicy") or "Never"
    pod.setdefault("automountServiceAccountToken", False)
    pod["securityContext"] = copy.deepcopy(
        job.get("podSecurityContext") or pod.get("securityContext") or RESTRICTED_POD_SECURITY
    )
    for key in ("serviceAccountName", "priorityClassName"):
        if job.get(key):
            pod[key] = job[key]
    pod["volumes"] = templates.merge_by("name", pod.get("volumes"), job.get("volumes"))
    pod["imagePullSecrets"] = templates.merge_by(
        "name", pod.get("imagePullSecrets"), job.get("imagePullSecrets")
    )
    pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), **(job.get("nodeSelector") or {})}
    pod["tolerations"] = [
        *(pod.get("tolerations") or []),
        *copy.deepcopy(job.get("tolerations") or []),
    ]
    labels = {
        **(metadata.get("labels") or {}),
        **(job.get("podLabels") or {}),
        **labels_for(migration),
    }
    annotations = {
        **(metadata.get("annotations") or {}),
        **(job.get("podAnnotations") or {}),
        # A migration evicted half-way is a migration to investigate.
        SAFE_TO_EVICT: "false",
    }
    return {
        "metadata": _drop_empty({"labels": labels, "annotations": annotations}),
        "spec": _drop_empty(pod),
    }


def render_job(migration: Body, image: str, template: templates.Template | None = None) -> Body:
    """The batch/v1 Job that runs ``migration`` with ``image``.

    ``migration`` is the PostDeployMigration as stored (defaults applied);
    ``image`` is the resolved image; ``template`` the pod template copied from
    ``spec.podTemplateFrom`` (None: ``spec.job`` alone). Only ``metadata.uid``
    is read from the migration's metadata besides name and namespace, for the
    owner reference.
    """
    meta = migration["metadata"]
    job: Body = migration["spec"].get("job") or {}
    labels = labels_for(migration)
    job_spec: Body = _drop_empty(
        {
            "activeDeadlineSeconds": int(job.get("activeDeadlineSeconds", 3600)),
            "backoffLimit": int(job.get("backoffLimit", 0)),
            "ttlSecondsAfterFinished": job.get("ttlSecondsAfterFinished"),
            "template": _pod(migration, image, template),
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


def disruption_budget(job: Body) -> Body:
    """A PodDisruptionBudget that refuses to evict the running migration pod.

    A drain or the autoscaler evicts through the Eviction API, which refuses
    while the budget would be broken (``minAvailable: 1`` over the Job's one
    pod). Jobs have no scale subresource, so only an integer ``minAvailable``
    applies (https://kubernetes.io/docs/tasks/run-application/configure-pdb/,
    "Arbitrary workloads and PodDisruptionBudgets"). Pending, Succeeded and
    Failed pods are never protected by a budget, whatever it says
    (kubernetes ``pkg/registry/core/pod/storage/eviction.go``, ``canIgnorePDB``;
    the refusal is 429 TooManyRequests). Owned by
    the Job (no ``blockOwnerDeletion``: it needs no permission on the Job's
    finalizers), so it lives exactly as long as the Job.
    """
    meta = job["metadata"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "spec": {
            "minAvailable": 1,
            # The Job controller's label for exactly this Job's pods.
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}},
        },
    }


def diff_configmap(migration: Body, name: str, text: str) -> Body:
    """The full diff of a dry run, when it is too long for the status."""
    meta = migration["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels_for(migration),
            "ownerReferences": [
                {
                    "apiVersion": model.API_VERSION,
                    "kind": model.KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "data": {"diff": text},
    }
