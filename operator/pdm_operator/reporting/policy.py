"""Which sinks are required and blocking, by pipeline (pure).

The defaults are the product's table. "Blocking" means the migration is not
Succeeded until the sink is delivered, and fails (BlockingReportFailed) if it
cannot be within the deadline; "not required" means the sink is skipped. Each
sink may override both. Nothing else ever waits on GitLab or Sentry.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdm_operator.model import Body

GITLAB_DEPLOYMENT = "GitLabDeployment"
MR_LABELS = "MergeRequestLabels"
QA_ISSUE = "QAIssue"
SENTRY_DEPLOY = "SentryDeploy"
RELEASE_METADATA = "ReleaseMetadata"

#: (required, blocking) per sink type and pipeline.
DEFAULTS: dict[str, dict[str, tuple[bool, bool]]] = {
    "Regular": {
        GITLAB_DEPLOYMENT: (True, False),
        MR_LABELS: (True, False),
        QA_ISSUE: (True, True),
        SENTRY_DEPLOY: (True, False),
        RELEASE_METADATA: (True, True),
    },
    "Rollback": {
        GITLAB_DEPLOYMENT: (True, False),
        MR_LABELS: (False, False),
        QA_ISSUE: (False, False),
        SENTRY_DEPLOY: (True, False),
        RELEASE_METADATA: (True, True),
    },
}


#: GitLab.com's labels for merge requests whose post-deployment migrations ran,
#: by ``spec.environment`` (release-tools' post-deploy labeler, gitlab-org/release-tools!1884;
#: the label descriptions: "Post-migrations on the merge request have been
#: executed in staging.gitlab.com" / "... in GitLab.com").
DEFAULT_LABELS = {
    "gstg": "workflow::post-deploy-db-staging",
    "gprd": "workflow::post-deploy-db-production",
}


def gitlab_environment(spec: Body) -> str:
    """The GitLab environment the deployments are recorded on.

    GitLab.com records post-deployment migration runs on ``db/gstg`` and
    ``db/gprd``, apart from the application's ``gstg``/``gprd`` deployments
    (gitlab-com/gl-infra/delivery#2363, gitlab-org/release-tools!1864).
    """
    tracking = spec.get("tracking") or {}
    return str((tracking.get("gitlab") or {}).get("environment") or f"db/{spec['environment']}")


def label(sink: Body, spec: Body) -> str | None:
    """The merge request label: the sink's, else GitLab.com's for the environment."""
    return sink.get("label") or DEFAULT_LABELS.get(str(spec.get("environment")))


def version(spec: Body, sink: Body, project: str | None = None) -> Body | None:
    """The version (ref, sha, tag) a sink records for ``project``.

    A deployment's ref and sha must exist in the project it is created in
    (gitlabhq ``lib/api/deployments.rb``: 400 "The branch or tag does not
    exist"; ``app/models/deployment.rb`` ``valid_sha``), so each target may
    carry its own; the shared ``spec.tracking.version`` is the fallback.
    """
    for target in sink.get("targets") or []:
        if target.get("project") == project and target.get("version"):
            return dict(target["version"])
    if sink.get("version"):
        return dict(sink["version"])
    shared = (spec.get("tracking") or {}).get("version")
    return dict(shared) if shared else None


def deployment_projects(sink: Body) -> list[str]:
    """A GitLabDeployment sink's projects: ``projects`` then ``targets``, in order."""
    projects = [str(p) for p in sink.get("projects") or []]
    for target in sink.get("targets") or []:
        if target["project"] not in projects:
            projects.append(str(target["project"]))
    return projects


@dataclass(frozen=True)
class Policy:
    required: bool
    blocking: bool


def for_sink(sink: Body, pipeline: str) -> Policy:
    required, blocking = DEFAULTS.get(pipeline, DEFAULTS["Regular"])[sink["type"]]
    required = bool(sink.get("required", required))
    blocking = bool(sink.get("blocking", blocking)) and required
    return Policy(required=required, blocking=blocking)
