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
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes.client.rest import ApiException

from pdm_operator import (
    conditions,
    diffing,
    dryrun,
    events,
    gates,
    images,
    jobs,
    metrics,
    model,
    render,
    security,
    sources,
    templates,
)
from pdm_operator.conditions import Condition
from pdm_operator.kube import Invalid, Kube
from pdm_operator.locks import EnvironmentLocks, Holder, lease_name
from pdm_operator.logs import for_migration
from pdm_operator.model import Body
from pdm_operator.reporting import outbox

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Migrations read at most when looking for a cycle in ``waitFor.migrations``.
MAX_DEPENDENCY_WALK = 64

#: Seconds a lock holder without a Job is still taken to be creating it.
CREATE_GRACE = 60.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self.now = rfc3339(now)
        self.stalled_before = conditions.is_true(self.stored.get("conditions"), model.STALLED)
        #: Whether this pass itself found the migration stuck (Stalled=True).
        self.stalled_now = False

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
        clock: Clock = utcnow,
        timing: Timing | None = None,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.timing = timing or Timing()
        self.locks = EnvironmentLocks(kube, lock_namespace, self._holder_active)

    # --- the pass --------------------------------------------------------------
    def reconcile(self, migration: Body) -> Step:  # noqa: PLR0911 - one return per outcome
        p = Pass(migration, self.clock())
        if model.is_finished(p.stored):
            return Step(p.stored, None)
        dry = p.spec.get("mode") == "DryRun"
        if p.status.get("jobName") and not dry:
            return self._follow(p)
        if not p.status.get("image") and not self._resolve(p):
            return self._write(p, self.timing.image_retry)
        template = self._template(p)
        if isinstance(template, templates.Missing):
            return self._write(p, self.timing.image_retry)
        # Rendered once per pass for the checks; the create renders again
        # after pinning the image by digest.
        planned = render.render_job(p.migration, p.status["image"], template)
        if self._insecure(p, planned):
            return self._finish(p)
        if dry:
            return self._dry_run(p, template)
        hold = self._gates(p, template)
        if hold is not None:
            if hold.fatal:
                self._fail(p, hold.reason, hold.message)
                return self._finish(p)
            if hold.reason != "TemplateStale" and self._rejected(p, planned):
                return self._finish(p)
            p.set(model.GATED, True, hold.reason, hold.message)
            poll = (
                self.timing.lock_poll
                if hold.reason == "EnvironmentLocked"
                else self.timing.gate_poll
            )
            return self._write(p, poll)
        return self._create_holding_the_lock(p, template)

    def record_error(self, migration: Body, error: BaseException) -> None:
        """A pass ended in an unexpected error: say so in the status and an event.

        The worker retries with back-off; this makes the retry loop visible
        (``Stalled=True``, reason ReconcileError) instead of silent. A later
        pass that succeeds sets it back to False.
        """
        p = Pass(migration, self.clock())
        if model.is_finished(p.stored):
            return
        detail = api_message(error) if isinstance(error, ApiException) else str(error)
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
            self._fail(p, "JobInvalid", f"the Job cannot be sent to the API server: {e.message}")
            return True
        except ApiException as e:
            if e.status in (400, 422):
                self._fail(
                    p,
                    "JobInvalid",
                    f"the API server rejects the Job (server-side dry run): {api_message(e)}",
                )
                return True
            if e.status != 409:  # 409: the Job exists already, so it was valid
                p.set(
                    model.JOB_VALIDATED,
                    False,
                    "ValidationPending",
                    f"could not check Job {name!r} yet: {api_message(e)}",
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

    def _gates(self, p: Pass, template: templates.Template | None) -> gates.Hold | None:
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
        blocker = self.locks.acquire(p.environment, Holder.of(p.migration), p.now)
        if blocker is not None:
            # The same message whoever holds the lock: a waiter's status is
            # not rewritten each time the lock changes hands in a long line.
            return gates.Hold(
                "EnvironmentLocked",
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
        if hold is None or hold.fatal:
            return hold
        loop = gates.cycle(p.name, self._waits_for(p, found))
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
            if other is None or model.is_finished(other.get("status")):
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
            if not p.status.get("jobName"):
                self.locks.release(p.environment, Holder.of(p.migration))

    def _busy(self, p: Pass) -> list[str]:
        """Unfinished migration Jobs of this environment that are not this migration's.

        The Lease is the queue, this is the guard: a deleted or edited Lease
        must not let two migrations of an environment run at once. (Jobs in
        the migration's namespace: an environment's migrations live with its
        GitLab installation.)
        """
        selector = (
            f"{model.LABEL_MANAGED_BY}=pdm-operator,{model.LABEL_ENVIRONMENT}={p.environment}"
        )
        return sorted(
            j["metadata"]["name"]
            for j in self.kube.list_jobs(p.namespace, selector)
            if (j["metadata"].get("labels") or {}).get(model.LABEL_MIGRATION_UID) != p.meta["uid"]
            and jobs.outcome(j) is None
            and not (j.get("spec") or {}).get("suspend")  # suspended by a failure: runs nothing
        )

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
        existing = self.kube.list_jobs(p.namespace, f"{model.LABEL_MIGRATION_UID}={uid}")
        if existing:
            adopted = min(existing, key=lambda j: j["metadata"].get("creationTimestamp", ""))
            return self._started(p, adopted, "Adopted")
        busy = self._busy(p)
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
        try:
            created = self.kube.create_job(p.namespace, job)
        except Invalid as e:
            self._fail(p, "JobInvalid", f"the Job cannot be sent to the API server: {e.message}")
            return self._write(p, None)
        except ApiException as e:
            if e.status == 409:
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
            message = api_message(e)
            if e.status in (400, 422):
                self._fail(p, "JobInvalid", f"the API server rejected the Job: {message}")
                return self._write(p, None)
            # A quota, a webhook, a throttled or unavailable API server: retried
            # without the lock, so the environment is not held meanwhile.
            p.set(model.GATED, False, "GatesOpen", "all gates are open")
            p.set(
                model.JOB_CREATED, False, "CreateFailed", f"creating Job {name!r} failed: {message}"
            )
            return self._write(p, self.timing.create_retry)
        return self._started(p, created, "Created")

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
        except ApiException as e:
            message = (
                f"no PodDisruptionBudget for Job {job['metadata']['name']}: {api_message(e)}; "
                "a drain may evict the migration pod"
            )
            for_migration(log, p.migration).warning("%s", message)
            self.kube.create_event(
                events.event_for(p.migration, "Warning", "EvictionUnprotected", message, p.now)
            )

    def _follow(self, p: Pass) -> Step:
        if p.status.get("jobOutcome") == "Succeeded":
            # The Job is done (and may be gone by now); only blocking reports remain.
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
            self.locks.release(p.environment, Holder.of(p.migration))
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
        age = (self.clock() - outbox.parse_time(created)).total_seconds()
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
        self, p: Pass, job_message: str = "the migration Job completed"
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
        p.set(model.SUCCEEDED, True, "JobComplete", job_message)
        p.set(model.FAILED, False, "JobComplete", job_message)
        p.status["completionTime"] = p.status.get("jobCompletionTime") or p.now
        return self._finish(p)

    def _dry_run(self, p: Pass, template: templates.Template | None) -> Step:
        """Render, check with a server-side dry-run create, diff; never a Job, never the lock."""
        try:
            planned = dryrun.plan(self.kube, p.migration, p.status["image"], template)
        except Invalid as e:
            self._fail(
                p, "DryRunRejected", f"the Job cannot be sent to the API server: {e.message}"
            )
            return self._write(p, None)
        except ApiException as e:
            if e.status >= 500 or e.status in (0, 429):
                p.set(model.JOB_CREATED, False, "DryRunError", api_message(e))
                return self._write(p, self.timing.create_retry)
            self._fail(p, "DryRunRejected", f"the API server rejected the Job: {api_message(e)}")
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
        self.locks.release(p.environment, Holder.of(p.migration))
        return step

    # --- helpers ---------------------------------------------------------------
    def _count(self, p: Pass, cond: Body) -> None:
        """Metrics for a condition that just changed (after it was stored)."""
        if cond["status"] != "True":
            return
        if cond["type"] == model.JOB_CREATED:
            metrics.job_created(p.migration, self.clock())
        elif cond["type"] == model.STALLED:
            metrics.stalled(p.migration, cond["reason"])
        elif cond["type"] in (model.SUCCEEDED, model.FAILED):
            metrics.migration_ended(
                p.migration, p.status, cond["type"] == model.SUCCEEDED, cond["reason"]
            )

    @staticmethod
    def _owned(job: Body, uid: str) -> bool:
        return any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])

    def _holder_active(self, holder: Holder, acquired_at: datetime | None) -> bool:
        other = self.kube.get_migration(holder.namespace, holder.name)
        if other is None or other["metadata"].get("uid") != holder.uid:
            return False
        status = other.get("status") or {}
        # A migration whose Job has ended no longer needs the environment,
        # even while it waits for blocking reports.
        if model.is_finished(status) or status.get("jobOutcome"):
            return False
        if status.get("jobName"):
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
        p.status["observedGeneration"] = p.generation
        if p.status == p.stored:
            return Step(p.stored, requeue)
        written = self.kube.patch_migration_status(
            p.namespace,
            p.name,
            _merge_patch(p.stored, p.status),
            resource_version=p.meta.get("resourceVersion"),
        )
        if written is None:  # the migration was deleted meanwhile
            return Step(p.status, None)
        p.meta["resourceVersion"] = written["metadata"].get("resourceVersion")
        for cond in conditions.transitions(p.stored.get("conditions"), p.conditions):
            if cond["type"] in (model.SUCCEEDED, model.FAILED) and cond["status"] == "False":
                continue  # the companion of the other end condition; one event is enough
            if cond["type"] == model.JOB_VALIDATED and cond["status"] == "True":
                continue  # a check passed on the way; the condition says so, no event needed
            for_migration(log, p.migration).info(
                "%s=%s %s: %s",
                cond["type"],
                cond["status"],
                cond["reason"],
                cond.get("message") or "",
            )
            self._count(p, cond)
            self.kube.create_event(
                events.event_for(
                    p.migration,
                    events.kind_of(cond),
                    cond["reason"],
                    cond.get("message") or "",
                    p.now,
                )
            )
        p.stored = copy.deepcopy(p.status)
        return Step(p.stored, requeue)


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


def api_message(e: ApiException) -> str:
    """The API server's own message from an error answer."""
    try:
        return str(json.loads(e.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{e.status} {e.reason}"
