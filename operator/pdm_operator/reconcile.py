"""One reconcile pass over a PostDeployMigration: gather, decide, write.

A pass reads what it needs from the API, asks the pure modules what it means
(``images``, ``gates``, ``jobs``, ``render``, ``conditions``) and writes the
status only when it changed. Passes are level-based: a pass started at any
moment, after a crash at any point of an earlier one, reaches the same end.
The invariants that make that true:

* ``status.image`` is written before a Job is created, so the Job name (a hash
  of the rendered Job) is the same on every later pass;
* before creating, the pass looks for a Job carrying the migration's uid label
  and adopts it; a create that finds the name taken (409) adopts it too;
* once ``status.jobName`` is set, a missing Job is a deleted Job: the
  migration fails (JobDeleted) and nothing is re-created.

Everything here blocks (the official client); the controller runs passes in a
thread.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pdm_operator import (
    approval,
    conditions,
    diffing,
    dryrun,
    events,
    gates,
    history,
    images,
    jobs,
    lines,
    metrics,
    model,
    preflight,
    render,
    security,
    sources,
    templates,
    timestamps,
)
from pdm_operator.conditions import Condition
from pdm_operator.kube import AlreadyExists, ApiError, Invalid, Kube, Transient
from pdm_operator.locks import EnvironmentLocks, Holder, Taken, lease_name
from pdm_operator.logs import for_migration
from pdm_operator.model import Body
from pdm_operator.reporting import outbox
from pdm_operator.statuswriter import StatusWriter

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Migrations read at most when looking for a cycle in ``waitFor.migrations``.
MAX_DEPENDENCY_WALK = 64

#: Seconds a lock holder without a Job is still taken to be creating it.
CREATE_GRACE = 60.0


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
    running_resync: float = 30.0


@dataclass
class Step:
    """What a pass leaves behind: the status now stored, and when to look again."""

    status: Body
    requeue: float | None  # None: the migration has ended, nothing more to do


class Pass:
    """The state of one pass: the migration, its status as stored and as it will be."""

    def __init__(self, migration: Body, now: datetime) -> None:
        self.migration = migration
        self.meta = migration["metadata"]
        self.spec = migration["spec"]
        self.stored: Body = copy.deepcopy(migration.get("status") or {})
        self.status: Body = copy.deepcopy(self.stored)
        self.generation = int(self.meta.get("generation") or 1)
        self.now = timestamps.rfc3339(now)
        self.stalled_before = conditions.is_true(self.stored.get("conditions"), model.STALLED)
        #: Whether this pass itself found the migration stuck (Stalled=True).
        self.stalled_now = False
        #: The environment lock's tenure, once this pass holds the lock.
        self.tenure: str | None = None

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


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        lock_namespace: str,
        clock: Clock = timestamps.now,
        timing: Timing | None = None,
    ) -> None:
        self.kube = kube
        self.writer = StatusWriter(kube)
        self.clock = clock
        self.timing = timing or Timing()
        self.locks = EnvironmentLocks(kube, lock_namespace, self._holder_active)
        #: Told the environment the moment a pass gives its lock back, before
        #: the pass writes anything else: the controller pokes the first in
        #: line at once instead of when the status write comes back by watch.
        self.on_release: Callable[[str], None] | None = None

    # --- the pass --------------------------------------------------------------
    def reconcile(self, migration: Body) -> Step:  # noqa: PLR0911 - one return per outcome
        p = Pass(migration, self.clock())
        if model.is_finished(p.stored):
            return self._observe_generation(p)
        dry = p.spec.get("mode") == "DryRun"
        if p.status.get("jobName") and not dry:
            return self._follow(p)
        if nothing_pending(p.status):
            # Decided by an earlier pass; only its blocking reports may remain.
            return self._await_blocking_reports(p, _nothing_pending_message(p))
        if not p.status.get("image") and not self._resolve(p):
            return self._write(p, self.timing.image_retry)
        template = self._template(p)
        if isinstance(template, templates.Missing):
            self._abandon_preflight(p, f"{template.reason}: {template.message}")
            return self._write(p, self.timing.image_retry)
        # Rendered once per pass for the checks; the create renders again
        # after pinning the image by digest.
        planned = render.render_job(p.migration, p.status["image"], template)
        if self._insecure(p, planned):
            return self._finish(p)
        if dry:
            return self._dry_run(p, template)
        hold = self._gates(p, template, planned)
        if hold is not None:
            if hold.fatal:
                self._fail(p, hold.reason, hold.message)
                return self._finish(p)
            if hold.reason != "TemplateStale" and self._rejected(p, planned):
                return self._finish(p)
            self._abandon_preflight(p, f"{hold.reason}: {hold.message}")
            p.set(model.GATED, True, hold.reason, hold.message)
            poll = self.timing.lock_poll if hold.reason == lines.LOCKED else self.timing.gate_poll
            return self._write(p, poll)
        return self._create_holding_the_lock(p, template)

    def _observe_generation(self, p: Pass) -> Step:
        """A finished migration whose spec changed (suspend, an approval): nothing to do,
        but ``observedGeneration`` catches up, so kstatus does not see it in progress."""
        if int(p.stored.get("observedGeneration") or 0) != p.generation:
            conds = p.stored.get("conditions") or []
            self.writer.write(
                p.migration, {"observedGeneration": p.generation}, conds, conds, now=p.now
            )
            p.stored["observedGeneration"] = p.generation
        return Step(p.stored, None)

    def record_error(self, migration: Body, error: BaseException) -> None:
        """A pass ended in an unexpected error: say so in the status and an event.

        The worker retries with back-off; this makes the retry loop visible
        (``Stalled=True``, reason ReconcileError) instead of silent. A later
        pass that succeeds sets it back to False.
        """
        p = Pass(migration, self.clock())
        if model.is_finished(p.stored):
            return
        detail = str(error)
        p.set(
            model.STALLED,
            True,
            "ReconcileError",
            f"{type(error).__name__}: {detail[:512]}; retrying with back-off",
        )
        self._write(p, None)

    # --- steps ---------------------------------------------------------------
    def _resolve(self, p: Pass) -> bool:
        image_spec = p.spec["image"]
        result = sources.image(self.kube, p.namespace, image_spec)
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

    def _template(self, p: Pass) -> templates.Template | templates.Missing | None:
        """``spec.podTemplateFrom``, read again on every pass until the Job exists.

        The chart's *current* migrations Job is the one to copy: a ``helm
        upgrade`` while this migration waits replaces it, and the stale gate
        then decides whether the new one belongs to the deployed version.
        """
        found = sources.template(self.kube, p.namespace, p.spec)
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

    def _insecure(self, p: Pass, job: Body) -> bool:
        """Refuse a Job below the restricted Pod Security level, whatever the namespace enforces.

        Checked on every pass before the Job exists (the template is re-read),
        in DryRun mode too, so the dry run says what the run would say.
        """
        found = security.violations(job)
        if not found:
            return False
        shown = "; ".join(found[:6]) + (f"; and {len(found) - 6} more" if len(found) > 6 else "")
        self._fail(
            p,
            "PodSecurityViolation",
            f"the migration Job would not meet the restricted Pod Security Standard: {shown}",
        )
        return True

    def _rejected(self, p: Pass, job: Body) -> bool:
        """Fail fast: while a gate holds, check the Job with a server-side dry-run create.

        A spec the API server would refuse then fails in seconds with its
        reason, not after the rollout wait; a migration whose gates are all
        open skips this, its real create is the same check. Only a refusal of
        the Job itself (400, 422) is final; anything else (quota, throttling,
        an API server hiccup) is left for the real create to meet.
        """
        if conditions.is_true(p.conditions, model.JOB_VALIDATED):
            return False
        name = job["metadata"]["name"]
        try:
            self.kube.create_job(p.namespace, job, dry_run=True)
        except Invalid as e:
            self._fail(p, "JobInvalid", invalid_job(e, "rejects the Job (server-side dry run)"))
            return True
        except AlreadyExists:
            pass  # the Job exists already, so it was valid
        except ApiError as e:
            p.set(
                model.JOB_VALIDATED,
                False,
                "ValidationPending",
                f"could not check Job {name!r} yet: {e.message}",
            )
            return False
        p.set(
            model.JOB_VALIDATED,
            True,
            "DryRunAccepted",
            "the API server accepts the Job (server-side dry run); it is created when "
            "every gate is open",
        )
        return False

    def _gates(
        self, p: Pass, template: templates.Template | None, planned: Body
    ) -> gates.Hold | None:
        hold = gates.suspended(p.spec) or self._dependencies(p)
        if hold:
            return hold
        wait_for = p.spec.get("waitFor") or {}
        source = (p.spec["image"].get("fromDeployment") or {}).get("name")
        rolled = list(wait_for.get("rolledOut") or [])
        for name in rolled:
            expect = None
            if name == source:
                expect = (p.spec["image"]["fromDeployment"]["container"], p.status["sourceImage"])
            hold = gates.rollout(name, self.kube.get_deployment(p.namespace, name), expect)
            if hold:
                return hold
        if template is not None:
            stale = templates.stale(template, p.status["sourceImage"], p.status["image"])
            if stale:
                return gates.Hold("TemplateStale", stale)
        hold = approval.unapproved_shown_plan(p.spec, p.status, _inputs_hash(planned), p.name)
        if hold is not None:
            # The plan shown is not approved yet: no lock, no new pre-flight.
            return hold
        taken = self.locks.acquire(p.environment, Holder.of(p.migration), p.now)
        if isinstance(taken, Taken):
            p.tenure = taken.tenure
        else:
            # The same message whoever holds the lock: a waiter's status is
            # not rewritten each time the lock changes hands in a long line.
            return gates.Hold(
                lines.LOCKED,
                f"another PostDeployMigration holds environment {p.environment!r} "
                f"(Lease {self.locks.namespace}/{lease_name(p.environment)}); "
                "one migration at a time",
            )
        return None

    def _dependencies(self, p: Pass) -> gates.Hold | None:
        """``waitFor.migrations``: all Succeeded, none Failed, and no cycle through this one."""
        names = list((p.spec.get("waitFor") or {}).get("migrations") or [])
        if not names:
            return None
        found = {n: self.kube.get_migration(p.namespace, n) for n in names}
        hold = gates.dependencies(names, found)
        if hold is None:
            return hold
        # A dependency that failed because of a cycle through this migration
        # still counts as waiting: whichever of the cycle is looked at first,
        # each of them names the cycle.
        loop = gates.cycle(p.name, self._waits_for(p, found))
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

    def _waits_for(self, p: Pass, found: dict[str, Body | None]) -> dict[str, list[str]]:
        """The waits-for graph of the unfinished migrations reachable from ``p`` (bounded)."""
        graph: dict[str, list[str]] = {p.name: list(p.spec["waitFor"]["migrations"])}
        known: dict[str, Body | None] = dict(found)
        frontier = [n for n in graph[p.name] if n != p.name]
        while frontier and len(known) < MAX_DEPENDENCY_WALK:
            name = frontier.pop()
            if name in graph:
                continue
            other = known[name] if name in known else self.kube.get_migration(p.namespace, name)
            known[name] = other
            status = (other or {}).get("status") or {}
            if other is None or (model.is_finished(status) and not _in_a_cycle(status)):
                continue
            graph[name] = list(
                ((other.get("spec") or {}).get("waitFor") or {}).get("migrations") or []
            )
            frontier += [n for n in graph[name] if n not in graph]
        return graph

    def _create_holding_the_lock(self, p: Pass, template: templates.Template | None) -> Step:
        """The lock stays this migration's only if its Job comes to exist.

        Every way out of a create without a Job (a refusal, a busy
        environment, a name taken, a failed call, an exception) gives the
        Lease back, so no environment waits on a migration that cannot make
        progress. (A crash between taking and giving back is covered by the
        takeover rule in ``_holder_active``.)
        """
        try:
            return self._create(p, template)
        finally:
            if not p.status.get("jobName") and not preflight_running(p.status):
                self._release(p)

    def _environment_jobs(self, p: Pass) -> tuple[list[Body], list[str]]:
        """This migration's Jobs (to adopt), and the unfinished migration Jobs of
        its environment that are not its own: one list of the environment's Jobs.

        The Lease is the queue, the second is the guard: a deleted or edited
        Lease must not let two migrations of an environment run at once. (Jobs
        in the migration's namespace: an environment's migrations live with
        its GitLab installation.)
        """
        selector = (
            f"{model.LABEL_MANAGED_BY}=pdm-operator,{model.LABEL_ENVIRONMENT}={p.environment}"
        )
        own, busy = [], []
        for j in self.kube.list_jobs(p.namespace, selector):
            labels = j["metadata"].get("labels") or {}
            if labels.get(model.LABEL_COMPONENT) != render.COMPONENT:
                continue  # a pre-flight Job
            if labels.get(model.LABEL_MIGRATION_UID) == p.meta["uid"]:
                own.append(j)
            elif jobs.outcome(j) is None and not (j.get("spec") or {}).get("suspend"):
                busy.append(j["metadata"]["name"])  # suspended by a failure: runs nothing
        return own, sorted(busy)

    def _create(self, p: Pass, template: templates.Template | None) -> Step:  # noqa: PLR0911
        # The rollout is complete now: if the image is not pinned yet, the
        # running pods may report its digest. Persist it before the Job
        # exists, so every later pass renders the same Job name.
        source = p.spec["image"].get("fromDeployment")
        if source and p.status["image"] == p.status["sourceImage"]:
            pods = sources.deployment_pods(
                self.kube, p.namespace, self.kube.get_deployment(p.namespace, source["name"])
            )
            pinned = images.pinned(p.status["sourceImage"], source["container"], pods)
            if pinned != p.status["image"]:
                p.status["image"] = pinned
                p.set(model.IMAGE_RESOLVED, True, "FromDeployment", f"pinned by digest: {pinned}")
                self._write(p, 0)
        job = render.render_job(p.migration, p.status["image"], template)
        name = job["metadata"]["name"]
        uid = p.meta["uid"]
        existing, busy = self._environment_jobs(p)
        if existing:
            adopted = min(existing, key=lambda j: j["metadata"].get("creationTimestamp", ""))
            return self._started(p, adopted, "Adopted")
        if busy:
            p.set(
                model.GATED,
                True,
                "EnvironmentBusy",
                f"Job {', '.join(busy)} of environment {p.environment!r} has not finished "
                f"(its Lease {self.locks.namespace}/{lease_name(p.environment)} was deleted "
                "or changed); one migration at a time",
            )
            return self._write(p, self.timing.lock_poll)
        planned = self._preflight(p, job, p.tenure)
        if planned is not None:
            return planned
        try:
            created = self.kube.create_job(p.namespace, job)
        except Invalid as e:
            self._fail(p, "JobInvalid", invalid_job(e, "rejected the Job"))
            return self._write(p, None)
        except AlreadyExists:
            found = self.kube.get_job(p.namespace, name)
            if found is not None and self._owned(found, uid):
                return self._started(p, found, "Adopted")
            p.set(
                model.GATED,
                True,
                "JobNameTaken",
                f"a Job named {name!r} from another object still exists; "
                "waiting for it to be garbage-collected",
            )
            return self._write(p, self.timing.create_retry)
        except ApiError as e:
            # A quota, a webhook, a throttled or unavailable API server: retried
            # without the lock, so the environment is not held meanwhile.
            p.set(model.GATED, False, "GatesOpen", "all gates are open")
            p.set(
                model.JOB_CREATED,
                False,
                "CreateFailed",
                f"creating Job {name!r} failed: {e.message}",
            )
            return self._write(p, self.timing.create_retry)
        return self._started(p, created, "Created")

    # --- the pre-flight ----------------------------------------------------------
    def _preflight(
        self, p: Pass, job: Body, tenure: str | None, decide: bool = True
    ) -> Step | None:
        """Ask Rails what ``job`` would apply; None once the answer says to go on.

        In Run mode this runs holding the environment's lock (``tenure``): the
        answer counts only for the Job it was asked for and the tenure it was
        asked under, so a list learnt before another migration of the
        environment ran is asked again. The pass that finds it running keeps
        the lock (``preflight_running``); every other way out gives it back.
        ``decide``: whether nothing pending ends the migration (not in DryRun).
        """
        cfg: Body = p.spec.get("preflight") or {}
        if cfg.get("enabled", True) is False:
            return None
        job_hash = _inputs_hash(job)
        pf: Body = p.status.get("preflight") or {}
        current = pf.get("jobHash") == job_hash and pf.get("tenure") == tenure
        if current and pf.get("phase") == "Running":
            answered = self._follow_preflight(p, pf, job)
            if answered is not None:
                return answered
            pf = p.status["preflight"]
        elif not current or pf.get("phase") != "Succeeded":
            return self._start_preflight(p, job, job_hash, tenure, cfg)
        if not decide:
            return None
        if int(pf.get("pendingCount") or 0) > 0 or cfg.get("whenNonePending") == "Run":
            return self._unapproved(p, p.status["preflight"])
        return self._nothing_pending(p)

    def _unapproved(self, p: Pass, pf: Body) -> Step | None:
        """With ``spec.approval.required``: the answer just asked must be the plan approved.

        Otherwise the migration waits (the lock is given back by the caller):
        for a first approval, or for a new one naming what changed.
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
        return self._write(p, self.timing.queued_poll)

    def _abandon_preflight(self, p: Pass, why: str) -> None:
        """A pass that stops short of the pre-flight while one runs under the lock.

        A gate closed, or the pod template went away: the answer would be
        stale when the pass comes back, and a running pre-flight makes its
        holder look active, so the lock would stay held while nothing can
        progress. The lock is given back; the next pass asks again.
        """
        if not preflight_running(p.status):
            return
        p.status["preflight"]["phase"] = "Abandoned"
        p.set(model.PREFLIGHT, False, "PreflightAbandoned", why)
        self._release(p)

    def _start_preflight(
        self, p: Pass, job: Body, job_hash: str, tenure: str | None, cfg: Body
    ) -> Step:
        run = int((p.status.get("preflight") or {}).get("run") or 0) + 1
        args = list(cfg.get("args") or preflight.DEFAULT_ARGS)
        deadline = int(cfg.get("activeDeadlineSeconds") or preflight.DEFAULT_DEADLINE)
        pjob = preflight.job(job, args, run, deadline)
        name = pjob["metadata"]["name"]
        # Recorded before it is created: a restart finds it by this name.
        p.status["preflight"] = {
            "run": run,
            "jobName": name,
            "phase": "Running",
            "startTime": p.now,
            "jobHash": job_hash,
            **({"tenure": tenure} if tenure else {}),
        }
        p.set(model.GATED, False, "GatesOpen", "all gates are open")
        p.set_unknown(
            model.PREFLIGHT,
            "PreflightRunning",
            f"Job {name} asks Rails which migrations are pending (db:migrate:status); "
            "it reads, never writes",
        )
        self._write(p, 0)
        return self._create_preflight_job(p, pjob)

    def _create_preflight_job(self, p: Pass, pjob: Body) -> Step:
        name = pjob["metadata"]["name"]
        try:
            self.kube.create_job(p.namespace, pjob)
        except Invalid as e:
            why = f"the API server rejects Job {name}"
            if not e.status:
                why = "the pre-flight Job cannot be sent"
            return self._preflight_failed(p, "PreflightInvalid", f"{why}: {e.message}")
        except AlreadyExists:  # created by an earlier pass that did not see the answer
            return self._write(p, self.timing.gate_poll)
        except ApiError as e:
            # Retried by a later pass, which starts a new run (and takes the
            # lock again): the environment is not held meanwhile.
            p.status.pop("preflight", None)
            p.set_unknown(
                model.PREFLIGHT, "PreflightCreateFailed", f"creating Job {name}: {e.message}"
            )
            return self._write(p, self.timing.create_retry)
        return self._write(p, self.timing.gate_poll)

    def _follow_preflight(self, p: Pass, pf: Body, job: Body) -> Step | None:
        """The running pre-flight: its answer recorded (None), or how long to wait."""
        name = pf["jobName"]
        pjob = self.kube.get_job(p.namespace, name)
        if pjob is None:
            # Lost between the record and the create, or deleted: ask again.
            cfg: Body = p.spec.get("preflight") or {}
            again = preflight.job(
                job,
                list(cfg.get("args") or preflight.DEFAULT_ARGS),
                int(pf["run"]),
                int(cfg.get("activeDeadlineSeconds") or preflight.DEFAULT_DEADLINE),
            )
            return self._create_preflight_job(p, again)
        outcome = jobs.outcome(pjob)
        if outcome is None:
            pods = self.kube.list_pods(p.namespace, f"batch.kubernetes.io/job-name={name}")
            found = jobs.stuck(
                pods,
                []
                if pods
                else self.kube.job_events(p.namespace, name, pjob["metadata"].get("uid", "")),
            )
            if found is not None and found.permanent:
                self.kube.suspend_job(p.namespace, name)
                return self._preflight_failed(
                    p, found.reason, f"pre-flight Job {name}: {found.message}"
                )
            if found is not None:
                p.set(model.STALLED, True, found.reason, f"pre-flight Job {name}: {found.message}")
            return self._write(p, self._young_job_poll(pjob))
        pods = self.kube.list_pods(p.namespace, f"batch.kubernetes.io/job-name={name}")
        if not outcome.succeeded:
            detail = outcome.message
            failed = jobs.pod_failure(pods)
            if failed is not None:
                detail += f" (exit code {failed.exit_code} in pod {failed.pod})"
                tail = failed.message or self.kube.pod_log_tail(
                    p.namespace, failed.pod, model.MIGRATION_CONTAINER
                )
                if tail:
                    p.status.setdefault("failure", {})["logTail"] = jobs.tail(tail)
                    p.status["failure"]["pod"] = failed.pod
                    if failed.exit_code is not None:
                        p.status["failure"]["exitCode"] = failed.exit_code
            return self._preflight_failed(
                p, "PreflightFailed", f"pre-flight Job {name} failed: {detail}"
            )
        return self._read_answer(p, pf, name, pods)

    def _read_answer(self, p: Pass, pf: Body, name: str, pods: list[Body]) -> Step | None:
        """The succeeded pre-flight's log, read as Rails' status table (None: recorded)."""
        done = [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Succeeded"]
        if not done:
            return self._preflight_failed(
                p, "PreflightUnreadable", f"pre-flight Job {name} succeeded, but its pod is gone"
            )
        pod = done[0]["metadata"]["name"]
        try:
            log_text = self.kube.pod_log(
                p.namespace, pod, model.MIGRATION_CONTAINER, preflight.LOG_LIMIT
            )
        except (ApiError, ValueError) as e:
            why = str(e)
            return self._preflight_failed(
                p,
                "PreflightUnreadable",
                f"cannot read the log of pre-flight pod {pod}: {why}; the pending list is "
                "read from it (a node that serves no logs cannot run the pre-flight: set "
                "spec.preflight.enabled to false there)",
            )
        answer = preflight.parse_status(log_text)
        if answer is None:
            p.status["failure"] = {"pod": pod, "logTail": jobs.tail(log_text)}
            return self._preflight_failed(
                p,
                "PreflightUnreadable",
                f"pre-flight pod {pod} printed no complete db:migrate:status table",
            )
        self._record_answer(p, pf, answer)
        return None

    def _record_answer(self, p: Pass, pf: Body, answer: preflight.Answer) -> None:
        pending = list(answer.pending)
        p.status["pendingMigrations"] = [m.as_status() for m in pending[: preflight.STATUS_LIMIT]]
        p.status["preflight"] = {
            **pf,
            "phase": "Succeeded",
            "completionTime": p.now,
            "databases": list(answer.databases),
            "pendingCount": len(pending),
            "planHash": preflight.plan_hash(str(pf["jobHash"]), pending),
        }
        p.set(
            model.PREFLIGHT,
            True,
            "MigrationsPending" if pending else "NothingPending",
            preflight.summary(pending) + f" (databases: {', '.join(answer.databases)})",
        )

    def _preflight_failed(self, p: Pass, reason: str, message: str) -> Step:
        """Nothing ran and nothing was written: the migration fails, and may be retried."""
        if "preflight" in p.status:
            p.status["preflight"]["phase"] = "Failed"
        message += (
            f"; no migration ran. Fix the cause, then `kubectl pdm retry` {p.name} runs it again"
        )
        p.set(model.PREFLIGHT, False, reason, message)
        failure = p.status.setdefault("failure", {})
        failure.update(reason=reason, message=message)
        self._fail(p, reason, message)
        return self._finish(p)

    def _nothing_pending(self, p: Pass) -> Step:
        """Nothing to apply: the migration ends without a Job; the lock is given back."""
        message = _nothing_pending_message(p)
        p.set(model.GATED, False, "GatesOpen", "all gates are open")
        p.set(model.JOB_CREATED, False, NOTHING_PENDING, message)
        self._release(p)
        self._record_run(p)  # records nothing; shows the environment's floor
        self._reports_now_pending(p)
        return self._await_blocking_reports(p, message, reason=NOTHING_PENDING)

    def _started(self, p: Pass, job: Body, how: str) -> Step:
        name = job["metadata"]["name"]
        if jobs.outcome(job) is None and job["metadata"].get("uid"):
            self._protect_from_eviction(p, job)
        p.status["jobName"] = name
        p.status.setdefault("startTime", job["metadata"].get("creationTimestamp") or p.now)
        p.set(model.GATED, False, "GatesOpen", "all gates are open")
        p.set(model.JOB_CREATED, True, how, f"Job {name} runs {p.status['image']}")
        # Requeue at once: the Job may have ended while we were away.
        return self._write(p, 0)

    def _protect_from_eviction(self, p: Pass, job: Body) -> None:
        """The Job's PodDisruptionBudget, before this pass records the Job.

        A restart in between adopts the Job and comes here again. Without it
        the migration still runs (the pod also carries the autoscaler's
        safe-to-evict annotation): a refusal is a Warning event, not a stop.
        """
        try:
            self.kube.create_disruption_budget(p.namespace, render.disruption_budget(job))
        except ApiError as e:
            message = (
                f"no PodDisruptionBudget for Job {job['metadata']['name']}: {e.message}; "
                "a drain may evict the migration pod"
            )
            for_migration(log, p.migration).warning("%s", message)
            self.kube.create_event(
                events.event_for(p.migration, "Warning", "EvictionUnprotected", message, p.now)
            )

    def _follow(self, p: Pass) -> Step:
        if p.status.get("jobOutcome") == "Succeeded":
            # The Job is done (and may be gone by now); only blocking reports remain.
            self._record_run(p)
            return self._await_blocking_reports(p)
        name = p.status["jobName"]
        job = self.kube.get_job(p.namespace, name)
        if job is None or not self._owned(job, p.meta["uid"]):
            self._fail(
                p,
                "JobDeleted",
                f"Job {name!r} was deleted before it finished. Post-deployment migrations are "
                "never re-run automatically: find out what happened, then create a new "
                "PostDeployMigration to run them again",
            )
            return self._finish(p)
        outcome = jobs.outcome(job)
        if outcome is None:
            return self._diagnose(p, job)
        p.status["jobCompletionTime"] = outcome.time or p.now
        p.status["jobOutcome"] = "Succeeded" if outcome.succeeded else "Failed"
        self._reports_now_pending(p)
        if outcome.succeeded:
            p.status.pop("failure", None)
            # The migration itself is over: the next one of the environment may
            # start, whatever GitLab does with the reports.
            self._release(p)
            self._record_run(p)
            return self._await_blocking_reports(p, outcome.message)
        failure: Body = {"reason": outcome.reason, "message": outcome.message}
        pods = self.kube.list_pods(p.namespace, f"batch.kubernetes.io/job-name={name}")
        pod = jobs.pod_failure(pods)
        if pod is not None:
            failure["pod"] = pod.pod
            if pod.exit_code is not None:
                failure["exitCode"] = pod.exit_code
            tail = pod.message or self.kube.pod_log_tail(
                p.namespace, pod.pod, model.MIGRATION_CONTAINER
            )
            if tail:
                failure["logTail"] = jobs.tail(tail)
                failed = jobs.failed_migration(tail)
                if failed is not None:
                    failure["migration"] = failed.as_status()
        p.status["failure"] = failure
        # Over, whatever the history write does: the next may start.
        self._release(p)
        self._record_run(p)
        message = outcome.message
        if "exitCode" in failure:
            message += f" (exit code {failure['exitCode']} in pod {failure['pod']})"
        if "migration" in failure:
            failed_one = failure["migration"]
            message += (
                ": "
                + jobs.FailedMigration(
                    failed_one["version"], failed_one["name"], failed_one.get("error", "")
                ).describe()
            )
        p.set(model.SUCCEEDED, False, outcome.reason, message)
        p.set(model.FAILED, True, outcome.reason, message)
        p.status["completionTime"] = p.status["jobCompletionTime"]
        return self._finish(p)

    def _record_run(self, p: Pass) -> None:
        """The run in the environment's history, and the rollback floor in the status.

        Written before the outcome is stored (a key per run, so a repeat after
        a crash writes the same record again), once: ``status.rollback`` says
        it is done. A run that applied nothing is not recorded; one whose
        progress is unknown is, as unsafe.
        """
        if "rollback" in p.status:
            return
        pf: Body = p.status.get("preflight") or {}
        job_hash = str(pf.get("jobHash") or "")
        for_this_job = bool(job_hash) and render.job_name(p.name, job_hash) == p.status.get(
            "jobName"
        )
        if nothing_pending(p.status):
            migrations: list[str] | None = []
        else:  # the pre-flight's list says what ran only if it was made for this Job
            migrations = history.applied(p.status, job_hash) if for_this_job else None
        version = history.deployed_version(
            p.migration, str(p.status.get("sourceImage") or p.status.get("image") or "")
        )
        namespace, name = self.locks.namespace, history.configmap_name(p.environment)
        base = history.configmap(p.environment, namespace)
        if migrations == []:
            try:
                current = self.kube.get_configmap(namespace, name)
            except ApiError as e:  # only shown (the floor): never worth a new pre-flight
                for_migration(log, p.migration).warning("history %s unread: %s", name, e)
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
            current = self.kube.merge_configmap_data(namespace, base, {run.key: run.encode()})
            old = history.to_prune(current)
            if old:
                current = self.kube.merge_configmap_data(namespace, base, dict.fromkeys(old))
        top = history.floor(history.runs(current))
        p.status["rollback"] = {
            "recorded": migrations != [],
            "version": version,
            "history": f"{namespace}/{name}",
            **({"floor": top.version} if top else {}),
        }
        metrics.rollback_floor(p.environment, top.version if top else None)

    def _diagnose(self, p: Pass, job: Body) -> Step:
        """A running Job whose pod has not started: say why, within a resync.

        Transient causes (unschedulable, a failing image pull, a missing
        Secret key, a quota) show as ``Stalled`` with the cluster's message;
        the Job keeps the environment, as its pod may start any moment.
        Permanent ones (an invalid image name, a pod that admission refuses)
        fail the migration now, not at ``activeDeadlineSeconds``: the Job is
        suspended so no pod can start after the failure, and the environment
        is free.
        """
        if (job.get("status") or {}).get("ready"):
            return self._write(p, self.timing.running_resync)
        name, uid = job["metadata"]["name"], job["metadata"].get("uid", "")
        pods = self.kube.list_pods(p.namespace, f"batch.kubernetes.io/job-name={name}")
        events = [] if pods else self.kube.job_events(p.namespace, name, uid)
        found = jobs.stuck(pods, events)
        # Pod changes do not reach the Job until the pod is ready, so a young
        # Job is looked at again sooner: its container's failure to start
        # (an image pull, a kubelet refusal) shows within seconds, not a resync.
        again = self._young_job_poll(job)
        if found is None:
            return self._write(p, again)
        if not found.permanent:
            p.set(model.STALLED, True, found.reason, found.message)
            return self._write(p, again)
        self.kube.suspend_job(p.namespace, name)
        message = f"{found.message}; Job {name} is suspended so that its pod never starts"
        p.status["failure"] = {"reason": found.reason, "message": message}
        self._fail(p, found.reason, message)
        return self._finish(p)

    def _young_job_poll(self, job: Body) -> float:
        """As old as the Job (at least 5 s), up to the running resync."""
        created = job["metadata"].get("creationTimestamp")
        if not created:
            return self.timing.running_resync
        age = (self.clock() - timestamps.parse(created)).total_seconds()
        return min(self.timing.running_resync, max(5.0, age))

    def _reports_now_pending(self, p: Pass) -> None:
        """The Job's end makes new reports due: Reported must not stay True from before.

        The reporter owns the records; this only derives the condition the
        reporter would, from the records and the new intents, in the same
        write that records the outcome.
        """
        wanted = outbox.intents({**p.migration, "status": p.status})
        cond = outbox.reported_condition(
            outbox.merge(p.status.get("reports"), wanted, self.clock())
        )
        if cond is not None:
            p.apply_condition(cond)

    def _await_blocking_reports(
        self,
        p: Pass,
        job_message: str = "the migration Job completed",
        reason: str = "JobComplete",
    ) -> Step:
        """Succeeded once every blocking report of the outcome is delivered."""
        blocking = outbox.blocking_state({**p.migration, "status": p.status}, self.clock())
        if blocking.failed:
            message = (
                f"the migration Job succeeded, but a blocking report failed: {blocking.message}"
            )
            p.set(model.SUCCEEDED, False, "BlockingReportFailed", message)
            p.set(model.FAILED, True, "BlockingReportFailed", message)
            p.status["failure"] = {"reason": "BlockingReportFailed", "message": message}
            p.status["completionTime"] = p.now
            return self._finish(p)
        if not blocking.done:
            p.set_unknown(model.SUCCEEDED, "BlockingReportsPending", blocking.message)
            return self._write(p, self.timing.gate_poll)
        p.set(model.SUCCEEDED, True, reason, job_message)
        p.set(model.FAILED, False, reason, job_message)
        p.status["completionTime"] = p.status.get("jobCompletionTime") or p.now
        return self._finish(p)

    def _dry_run(self, p: Pass, template: templates.Template | None) -> Step:
        """Render, check with a server-side dry-run create, diff, and ask Rails what is
        pending (the pre-flight, without the lock: it only reads); never a migration
        Job, never the lock."""
        waiting = self._preflight(
            p, render.render_job(p.migration, p.status["image"], template), None, decide=False
        )
        if waiting is not None:
            return waiting
        try:
            planned = dryrun.plan(self.kube, p.migration, p.status["image"], template)
        except Invalid as e:
            self._fail(p, "DryRunRejected", invalid_job(e, "rejected the Job"))
            return self._write(p, None)
        except Transient as e:
            p.set(model.JOB_CREATED, False, "DryRunError", e.message)
            return self._write(p, self.timing.create_retry)
        except ApiError as e:
            self._fail(p, "DryRunRejected", f"the API server rejected the Job: {e.message}")
            return self._write(p, None)
        diff = planned.diff
        text, truncated = diffing.bounded(diff.text)
        status_diff: Body = {"changed": diff.changed, "summary": diff.summary, "text": text}
        if diff.base:
            status_diff["base"] = diff.base
        if truncated:
            name = f"{p.name}-diff"
            self.kube.put_configmap(p.namespace, diff_configmap(p.migration, name, diff.text))
            status_diff["truncated"] = True
            status_diff["configMap"] = name
        p.status["diff"] = status_diff
        p.status["jobName"] = planned.job["metadata"]["name"]
        summary = diff.summary
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
        return self._write(p, None)

    def _fail(self, p: Pass, reason: str, message: str) -> None:
        p.set(model.SUCCEEDED, False, reason, message)
        p.set(model.FAILED, True, reason, message)
        p.status.setdefault("failure", {"reason": reason, "message": message})
        p.status["completionTime"] = p.now

    def _finish(self, p: Pass) -> Step:
        step = self._write(p, None)
        self._release(p)
        return step

    # --- helpers ---------------------------------------------------------------
    def _count(self, p: Pass, cond: Body) -> None:
        """Metrics for a condition that just changed (after it was stored)."""
        if cond["status"] != "True":
            return
        if cond["type"] == model.JOB_CREATED:
            metrics.job_created(p.migration, self.clock())
        elif cond["type"] == model.STALLED:  # announced only while not failed
            metrics.stalled(p.migration, cond["reason"])
        elif cond["type"] in (model.SUCCEEDED, model.FAILED):
            metrics.migration_ended(
                p.migration, p.status, cond["type"] == model.SUCCEEDED, cond["reason"]
            )

    @staticmethod
    def _owned(job: Body, uid: str) -> bool:
        return any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])

    def _release(self, p: Pass) -> None:
        """Give the environment's lock back (if this migration holds it), and say so."""
        released = self.locks.release(p.environment, Holder.of(p.migration))
        if released and self.on_release is not None:
            self.on_release(p.environment)

    def _holder_active(self, holder: Holder, acquired_at: datetime | None) -> bool:
        other = self.kube.get_migration(holder.namespace, holder.name)
        if other is None or other["metadata"].get("uid") != holder.uid:
            return False
        status = other.get("status") or {}
        # A migration whose Job has ended no longer needs the environment,
        # even while it waits for blocking reports.
        if model.is_finished(status) or status.get("jobOutcome"):
            return False
        if status.get("jobName") or preflight_running(status):
            return True
        # No Job yet: a holder creates its Job in the pass that took the lock,
        # or gives the lock back. One that has done neither for this long
        # crashed in between; its next pass takes the lock again if it can.
        if acquired_at is None:
            return False
        return (self.clock() - acquired_at).total_seconds() < CREATE_GRACE

    def _write(self, p: Pass, requeue: float | None) -> Step:
        """Store the status if it changed, and post an event for every transition."""
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
        p.status["conditions"] = sorted(
            p.conditions, key=lambda c: c.get("type") != model.RECONCILING
        )
        p.status["observedGeneration"] = p.generation
        if p.status == p.stored:
            return Step(p.stored, requeue)
        written = self.writer.write(
            p.migration,
            _merge_patch(p.stored, p.status),
            p.stored.get("conditions"),
            p.conditions,
            now=p.now,
            on_transition=lambda cond: self._count(p, cond),
        )
        if written is None:  # the migration was deleted meanwhile
            return Step(p.status, None)
        p.meta["resourceVersion"] = written["metadata"].get("resourceVersion")
        p.stored = copy.deepcopy(p.status)
        return Step(p.stored, requeue)


NOTHING_PENDING = preflight.NOTHING_PENDING
nothing_pending = preflight.nothing_pending


def preflight_running(status: Body) -> bool:
    """A pre-flight runs for this migration: it needs the lock it was started under."""
    return (status.get("preflight") or {}).get("phase") == "Running"


def _nothing_pending_message(p: Pass) -> str:
    databases = ", ".join((p.status.get("preflight") or {}).get("databases") or [])
    return (
        f"nothing to migrate: no migration is pending in {databases or 'the database'}, "
        "so no migration Job was created"
    )


def _in_a_cycle(status: Body) -> bool:
    """A migration that failed because its dependencies form a cycle."""
    return (status.get("failure") or {}).get("reason") == "DependencyCycle"


def _inputs_hash(job: Body) -> str:
    return str(job["metadata"]["annotations"][model.ANNOTATION_INPUTS_HASH])


def _merge_patch(old: Body, new: Body) -> Body:
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
