"""What one reconcile pass decides: the new status, and what to read and write for it.

The decision is written as a coroutine that never touches the API. It
*asks* (``yield GetJob(name)``, ``yield AcquireLock()``, ``yield
CreateJob(job)``) and is *answered*: by ``reconcile.Reconciler`` against the
API server, or by a table of facts in the unit tests
(tests/unit/test_decide.py). An answer that is an error (``errors.ApiError``)
is raised at the ``yield``, so the decision handles a refused create where it
asked for it. :func:`drive` runs a decision against any answerer.

Why a coroutine and not one value gathered up front: what a pass needs
depends on what it found so far, and some of it is a write. A migration
waiting behind fifty others of its environment must not list pods or Jobs
it will not look at, and the environment's Lease is taken before the
environment's Jobs are listed and the pre-flight is asked, because their
answers only count under it. So the pass is one decision over the facts it
asked for, in the order it asked, with every effect in the open.

Passes are level-based: a pass started at any moment, after a crash at any
point of an earlier one, reaches the same end. The invariants that make that
true:

* ``status.image`` is written before a Job is created, so the Job name (a hash
  of the rendered Job) is the same on every later pass;
* before creating, the pass looks for a Job carrying the migration's uid label
  and adopts it; a create that finds the name taken (409) adopts it too;
* once ``status.jobName`` is set, a missing Job is a deleted Job: the
  migration fails (JobDeleted) and nothing is re-created;
* the pass that takes the environment's lock creates the Job or gives the
  lock back, whatever happens (``create.create_holding_the_lock``).
"""

from __future__ import annotations

from datetime import datetime

from pdm_operator import (
    gates,
    model,
    render,
    templates,
    timestamps,
    when,
)
from pdm_operator.decide.after_job import await_blocking_reports, follow
from pdm_operator.decide.asks import Decision, WriteStatus
from pdm_operator.decide.before_job import (
    environment_policy,
    first_hold,
    gate_poll,
    insecure,
    outside_policy,
    rejected,
    resolve,
    resolve_template,
    unrecordable,
)
from pdm_operator.decide.create import create_holding_the_lock, dry_run
from pdm_operator.decide.preflight_run import abandon_preflight
from pdm_operator.decide.state import (
    Pass,
    Setup,
    Step,
    fail,
    finish,
    nothing_pending,
    nothing_pending_message,
    preflight_running,
    release,
    write,
)
from pdm_operator.model import Body

#: Seconds a lock holder without a Job is still taken to be creating it.
CREATE_GRACE = 60.0


def reconcile(
    migration: Body, now: datetime, setup: Setup, *, handed: bool = False
) -> Decision[Step]:
    """One pass over ``migration``: its Job followed, or its gates, lock and create.

    ``handed``: the holder before it named this migration in the environment's
    Lease as it ended (``locks.EnvironmentLocks.release``). A pass that does
    not go on to hold the lock (a gate closed since its last pass, the image
    or template went away) gives it back at once, so the next in line does not
    wait :data:`CREATE_GRACE` to take it over.
    """
    p = Pass(migration, now, setup)
    try:
        return (yield from _reconcile(p))
    finally:
        holding = p.tenure or p.status.get("jobName") or preflight_running(p.status)
        if handed and not holding:
            yield from release(p)


