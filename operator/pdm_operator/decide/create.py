"""The lock and the create: the pass that takes the environment's lock creates
the Job (after the pre-flight) or gives the lock back; a dry run instead
renders, checks and diffs."""

from __future__ import annotations

from typing import Any

from pdm_operator import (
    diffing,
    gates,
    images,
    jobs,
    model,
    preflight,
    progress,
    render,
    templates,
)
from pdm_operator.decide.asks import (
    CreateDisruptionBudget,
    CreateJob,
    Decision,
    DefaultedJob,
    DeploymentPods,
    EnvironmentJobs,
    GetDeployment,
    GetJob,
    LogWarning,
    PlanDryRun,
    PutConfigMap,
    Warn,
)
from pdm_operator.decide.preflight_run import final_job, run_preflight
from pdm_operator.decide.progress_log import planned_steps
from pdm_operator.decide.state import (
    Pass,
    Step,
    fail,
    finish,
    invalid_job,
    owned,
    preflight_running,
    release,
    write,
)
from pdm_operator.errors import AlreadyExists, ApiError, Invalid, Transient
from pdm_operator.model import Body
from pdm_operator.selection import Refusal


def create_holding_the_lock(p: Pass, template: templates.Template | None) -> Decision[Step]:
    """The lock stays this migration's only if its Job comes to exist.

    Every way out of a create without a Job (a refusal, a busy environment, a
    name taken, a failed call, an exception) gives the Lease back, so no
    environment waits on a migration that cannot make progress. (A crash
    between taking and giving back is covered by the takeover rule in
    :func:`holder_active`.)
    """
    try:
        return (yield from _create(p, template))
    finally:
        if not p.status.get("jobName") and not preflight_running(p.status):
            yield from release(p)


def environment_jobs(p: Pass) -> Decision[tuple[list[Body], list[str]]]:
    """This migration's Jobs (to adopt), and the unfinished migration Jobs of its
    environment that are not its own: one list of the environment's Jobs.

    The Lease is the queue, the second is the guard: a deleted or edited Lease
    must not let two migrations of an environment run at once. (Jobs in the
    migration's namespace: an environment's migrations live with its GitLab
    installation.)
    """
    own, busy = [], []
    found: list[Body] = yield EnvironmentJobs()
    for j in found:
        labels = j["metadata"].get("labels") or {}
        if labels.get(model.LABEL_COMPONENT) != render.COMPONENT:
            continue  # a pre-flight Job
        if labels.get(model.LABEL_MIGRATION_UID) == p.meta["uid"]:
            own.append(j)
        elif jobs.outcome(j) is None and not (j.get("spec") or {}).get("suspend"):
            busy.append(j["metadata"]["name"])  # suspended by a failure: runs nothing
    return own, sorted(busy)


def _pin(p: Pass) -> Decision[None]:
    """The rollout is complete now: if the image is not pinned yet, the running pods
    may report its digest. Persisted before the Job exists, so every later pass
    renders the same Job name."""
    source = p.spec["image"].get("fromDeployment")
    if not source or p.status["image"] != p.status["sourceImage"]:
        return
    pods: list[Body] = yield DeploymentPods(source["name"])
    pinned = images.pinned(p.status["sourceImage"], source["container"], pods)
    if pinned != p.status["image"]:
        p.status["image"] = pinned
        p.set(model.IMAGE_RESOLVED, True, "FromDeployment", f"pinned by digest: {pinned}")
        yield from write(p, 0)


