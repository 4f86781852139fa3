"""Dry runs: the Job a migration would create, checked by the API server and
diffed against the last successful run of its environment.

One implementation for the operator (``spec.mode: DryRun``) and the CLI
(``pdm-operator diff``). The check is a server-side dry-run *create* under
the Job's own name (``dryRun=All``, the operator's field manager), so
defaulting and the whole admission chain (Pod Security, quotas, webhooks)
apply; a dry-run *update* of an existing Job would fail on the immutable
template instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdm_operator import conditions, diffing, model, render, templates
from pdm_operator.kube import Kube
from pdm_operator.model import Body


@dataclass(frozen=True)
class Plan:
    job: Body  # as rendered
    checked: Body  # as the API server would store it
    diff: diffing.Diff


def previous_run(
    kube: Kube, namespace: str, environment: str, exclude: str | None
) -> tuple[Body, Body] | None:
    """The last Succeeded Run-mode migration of ``environment`` and its Job.

    Looks in ``namespace`` (an environment's migrations live with its GitLab
    installation). When the Job is gone (``ttlSecondsAfterFinished``), it is
    rendered again from the migration and checked by a dry-run, so both sides
    of the diff carry the server's defaults; a run whose pod was copied from
    ``spec.podTemplateFrom`` cannot be rebuilt that way (its source has moved
    on), so the next older one with a Job is the base instead.
    """
    candidates = []
    for other in kube.list_migrations(namespace):
        spec, status = other.get("spec") or {}, other.get("status") or {}
        if other["metadata"].get("name") == exclude or spec.get("environment") != environment:
            continue
        if spec.get("mode", "Run") != "Run" or not status.get("jobName"):
            continue
        if not conditions.is_true(status.get("conditions"), model.SUCCEEDED):
            continue
        candidates.append((status.get("completionTime") or "", other))
    for _, other in sorted(candidates, key=lambda c: c[0], reverse=True):
        job = kube.get_job(namespace, other["status"]["jobName"])
        if job is None and other["spec"].get("podTemplateFrom"):
            continue
        if job is None:
            job = kube.create_job(
                namespace, render.render_job(other, other["status"]["image"]), dry_run=True
            )
        return other, job
    return None


def plan(
    kube: Kube, migration: Body, image: str, template: templates.Template | None = None
) -> Plan:
    """Render, dry-run create, diff. Raises kube.ApiError when the server rejects the Job."""
    namespace = migration["metadata"]["namespace"]
    job = render.render_job(migration, image, template)
    checked = kube.create_job(namespace, job, dry_run=True)
    prev = previous_run(
        kube, namespace, migration["spec"]["environment"], migration["metadata"]["name"]
    )
    if prev is None:
        diff = diffing.diff_jobs(None, None, checked, migration["metadata"]["name"])
    else:
        other, prev_job = prev
        diff = diffing.diff_jobs(
            prev_job,
            other["metadata"]["name"],
            checked,
            migration["metadata"]["name"],
            base=f"{namespace}/{prev_job['metadata']['name']}",
        )
    return Plan(job=job, checked=checked, diff=diff)
