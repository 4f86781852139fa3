"""GitLabDeployment: the migration as a deployment in each project's
``db/<environment>`` environment (``running``, then ``success`` or ``failed``).

Exactly once toward GitLab, and only on what the operator made: before a
deployment is created, the environment's deployments are looked up for one
this record made whose answer was lost (same ref and sha, made through the
API by the token's own user, after the record was planned). One that someone
else made is never updated or counted as delivered: it is named in the
record's ``conflict``.

GitLab's rules this follows (gitlabhq, ``lib/api/deployments.rb``,
``app/models/deployment.rb``, ``app/services/deployments/create_service.rb``):

* ref and sha must exist in the project (400 ``{"ref": ["The branch or tag
  does not exist"]}`` / ``{"sha": ["The commit does not exist"]}``);
* creating a deployment needs ``create_deployment`` and ``create_environment``
  on the project (the environment is created on first use), else 403;
* a create equal (ref, tag, sha, status) to the environment's last successful
  deployment returns that one, whoever made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import gitlab

from pdm_operator import timestamps
from pdm_operator.model import Body
from pdm_operator.reporting.records import PLANNED, Result
from pdm_operator.reporting.sinks.common import (
    OPTS,
    Captured,
    Context,
    explained,
    through_gitlab,
    token_user_id,
)

TYPE = "GitLabDeployment"
#: (required, blocking) by pipeline: recorded, never waited for.
DEFAULTS = {"Regular": (True, False), "Rollback": (True, False)}


def projects(sink: Body) -> list[str]:
    """The sink's projects: ``projects`` then ``targets``, in order."""
    found = [str(p) for p in sink.get("projects") or []]
    for target in sink.get("targets") or []:
        if target["project"] not in found:
            found.append(str(target["project"]))
    return found


def all_projects(spec: Body) -> list[str]:
    """The projects of every GitLabDeployment sink of the migration, in order."""
    return [
        p
        for sink in (spec.get("tracking") or {}).get("sinks") or []
        if sink["type"] == TYPE
        for p in projects(sink)
    ]


def targets(sink: Body, spec: Body, final: str) -> list[tuple[str, str]]:
    """A deployment per project, with the run's status (running, success, failed);
    none for a plan (a deployment starts with the Job)."""
    return [] if final == PLANNED else [(project, final) for project in projects(sink)]


def deliver(record: Body, ctx: Context) -> Result:
    return through_gitlab(record, ctx, update_or_create)


#: How far GitLab's clock may be behind ours when a deployment made by a lost
#: create is matched against the time its record was planned.
CLOCK_ALLOWANCE = timedelta(seconds=30)


@dataclass(frozen=True)
class Found:
    """The lookup: our deployment, and any look-alike made by someone else."""

    ours: Any | None
    conflict: str | None


def _find_deployment(
    gl: gitlab.Gitlab, project: Any, record: Body, ctx: Context, version: Body
) -> Found:
    """Our deployment for this record, made by a create whose answer was lost.

    Ours means: the environment, ref and sha of this record, made through the
    API (``deployable`` is null: GitLab CI's are never ours, and GitLab refuses
    to update them), by the token's own user, and created after the record was
    planned (GitLab's clock may be ``CLOCK_ALLOWANCE`` behind). Anything else
    with the same environment, ref and sha is someone else's and is left alone.
    """
    me = _me(gl)
    planned = record.get("plannedTime") or record.get("firstAttemptTime")
    since = timestamps.parse(planned) - CLOCK_ALLOWANCE if planned else None
    query: dict[str, Any] = {"environment": ctx.gitlab_environment}
    if since is not None:
        # DeploymentsFinder: an updated_* filter needs order_by=updated_at.
        query.update(updated_after=timestamps.rfc3339(since), order_by="updated_at")
    else:
        query.update(order_by="id")
    ours, others = None, []
    for dep in project.deployments.list(sort="desc", per_page=100, get_all=False, **query, **OPTS):
        attrs = dep.attributes
        if attrs.get("sha") != version["sha"] or attrs.get("ref") != version["ref"]:
            continue
        created = attrs.get("created_at")
        mine = (
            not attrs.get("deployable")
            and (attrs.get("user") or {}).get("id") == me
            and (since is None or (created and timestamps.parse(created) >= since))
        )
        if mine and ours is None:
            ours = dep
        elif not mine:
            others.append(_describe(attrs))
    conflict = None
    if others:
        conflict = (
            f"{', '.join(others[:3])} with the same environment, ref and sha "
            "was made by someone else and left alone"
        )
    return Found(ours, conflict)


def _me(gl: gitlab.Gitlab) -> Any:
    return token_user_id(gl)


def _describe(attrs: Body) -> str:
    who = (attrs.get("user") or {}).get("username") or "unknown"
    via = " by GitLab CI" if attrs.get("deployable") else ""
    return f"deployment {attrs.get('id')} ({attrs.get('status')}, @{who}{via})"


#: Statuses GitLab lets a deployment leave through the API: ``running`` only
#: from ``created``; success, failed and canceled from created or running.
OPEN_STATUSES = ("created", "running")


def update_or_create(gl: gitlab.Gitlab, record: Body, ctx: Context, captured: Captured) -> Result:
    """Update-or-create in the record's environment, never sending a status it already has.

    The deployment this record made (``remoteId``), or else the one the lookup
    finds as ours, is updated when GitLab allows the transition; one that
    already has the desired status is taken as delivered (a create whose
    answer was lost); otherwise a new deployment is created. GitLab may answer
    a create with an existing deployment (equal to the environment's last
    successful one): when someone else made that one, the record says so.
    """
    kind, target, desired = record["sink"], record["target"], record["desired"]
    project = gl.projects.get(target, lazy=True)
    version = ctx.version(kind, target)
    environment = ctx.gitlab_environment
    facts = {"ref": str(version["ref"]), "sha": str(version["sha"]), "environment": environment}
    conflict = None
    found: Any | None = None
    if record.get("remoteId"):
        with explained(f"read deployment {record['remoteId']}", target, captured, **facts):
            found = project.deployments.get(record["remoteId"], **OPTS)
    else:
        with explained("look up deployments", target, captured, **facts):
            lookup = _find_deployment(gl, project, record, ctx, version)
        found, conflict = lookup.ours, lookup.conflict
    if found is not None:
        dep_id, current = str(found.attributes["id"]), found.attributes.get("status")
        if current == desired:
            return Result(delivered=True, remote_id=dep_id, conflict=conflict)
        if current in OPEN_STATUSES and desired != "running":
            with explained(f"update deployment {dep_id}", target, captured, **facts):
                project.deployments.update(dep_id, {"status": desired}, **OPTS)
            return Result(delivered=True, remote_id=dep_id, conflict=conflict)
    with explained("create a deployment", target, captured, **facts):
        created = project.deployments.create(
            {
                "environment": environment,
                "sha": version["sha"],
                "ref": version["ref"],
                "tag": bool(version.get("tag", False)),
                "status": desired,
            },
            **OPTS,
        )
    attrs = created.attributes
    if attrs.get("deployable") or (attrs.get("user") or {}).get("id") != _me(gl):
        conflict = (
            f"GitLab answered the create with {_describe(attrs)}, equal to the environment's "
            "last successful deployment; recorded as delivered, it is not ours"
        )
    return Result(delivered=True, remote_id=str(attrs["id"]), conflict=conflict)