def _create(p: Pass, template: templates.Template | None) -> Decision[Step]:  # noqa: PLR0911
    yield from _pin(p)
    job = render.render_job(p.migration, p.status["image"], template)
    name = job["metadata"]["name"]
    existing, busy = yield from environment_jobs(p)
    if existing:
        adopted = min(existing, key=lambda j: j["metadata"].get("creationTimestamp", ""))
        made = final_job(p, job)
        if isinstance(made, Refusal):
            return (yield from _unnarrowable(p, made))
        return (yield from _adopt(p, made, adopted))
    if busy:
        p.set(
            model.GATED,
            True,
            "EnvironmentBusy",
            f"Job {', '.join(busy)} of environment {p.environment!r} has not finished "
            f"(its Lease {p.lease} was deleted or changed); one migration at a time",
        )
        return (yield from write(p, p.timing.lock_poll))
    planned = yield from run_preflight(p, job, p.tenure)
    if planned is not None:
        return planned
    narrowed = final_job(p, job)  # what the plan runs: narrowed by a selection
    if isinstance(narrowed, Refusal):
        return (yield from _unnarrowable(p, narrowed))
    if narrowed is not job:
        # Stored before the create: a restart in between finds the answer and
        # its selection, so it adopts the narrowed Job instead of refusing it.
        yield from write(p, 0)
    job, name = narrowed, narrowed["metadata"]["name"]
    try:
        created: Body = yield CreateJob(job)
    except Invalid as e:
        fail(p, "JobInvalid", invalid_job(e, "rejected the Job"))
        return (yield from write(p, None))
    except AlreadyExists:
        found: Body | None = yield GetJob(name)
        if found is not None and owned(found, p.meta["uid"]):
            return (yield from _adopt(p, job, found))
        p.set(
            model.GATED,
            True,
            "JobNameTaken",
            f"a Job named {name!r} from another object still exists; "
            "waiting for it to be garbage-collected",
        )
        return (yield from write(p, p.timing.create_retry))
    except ApiError as e:
        # A quota, a webhook, a throttled or unavailable API server: retried
        # without the lock, so the environment is not held meanwhile.
        p.set(model.GATED, False, "GatesOpen", "all gates are open")
        p.set(
            model.JOB_CREATED, False, "CreateFailed", f"creating Job {name!r} failed: {e.message}"
        )
        return (yield from write(p, p.timing.create_retry))
    return (yield from _started(p, created, "Created"))


def _unnarrowable(p: Pass, refused: Refusal) -> Decision[Step]:
    """A selection that cannot narrow the Job: the migration fails, nothing is created."""
    fail(p, refused.reason, refused.message)
    return (yield from finish(p))


def _adopt(p: Pass, job: Body, found: Body) -> Decision[Step]:
    """Adopt ``found`` as this migration's Job only if it is the Job it would create.

    Adoption is how a create whose answer was lost (a crash, a timeout) is
    found again, by the migration's labels and owner reference. Anyone who
    may create Jobs in the namespace can put those on a Job of their own, and
    the migration would then follow (and report, and record) a Job that is
    not its pre-flighted, approved one. So the Job found must be, field for
    field, what the API server makes of the Job this pass rendered (its
    defaults applied by a dry run, the Job controller's generated labels and
    selector aside); anything else is refused and the migration fails,
    naming the difference, without running anything.
    """
    made: Body = yield DefaultedJob(job)
    differs = jobs.template_differs(made, found)
    if not differs:
        return (yield from _started(p, found, "Adopted"))
    fail(
        p,
        "JobNotOurs",
        f"Job {found['metadata']['name']!r} carries this migration's labels but is not the Job "
        f"it would create (it differs at {', '.join(differs[:5])}): not adopted, nothing run. "
        "Delete it, then `kubectl pdm retry` this migration",
    )
    return (yield from finish(p))


def _started(p: Pass, job: Body, how: str) -> Decision[Step]:
    name = job["metadata"]["name"]
    if jobs.outcome(job) is None and job["metadata"].get("uid"):
        yield from _protect_from_eviction(p, job)
    p.status["jobName"] = name
    # Nothing done of the plan yet, in the write that records the Job (no write of its own).
    p.status.setdefault("progress", progress.start(planned_steps(p)))
    p.status.setdefault("startTime", job["metadata"].get("creationTimestamp") or p.now)
    p.set(model.GATED, False, "GatesOpen", "all gates are open")
    p.set(model.JOB_CREATED, True, how, f"Job {name} runs {p.status['image']}{_found(p)}")
    if how == "Adopted":
        # Requeue at once: the Job may have ended while we were away.
        return (yield from write(p, 0))
    # Just created: its end comes by watch (the controller pokes on a Job's
    # end); a pod that cannot start is looked for by the young Job's poll.
    return (yield from write(p, jobs.next_look(job, p.at, p.timing.running_resync)))


