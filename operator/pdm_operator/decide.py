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
  lock back, whatever happens (``_create_holding_the_lock``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pdm_operator import (
    approval,
    conditions,
    diffing,
    environments,
    gates,
    history,
    images,
    jobs,
    lines,
    model,
    preflight,
    render,
    security,
    templates,
    timestamps,
)
from pdm_operator.conditions import Condition
from pdm_operator.errors import AlreadyExists, ApiError, Forbidden, Invalid, Transient
from pdm_operator.model import Body
from pdm_operator.reporting import outbox

T = TypeVar("T")

#: Migrations read at most when looking for a cycle in ``waitFor.migrations``.
MAX_DEPENDENCY_WALK = 64

#: Seconds a lock holder without a Job is still taken to be creating it.
CREATE_GRACE = 60.0

NOTHING_PENDING = preflight.NOTHING_PENDING
nothing_pending = preflight.nothing_pending


@dataclass(frozen=True)
class Timing:
    """How soon a pass runs again when nothing pokes it (seconds)."""

    image_retry: float = 5.0
    gate_poll: float = 2.0
    lock_poll: float = 5.0
    #: Waiting behind others for the environment lock: the holder's end pokes
    #: the first in line, so the rest only poll as a safety net.
    queued_poll: float = 60.0
    create_retry: float = 10.0
    #: Waiting on the environment's declaration or policy: an admin's edit
    #: wakes nobody, so this is how soon it is seen.
    policy_poll: float = 10.0
    running_resync: float = 30.0


@dataclass(frozen=True)
class Setup:
    """What a decision needs to know about the operator, not the migration."""

    #: Where the environments' Leases and history ConfigMaps live.
    lock_namespace: str
    timing: Timing = field(default_factory=Timing)


@dataclass
class Step:
    """What a pass leaves behind: the status now stored, and when to look again."""

    status: Body
    requeue: float | None  # None: the migration has ended, nothing more to do


# --- what a decision asks ------------------------------------------------------
# Everything is in the migration's namespace unless it says otherwise; the
# answer's type is in each docstring. An ApiError is raised at the yield.


class Ask:
    """Something a decision needs from the cluster: a fact to read, or an effect."""


@dataclass(frozen=True)
class ResolveImage(Ask):
    """``spec.image`` → ``images.Resolved | images.Unresolved``."""


@dataclass(frozen=True)
class FindTemplate(Ask):
    """``spec.podTemplateFrom`` → ``templates.Template | templates.Missing | None``."""


@dataclass(frozen=True)
class GetDeployment(Ask):
    """→ the Deployment, or None."""

    name: str


@dataclass(frozen=True)
class DeploymentPods(Ask):
    """The pods of a Deployment (by its selector), for digest pinning → ``list[Body]``."""

    name: str


@dataclass(frozen=True)
class GetMigration(Ask):
    """Another PostDeployMigration → the object, or None."""

    name: str


@dataclass(frozen=True)
class GetEnvironment(Ask):
    """The migration's PostDeployEnvironment (cluster-scoped) → ``Body | None``."""


@dataclass(frozen=True)
class GetJob(Ask):
    """→ the Job, or None."""

    name: str


@dataclass(frozen=True)
class EnvironmentJobs(Ask):
    """The Jobs the operator made for the migration's environment → ``list[Body]``."""


@dataclass(frozen=True)
class JobPods(Ask):
    """The pods of Job ``job`` whose controller is the Job of ``uid`` → ``list[Body]``.

    Never by name alone: anyone who may create Jobs in the namespace can make
    pods that carry a Job's name label (a manual selector), and a pass reads
    answers (the pre-flight's table, a failure's log) from these pods.
    """

    job: str
    uid: str


@dataclass(frozen=True)
class JobEvents(Ask):
    """The Events of a Job (why its pods are not created) → ``list[Body]``."""

    job: str
    uid: str


@dataclass(frozen=True)
class LogTail(Ask):
    """The last ``lines`` of a pod's container log (the migration container
    unless named) → ``str`` ("" if unreadable)."""

    pod: str
    container: str = model.MIGRATION_CONTAINER
    lines: int = 20
    #: The container's previous run (``kubectl logs --previous``).
    previous: bool = False


@dataclass(frozen=True)
class PodLog(Ask):
    """A pod's whole migration container log → ``str``; ``ValueError`` past ``limit`` bytes."""

    pod: str
    limit: int


@dataclass(frozen=True)
class ReadHistory(Ask):
    """The environment's history ConfigMap (in the lock namespace) → the object, or None."""

    name: str


@dataclass(frozen=True)
class ValidateJob(Ask):
    """A server-side dry-run create of ``job`` → None when accepted just now, or
    the name of a Job of identical spec the API server accepted a moment ago
    (in its dry run or its real create)."""

    job: Body = field(compare=False)


@dataclass(frozen=True)
class DefaultedJob(Ask):
    """``job`` as the API server would store it (a server-side dry-run create
    under another name, so the existing one does not answer 409) → ``Body``."""

    job: Body = field(compare=False)


@dataclass(frozen=True)
class PlanDryRun(Ask):
    """Render, check and diff for DryRun mode → ``dryrun.Plan``."""

    image: str
    template: templates.Template | None = field(compare=False)


@dataclass(frozen=True)
class AcquireLock(Ask):
    """Take the environment's Lease → its tenure (``str``), or None: another holds it."""


@dataclass(frozen=True)
class ReleaseLock(Ask):
    """Give the environment's Lease back if this migration holds it → whether it did."""


@dataclass(frozen=True)
class WriteStatus(Ask):
    """Merge-patch the status, guarded by the resourceVersion the pass read → the
    migration as written, or None if it is gone. ``status`` is the whole new one,
    ``before`` the conditions stored (for the transitions' log lines and Events).
    """

    patch: Body = field(compare=False)
    status: Body = field(compare=False)
    before: list[Body] = field(compare=False)


@dataclass(frozen=True)
class CreateJob(Ask):
    """→ the Job as created."""

    job: Body = field(compare=False)


@dataclass(frozen=True)
class SuspendJob(Ask):
    """Suspend a Job so that no pod of it starts again → None."""

    name: str


@dataclass(frozen=True)
class CreateDisruptionBudget(Ask):
    """→ None."""

    budget: Body = field(compare=False)


@dataclass(frozen=True)
class Warn(Ask):
    """A Warning Event on the migration, and a log line → None."""

    reason: str
    message: str


@dataclass(frozen=True)
class LogWarning(Ask):
    """A log line only → None."""

    message: str


@dataclass(frozen=True)
class MergeHistory(Ask):
    """Merge ``data`` into the environment's history ConfigMap (``base`` if it is
    new; a None value deletes a key) → the ConfigMap as written."""

    base: Body = field(compare=False)
    data: dict[str, str | None] = field(compare=False)


@dataclass(frozen=True)
class ShowFloor(Ask):
    """The environment's rollback floor for the metric → None."""

    version: str | None


#: ``status.rollback.reason`` and the Warning's reason: the history refused the run's record.
HISTORY_UNWRITABLE = "HistoryUnwritable"


@dataclass(frozen=True)
class CountHistoryFailure(Ask):
    """The API server refused a history write for good: count it for the metric → None."""


@dataclass(frozen=True)
class PutConfigMap(Ask):
    """Create or replace a ConfigMap → None."""

    configmap: Body = field(compare=False)


Decision = Generator[Ask, Any, T]
Answerer = Callable[[Ask], Any]


def drive(decision: Decision[T], answer: Answerer) -> T:
    """Run ``decision`` to its end, answering each ask with ``answer``.

    What ``answer`` raises is raised inside the decision, at its ask; what the
    decision does not catch comes out of here.
    """
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            ask = decision.send(reply) if error is None else decision.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            reply, error = answer(ask), None
        except Exception as e:  # noqa: BLE001 - handed to the decision, which decides
            reply, error = None, e


class Pass:
    """The state of one pass: the migration, its status as stored and as it will be."""

    def __init__(self, migration: Body, now: datetime, setup: Setup) -> None:
        self.migration = migration
        self.meta = migration["metadata"]
        self.spec = migration["spec"]
        self.setup = setup
        self.timing = setup.timing
        self.stored: Body = copy.deepcopy(migration.get("status") or {})
        self.status: Body = copy.deepcopy(self.stored)
        self.generation = int(self.meta.get("generation") or 1)
        self.at = now
        self.now = timestamps.rfc3339(now)
        self.stalled_before = conditions.is_true(self.stored.get("conditions"), model.STALLED)
        #: Whether this pass itself found the migration stuck (Stalled=True).
        self.stalled_now = False
        #: The environment lock's tenure, once this pass holds the lock.
        self.tenure: str | None = None
        #: This pass gave the lock back already (asking again would only read the Lease).
        self.released = False

    @property
    def namespace(self) -> str:
        return str(self.meta["namespace"])

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def environment(self) -> str:
        return str(self.spec["environment"])

    @property
    def conditions(self) -> list[Body]:
        return list(self.status.get("conditions") or [])

    @property
    def lease(self) -> str:
        """The environment's Lease, as messages name it."""
        return f"{self.setup.lock_namespace}/{lines.lease_name(self.environment)}"

    def set(self, ctype: str, status: bool, reason: str, message: str = "") -> None:
        if ctype == model.STALLED and status:
            self.stalled_now = True
        self.apply_condition(Condition(ctype, "True" if status else "False", reason, message))

    def set_unknown(self, ctype: str, reason: str, message: str = "") -> None:
        self.apply_condition(Condition(ctype, "Unknown", reason, message))

    def apply_condition(self, cond: Condition) -> None:
        self.status["conditions"] = conditions.apply(
            self.conditions, cond, self.generation, self.now
        )


# --- the pass ------------------------------------------------------------------
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
            yield from _release(p)


def _reconcile(p: Pass) -> Decision[Step]:  # noqa: PLR0911
    if model.is_finished(p.stored):
        return (yield from _observe_generation(p))
    dry = p.spec.get("mode") == "DryRun"
    if p.status.get("jobName") and not dry:
        return (yield from _follow(p))
    if nothing_pending(p.status):
        # Decided by an earlier pass; only its blocking reports may remain.
        return (yield from _await_blocking_reports(p, _nothing_pending_message(p)))
    policy = yield from _environment(p)
    if isinstance(policy, gates.Hold):
        return (yield from _hold(p, policy))
    if not p.status.get("image") and not (yield from _resolve(p)):
        return (yield from _write(p, p.timing.image_retry))
    template = yield from _template(p)
    if isinstance(template, templates.Missing):
        yield from _abandon_preflight(p, f"{template.reason}: {template.message}")
        return (yield from _write(p, p.timing.image_retry))
    # Rendered once per pass for the checks; the create renders again after
    # pinning the image by digest.
    planned = render.render_job(p.migration, p.status["image"], template)
    if _insecure(p, planned) or (not dry and _unrecordable(p)):
        return (yield from _finish(p))
    hold = _outside_policy(p, policy, template, planned)
    if hold is not None:
        return (yield from _hold(p, hold))
    if dry:
        return (yield from _dry_run(p, template))
    hold = yield from _gates(p, template, planned)
    if hold is not None:
        if hold.fatal:
            _fail(p, hold.reason, hold.message)
            return (yield from _finish(p))
        if hold.reason != "TemplateStale" and (yield from _rejected(p, planned)):
            return (yield from _finish(p))
        yield from _abandon_preflight(p, f"{hold.reason}: {hold.message}")
        p.set(model.GATED, True, hold.reason, hold.message)
        return (yield from _write(p, _gate_poll(p, hold)))
    return (yield from _create_holding_the_lock(p, template))


def _environment(p: Pass) -> Decision[environments.Policy | gates.Hold]:
    """The declared environment's policy, or the hold that says it does not admit ``p``.

    Asked before anything else of a migration without a Job (it costs one
    read), so a migration of an undeclared environment, or of a namespace the
    environment does not list, never resolves, renders or queues for the
    lock. An environment that requires approval makes the spec require it.
    """
    body: Body | None = yield GetEnvironment()
    found = environments.admits(p.environment, body, p.namespace)
    if isinstance(found, gates.Hold):
        return found
    p.spec = environments.effective_spec(found, p.spec)
    return environments.approval_hold(found, p.spec) or found


def _outside_policy(
    p: Pass, policy: environments.Policy, template: templates.Template | None, planned: Body
) -> gates.Hold | None:
    """The rendered Job (and the pre-flight's deadline) inside what the environment allows."""
    if template is not None:
        source: Body = p.spec["podTemplateFrom"].get("migrationsJob") or {}
        hold = environments.template_hold(
            policy,
            template.kind,
            template.name,
            template.metadata.get("labels") or {},
            source.get("release"),
        )
        if hold is not None:
            return hold
    hold = environments.job_hold(policy, planned)
    cfg: Body = p.spec.get("preflight") or {}
    if hold is None and p.spec.get("mode", "Run") == "Run" and cfg.get("enabled", True):
        deadline = int(cfg.get("activeDeadlineSeconds") or preflight.DEFAULT_DEADLINE)
        hold = environments.job_hold(
            policy, {"spec": {"activeDeadlineSeconds": deadline}}, "pre-flight Job"
        )
    return hold


def _hold(p: Pass, hold: gates.Hold) -> Decision[Step]:
    """Wait on an environment's rule: no lock, no Job, the reason in ``Gated``."""
    yield from _abandon_preflight(p, f"{hold.reason}: {hold.message}")
    p.set(model.GATED, True, hold.reason, hold.message)
    return (yield from _write(p, p.timing.policy_poll))


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
    yield from _write(p, None)


def _observe_generation(p: Pass) -> Decision[Step]:
    """A finished migration whose spec changed (suspend, an approval): nothing to do,
    but ``observedGeneration`` catches up, so kstatus does not see it in progress."""
    if int(p.stored.get("observedGeneration") or 0) != p.generation:
        conds = list(p.stored.get("conditions") or [])
        yield WriteStatus({"observedGeneration": p.generation}, p.stored, conds)
        p.stored["observedGeneration"] = p.generation
    return Step(p.stored, None)


# --- image and pod template ---------------------------------------------------------
def _resolve(p: Pass) -> Decision[bool]:
    image_spec = p.spec["image"]
    result: images.Resolved | images.Unresolved = yield ResolveImage()
    if isinstance(result, images.Unresolved):
        p.set(model.IMAGE_RESOLVED, False, result.reason, result.message)
        return False
    p.status["image"], p.status["sourceImage"] = result.image, result.source
    if image_spec.get("reference"):
        p.set(model.IMAGE_RESOLVED, True, "FromReference", f"using {result.image}")
        return True
    source = image_spec["fromDeployment"]
    p.set(
        model.IMAGE_RESOLVED,
        True,
        "FromDeployment",
        f"Deployment {source['name']!r} container {source['container']!r} runs {result.image}",
    )
    return True


def _template(p: Pass) -> Decision[templates.Template | templates.Missing | None]:
    """``spec.podTemplateFrom``, read again on every pass until the Job exists.

    The chart's *current* migrations Job is the one to copy: a ``helm
    upgrade`` while this migration waits replaces it, and the stale gate then
    decides whether the new one belongs to the deployed version.
    """
    if not p.spec.get("podTemplateFrom"):
        return None
    found: templates.Template | templates.Missing | None = yield FindTemplate()
    if found is None:
        return None
    if isinstance(found, templates.Missing):
        p.set(model.TEMPLATE_RESOLVED, False, found.reason, found.message)
        return found
    p.status["podTemplate"] = found.status()
    p.set(
        model.TEMPLATE_RESOLVED,
        True,
        f"From{found.kind}",
        f"pod template copied from {found.kind} {found.name!r} (uid {found.uid})",
    )
    return found


def _insecure(p: Pass, job: Body) -> bool:
    """Refuse a Job below the restricted Pod Security level, whatever the namespace enforces.

    Checked on every pass before the Job exists (the template is re-read), in
    DryRun mode too, so the dry run says what the run would say.
    """
    found = security.violations(job)
    if not found:
        return False
    shown = "; ".join(found[:6]) + (f"; and {len(found) - 6} more" if len(found) > 6 else "")
    _fail(
        p,
        "PodSecurityViolation",
        f"the migration Job would not meet the restricted Pod Security Standard: {shown}",
    )
    return True


def _unrecordable(p: Pass) -> bool:
    """Refuse a run that would be recorded at no GitLab version (``history.unreadable_version``).

    Its record would make every rollback answer of the environment unknown
    until mended by hand; ``spec.gitlabVersion`` is immutable, so it fails.
    """
    why = history.unreadable_version(
        p.migration, str(p.status.get("sourceImage") or p.status["image"])
    )
    if why is None:
        return False
    _fail(p, "UnknownVersion", why)
    return True


# --- gates ----------------------------------------------------------------------
def _rejected(p: Pass, job: Body) -> Decision[bool]:
    """Fail fast: while a gate holds, check the Job with a server-side dry-run create.

    A spec the API server would refuse then fails in seconds with its reason,
    not after the rollout wait; a migration whose gates are all open skips
    this, its real create is the same check. Only a refusal of the Job itself
    (400, 422) is final; anything else (quota, throttling, an API server
    hiccup) is left for the real create to meet. The answerer may answer
    from a dry run of an identical Job moments ago (the waiters of one
    deployment render the same Job but for its name), or from the real create
    of such a Job: the check is a head start, the real create still decides.
    """
    if conditions.is_true(p.conditions, model.JOB_VALIDATED):
        return False
    name = job["metadata"]["name"]
    try:
        same_as: str | None = yield ValidateJob(job)
    except Invalid as e:
        _fail(p, "JobInvalid", invalid_job(e, "rejects the Job (server-side dry run)"))
        return True
    except AlreadyExists:
        # A Job exists under the name: a dry run cannot tell (the real create
        # meets it, and adopts it only if it is this migration's own).
        same_as = None
    except ApiError as e:
        p.set(
            model.JOB_VALIDATED,
            False,
            "ValidationPending",
            f"could not check Job {name!r} yet: {e.message}",
        )
        return False
    if same_as is None:
        reason, how = "DryRunAccepted", "server-side dry run"
    else:
        reason, how = "IdenticalJobAccepted", f"it accepted identical Job {same_as} moments ago"
    p.set(
        model.JOB_VALIDATED,
        True,
        reason,
        f"the API server accepts the Job ({how}); it is created when every gate is open",
    )
    return False


def _gates(
    p: Pass, template: templates.Template | None, planned: Body
) -> Decision[gates.Hold | None]:
    """The gates in order; the first that holds is the answer. The last is the lock."""
    hold = gates.suspended(p.spec) or (yield from _dependencies(p))
    if hold:
        return hold
    wait_for = p.spec.get("waitFor") or {}
    source = (p.spec["image"].get("fromDeployment") or {}).get("name")
    for name in list(wait_for.get("rolledOut") or []):
        expect = None
        if name == source:
            expect = (p.spec["image"]["fromDeployment"]["container"], p.status["sourceImage"])
        deployment: Body | None = yield GetDeployment(name)
        hold = gates.rollout(name, deployment, expect)
        if hold and hold.reason in ("RolloutPending", "RolloutStuck") and deployment:
            held = yield from _held_in_dependencies(p, name, deployment)
            if held is not None and (
                hold.reason == "RolloutPending" or held.reason == gates.ROLLOUT_WAITS_FOR_MIGRATIONS
            ):
                hold = held
            elif held is not None:
                # Stuck stays stuck (a Warning, the deadline's words); the pods say why.
                hold = gates.Hold(hold.reason, f"{hold.message}; {held.message}")
        if hold:
            return hold
    if template is not None:
        stale = templates.stale(template, p.status["sourceImage"], p.status["image"])
        if stale:
            return gates.Hold("TemplateStale", stale)
    hold = approval.unapproved_shown_plan(p.spec, p.status, render.hash_of(planned), p.name)
    if hold is not None:
        # The plan shown is not approved yet: no lock, no new pre-flight.
        return hold
    tenure: str | None = yield AcquireLock()
    if tenure is None:
        # The same message whoever holds the lock: a waiter's status is not
        # rewritten each time the lock changes hands in a long line.
        return gates.Hold(
            lines.LOCKED,
            f"another PostDeployMigration holds environment {p.environment!r} "
            f"(Lease {p.lease}); one migration at a time",
        )
    p.tenure = tenure
    return None


def _gate_poll(p: Pass, hold: gates.Hold) -> float:
    """When a held migration looks again: the lock's poll for the lock; a rollout
    held in the chart's dependencies check (pods listed, a log read each look)
    only ends with a chart upgrade, so the environment's slower poll."""
    if hold.reason == lines.LOCKED:
        return p.timing.lock_poll
    if hold.reason == gates.ROLLOUT_WAITS_FOR_MIGRATIONS or gates.DEPENDENCIES in hold.message:
        return p.timing.policy_poll
    return p.timing.gate_poll


def _failure_log(failed: jobs.PodFailure) -> Decision[str]:
    """A failed pod's log, far enough back to name the failing migration above
    Rake's backtrace, of the run that failed (the previous one when the container
    restarted since); the kubelet's termination message when it cannot be read
    or was cut (a cut log must not name the wrong migration)."""
    log: str = (
        yield LogTail(
            failed.pod,
            model.MIGRATION_CONTAINER,
            jobs.FAILURE_LOG_LINES,
            previous=failed.previous,
        )
    ) or ""
    return log or failed.message


def _held_in_dependencies(p: Pass, name: str, deployment: Body) -> Decision[gates.Hold | None]:
    """A rollout whose new pods wait in the chart's ``dependencies`` init container:
    why, from the pods' state and the check's own lines (the first held pod's
    log: one read per pass while a rollout is held, none otherwise)."""
    held = gates.held_in_dependencies((yield DeploymentPods(name)), p.at)
    if not held:
        return None
    first = held[0]["metadata"]["name"]
    just_restarted = gates.just_restarted(held[0], p.at)
    # Just restarted, its current run has printed no whole check yet: its last run's lines.
    log_tail = (yield LogTail(first, gates.DEPENDENCIES, previous=just_restarted)) or ""
    return gates.rollout_waits(name, deployment, held, {first: log_tail})


def _dependencies(p: Pass) -> Decision[gates.Hold | None]:
    """``waitFor.migrations``: all Succeeded, none Failed, and no cycle through this one."""
    names = list((p.spec.get("waitFor") or {}).get("migrations") or [])
    if not names:
        return None
    found: dict[str, Body | None] = {}
    for n in names:
        found[n] = yield GetMigration(n)
    hold = gates.dependencies(names, found)
    if hold is None:
        return hold
    # A dependency that failed because of a cycle through this migration still
    # counts as waiting: whichever of the cycle is looked at first, each of
    # them names the cycle.
    loop = gates.cycle(p.name, (yield from _waits_for(p, found)))
    if loop is None and hold.fatal:
        return hold
    if loop:
        return gates.Hold(
            "DependencyCycle",
            "spec.waitFor.migrations forms a cycle: "
            + " -> ".join(loop)
            + "; none of them can ever run. Create them again without the cycle",
            fatal=True,
        )
    return hold


def _waits_for(p: Pass, found: dict[str, Body | None]) -> Decision[dict[str, list[str]]]:
    """The waits-for graph of the unfinished migrations reachable from ``p`` (bounded)."""
    graph: dict[str, list[str]] = {p.name: list(p.spec["waitFor"]["migrations"])}
    known: dict[str, Body | None] = dict(found)
    frontier = [n for n in graph[p.name] if n != p.name]
    while frontier and len(known) < MAX_DEPENDENCY_WALK:
        name = frontier.pop()
        if name in graph:
            continue
        other = known[name] if name in known else (yield GetMigration(name))
        known[name] = other
        status = (other or {}).get("status") or {}
        if other is None or (model.is_finished(status) and not _in_a_cycle(status)):
            continue
        graph[name] = list(((other.get("spec") or {}).get("waitFor") or {}).get("migrations") or [])
        frontier += [n for n in graph[name] if n not in graph]
    return graph


# --- the lock and the create -------------------------------------------------------
def _create_holding_the_lock(p: Pass, template: templates.Template | None) -> Decision[Step]:
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
            yield from _release(p)


def _environment_jobs(p: Pass) -> Decision[tuple[list[Body], list[str]]]:
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
        yield from _write(p, 0)


def _create(p: Pass, template: templates.Template | None) -> Decision[Step]:  # noqa: PLR0911
    yield from _pin(p)
    job = render.render_job(p.migration, p.status["image"], template)
    name = job["metadata"]["name"]
    existing, busy = yield from _environment_jobs(p)
    if existing:
        adopted = min(existing, key=lambda j: j["metadata"].get("creationTimestamp", ""))
        return (yield from _adopt(p, job, adopted))
    if busy:
        p.set(
            model.GATED,
            True,
            "EnvironmentBusy",
            f"Job {', '.join(busy)} of environment {p.environment!r} has not finished "
            f"(its Lease {p.lease} was deleted or changed); one migration at a time",
        )
        return (yield from _write(p, p.timing.lock_poll))
    planned = yield from _preflight(p, job, p.tenure)
    if planned is not None:
        return planned
    try:
        created: Body = yield CreateJob(job)
    except Invalid as e:
        _fail(p, "JobInvalid", invalid_job(e, "rejected the Job"))
        return (yield from _write(p, None))
    except AlreadyExists:
        found: Body | None = yield GetJob(name)
        if found is not None and _owned(found, p.meta["uid"]):
            return (yield from _adopt(p, job, found))
        p.set(
            model.GATED,
            True,
            "JobNameTaken",
            f"a Job named {name!r} from another object still exists; "
            "waiting for it to be garbage-collected",
        )
        return (yield from _write(p, p.timing.create_retry))
    except ApiError as e:
        # A quota, a webhook, a throttled or unavailable API server: retried
        # without the lock, so the environment is not held meanwhile.
        p.set(model.GATED, False, "GatesOpen", "all gates are open")
        p.set(
            model.JOB_CREATED, False, "CreateFailed", f"creating Job {name!r} failed: {e.message}"
        )
        return (yield from _write(p, p.timing.create_retry))
    return (yield from _started(p, created, "Created"))


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
    _fail(
        p,
        "JobNotOurs",
        f"Job {found['metadata']['name']!r} carries this migration's labels but is not the Job "
        f"it would create (it differs at {', '.join(differs[:5])}): not adopted, nothing run. "
        "Delete it, then `kubectl pdm retry` this migration",
    )
    return (yield from _finish(p))


def _started(p: Pass, job: Body, how: str) -> Decision[Step]:
    name = job["metadata"]["name"]
    if jobs.outcome(job) is None and job["metadata"].get("uid"):
        yield from _protect_from_eviction(p, job)
    p.status["jobName"] = name
    p.status.setdefault("startTime", job["metadata"].get("creationTimestamp") or p.now)
    p.set(model.GATED, False, "GatesOpen", "all gates are open")
    p.set(model.JOB_CREATED, True, how, f"Job {name} runs {p.status['image']}")
    if how == "Adopted":
        # Requeue at once: the Job may have ended while we were away.
        return (yield from _write(p, 0))
    # Just created: its end comes by watch (the controller pokes on a Job's
    # end); a pod that cannot start is looked for by the young Job's poll.
    return (yield from _write(p, _young_job_poll(p, job)))


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


# --- the pre-flight ----------------------------------------------------------------
def _preflight(
    p: Pass, job: Body, tenure: str | None, decide: bool = True
) -> Decision[Step | None]:
    """Ask Rails what ``job`` would apply; None once the answer says to go on.

    In Run mode this runs holding the environment's lock (``tenure``): the
    answer counts only for the Job it was asked for and the tenure it was
    asked under, so a list learnt before another migration of the environment
    ran is asked again. The pass that finds it running keeps the lock
    (``preflight_running``); every other way out gives it back. ``decide``:
    whether nothing pending ends the migration (not in DryRun).
    """
    cfg: Body = p.spec.get("preflight") or {}
    if cfg.get("enabled", True) is False:
        return None
    job_hash = render.hash_of(job)
    pf: Body = p.status.get("preflight") or {}
    current = pf.get("jobHash") == job_hash and pf.get("tenure") == tenure
    if current and pf.get("phase") == "Running":
        answered = yield from _follow_preflight(p, pf, job)
        if answered is not None:
            return answered
        pf = p.status["preflight"]
    elif not current or pf.get("phase") != "Succeeded":
        return (yield from _start_preflight(p, job, job_hash, tenure, cfg))
    if not decide:
        return None
    nothing = int(pf.get("pendingCount") or 0) == 0 and cfg.get("whenNonePending") != "Run"
    # "Nothing pending" from args of the creator's own is a plan too: with
    # approval required it is approved like any other, or a pre-flight that
    # prints an empty table would end the migration unseen.
    custom = not preflight.default_args(preflight.given_args(p.spec))
    if not nothing or (custom and approval.required(p.spec)):
        held = yield from _unapproved(p, p.status["preflight"])
        if held is not None or not nothing:
            return held
    return (yield from _nothing_pending(p))


def _unapproved(p: Pass, pf: Body) -> Decision[Step | None]:
    """With ``spec.approval.required``: the answer just asked must be the plan approved.

    Otherwise the migration waits (the lock is given back by the caller): for
    a first approval, or for a new one naming what changed.
    """
    hold = approval.check(p.spec, pf, p.status.get("pendingMigrations"), p.name)
    if hold is None:
        # An approval counts (and is shown) only where one is required.
        approved = approval.approved(p.spec) if approval.required(p.spec) else None
        pending = preflight.from_status(p.status.get("pendingMigrations"))
        if approved:
            p.status["approval"] = {k: approved[k] for k in ("planHash", "by", "at")}
            p.set(
                model.APPROVED,
                True,
                "PlanApproved",
                f"plan {approved['planHash'][:19]} approved by {approved['by']} at "
                f"{approved['at']}: {preflight.summary(pending)}",
            )
        return None
    p.set(model.GATED, True, hold.reason, hold.message)
    return (yield from _write(p, p.timing.queued_poll))


def _abandon_preflight(p: Pass, why: str) -> Decision[None]:
    """A pass that stops short of the pre-flight while one runs under the lock.

    A gate closed, or the pod template went away: the answer would be stale
    when the pass comes back, and a running pre-flight makes its holder look
    active, so the lock would stay held while nothing can progress. The lock
    is given back; the next pass asks again.
    """
    if not preflight_running(p.status):
        return
    p.status["preflight"]["phase"] = "Abandoned"
    p.set(model.PREFLIGHT, False, "PreflightAbandoned", why)
    yield from _release(p)


def _preflight_job(p: Pass, job: Body, run: int) -> Body:
    cfg: Body = p.spec.get("preflight") or {}
    return preflight.job(
        job,
        preflight.given_args(p.spec),
        run,
        int(cfg.get("activeDeadlineSeconds") or preflight.DEFAULT_DEADLINE),
    )


def _start_preflight(
    p: Pass, job: Body, job_hash: str, tenure: str | None, cfg: Body
) -> Decision[Step]:
    run = int((p.status.get("preflight") or {}).get("run") or 0) + 1
    pjob = _preflight_job(p, job, run)
    name = pjob["metadata"]["name"]
    # Recorded before it is created: a restart finds it by this name. Its
    # args and image are part of the plan an approval approves.
    p.status["preflight"] = {
        "run": run,
        "jobName": name,
        "phase": "Running",
        "startTime": p.now,
        "jobHash": job_hash,
        "args": preflight.given_args(p.spec),
        "image": str(preflight.migration_container(pjob).get("image") or ""),
        **({"tenure": tenure} if tenure else {}),
    }
    p.set(model.GATED, False, "GatesOpen", "all gates are open")
    p.set_unknown(
        model.PREFLIGHT,
        "PreflightRunning",
        f"Job {name} asks Rails which migrations are pending (db:migrate:status); "
        "it reads, never writes",
    )
    yield from _write(p, 0)
    return (yield from _create_preflight_job(p, pjob))


def _create_preflight_job(p: Pass, pjob: Body) -> Decision[Step]:
    """Create the pre-flight Job and record its uid: only that Job's answer counts.

    Its name is deterministic and recorded before the create, so anyone who
    may create Jobs in the namespace could create it first, with a pod that
    prints a short table. A Job under the name that this create did not make
    (AlreadyExists: an earlier pass's, whose uid was never recorded, or
    someone else's) is not trusted: the pre-flight runs again under a new name.
    """
    name = pjob["metadata"]["name"]
    try:
        created: Body = yield CreateJob(pjob)
    except Invalid as e:
        why = f"the API server rejects Job {name}"
        if not e.status:
            why = "the pre-flight Job cannot be sent"
        return (yield from _preflight_failed(p, "PreflightInvalid", f"{why}: {e.message}"))
    except AlreadyExists:
        return (
            yield from _preflight_again(p, f"Job {name} exists, but this pass did not create it")
        )
    except ApiError as e:
        # Retried by a later pass, which starts a new run (and takes the lock
        # again): the environment is not held meanwhile.
        p.status.pop("preflight", None)
        p.set_unknown(model.PREFLIGHT, "PreflightCreateFailed", f"creating Job {name}: {e.message}")
        return (yield from _write(p, p.timing.create_retry))
    p.status["preflight"]["jobUid"] = str(((created or {}).get("metadata") or {}).get("uid") or "")
    return (yield from _write(p, p.timing.gate_poll))


def _preflight_again(p: Pass, why: str) -> Decision[Step]:
    """The pre-flight Job found is not the one recorded: ask again under a new name.

    Its answer cannot be trusted (see :func:`_create_preflight_job`); the
    next pass takes the lock again and starts the next run, whose name
    differs. Nothing runs meanwhile, so the lock is given back.
    """
    p.status["preflight"]["phase"] = "Abandoned"
    p.set_unknown(
        model.PREFLIGHT,
        "PreflightRestarted",
        f"{why}: its answer is not trusted, the pre-flight runs again under a new name",
    )
    return (yield from _write(p, p.timing.gate_poll))


def _follow_preflight(p: Pass, pf: Body, job: Body) -> Decision[Step | None]:
    """The running pre-flight: its answer recorded (None), or how long to wait."""
    name = pf["jobName"]
    pjob: Body | None = yield GetJob(name)
    if pjob is None:
        # Lost between the record and the create, or deleted: ask again.
        return (yield from _create_preflight_job(p, _preflight_job(p, job, int(pf["run"]))))
    uid = str(pjob["metadata"].get("uid") or "")
    if not pf.get("jobUid") or uid != pf["jobUid"]:
        # Not the Job this migration created (another under its name, or one
        # whose create was never recorded): its pods' answer is not Rails'.
        return (yield from _preflight_again(p, f"Job {name} (uid {uid}) is not the one recorded"))
    outcome = jobs.outcome(pjob)
    pods: list[Body] = yield JobPods(name, pjob["metadata"].get("uid", ""))
    if outcome is None:
        found = jobs.stuck(
            pods, [] if pods else (yield JobEvents(name, pjob["metadata"].get("uid", "")))
        )
        if found is not None and found.permanent:
            yield SuspendJob(name)
            return (
                yield from _preflight_failed(
                    p, found.reason, f"pre-flight Job {name}: {found.message}"
                )
            )
        if found is not None:
            p.set(model.STALLED, True, found.reason, f"pre-flight Job {name}: {found.message}")
        return (yield from _write(p, _young_job_poll(p, pjob)))
    if not outcome.succeeded:
        detail = outcome.message
        failed = jobs.pod_failure(pods)
        if failed is not None:
            detail += f" (exit code {failed.exit_code} in pod {failed.pod})"
            tail = yield from _failure_log(failed)
            if tail:
                p.status.setdefault("failure", {})["logTail"] = jobs.failure_excerpt(tail)
                p.status["failure"]["pod"] = failed.pod
                if failed.exit_code is not None:
                    p.status["failure"]["exitCode"] = failed.exit_code
        return (
            yield from _preflight_failed(
                p, "PreflightFailed", f"pre-flight Job {name} failed: {detail}"
            )
        )
    return (yield from _read_answer(p, pf, name, pods))


def _read_answer(p: Pass, pf: Body, name: str, pods: list[Body]) -> Decision[Step | None]:
    """The succeeded pre-flight's log, read as Rails' status table (None: recorded)."""
    done = [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Succeeded"]
    if not done:
        return (
            yield from _preflight_failed(
                p, "PreflightUnreadable", f"pre-flight Job {name} succeeded, but its pod is gone"
            )
        )
    pod = done[0]["metadata"]["name"]
    try:
        log_text: str = yield PodLog(pod, preflight.LOG_LIMIT)
    except (ApiError, ValueError) as e:
        return (
            yield from _preflight_failed(
                p,
                "PreflightUnreadable",
                f"cannot read the log of pre-flight pod {pod}: {e}; the pending list is "
                "read from it (a node that serves no logs cannot run the pre-flight: set "
                "spec.preflight.enabled to false there)",
            )
        )
    if templates.SKIP_MARKER in log_text:
        sources = templates.skip_sources(preflight.migration_container(done[0]))
        yield Warn(
            "SkipVariableUnset",
            f"{model.SKIP_PDM_ENV} was set in pre-flight pod {pod}; the pod unset it before "
            "the status task, as the migration Job does before the migrations. It comes from "
            f"one of: {', '.join(sources)}; remove it there",
        )
    answer = preflight.parse_status(log_text)
    if answer is None:
        p.status["failure"] = {"pod": pod, "logTail": jobs.tail(log_text)}
        return (
            yield from _preflight_failed(
                p,
                "PreflightUnreadable",
                f"pre-flight pod {pod} printed no complete db:migrate:status table",
            )
        )
    _record_answer(p, pf, answer)
    return None


def _record_answer(p: Pass, pf: Body, answer: preflight.Answer) -> None:
    pending = list(answer.pending)
    # A pre-flight started before its args and image were recorded ran the
    # spec's args (immutable) in the migration Job's image.
    args = list(pf.get("args") or preflight.given_args(p.spec))
    image = str(pf.get("image") or p.status.get("image") or "")
    p.status["pendingMigrations"] = [m.as_status() for m in pending[: preflight.STATUS_LIMIT]]
    p.status["preflight"] = {
        **pf,
        "phase": "Succeeded",
        "completionTime": p.now,
        "args": args,
        "image": image,
        "databases": list(answer.databases),
        "pendingCount": len(pending),
        "planHash": preflight.plan_hash(str(pf["jobHash"]), pending, args=args, image=image),
    }
    p.set(
        model.PREFLIGHT,
        True,
        "MigrationsPending" if pending else "NothingPending",
        preflight.summary(pending) + f" (databases: {', '.join(answer.databases)})",
    )


def _preflight_failed(p: Pass, reason: str, message: str) -> Decision[Step]:
    """Nothing ran and nothing was written: the migration fails, and may be retried."""
    if "preflight" in p.status:
        p.status["preflight"]["phase"] = "Failed"
    message += f"; no migration ran. Fix the cause, then `kubectl pdm retry` {p.name} runs it again"
    p.set(model.PREFLIGHT, False, reason, message)
    failure = p.status.setdefault("failure", {})
    failure.update(reason=reason, message=message)
    _fail(p, reason, message)
    return (yield from _finish(p))


def _nothing_pending(p: Pass) -> Decision[Step]:
    """Nothing to apply: the migration ends without a Job; the lock is given back."""
    message = _nothing_pending_message(p)
    p.set(model.GATED, False, "GatesOpen", "all gates are open")
    p.set(model.JOB_CREATED, False, NOTHING_PENDING, message)
    yield from _release(p)
    yield from _record_run(p)  # records nothing; shows the environment's floor
    _reports_now_pending(p)
    return (yield from _await_blocking_reports(p, message, reason=NOTHING_PENDING))


# --- the Job, once it exists --------------------------------------------------------
def _follow(p: Pass) -> Decision[Step]:
    if p.status.get("jobOutcome") == "Succeeded":
        # The Job is done (and may be gone by now); only blocking reports remain.
        yield from _record_run(p)
        return (yield from _await_blocking_reports(p))
    name = p.status["jobName"]
    job: Body | None = yield GetJob(name)
    if job is None or not _owned(job, p.meta["uid"]):
        _fail(
            p,
            "JobDeleted",
            f"Job {name!r} was deleted before it finished. Post-deployment migrations are "
            "never re-run automatically: find out what happened, then create a new "
            "PostDeployMigration to run them again",
        )
        # It may have applied some or all of them before it went (a TTL, a
        # delete, an operator down for longer): recorded as unknown progress,
        # so a rollback below its version is never called safe.
        p.status.setdefault("jobCompletionTime", p.now)
        yield from _release(p)
        yield from _record_run(p)
        return (yield from _finish(p))
    outcome = jobs.outcome(job)
    if outcome is None:
        return (yield from _diagnose(p, job))
    p.status["jobCompletionTime"] = outcome.time or p.now
    p.status["jobOutcome"] = "Succeeded" if outcome.succeeded else "Failed"
    _reports_now_pending(p)
    if outcome.succeeded:
        p.status.pop("failure", None)
        # The migration itself is over: the next one of the environment may
        # start, whatever GitLab does with the reports.
        yield from _release(p)
        yield from _record_run(p)
        return (yield from _await_blocking_reports(p, outcome.message))
    failure: Body = {"reason": outcome.reason, "message": outcome.message}
    pod = jobs.pod_failure((yield JobPods(name, job["metadata"].get("uid", ""))))
    if pod is not None:
        failure["pod"] = pod.pod
        if pod.exit_code is not None:
            failure["exitCode"] = pod.exit_code
        tail = yield from _failure_log(pod)
        if tail:
            failure["logTail"] = jobs.failure_excerpt(tail)
            failed = jobs.failed_migration(tail)
            if failed is not None:
                failure["migration"] = failed.as_status()
    p.status["failure"] = failure
    # Over, whatever the history write does: the next may start.
    yield from _release(p)
    yield from _record_run(p)
    message = outcome.message
    if "exitCode" in failure:
        message += f" (exit code {failure['exitCode']} in pod {failure['pod']})"
    if "migration" in failure:
        failed_one = failure["migration"]
        message += (
            ": "
            + jobs.FailedMigration(
                failed_one["version"],
                failed_one["name"],
                failed_one.get("error", ""),
                failed_one.get("database", ""),
            ).describe()
        )
    p.set(model.SUCCEEDED, False, outcome.reason, message)
    p.set(model.FAILED, True, outcome.reason, message)
    p.status["completionTime"] = p.status["jobCompletionTime"]
    return (yield from _finish(p))


def _record_run(p: Pass) -> Decision[None]:
    """The run in the environment's history, and the rollback floor in the status.

    Written before the outcome is stored (a key per run, so a repeat after a
    crash writes the same record again), once: ``status.rollback`` says it is
    done. A run that applied nothing is not recorded; one whose progress is
    unknown is, as unsafe. A write the API server refuses for good (an
    immutable or oversized ConfigMap, RBAC) ends the step all the same
    (:func:`_history_unwritable`): the migration reaches its outcome, and the
    floor is unknown. A transient failure is raised, so the pass retries.
    """
    if "rollback" in p.status:
        return
    pf: Body = p.status.get("preflight") or {}
    job_hash = str(pf.get("jobHash") or "")
    for_this_job = bool(job_hash) and render.job_name(p.name, job_hash) == p.status.get("jobName")
    if nothing_pending(p.status):
        migrations: list[str] | None = []
    else:  # the pre-flight's list says what ran only if it was made for this Job
        migrations = history.applied(p.status, job_hash) if for_this_job else None
    version = history.deployed_version(
        p.migration, str(p.status.get("sourceImage") or p.status.get("image") or "")
    )
    namespace, name = p.setup.lock_namespace, history.configmap_name(p.environment)
    where = f"{namespace}/{name}"
    current: Body | None
    if migrations == []:
        try:
            current = yield ReadHistory(name)
        except ApiError as e:  # only shown (the floor): never worth a new pre-flight
            yield LogWarning(f"history {name} unread: {e}")
            current = None
    else:
        run = history.Run(
            namespace=p.namespace,
            name=p.name,
            uid=str(p.meta["uid"]),
            version=version,
            image=str(p.status.get("image") or ""),
            completed=str(p.status.get("jobCompletionTime") or p.now),
            outcome=str(p.status.get("jobOutcome") or "Failed"),
            migrations=migrations,
        )
        if history.Version.parse(version) is None:
            yield Warn(
                "UnknownVersion",
                f"the run is recorded at {version!r}, which is not a GitLab version: "
                "rollback-check answers unknown for every target until the record is "
                "corrected (set spec.gitlabVersion on the next migrations)",
            )
        base = history.configmap(p.environment, namespace)
        try:
            current = yield MergeHistory(base, {run.key: run.encode()})
        except (Invalid, Forbidden) as e:
            yield from _history_unwritable(p, run, where, e)
            return
        old = history.to_prune(current)
        if old:
            try:
                current = yield MergeHistory(base, dict.fromkeys(old))
            except (Invalid, Forbidden) as e:  # recorded; pruning waits for the next run
                yield LogWarning(f"history {where} not pruned: {e}")
    top = history.floor(history.runs(current))
    p.status["rollback"] = {
        "recorded": migrations != [],
        "version": version,
        "history": where,
        **({"floor": top.version} if top else {}),
    }
    yield ShowFloor(top.version if top else None)


def _history_unwritable(p: Pass, run: history.Run, where: str, error: ApiError) -> Decision[None]:
    """The run cannot be recorded: say so (status, a Warning, the metric), floor unknown.

    The record stays in ``status.rollback.record`` so that it can be added by
    hand; until then rollback-check cannot know of this run.
    """
    message = (
        f"the run is not recorded in the history {where}: the API server refused the write "
        f"({error.reason or type(error).__name__}: {error}). Until it is recorded, "
        f"rollback-check does not know that migrations ran at GitLab {run.version}: make the "
        "ConfigMap writable (an immutable one must be deleted and created again with its "
        f"data), then add key {run.key} with the value of status.rollback.record"
    )
    p.status["rollback"] = {
        "recorded": False,
        "version": run.version,
        "history": where,
        "floor": history.UNKNOWN,
        "reason": HISTORY_UNWRITABLE,
        "message": message,
        "record": run.encode(),
    }
    yield Warn(HISTORY_UNWRITABLE, message)
    yield CountHistoryFailure()
    yield ShowFloor(history.UNKNOWN)


def _diagnose(p: Pass, job: Body) -> Decision[Step]:
    """A running Job whose pod has not started: say why, within a resync.

    Transient causes (unschedulable, a failing image pull, a missing Secret
    key, a quota) show as ``Stalled`` with the cluster's message; the Job
    keeps the environment, as its pod may start any moment. Permanent ones
    (an invalid image name, a pod that admission refuses) fail the migration
    now, not at ``activeDeadlineSeconds``: the Job is suspended so no pod can
    start after the failure, and the environment is free.
    """
    if (job.get("status") or {}).get("ready"):
        return (yield from _write(p, p.timing.running_resync))
    name, uid = job["metadata"]["name"], job["metadata"].get("uid", "")
    pods: list[Body] = yield JobPods(name, uid)
    found = jobs.stuck(pods, [] if pods else (yield JobEvents(name, uid)))
    # Pod changes do not reach the Job until the pod is ready, so a young Job
    # is looked at again sooner: its container's failure to start (an image
    # pull, a kubelet refusal) shows within seconds, not a resync.
    again = _young_job_poll(p, job)
    if found is None:
        return (yield from _write(p, again))
    if not found.permanent:
        p.set(model.STALLED, True, found.reason, found.message)
        return (yield from _write(p, again))
    yield SuspendJob(name)
    message = f"{found.message}; Job {name} is suspended so that its pod never starts"
    p.status["failure"] = {"reason": found.reason, "message": message}
    _fail(p, found.reason, message)
    return (yield from _finish(p))


def _young_job_poll(p: Pass, job: Body) -> float:
    """As old as the Job (at least 5 s), up to the running resync."""
    created = job["metadata"].get("creationTimestamp")
    if not created:
        return p.timing.running_resync
    age = (p.at - timestamps.parse(created)).total_seconds()
    return min(p.timing.running_resync, max(5.0, age))


# --- reports ---------------------------------------------------------------------
def _reports_now_pending(p: Pass) -> None:
    """The Job's end makes new reports due: Reported must not stay True from before.

    The reporter owns the records; this only derives the condition the
    reporter would, from the records and the new intents, in the same write
    that records the outcome.
    """
    wanted = outbox.intents({**p.migration, "status": p.status})
    cond = outbox.reported_condition(outbox.merge(p.status.get("reports"), wanted, p.at))
    if cond is not None:
        p.apply_condition(cond)


def _await_blocking_reports(
    p: Pass, job_message: str = "the migration Job completed", reason: str = "JobComplete"
) -> Decision[Step]:
    """Succeeded once every blocking report of the outcome is delivered."""
    blocking = outbox.blocking_state({**p.migration, "status": p.status}, p.at)
    if blocking.failed:
        message = f"the migration Job succeeded, but a blocking report failed: {blocking.message}"
        p.set(model.SUCCEEDED, False, "BlockingReportFailed", message)
        p.set(model.FAILED, True, "BlockingReportFailed", message)
        p.status["failure"] = {"reason": "BlockingReportFailed", "message": message}
        p.status["completionTime"] = p.now
        return (yield from _finish(p))
    if not blocking.done:
        p.set_unknown(model.SUCCEEDED, "BlockingReportsPending", blocking.message)
        return (yield from _write(p, p.timing.gate_poll))
    p.set(model.SUCCEEDED, True, reason, job_message)
    p.set(model.FAILED, False, reason, job_message)
    p.status["completionTime"] = p.status.get("jobCompletionTime") or p.now
    return (yield from _finish(p))


# --- DryRun ------------------------------------------------------------------------
def _dry_run(p: Pass, template: templates.Template | None) -> Decision[Step]:
    """Render, check with a server-side dry-run create, diff, and ask Rails what is
    pending (the pre-flight, without the lock: it only reads); never a migration
    Job, never the lock."""
    waiting = yield from _preflight(
        p, render.render_job(p.migration, p.status["image"], template), None, decide=False
    )
    if waiting is not None:
        return waiting
    try:
        planned: Any = yield PlanDryRun(p.status["image"], template)
    except Invalid as e:
        _fail(p, "DryRunRejected", invalid_job(e, "rejected the Job"))
        return (yield from _write(p, None))
    except Transient as e:
        p.set(model.JOB_CREATED, False, "DryRunError", e.message)
        return (yield from _write(p, p.timing.create_retry))
    except ApiError as e:
        _fail(p, "DryRunRejected", f"the API server rejected the Job: {e.message}")
        return (yield from _write(p, None))
    diff: diffing.Diff = planned.diff
    text, truncated = diffing.bounded(diff.text)
    status_diff: Body = {"changed": diff.changed, "summary": diff.summary, "text": text}
    if diff.base:
        status_diff["base"] = diff.base
    if truncated:
        name = f"{p.name}-diff"
        status_diff["truncated"] = True
        try:
            yield PutConfigMap(diff_configmap(p.migration, name, diff.text))
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
    return (yield from _write(p, None))


def _rollout_warnings(p: Pass) -> Decision[list[str]]:
    """The Deployments this migration waits for whose new pods would wait for it."""
    names = list((p.spec.get("waitFor") or {}).get("rolledOut") or [])
    found: dict[str, Body | None] = {}
    for name in names:
        found[name] = yield GetDeployment(name)
    return gates.bypass_warnings(p.spec, found)


# --- endings and the write ------------------------------------------------------------
def _fail(p: Pass, reason: str, message: str) -> None:
    p.set(model.SUCCEEDED, False, reason, message)
    p.set(model.FAILED, True, reason, message)
    p.status.setdefault("failure", {"reason": reason, "message": message})
    p.status["completionTime"] = p.now


def _release(p: Pass) -> Decision[None]:
    """Give the environment's lock back if this migration holds it (once a pass)."""
    if not p.released:
        yield ReleaseLock()
        p.released = True


def _finish(p: Pass) -> Decision[Step]:
    step = yield from _write(p, None)
    yield from _release(p)
    return step


def _write(p: Pass, requeue: float | None) -> Decision[Step]:
    """Store the status if it changed (every transition is announced by the writer)."""
    if p.stalled_before and not p.stalled_now:
        # This pass got through without being stuck: whatever was, is over.
        p.set(model.STALLED, False, "Progressing", "the last pass made progress")
    state, reason = conditions.summarize(p.conditions)
    p.status["state"], p.status["reason"] = state, reason
    for standard in conditions.kstatus(p.conditions, state, reason):
        p.apply_condition(standard)
    # kstatus takes the first of Reconciling=True and Stalled=True it meets:
    # Reconciling goes first, so a stuck but unfinished migration reads
    # InProgress and only a failed one (Reconciling=False) reads Failed.
    p.status["conditions"] = sorted(p.conditions, key=lambda c: c.get("type") != model.RECONCILING)
    p.status["observedGeneration"] = p.generation
    if p.status == p.stored:
        return Step(p.stored, requeue)
    written: Body | None = yield WriteStatus(
        merge_patch(p.stored, p.status),
        copy.deepcopy(p.status),
        list(p.stored.get("conditions") or []),
    )
    if written is None:  # the migration was deleted meanwhile
        return Step(p.status, None)
    p.stored = copy.deepcopy(p.status)
    return Step(p.stored, requeue)


# --- pure helpers ---------------------------------------------------------------------
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


def preflight_running(status: Body) -> bool:
    """A pre-flight runs for this migration: it needs the lock it was started under."""
    return (status.get("preflight") or {}).get("phase") == "Running"


def _owned(job: Body, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])


def _nothing_pending_message(p: Pass) -> str:
    databases = ", ".join((p.status.get("preflight") or {}).get("databases") or [])
    return (
        f"nothing to migrate: no migration is pending in {databases or 'the database'}, "
        "so no migration Job was created"
    )


def _in_a_cycle(status: Body) -> bool:
    """A migration that failed because its dependencies form a cycle."""
    return (status.get("failure") or {}).get("reason") == "DependencyCycle"


def merge_patch(old: Body, new: Body) -> Body:
    """A JSON merge patch from ``old`` to ``new`` (top level; removed keys become null)."""
    patch: Body = {k: v for k, v in new.items() if old.get(k) != v}
    for k in old:
        if k not in new:
            patch[k] = None
    return patch


def diff_configmap(migration: Body, name: str, text: str) -> Body:
    """The full diff of a dry run, when it is too long for the status."""
    meta = migration["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": render.labels_for(migration),
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


def invalid_job(e: Invalid, refused: str) -> str:
    """Why the Job can never be created: the client's refusal or the server's."""
    if e.status:
        return f"the API server {refused}: {e.message}"
    return f"the Job cannot be sent to the API server: {e.message}"
