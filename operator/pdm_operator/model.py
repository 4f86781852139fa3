"""Names shared by every part of the operator: the API, labels, conditions.

The PostDeployMigration schema itself lives in ``crds/``; this module only
holds the identifiers code needs to agree on.
"""

from __future__ import annotations

from typing import Any, Final

GROUP: Final = "pdm-operator.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "PostDeployMigration"
PLURAL: Final = "postdeploymigrations"
#: The cluster-scoped environment a platform admin declares (module ``environments``).
ENVIRONMENT_KIND: Final = "PostDeployEnvironment"
ENVIRONMENT_PLURAL: Final = "postdeployenvironments"

#: Field manager for every write the operator makes (server-side apply,
#: dry-runs and real creates alike), so managedFields tell who owns what.
FIELD_MANAGER: Final = "pdm-operator"

# Labels on the Job and its pods. They tie a Job to its PostDeployMigration and
# environment, so `kubectl get jobs -l pdm-operator.io/environment=gstg` works.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MIGRATION: Final = f"{GROUP}/migration"
LABEL_MIGRATION_UID: Final = f"{GROUP}/migration-uid"
LABEL_ENVIRONMENT: Final = f"{GROUP}/environment"
ANNOTATION_INPUTS_HASH: Final = f"{GROUP}/inputs-hash"
#: On a PostDeployMigration made by ``pdm-operator retry``: the failed one it retries.
ANNOTATION_RETRY_OF: Final = f"{GROUP}/retry-of"
#: On a PostDeployMigration made by ``kubectl pdm mark-executed``: the one it was made from.
ANNOTATION_MARK_OF: Final = f"{GROUP}/mark-executed-of"

MIGRATION_CONTAINER: Final = "migrations"
SKIP_PDM_ENV: Final = "SKIP_POST_DEPLOYMENT_MIGRATIONS"

# Condition types (status.conditions[].type).
IMAGE_RESOLVED: Final = "ImageResolved"
TEMPLATE_RESOLVED: Final = "TemplateResolved"
JOB_VALIDATED: Final = "JobValidated"
#: Something keeps the migration from progressing (a pass keeps failing, its pod
#: cannot start), or it failed. kstatus reads True as Failed: "something might
#: be wrong", not necessarily for good (cli-utils pkg/kstatus/README.md).
STALLED: Final = "Stalled"
#: kstatus' other standard condition: True until the migration has ended.
RECONCILING: Final = "Reconciling"
GATED: Final = "Gated"
#: The pre-flight's answer: Unknown while it runs, True with the pending list,
#: False when it failed.
PREFLIGHT: Final = "Preflight"
#: With spec.approval.required: the plan that runs is the one approved.
APPROVED: Final = "Approved"
JOB_CREATED: Final = "JobCreated"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
#: The reports of spec.tracking: written by the reporter, not the pass.
REPORTED: Final = "Reported"

# status.state values: a one-word summary of the conditions for `kubectl get`.
STATE_PENDING: Final = "Pending"
STATE_GATED: Final = "Gated"
STATE_RUNNING: Final = "Running"
STATE_REPORTING: Final = "Reporting"  # the Job succeeded; blocking reports are pending
STATE_SUCCEEDED: Final = "Succeeded"
STATE_FAILED: Final = "Failed"

Body = dict[str, Any]
"""A Kubernetes object as plain JSON-like data."""


def is_finished(status: Body | None) -> bool:
    """Whether a PostDeployMigration has reached its end (Succeeded or Failed)."""
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") in (SUCCEEDED, FAILED) and cond.get("status") == "True":
            return True
    return False