def _reconcile(p: Pass) -> Decision[Step]:  # noqa: PLR0911
    if model.is_finished(p.stored):
        return (yield from _observe_generation(p))
    p.status.pop("windowOpens", None)  # set again below while a window holds
    dry = p.spec.get("mode") == "DryRun"
    if p.status.get("jobName") and not dry:
        return (yield from follow(p))
    if nothing_pending(p.status):
        # Decided by an earlier pass; only its blocking reports may remain.
        return (yield from await_blocking_reports(p, nothing_pending_message(p)))
    policy = yield from environment_policy(p)
    if isinstance(policy, gates.Hold):
        return (yield from _hold(p, policy))
    if not p.status.get("image") and not (yield from resolve(p)):
        return (yield from write(p, p.timing.image_retry))
    template = yield from resolve_template(p)
    if isinstance(template, templates.Missing):
        yield from abandon_preflight(p, f"{template.reason}: {template.message}")
        return (yield from write(p, p.timing.image_retry))
    # Rendered once per pass for the checks; the create renders again after
    # pinning the image by digest.
    planned = render.render_job(p.migration, p.status["image"], template)
    if insecure(p, planned) or (not dry and unrecordable(p)):
        return (yield from finish(p))
    hold = outside_policy(p, policy, template, planned)
    if hold is not None:
        return (yield from _hold(p, hold))
    if dry:
        return (yield from dry_run(p, template))
    hold = yield from first_hold(p, policy, template, planned)
    if hold is not None:
        return (yield from _gated(p, hold, planned))
    return (yield from create_holding_the_lock(p, template))


def _gated(p: Pass, hold: gates.Hold, planned: Body) -> Decision[Step]:
    """A gate holds: the migration fails (a hold that never lifts), or waits and says why."""
    if hold.fatal:
        fail(p, hold.reason, hold.message)
        return (yield from finish(p))
    if hold.reason != "TemplateStale" and (yield from rejected(p, planned)):
        return (yield from finish(p))
    yield from abandon_preflight(p, f"{hold.reason}: {hold.message}")
    if hold.reason == when.OUTSIDE_WINDOW and hold.opens is not None:
        p.status["windowOpens"] = timestamps.rfc3339(hold.opens)
    p.set(model.GATED, True, hold.reason, hold.message)
    return (yield from write(p, gate_poll(p, hold)))


def _hold(p: Pass, hold: gates.Hold) -> Decision[Step]:
    """Wait on an environment's rule: no lock, no Job, the reason in ``Gated``."""
    yield from abandon_preflight(p, f"{hold.reason}: {hold.message}")
    p.set(model.GATED, True, hold.reason, hold.message)
    return (yield from write(p, p.timing.policy_poll))


def record_error(
    migration: Body, now: datetime, setup: Setup, error: BaseException
) -> Decision[None]:
    """A pass ended in an unexpected error: say so in the status and an event.

    The worker retries with back-off; this makes the retry loop visible
    (``Stalled=True``, reason ReconcileError) instead of silent. A later pass
    that succeeds sets it back to False.
    """
    p = Pass(migration, now, setup)
    if model.is_finished(p.stored):
        return
    detail = str(error)
    p.set(
        model.STALLED,
        True,
        "ReconcileError",
        f"{type(error).__name__}: {detail[:512]}; retrying with back-off",
    )
    yield from write(p, None)


def _observe_generation(p: Pass) -> Decision[Step]:
    """A finished migration whose spec changed (suspend, an approval): nothing to do,
    but ``observedGeneration`` catches up, so kstatus does not see it in progress."""
    if int(p.stored.get("observedGeneration") or 0) != p.generation:
        conds = list(p.stored.get("conditions") or [])
        yield WriteStatus({"observedGeneration": p.generation}, p.stored, conds)
        p.stored["observedGeneration"] = p.generation
    return Step(p.stored, None)


def holder_active(
    holder_uid: str, other: Body | None, acquired_at: datetime | None, now: datetime
) -> bool:
    """Whether the migration holding an environment's Lease still needs it.

    ``other`` is the holder as read now (None: gone). A migration whose Job
    has ended no longer needs the environment, even while it waits for
    blocking reports. One without a Job yet creates it in the pass that took
    the lock, or gives the lock back: one that has done neither within
    :data:`CREATE_GRACE` crashed in between, and its next pass takes the lock
    again if it can.
    """
    if other is None or other["metadata"].get("uid") != holder_uid:
        return False
    status = other.get("status") or {}
    if model.is_finished(status) or status.get("jobOutcome"):
        return False
    if status.get("jobName") or preflight_running(status):
        return True
    if acquired_at is None:
        return False
    return (now - acquired_at).total_seconds() < CREATE_GRACE
