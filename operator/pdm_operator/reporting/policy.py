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


@dataclass(frozen=True)
class Policy:
    required: bool
    blocking: bool


def for_sink(sink: Body, pipeline: str) -> Policy:
    required, blocking = DEFAULTS.get(pipeline, DEFAULTS["Regular"])[sink["type"]]
    required = bool(sink.get("required", required))
    blocking = bool(sink.get("blocking", blocking)) and required
    return Policy(required=required, blocking=blocking)