def _found(p: Pass) -> str:
    """What the pre-flight found, for the Created Event (it stands for the answer's too)."""
    pf: Body = p.status.get("preflight") or {}
    if pf.get("phase") != "Succeeded" or "pendingCount" not in pf:
        return ""
    count = int(pf["pendingCount"])
    return f"; the pre-flight found {count} pending (status.pendingMigrations)"


def _protect_from_eviction(p: Pass, job: Body) -> Decision[None]:
    """The Job's PodDisruptionBudget, before this pass records the Job.

    A restart in between adopts the Job and comes here again. Without it the
    migration still runs (the pod also carries the autoscaler's safe-to-evict
    annotation): a refusal is a Warning event, not a stop.
    """
    try:
        yield CreateDisruptionBudget(render.disruption_budget(job))
    except ApiError as e:
        yield Warn(
            "EvictionUnprotected",
            f"no PodDisruptionBudget for Job {job['metadata']['name']}: {e.message}; "
            "a drain may evict the migration pod",
        )


def dry_run(p: Pass, template: templates.Template | None) -> Decision[Step]:
    """Render, check with a server-side dry-run create, diff, and ask Rails what is
    pending (the pre-flight, without the lock: it only reads); never a migration
    Job, never the lock."""
    waiting = yield from run_preflight(
        p, render.render_job(p.migration, p.status["image"], template), None, decide=False
    )
    if waiting is not None:
        return waiting
    try:
        planned: Any = yield PlanDryRun(p.status["image"], template)
    except Invalid as e:
        fail(p, "DryRunRejected", invalid_job(e, "rejected the Job"))
        return (yield from write(p, None))
    except Transient as e:
        p.set(model.JOB_CREATED, False, "DryRunError", e.message)
        return (yield from write(p, p.timing.create_retry))
    except ApiError as e:
        fail(p, "DryRunRejected", f"the API server rejected the Job: {e.message}")
        return (yield from write(p, None))
    diff: diffing.Diff = planned.diff
    text, truncated = diffing.bounded(diff.text)
    status_diff: Body = {"changed": diff.changed, "summary": diff.summary, "text": text}
    if diff.base:
        status_diff["base"] = diff.base
    if truncated:
        name = f"{p.name}-diff"
        status_diff["truncated"] = True
        try:
            yield PutConfigMap(render.diff_configmap(p.migration, name, diff.text))
            status_diff["configMap"] = name
        except AlreadyExists:  # someone else's ConfigMap of that name: never overwritten
            yield LogWarning(f"ConfigMap {name} is not this migration's: the full diff is not kept")
    p.status["diff"] = status_diff
    p.status["jobName"] = planned.job["metadata"]["name"]
    summary = diff.summary
    for warning in (yield from _rollout_warnings(p)):
        # Said before the deploy, when the chart values can still change.
        yield Warn(gates.BYPASS_MISSING, warning)
        summary += f"; warning ({gates.BYPASS_MISSING}): {warning}"
    stale = template and templates.stale(template, p.status["sourceImage"], p.status["image"])
    if stale:
        # The check is of the wiring there is; a Run would wait for the new one.
        summary += f"; a Run would wait (TemplateStale): {stale}"
    pf = p.status.get("preflight")
    if pf and pf.get("phase") == "Succeeded":
        pending = preflight.from_status(p.status.get("pendingMigrations"))
        summary += "; " + preflight.summary(pending)
        if int(pf.get("pendingCount") or 0) > len(pending):
            summary += f" ({pf['pendingCount']} in all)"
    p.set(model.GATED, False, "DryRun", "a dry run waits for no gate")
    p.set(model.SUCCEEDED, True, "DryRunSucceeded", summary)
    p.set(model.FAILED, False, "DryRunSucceeded", summary)
    p.status["completionTime"] = p.now
    return (yield from write(p, None))


def _rollout_warnings(p: Pass) -> Decision[list[str]]:
    """The Deployments this migration waits for whose new pods would wait for it."""
    names = list((p.spec.get("waitFor") or {}).get("rolledOut") or [])
    found: dict[str, Body | None] = {}
    for name in names:
        found[name] = yield GetDeployment(name)
    return gates.bypass_warnings(names, found)
