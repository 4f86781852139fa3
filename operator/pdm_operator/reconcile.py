"""One reconcile pass over a PostDeployMigration: the decision, answered against the API.

``decide`` decides (a pure coroutine that asks for what it needs); this
module answers each ask with one call through ``kube.py`` (or ``sources``,
``locks``, ``dryrun``, ``statuswriter``, which call it) and carries out the
effects: the Lease, the Jobs, the status write with its Events, metrics.
Nothing here decides what a migration's status is.

Everything here blocks (the official client); the controller runs passes in a
thread.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, assert_never

from pdm_operator import decide, dryrun, events, jobs, metrics, model, render, sources, timestamps
from pdm_operator.decide import Setup, Step, Timing
from pdm_operator.gitlab_reads import DeploymentsReader
from pdm_operator.kube import Kube
from pdm_operator.locks import EnvironmentLocks, Holder, Taken
from pdm_operator.logs import for_migration
from pdm_operator.model import Body
from pdm_operator.statuswriter import StatusWriter

__all__ = ["Reconciler", "Step", "Timing"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Threads listing environments' Jobs ahead (``_Answers``): one per environment
#: starting a Job at once, in a burst over ten environments.
LIST_AHEAD_THREADS = 10


class Accepted:
    """The Jobs the API server accepted a moment ago, in a dry run or a real
    create, by namespace and inputs hash (``render.hash_of``: the Job spec
    without the migration's name), so the fifty waiters of one deployment cost
    one check, not fifty, and none when the first of them created its Job
    before they looked. A dry run goes through the same admission chain and
    validation as the create it stands for, only unpersisted (KEP-576,
    https://www.kubernetes.dev/resources/keps/576/), so either answers.

    Kept for :attr:`FOR` seconds (an admission policy changed meanwhile is met
    by the real create, which decides anyway) and at most :attr:`SIZE` entries.
    Shared by the workers' threads.
    """

    FOR = 300.0
    SIZE = 256

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._jobs: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def get(self, namespace: str, job: Body) -> str | None:
        """The name of an identical Job accepted within :attr:`FOR` seconds, if any."""
        with self._lock:
            found = self._jobs.get((namespace, render.hash_of(job)))
        return found[0] if found and self.clock() - found[1] < self.FOR else None

    def add(self, namespace: str, job: Body) -> None:
        with self._lock:
            key = (namespace, render.hash_of(job))
            self._jobs.pop(key, None)
            self._jobs[key] = (job["metadata"]["name"], self.clock())
            while len(self._jobs) > self.SIZE:
                self._jobs.popitem(last=False)


class LogReads:
    """When each migration's log was last read for progress, and the steps whose
    durations were observed (by uid), shared by the workers.

    The decision asks (``ProgressReadAt``) and reads at most once per
    ``Timing.progress_read``: kept here, not in the status, so that a read
    that finds nothing new costs no status write. A restarted operator reads
    at once, once. At most :attr:`SIZE` migrations are remembered (the oldest
    read is forgotten first: it reads again sooner, no harm).
    """

    SIZE = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: OrderedDict[str, tuple[datetime, int]] = OrderedDict()

    def last(self, uid: str) -> datetime | None:
        with self._lock:
            found = self._reads.get(uid)
        return found[0] if found else None

    def read(self, uid: str, at: datetime) -> None:
        with self._lock:
            _, observed = self._reads.pop(uid, (at, 0))
            self._reads[uid] = (at, observed)
            while len(self._reads) > self.SIZE:
                self._reads.popitem(last=False)

    def to_observe(self, uid: str, done: int, count: int) -> int:
        """How many of the last ``count`` steps through step ``done`` are new here."""
        with self._lock:
            at, observed = self._reads.get(uid, (timestamps.now(), 0))
            self._reads[uid] = (at, max(observed, done))
        return max(0, min(count, done - observed))


class Environments:
    """The PostDeployEnvironments read a moment ago, by name, shared by the workers.

    Every pass of a migration without a Job asks for its environment first;
    a line of fifty waiters would read the same object fifty times a minute.
    A body is kept :attr:`FOR` seconds, so an admin's edit (a namespace taken
    off the list) is obeyed by a pass that starts after that; a missing
    environment is never kept (its declaration is seen at the next pass).
    """

    FOR = 2.0

    def __init__(self, read: Callable[[str], Body | None], clock: Callable[[], float]) -> None:
        self.read = read
        self.clock = clock
        self._lock = threading.Lock()
        self._bodies: dict[str, tuple[Body, float]] = {}

    def get(self, name: str) -> Body | None:
        with self._lock:
            found = self._bodies.get(name)
        if found is not None and self.clock() - found[1] < self.FOR:
            return found[0]
        body = self.read(name)
        with self._lock:
            if body is None:
                self._bodies.pop(name, None)
            else:
                self._bodies[name] = (body, self.clock())
        return body


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        lock_namespace: str,
        clock: Clock = timestamps.now,
        timing: Timing | None = None,
        *,
        on_release: Callable[[str, Holder | None], None] | None = None,
        successor: Callable[[str, Holder], Holder | None] | None = None,
        known: Callable[[str, str], Body | None] | None = None,
        gitlab: DeploymentsReader | None = None,
    ) -> None:
        """``on_release``, ``successor`` and ``known`` are the controller's, for the
        environment's line (``Controller``); without them (a test, a one-off
        pass) nobody waits: a released lock is deleted and every holder is
        read. ``gitlab`` reads the GitLab deployments gate (its cache is shared
        by every pass).
        """
        self.kube = kube
        self.writer = StatusWriter(kube)
        self.clock = clock
        self.timing = timing or Timing()
        self.setup = Setup(lock_namespace, self.timing)
        self.locks = EnvironmentLocks(kube, lock_namespace, self._holder_active)
        self.accepted = Accepted()
        self.log_reads = LogReads()
        self.gitlab = gitlab or DeploymentsReader()
        self.environments = Environments(self._read_environment, time.monotonic)
        #: Threads that list an environment's Jobs while a pass takes its Lease.
        self.ahead = ThreadPoolExecutor(LIST_AHEAD_THREADS, thread_name_prefix="pdm-ahead")
        #: Told the environment, and whom the lock was handed to (None: the
        #: Lease was deleted), the moment a pass gives its lock back, before
        #: the pass writes anything else: the controller pokes that one (or
        #: the first in line) at once instead of when the status write comes
        #: back by watch.
        self.on_release = on_release
        #: The migration to hand an environment's lock to when its holder (the
        #: second argument) gives it back: the first in line but the holder.
        self.successor = successor
        #: The latest body the watch brought of a migration, if any: a holder
        #: it shows still active needs no read (a holder that has ended pokes
        #: its line when its end comes by watch, so trusting a stale "active"
        #: costs nothing but a later look; an "inactive" one is read afresh).
        self.known = known

    def reconcile(
        self,
        migration: Body,
        *,
        first_in_line: bool = False,
        handed: bool = False,
        written: list[str] | None = None,
    ) -> Step:
        """One pass. ``migration``'s resourceVersion follows the pass's writes.

        ``first_in_line``: no older migration of its environment waits, so the
        environment's Lease is probably free (``locks.acquire``'s ``likely_free``).
        ``handed``: the holder before named this migration in the Lease as it
        ended (``decide.reconcile``). ``written``: the resourceVersion of each
        status write the pass makes is appended to it, as it is made (the
        worker tells its own writes from news by them).
        """
        return decide.drive(
            decide.reconcile(migration, self.clock(), self.setup, handed=handed),
            _Answers(self, migration, first_in_line=first_in_line, handed=handed, written=written),
        )

    def record_error(self, migration: Body, error: BaseException) -> None:
        """A pass ended in an unexpected error: say so in the status (Stalled) and an event."""
        decide.drive(
            decide.record_error(migration, self.clock(), self.setup, error),
            _Answers(self, migration),
        )

    def _read_environment(self, name: str) -> Body | None:
        return self.kube.get_environment(name)

    def _holder_active(self, holder: Holder, acquired_at: datetime | None) -> bool:
        now = self.clock()
        seen = self.known(holder.namespace, holder.name) if self.known is not None else None
        if seen is not None and decide.holder_active(holder.uid, seen, acquired_at, now):
            return True
        other = self.kube.get_migration(holder.namespace, holder.name)
        return decide.holder_active(holder.uid, other, acquired_at, now)


class _Answers:
    """Answers one pass's asks, for ``migration``, through the API."""

    def __init__(
        self,
        reconciler: Reconciler,
        migration: Body,
        *,
        first_in_line: bool = False,
        handed: bool = False,
        written: list[str] | None = None,
    ) -> None:
        self.r = reconciler
        #: The Lease is probably free: created without reading it first. Not
        #: while this migration's pre-flight runs: it holds the Lease, and each
        #: of its passes would be a refused create (and a read) instead of a read.
        self.likely_free = (
            first_in_line
            and not handed
            and not decide.preflight_running(migration.get("status") or {})
        )
        #: The Lease is probably ours to take: the environment's Jobs, which the
        #: pass lists right after, are listed while it is taken.
        self.likely_ours = first_in_line or handed
        self.jobs_ahead: Future[list[Body]] | None = None
        #: Where the resourceVersions of this pass's status writes go, if anywhere.
        self.written = written
        self.kube = reconciler.kube
        self.migration = migration
        self.meta = migration["metadata"]
        self.namespace = str(self.meta["namespace"])
        self.environment = str(migration["spec"]["environment"])
        self.holder = Holder.of(migration)
        #: Deployments read in this pass: the image's source, a rollout gate
        #: and the pinning ask for the same one within milliseconds.
        self.deployments: dict[str, Body | None] = {}

    def _token(self, ref: Body) -> Callable[[], str]:
        """Reads the token of Secret ``ref`` in the migration's namespace, when called."""

        def read() -> str:
            value = self.kube.read_secret_value(self.namespace, ref["name"], ref["key"])
            if not value:
                raise LookupError(f"Secret {ref['name']!r} has no key {ref['key']!r}")
            return value

        return read

    def __call__(self, ask: decide.AnyAsk) -> Any:  # noqa: PLR0911, PLR0912, PLR0915 - one branch per ask
        ns, kube = self.namespace, self.kube
        match ask:
            case decide.ResolveImage():
                return sources.image(kube, ns, self.migration["spec"]["image"], self._deployment)
            case decide.FindTemplate():
                return sources.template(kube, ns, self.migration["spec"])
            case decide.GetDeployment(name):
                return self._deployment(name)
            case decide.DeploymentPods(name):
                return sources.deployment_pods(kube, ns, self._deployment(name))
            case decide.GetMigration(name):
                return kube.get_migration(ns, name)
            case decide.GetEnvironment():
                return self.r.environments.get(self.environment)
            case decide.ReadGitLabIssues(source, token):
                return self.r.gitlab.read_issues(source, self._token(token))
            case decide.ReadGitLabDeployments(watch, token):
                return {
                    environment: self.r.gitlab.read(watch, environment, self._token(token))
                    for environment in watch.environments
                }
            case decide.GetJob(name):
                return kube.get_job(ns, name)
            case decide.EnvironmentJobs():
                ahead, self.jobs_ahead = self.jobs_ahead, None
                return ahead.result() if ahead is not None else self._environment_jobs()
            case decide.JobPods(job, uid):
                # The Job controller's own label, then its owner reference:
                # a pod that only copies the Job's labels is not its pod.
                selector = f"batch.kubernetes.io/controller-uid={uid}"
                return jobs.controlled_by(kube.list_pods(ns, selector), uid)
            case decide.JobEvents(job, uid):
                return kube.job_events(ns, job, uid)
            case decide.LogTail(pod, container, lines, previous):
                return kube.pod_log_tail(ns, pod, container, lines, previous=previous)
            case decide.PodLog(pod, limit):
                return kube.pod_log(ns, pod, model.MIGRATION_CONTAINER, limit)
            case decide.ProgressReadAt():
                return self.r.log_reads.last(str(self.meta.get("uid")))
            case decide.LogSince(pod, since, limit):
                at = self.r.clock()
                self.r.log_reads.read(str(self.meta.get("uid")), at)
                return kube.pod_log_since(
                    ns, pod, model.MIGRATION_CONTAINER, since, limit=limit, now=at
                )
            case decide.ObserveSteps(done, steps):
                new = self.r.log_reads.to_observe(str(self.meta.get("uid")), done, len(steps))
                for database, seconds in steps[len(steps) - new :]:
                    metrics.step_completed(self.environment, database, seconds)
                return None
            case decide.ReadHistory(name):
                return kube.get_configmap(self.r.setup.lock_namespace, name)
            case decide.ValidateJob(job):
                same = self.r.accepted.get(ns, job)
                if same is None:
                    kube.create_job(ns, job, dry_run=True)
                    self.r.accepted.add(ns, job)
                return same
            case decide.DefaultedJob(job):
                probe = copy.deepcopy(job)
                probe["metadata"]["name"] = probe["metadata"]["name"][:57] + "-probe"
                probe["metadata"].pop("ownerReferences", None)
                return kube.create_job(ns, probe, dry_run=True)
            case decide.PlanDryRun(image, template):
                return dryrun.plan(kube, self.migration, image, template)
            case decide.AcquireLock():
                if self.likely_ours:
                    self.jobs_ahead = self.r.ahead.submit(self._environment_jobs)
                now = timestamps.rfc3339(self.r.clock())
                taken = self.r.locks.acquire(
                    self.environment, self.holder, now, likely_free=self.likely_free
                )
                return taken.tenure if isinstance(taken, Taken) else None
            case decide.ReleaseLock():
                to = self.r.successor(self.environment, self.holder) if self.r.successor else None
                now = timestamps.rfc3339(self.r.clock())
                released = self.r.locks.release(self.environment, self.holder, now, to)
                if released is not None and self.r.on_release is not None:
                    self.r.on_release(self.environment, released.to)
                return released is not None
            case decide.WriteStatus():
                return self._write(ask)
            case decide.CreateJob(job):
                created = kube.create_job(ns, job)
                self.r.accepted.add(ns, job)
                return created
            case decide.CreateMigration(migration, dry_run):
                return kube.create_migration(ns, migration, dry_run=dry_run)
            case decide.SuspendJob(name):
                return kube.suspend_job(ns, name)
            case decide.CreateDisruptionBudget(budget):
                return kube.create_disruption_budget(ns, budget)
            case decide.Warn(reason, message):
                for_migration(log, self.migration).warning("%s", message)
                now = timestamps.rfc3339(self.r.clock())
                return kube.create_event(
                    events.event_for(self.migration, "Warning", reason, message, now)
                )
            case decide.LogWarning(message):
                for_migration(log, self.migration).warning("%s", message)
                return None
            case decide.MergeHistory(base, data):
                return kube.merge_configmap_data(self.r.setup.lock_namespace, base, data)
            case decide.ShowFloor(version):
                metrics.rollback_floor(self.environment, version)
                return None
            case decide.CountHistoryFailure():
                metrics.history_write_failed(self.environment)
                return None
            case decide.PutConfigMap(configmap):
                return kube.put_configmap(ns, configmap)
            case _:
                # The closed vocabulary: mypy --strict fails here when an ask is not answered.
                assert_never(ask)

    def _environment_jobs(self) -> list[Body]:
        """The migration Jobs of this environment in the namespace (``create.environment_jobs``).

        Listed while the Lease is taken when it is probably ours: the list is
        the guard against a Lease deleted or edited while a Job runs, not the
        lock, and a Job created in the milliseconds between a list and the
        Lease write would be missed by a list after it just as well.
        """
        selector = (
            f"{model.LABEL_MANAGED_BY}=pdm-operator,{model.LABEL_ENVIRONMENT}={self.environment}"
        )
        return self.kube.list_jobs(self.namespace, selector)

    def _deployment(self, name: str) -> Body | None:
        if name not in self.deployments:
            self.deployments[name] = self.kube.get_deployment(self.namespace, name)
        return self.deployments[name]

    def _write(self, ask: decide.WriteStatus) -> Body | None:
        """The status patched (guarded by the resourceVersion the pass holds), each
        announced transition logged, posted as an Event and counted."""
        now = timestamps.rfc3339(self.r.clock())
        written = self.r.writer.write(
            self.migration,
            ask.patch,
            ask.before,
            list(ask.status.get("conditions") or []),
            now=now,
            on_transition=lambda cond: self._count(ask.status, cond),
        )
        if written is not None:
            version = written["metadata"].get("resourceVersion")
            self.meta["resourceVersion"] = version
            if self.written is not None and version:
                self.written.append(str(version))
        return written

    def _count(self, status: Body, cond: Body) -> None:
        """Metrics for a condition that just changed (after it was stored)."""
        if cond["status"] != "True":
            return
        if cond["type"] == model.JOB_CREATED:
            metrics.job_created(self.migration, self.r.clock())
        elif cond["type"] == model.STALLED:  # announced only while not failed
            metrics.stalled(self.migration, cond["reason"])
        elif cond["type"] in (model.SUCCEEDED, model.FAILED):
            metrics.migration_ended(
                self.migration, status, cond["type"] == model.SUCCEEDED, cond["reason"]
            )
            if cond["type"] == model.FAILED:
                metrics.migration_failed(self.migration, status)
