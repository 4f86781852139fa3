"""ReleaseMetadata: the migration as a deployment in the release metadata
project (gitlab-org/release/metadata on GitLab.com), delivered like a
GitLabDeployment; blocking by default, so a release's record is complete
before the migration counts as Succeeded."""

from __future__ import annotations

from pdm_operator.model import Body
from pdm_operator.reporting.records import PLANNED, Result
from pdm_operator.reporting.sinks import gitlab_deployment
from pdm_operator.reporting.sinks.common import Context, through_gitlab

TYPE = "ReleaseMetadata"
DEFAULTS = {"Regular": (True, True), "Rollback": (True, True)}


def targets(sink: Body, spec: Body, final: str) -> list[tuple[str, str]]:
    return [] if final == PLANNED else [(str(sink["project"]), final)]


def deliver(record: Body, ctx: Context) -> Result:
    return through_gitlab(record, ctx, gitlab_deployment.update_or_create)
