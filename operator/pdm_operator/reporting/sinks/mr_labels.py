"""MergeRequestLabels: after a successful Regular run, the merge requests
GitLab linked to each project's deployment get the environment's
post-deploy label (GitLab.com's workflow::post-deploy-db-* by default)."""

from __future__ import annotations

import gitlab

from pdm_operator import timestamps
from pdm_operator.model import Body
from pdm_operator.reporting.records import DELIVERED, Result
from pdm_operator.reporting.sinks import gitlab_deployment
from pdm_operator.reporting.sinks.common import OPTS, Captured, Context, explained, through_gitlab

TYPE = "MergeRequestLabels"
DEFAULTS = {"Regular": (True, False), "Rollback": (False, False)}

#: GitLab.com's labels for merge requests whose post-deployment migrations ran,
#: by ``spec.environment`` (release-tools' post-deploy labeler, gitlab-org/release-tools!1884;
#: the label descriptions: "Post-migrations on the merge request have been
#: executed in staging.gitlab.com" / "... in GitLab.com").
DEFAULT_LABELS = {
    "gstg": "workflow::post-deploy-db-staging",
    "gprd": "workflow::post-deploy-db-production",
}


def label(sink: Body, spec: Body) -> str | None:
    """The merge request label: the sink's, else GitLab.com's for the environment."""
    return sink.get("label") or DEFAULT_LABELS.get(str(spec.get("environment")))


def targets(sink: Body, spec: Body, final: str) -> list[tuple[str, str]]:
    """Each project's merge requests, by default the GitLabDeployment projects'."""
    if final != "success":
        return []
    found = [str(p) for p in sink.get("projects") or []] or gitlab_deployment.all_projects(spec)
    return [(project, "labelled") for project in found]


def deliver(record: Body, ctx: Context) -> Result:
    return through_gitlab(record, ctx, label_linked)


#: Default bound on the wait for GitLab to link merge requests to a deployment.
LINK_TIMEOUT = 900.0


def label_linked(gl: gitlab.Gitlab, record: Body, ctx: Context, captured: Captured) -> Result:
    """Label the merge requests GitLab linked to the project's successful deployment.

    GitLab links them asynchronously after the deployment succeeds
    (``Deployments::LinkMergeRequestWorker``), so an empty list right after
    the success means "not yet": the record waits (non-blocking), polling
    with a growing interval, until ``linkTimeoutSeconds`` after the
    deployment was delivered; still none then is its own outcome
    (``NoMergeRequests``), never Delivered.
    """
    target = record["target"]
    deployment = next(
        (
            r
            for r in ctx.records
            if r.get("sink") == gitlab_deployment.TYPE and r.get("target") == target
        ),
        None,
    )
    if deployment is None:
        return Result(error=f"no GitLabDeployment sink for project {target}", permanent=True)
    if deployment.get("state") != DELIVERED or not deployment.get("remoteId"):
        return Result(waiting=True, note=f"waiting for the deployment in {target}")
    sink = ctx.sink(TYPE)
    wanted = label(sink, ctx.spec)
    if not wanted:
        return Result(error="no label for this environment", permanent=True)
    dep_id = deployment["remoteId"]
    project = gl.projects.get(target, lazy=True)
    dep = project.deployments.get(dep_id, lazy=True)
    with explained(f"list the merge requests of deployment {dep_id}", target, captured):
        merge_requests = dep.mergerequests.list(get_all=True, **OPTS)
    if not merge_requests:
        timeout = float(sink.get("linkTimeoutSeconds") or LINK_TIMEOUT)
        delivered = deployment.get("deliveredTime")
        waited = (ctx.now - timestamps.parse(delivered)).total_seconds() if delivered else 0.0
        if waited >= timeout:
            return Result(
                no_merge_requests=True,
                error=(
                    f"GitLab linked no merge requests to deployment {dep_id} in {target} "
                    f"within {timeout:.0f}s of its success: nothing labelled (GitLab links "
                    "the merge requests merged since the environment's previous successful "
                    "deployment; an environment in a folder, like db/gprd, is linked only "
                    "when its tier is production or staging)"
                ),
            )
        return Result(
            waiting=True,
            retry_after=min(60.0, max(BACKOFF_FLOOR, waited / 4)),
            note=f"waiting for GitLab to link merge requests to deployment {dep_id}",
        )
    for mr in merge_requests:
        iid = mr.attributes["iid"]
        if wanted not in (mr.attributes.get("labels") or []):
            with explained(f"label merge request !{iid}", target, captured):
                project.mergerequests.update(iid, {"add_labels": wanted}, **OPTS)
    return Result(delivered=True, remote_id=f"{len(merge_requests)} merge request(s)")


#: The first polls for linked merge requests come this often.
BACKOFF_FLOOR = 2.0
