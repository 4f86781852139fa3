"""The decision of a pass, for every state and gate: one table, one row per case.

Each row is a migration as stored and the cluster it meets (a ``World``, a
plain value answering every ask of ``decide.reconcile``); the row says what
the pass must leave (state, reason, when to look again) and the effects it
asks for, in order. Reads are not effects; the dry-run check is listed, as
it is a call to the API server that can refuse.

The order of the effects is part of the behaviour: the lock is given back
before the history write, ``status.image`` and the pre-flight record are
written before the Job that depends on them, a Job is protected before it is
recorded.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, assert_never

import pytest

from pdm_operator import (
    conditions,
    decide,
    diffing,
    dryrun,
    errors,
    gates,
    history,
    images,
    jobs,
    model,
    preflight,
    render,
    retries,
    statuswriter,
    templates,
    when,
)
from pdm_operator.decide import Setup, Timing, after_job
from pdm_operator.deployments import Listing, Unreachable
from pdm_operator.model import Body

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = "2026-12-02T12:00:00Z"
#: A Job just created is looked at again this soon; its end comes by watch.
YOUNG_JOB_POLL = 5.0
T0 = "2026-12-02T11:59:00Z"
NAMESPACE = "gitlab"
UID = "0b6c1e52-3f0a-4d8e-9a57-6f2d1c0e4b11"
IMAGE = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee:v17.5.0"
OLD_IMAGE = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee:v17.4.0"
DIGEST = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee@sha256:" + "ab" * 32
TIMING = Timing()
SETUP = Setup("pdm-system", TIMING)
RESOLVED = images.Resolved(IMAGE, IMAGE)
UNREACHABLE = Unreachable("connection refused")

#: The asks that change something (or may be refused by the API server).
EFFECTS = (
    decide.ValidateJob,
    decide.AcquireLock,
    decide.ReleaseLock,
    decide.WriteStatus,
    decide.CreateJob,
    decide.CreateMigration,
    decide.SuspendJob,
    decide.CreateDisruptionBudget,
    decide.Warn,
    decide.MergeHistory,
    decide.PutConfigMap,
)


# --- the migration as stored ------------------------------------------------------
def migration(**spec: Any) -> Body:
    """A Run-mode PostDeployMigration as the API server stores it, pre-flight off."""
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {
            "name": "gstg-1200",
            "namespace": NAMESPACE,
            "uid": UID,
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": T0,
        },
        "spec": {
            "environment": "gstg",
            "mode": "Run",
            "pipeline": "Regular",
            "suspend": False,
            "image": {"reference": IMAGE},
            "job": {"activeDeadlineSeconds": 3600, "backoffLimit": 0},
            "preflight": {"enabled": False},
            **spec,
        },
    }


def with_status(m: Body, **status: Any) -> Body:
    m = copy.deepcopy(m)
    m["status"] = {"image": IMAGE, "sourceImage": IMAGE, **status}
    return m


def planned_job(m: Body) -> Body:
    return render.render_job(m, (m.get("status") or {}).get("image") or IMAGE, None)


def look_alike(job: Body) -> Body:
    """``job`` with a field the operator never writes: someone else's Job, made to look ours."""
    job = copy.deepcopy(job)
    job["spec"]["template"]["spec"]["hostAliases"] = [{"ip": "10.0.0.9", "hostnames": ["db"]}]
    return job


def after_a_pass(m: Body, world: World | None = None) -> Body:
    """``m`` as the pass a minute ago left it."""
    m = copy.deepcopy(m)
    step = decide.drive(decide.reconcile(m, NOW - timedelta(minutes=1), SETUP), world or World())
    return m | {"status": step.status}


def running(m: Body) -> Body:
    """``m`` after the pass that created its Job."""
    return after_a_pass(m)


def job_named(m: Body, *conds: Body, ready: int = 0) -> Body:
    job = planned_job(m)
    job["metadata"].update(
        uid="job-uid",
        creationTimestamp=T0,
        ownerReferences=[{"uid": UID, "kind": model.KIND, "name": m["metadata"]["name"]}],
    )
    job["status"] = {"conditions": list(conds), **({"ready": ready} if ready else {})}
    return job


COMPLETE = {"type": "Complete", "status": "True", "lastTransitionTime": "2026-12-02T11:59:30Z"}
FAILED = {
    "type": "Failed",
    "status": "True",
    "reason": "BackoffLimitExceeded",
    "message": "Job has reached the specified backoff limit",
    "lastTransitionTime": "2026-12-02T11:59:30Z",
}


def failed_pod(job: str, exit_code: int = 1) -> Body:
    return {
        "metadata": {"name": f"{job}-x7k2q"},
        "status": {
            "containerStatuses": [
                {
                    "name": model.MIGRATION_CONTAINER,
                    "state": {"terminated": {"exitCode": exit_code, "finishedAt": T0}},
                }
            ]
        },
    }


def waiting_pod(job: str, reason: str) -> Body:
    return {
        "metadata": {"name": f"{job}-x7k2q"},
        "status": {
            "containerStatuses": [
                {"name": model.MIGRATION_CONTAINER, "state": {"waiting": {"reason": reason}}}
            ]
        },
    }


def running_pod(job: str, restarts: int = 0) -> Body:
    return {
        "metadata": {"name": f"{job}-x7k2q", "creationTimestamp": T0},
        "status": {
            "containerStatuses": [
                {
                    "name": model.MIGRATION_CONTAINER,
                    "state": {"running": {"startedAt": T0}},
                    "restartCount": restarts,
                }
            ]
        },
    }


#: The migration pod's log as ``kubectl logs --timestamps`` shows it, one
#: migration done, the next running.
ANNOUNCED = (
    "2026-12-02T11:59:10.000000001Z Running db:migrate:main rake task\n"
    "2026-12-02T11:59:10.100000000Z main: == 20261115000002 RemoveArchivedFromProjects: "
    "migrating ======\n"
    "2026-12-02T11:59:10.200000000Z main: == 20261115000002 RemoveArchivedFromProjects: "
    "migrated (0.0011s) ======\n"
    "2026-12-02T11:59:10.300000000Z main: == 20261115000003 BackfillProjectStatistics: "
    "migrating ======\n"
)


def announcing(**world: Any) -> World:
    """A running Job whose pod has announced one migration done and the next running."""
    return World(
        jobs={JOB_NAME: job_named(NEW, ready=1)},
        pods={JOB_NAME: [running_pod(JOB_NAME)]},
        stamped_logs={f"{JOB_NAME}-x7k2q": ANNOUNCED},
        **world,
    )


def other_migration(name: str, state: str, *, waits_for: list[str] | None = None) -> Body:
    conds = {
        "Succeeded": [{"type": model.SUCCEEDED, "status": "True"}],
        "Failed": [{"type": model.FAILED, "status": "True"}],
    }.get(state, [])
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"},
        "spec": {"environment": "gstg", "waitFor": {"migrations": waits_for or []}},
        "status": {"state": state, "conditions": conds},
    }


def deployment(image: str = IMAGE, *, updated: int = 1) -> Body:
    return {
        "metadata": {"name": "gitlab-toolbox", "generation": 2, "uid": "dep-uid"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "toolbox"}},
            "template": {
                "metadata": {"labels": {"app": "toolbox", "release": "gitlab"}},
                "spec": {
                    "containers": [{"name": "toolbox", "image": image}],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                },
            },
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 1,
            "updatedReplicas": updated,
            "availableReplicas": 1,
        },
    }


def held_rollout(*, bypass: bool = False) -> Body:
    """A chart Deployment rolling out, its pods checking the schema in ``dependencies``."""
    out = deployment(updated=0)
    init: Body = {"name": "dependencies", "args": ["/scripts/wait-for-deps"]}
    if bypass:
        init["env"] = [{"name": "BYPASS_POST_DEPLOYMENT", "value": "true"}]
    out["spec"]["template"]["spec"]["initContainers"] = [init]
    return out


def held_pod(running_for: int | None = None) -> Body:
    """A new pod whose ``dependencies`` check failed once and waits to try again, or
    (``running_for``) whose first check has been running that many seconds."""
    if running_for is None:
        restarts, state = 1, {"waiting": {"reason": "CrashLoopBackOff"}}
    else:
        started = NOW - timedelta(seconds=running_for)
        restarts, state = 0, {"running": {"startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    return {
        "metadata": {"name": "gitlab-toolbox-new"},
        "status": {
            "initContainerStatuses": [
                {"name": "dependencies", "restartCount": restarts, "state": state}
            ]
        },
    }


SCHEMA_BEHIND = (
    "Database Schema - main (gitlabhq_production) - current: 20261101000002, "
    "codebase: 20261115000003\n"
)


def pinned_pod() -> Body:
    return {
        "metadata": {"name": "gitlab-toolbox-abc"},
        "status": {"containerStatuses": [{"name": "toolbox", "image": IMAGE, "imageID": DIGEST}]},
    }


def template_of(image: str, **container: Any) -> templates.Template:
    dep = deployment(image)
    dep["spec"]["template"]["spec"]["containers"][0].update(container)
    found = templates.from_deployment(dep, "toolbox")
    assert isinstance(found, templates.Template)
    return found


def token_template() -> templates.Template:
    """The toolbox's template with ``automountServiceAccountToken: true``."""
    found = template_of(IMAGE)
    spec = {**found.spec, "automountServiceAccountToken": True}
    return templates.Template(
        found.kind, found.name, found.uid, found.container, found.image, found.metadata, spec
    )


def foreign_template() -> templates.Template:
    """A Deployment's template that is not a GitLab chart's (another app's pods)."""
    found = template_of(IMAGE)
    meta = {**found.metadata, "labels": {"app": "other-app", "release": "other"}}
    return templates.Template(
        found.kind, found.name, found.uid, found.container, found.image, meta, found.spec
    )


STATUS_TABLE = """\
database: gitlabhq_production

 Status   Migration ID    Migration Name
--------------------------------------------------
   up     20261101000001  Create projects
{row}

pdm-operator: db/post_migrate milestones
/srv/gitlab/db/post_migrate/20261115000001_add_unique_index_on_project_path.rb 17.5
/srv/gitlab/db/post_migrate/20261115000002_remove_archived_from_projects.rb 17.5
/srv/gitlab/db/post_migrate/20261115000003_backfill_project_statistics.rb 17.5
pdm-operator: end of db/post_migrate milestones
"""


def environment(**spec: Any) -> Body:
    """The PostDeployEnvironment ``gstg`` as an admin declares it, letting NAMESPACE in."""
    return {"metadata": {"name": "gstg"}, "spec": {"namespaces": [NAMESPACE], **spec}}


# --- the cluster a pass meets -----------------------------------------------------------
@dataclass
class World:
    """What the cluster answers; an exception is raised at the ask."""

    environment: Body | None = field(default_factory=environment)
    image: images.Resolved | images.Unresolved = RESOLVED
    template: templates.Template | templates.Missing | None = None
    deployments: dict[str, Body | None] = field(default_factory=dict)
    deployment_pods: list[Body] = field(default_factory=list)
    migrations: dict[str, Body | None] = field(default_factory=dict)
    jobs: dict[str, Body | None] = field(default_factory=dict)
    environment_jobs: list[Body] = field(default_factory=list)
    pods: dict[str, list[Body]] = field(default_factory=dict)
    job_events: list[Body] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    #: ``kubectl logs --previous``: a container's last run (keys as ``logs``).
    previous_logs: dict[str, str] = field(default_factory=dict)
    #: ``kubectl logs --timestamps`` by pod: every line, the answer to a read
    #: since a time is the lines not before it (None: cannot be read).
    stamped_logs: dict[str, str | None] = field(default_factory=dict)
    #: When the operator last read this migration's log for progress.
    progress_read_at: datetime | None = None
    tenure: str | None = "lease-uid/" + T0
    validate: Exception | None = None
    #: The Job whose identical spec was accepted a moment ago (None: checked now).
    validated_as: str | None = None
    create: Exception | None = None
    budget: Exception | None = None
    history: Body | None = None
    #: Raised at a history write (the ConfigMap immutable, RBAC, the API server down).
    history_write: Exception | None = None
    dry_run: Exception | None = None
    #: GitLab's answers per GitLab environment (one not given: unreachable).
    gitlab: Mapping[str, Listing | Unreachable] = field(default_factory=dict)
    #: The change-lock source's open issues with its labels (or why they are unknown).
    issues: when.Issues | Unreachable = field(default_factory=lambda: when.Issues([]))
    #: Raised at a PostDeployMigration's create (a retry); a taken name is a 409.
    create_migration: Exception | None = None
    asked: list[decide.Ask] = field(default_factory=list)
    created: list[Body] = field(default_factory=list)
    written: list[Body] = field(default_factory=list)
    patches: list[Body] = field(default_factory=list)

    def __call__(self, ask: decide.AnyAsk) -> Any:  # noqa: PLR0911, PLR0912
        self.asked.append(ask)
        match ask:
            case decide.GetEnvironment():
                return self.environment
            case decide.ReadGitLabIssues():
                return self.issues
            case decide.ReadGitLabDeployments(watch):
                return {e: self.gitlab.get(e, UNREACHABLE) for e in watch.environments}
            case decide.ResolveImage():
                return self.image
            case decide.FindTemplate():
                return self.template
            case decide.GetDeployment(name):
                return self.deployments.get(name)
            case decide.DeploymentPods():
                return self.deployment_pods
            case decide.GetMigration(name):
                return self.migrations.get(name)
            case decide.GetJob(name):
                return self.jobs.get(name)
            case decide.EnvironmentJobs():
                return self.environment_jobs
            case decide.JobPods(job):
                return self.pods.get(job, [])
            case decide.JobEvents():
                return self.job_events
            case decide.LogTail(pod, container, _, previous):
                # The migration container's log by pod name, another's as "pod/container".
                key = pod if container == model.MIGRATION_CONTAINER else f"{pod}/{container}"
                return (self.previous_logs if previous else self.logs).get(key, "")
            case decide.PodLog(pod):
                return self.logs.get(pod, "")
            case decide.ProgressReadAt():
                return self.progress_read_at
            case decide.LogSince(pod, since, limit):
                return since_time(self.stamped_logs.get(pod, ""), since, limit)
            case decide.ReadHistory():
                return self.history
            case decide.ValidateJob():
                if self.validate:
                    raise self.validate
                return self.validated_as
            case decide.DefaultedJob(job):
                return copy.deepcopy(job)  # the API server's defaults: none in this world
            case decide.PlanDryRun():
                if self.dry_run:
                    raise self.dry_run
                job = planned_job(migration())
                diff = diffing.Diff(True, "1 field changed", "-a\n+b\n", "gitlab/previous")
                return dryrun.Plan(job, job, diff)
            case decide.AcquireLock():
                return self.tenure
            case decide.ReleaseLock():
                return True
            case decide.WriteStatus(patch=patch, status=status):
                self.written.append(status)
                self.patches.append(patch)
                return {"metadata": {"resourceVersion": str(len(self.written) + 1)}}
            case decide.CreateJob(job):
                if self.create:
                    raise self.create
                self.created.append(job)
                return {
                    **job,
                    "metadata": {**job["metadata"], "uid": "new", "creationTimestamp": NOW_TEXT},
                }
            case decide.CreateMigration(made, dry_run):
                stored = copy.deepcopy(made)  # the CRD's defaults: none in this world
                if dry_run:
                    return stored
                if self.create_migration:
                    raise self.create_migration
                name = made["metadata"]["name"]
                if self.migrations.get(name) is not None:
                    raise errors.AlreadyExists(f"{name} already exists", 409, "AlreadyExists")
                self.migrations[name] = stored
                return stored
            case decide.CreateDisruptionBudget():
                if self.budget:
                    raise self.budget
                return None
            case decide.MergeHistory(data=data):
                if self.history_write:
                    raise self.history_write
                return {"data": {k: v for k, v in data.items() if v is not None}}
            case (
                decide.SuspendJob()
                | decide.Warn()
                | decide.LogWarning()
                | decide.ShowFloor()
                | decide.CountHistoryFailure()
                | decide.PutConfigMap()
                | decide.ObserveSteps()
            ):
                return None
            case _:
                # Every ask is answered: mypy --strict fails here when one is added.
                assert_never(ask)

    def effects(self) -> list[str]:
        return [type(a).__name__ for a in self.asked if isinstance(a, EFFECTS)]


def since_time(log: str | None, since: str | None, limit: int) -> str | None:
    """What the kubelet answers: the lines not before ``since`` (to the second), cut at
    ``limit`` bytes (pkg/kubelet/kuberuntime/logs/logs.go)."""
    if log is None:
        return None
    kept = [line for line in log.splitlines(keepends=True) if not since or line[:19] >= since[:19]]
    return "".join(kept).encode()[:limit].decode(errors="ignore")


@dataclass(frozen=True)
class Case:
    name: str
    migration: Body
    world: Callable[[], World]
    state: str
    reason: str
    effects: list[str]
    requeue: float | None
    #: Words the message of the deciding condition must contain.
    says: str = ""
    #: The holder before named this migration in the Lease as it ended.
    handed: bool = False


def _deciding_message(status: Body) -> str:
    return " ".join(str(c.get("message") or "") for c in status.get("conditions") or [])


NEW = migration()
ROLLED_OUT = migration(waitFor={"rolledOut": ["gitlab-toolbox"]})
FROM_DEPLOYMENT = migration(
    image={"fromDeployment": {"name": "gitlab-toolbox", "container": "toolbox"}},
    waitFor={"rolledOut": ["gitlab-toolbox"]},
)
TOOLBOX = migration(podTemplateFrom={"toolboxDeployment": {"name": "gitlab-toolbox"}})
WITH_PREFLIGHT = migration(preflight={"enabled": True})
APPROVAL = migration(preflight={"enabled": True}, approval={"required": True})
CUSTOM_APPROVAL = migration(
    preflight={"enabled": True, "args": ["/bin/sh", "-c", "gitlab-rake db:migrate:status"]},
    approval={"required": True},
)
APPROVAL_OWN_ARGS = migration(
    preflight={"enabled": True, "args": ["/bin/sh", "-c", "printf 'database: main'"]},
    approval={"required": True},
)
JOB = planned_job(with_status(NEW))
JOB_NAME = JOB["metadata"]["name"]
HASH = JOB["metadata"]["annotations"][model.ANNOTATION_INPUTS_HASH]


def preflight_running(m: Body, tenure: str | None = None) -> Body:
    """``m`` after the pass that started its pre-flight (under another ``tenure``)."""
    m = after_a_pass(m)
    if tenure is not None:
        m["status"]["preflight"]["tenure"] = tenure
    return m


def preflight_done(m: Body, row: str, log: str | None = None) -> Callable[[], World]:
    """The cluster once ``m``'s pre-flight succeeded, its log showing ``row`` (or ``log``)."""
    name = m["status"]["preflight"]["jobName"]
    pod = {"metadata": {"name": f"{name}-abc"}, "status": {"phase": "Succeeded"}}
    return lambda: World(
        jobs={name: preflight_job(name, COMPLETE)},
        pods={name: [pod]},
        logs={f"{name}-abc": STATUS_TABLE.format(row=row) if log is None else log},
    )


def preflight_pod_ended(m: Body, row: str, phase: str = "Succeeded") -> Callable[[], World]:
    """The cluster a moment after ``m``'s pre-flight pod ended (``phase``), before
    the Job controller has marked its Job finished."""

    def world() -> World:
        done = preflight_done(m, row)()
        name = m["status"]["preflight"]["jobName"]
        done.jobs[name] = preflight_job(name)
        done.pods[name][0]["status"]["phase"] = phase
        return done

    return world


def preflight_job(name: str, *conds: Body, uid: str = "new") -> Body:
    """The pre-flight Job ``name`` (by default the one the pass created: World's uid)."""
    return {
        "metadata": {"name": name, "uid": uid, "creationTimestamp": T0},
        "status": {"conditions": list(conds)},
    }


def forged_preflight(m: Body) -> World:
    """The cluster where the Job under the pre-flight's name is someone else's:
    it answers "nothing pending", but it is not the Job this migration created."""
    world = preflight_done(m, "")()
    name = m["status"]["preflight"]["jobName"]
    world.jobs[name] = preflight_job(name, COMPLETE, uid="evil-uid")
    return world


#: GitLab.com's habit: weekdays from 13:00 UTC (NOW is Wednesday 12:00).
AFTERNOONS = [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "13:00", "end": "16:00"}]
SHA = "5f0c2e1d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
GITLAB_URL = "https://gitlab.example.com"
GITLAB_GATED = environment(
    gitlabDeployments={
        "url": GITLAB_URL,
        "project": "gitlab-org/gitlab",
        "environments": ["gprd-cny", "gprd"],
    }
)
TRACKED = migration(
    tracking={
        "gitlab": {"url": GITLAB_URL, "tokenSecretRef": {"name": "gitlab", "key": "token"}},
        "version": {"ref": "master", "sha": SHA},
    }
)
LOCKED_IN_GITLAB = environment(
    changeLockFrom={
        "url": GITLAB_URL,
        "project": "gitlab-com/gl-infra/production",
        "labels": ["change::in-progress", "blocks deployments"],
    }
)
CHANGE_REQUEST = {
    "iid": 1234,
    "title": "Database maintenance",
    "web_url": "https://gitlab.example.com/gitlab-com/gl-infra/production/-/issues/1234",
}
DEPLOYED = Listing({"id": 7, "sha": SHA, "ref": "master", "status": "success"}, [])
DEPLOYED_EVERYWHERE = {"gprd-cny": DEPLOYED, "gprd": DEPLOYED}
CHANGE_LOCK = {"reason": "CR 1234: failover test", "by": "alice", "at": "2026-12-02T09:00:00Z"}
PF = preflight_running(WITH_PREFLIGHT)
PF_NAME = PF["status"]["preflight"]["jobName"]
PENDING_ROW = "  down    20261115000001  Add unique index on project path"


#: An environment that retries lock contention twice, ten minutes after the failure.
RETRYING = environment(retry={"classes": ["LockContention"], "attempts": 2, "after": "10m"})
GOLDEN = Path(__file__).parent / "golden" / "rails"
LOCK_TIMEOUT_LOG = (GOLDEN / "migrate-lock-timeout.txt").read_text()
UNIQUE_VIOLATION_LOG = (GOLDEN / "migrate-unique-violation.txt").read_text()
#: The second retry of gstg-1200 (the policy's last with attempts: 2).
LAST_RETRY = migration() | {
    "metadata": {
        **NEW["metadata"],
        "name": "gstg-1200-retry-2",
        "annotations": {
            model.ANNOTATION_RETRY_OF: "gstg-1200-retry-1",
            retries.ANNOTATION_FIRST: "gstg-1200",
            retries.ANNOTATION_ATTEMPT: "2",
        },
    }
}
LAST_RETRY_JOB = planned_job(with_status(LAST_RETRY))["metadata"]["name"]

#: What the API server answers a write to an immutable ConfigMap.
IMMUTABLE = errors.Invalid(
    'ConfigMap "pdm-history-gstg" is invalid: data: Forbidden: field is immutable when '
    "`immutable` is set",
    422,
    "Invalid",
)

CASES = [
    # --- the declared environment: checked first, no lock without it -------------------
    Case(
        "its environment is not declared: waits naming the fix, takes no lock",
        NEW,
        lambda: World(environment=None),
        "Gated",
        "EnvironmentNotDeclared",
        ["WriteStatus"],
        TIMING.policy_poll,
        "PostDeployEnvironment 'gstg'",
    ),
    Case(
        "its namespace is not one the environment lists: waits, takes no lock",
        NEW,
        lambda: World(environment=environment(namespaces=["gitlab-prod"])),
        "Gated",
        "NamespaceNotAllowed",
        ["WriteStatus"],
        TIMING.policy_poll,
        "'gitlab-prod'",
    ),
    Case(
        "its Job would run as a ServiceAccount the environment does not allow: waits",
        migration(job={"serviceAccountName": "cluster-admin-sa"}),
        World,
        "Gated",
        "ServiceAccountNotAllowed",
        ["WriteStatus"],
        TIMING.policy_poll,
        "'cluster-admin-sa'",
    ),
    Case(
        "a ServiceAccount the environment allows: runs",
        migration(job={"serviceAccountName": "gitlab-migrations"}),
        lambda: World(environment=environment(serviceAccounts=["gitlab-migrations"])),
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "a copied template that mounts an API token: waits, the environment allows none",
        TOOLBOX,
        lambda: World(template=template_of(IMAGE, name="toolbox") and token_template()),
        "Gated",
        "TokenNotAllowed",
        ["WriteStatus"],
        TIMING.policy_poll,
        "automountServiceAccountToken",
    ),
    Case(
        "a projected token volume in spec.job: waits",
        migration(
            job={
                "volumes": [
                    {
                        "name": "kube-api",
                        "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
                    }
                ]
            }
        ),
        World,
        "Gated",
        "TokenNotAllowed",
        ["WriteStatus"],
        TIMING.policy_poll,
        "'kube-api'",
    ),
    Case(
        "a deadline above the environment's maximum: waits, the lock stays free",
        migration(job={"activeDeadlineSeconds": 90000}),
        World,
        "Gated",
        "DeadlineNotAllowed",
        ["WriteStatus"],
        TIMING.policy_poll,
        "43200",
    ),
    Case(
        "a template copied from a Deployment that is not the chart's toolbox: waits",
        TOOLBOX,
        lambda: World(template=foreign_template()),
        "Gated",
        "TemplateNotFromRelease",
        ["WriteStatus"],
        TIMING.policy_poll,
        "app='other-app'",
    ),
    Case(
        "the environment requires approval: a migration that did not ask for it waits for one",
        preflight_running(WITH_PREFLIGHT),
        lambda: dataclasses.replace(
            preflight_done(preflight_running(WITH_PREFLIGHT), PENDING_ROW)(),
            environment=environment(approval={"required": True}),
        ),
        "Gated",
        "AwaitingApproval",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        TIMING.queued_poll,
        "20261115000001",
    ),
    Case(
        "the environment requires approval and the migration has no pre-flight: waits",
        NEW,
        lambda: World(environment=environment(approval={"required": True})),
        "Gated",
        "ApprovalNeedsPreflight",
        ["WriteStatus"],
        TIMING.policy_poll,
        "spec.preflight.enabled",
    ),
    Case(
        "a run that would be recorded at no GitLab version: fails before the lock",
        migration(gitlabVersion="18-6-stable-ee"),
        World,
        "Failed",
        "UnknownVersion",
        ["WriteStatus", "ReleaseLock"],
        None,
        "spec.gitlabVersion",
    ),
    # --- before the Job: image, template, Pod Security ------------------------------
    Case(
        "new, every gate open: takes the lock, creates the Job, protects it, records it",
        NEW,
        World,
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "the image's Deployment is missing: says so, retries, takes no lock",
        FROM_DEPLOYMENT,
        lambda: World(image=images.Unresolved("DeploymentNotFound", "no Deployment")),
        "Pending",
        "DeploymentNotFound",
        ["WriteStatus"],
        TIMING.image_retry,
        "no Deployment",
    ),
    Case(
        "the pod template is missing: says so and retries",
        TOOLBOX,
        lambda: World(template=templates.Missing("TemplateNotFound", "no toolbox")),
        "Pending",
        "TemplateNotFound",
        ["WriteStatus"],
        TIMING.image_retry,
        "no toolbox",
    ),
    Case(
        "a template below the restricted level: fails before any gate",
        TOOLBOX,
        lambda: World(template=template_of(IMAGE, securityContext={"privileged": True})),
        "Failed",
        "PodSecurityViolation",
        ["WriteStatus", "ReleaseLock"],
        None,
        "privileged",
    ),
    # --- gates, in order --------------------------------------------------------------
    Case(
        "suspended: held, the Job checked by a dry run once, no lock",
        migration(suspend=True),
        World,
        "Gated",
        "Suspended",
        ["ValidateJob", "WriteStatus"],
        TIMING.gate_poll,
    ),
    Case(
        "not before a time still ahead: held, looked at again the moment it comes",
        migration(notBefore="2026-12-02T12:00:05Z"),
        World,
        "Gated",
        "NotBefore",
        ["ValidateJob", "WriteStatus"],
        5.0,
        "2026-12-02T12:00:05Z",
    ),
    Case(
        "not before a time far ahead: held, looked at as often as the environment's policy",
        migration(notBefore="2026-12-03T12:00:00Z"),
        World,
        "Gated",
        "NotBefore",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "it does not start before then",
    ),
    Case(
        "not before a time now past: it runs",
        migration(notBefore="2026-12-02T11:00:00Z"),
        World,
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "suspended, the API server refuses the Job: fails at once",
        migration(suspend=True),
        lambda: World(validate=errors.Invalid("spec.template: Invalid value", 422)),
        "Failed",
        "JobInvalid",
        ["ValidateJob", "WriteStatus", "ReleaseLock"],
        None,
        "spec.template: Invalid value",
    ),
    Case(
        "suspended, the dry run cannot be made now: still held, checked again later",
        migration(suspend=True),
        lambda: World(validate=errors.Transient("etcd timeout", 504)),
        "Gated",
        "Suspended",
        ["ValidateJob", "WriteStatus"],
        TIMING.gate_poll,
        "could not check",
    ),
    Case(
        "suspended, a Job exists under its name already: still held, the create decides",
        migration(suspend=True),
        lambda: World(validate=errors.AlreadyExists("jobs.batch exists", 409)),
        "Gated",
        "Suspended",
        ["ValidateJob", "WriteStatus"],
        TIMING.gate_poll,
    ),
    Case(
        "waiting for a migration still running",
        migration(waitFor={"migrations": ["gstg-1100"]}),
        lambda: World(migrations={"gstg-1100": other_migration("gstg-1100", "Running")}),
        "Gated",
        "WaitingForMigrations",
        ["ValidateJob", "WriteStatus"],
        TIMING.gate_poll,
        "gstg-1100 (Running)",
    ),
    Case(
        "a migration it waits for failed: fails too",
        migration(waitFor={"migrations": ["gstg-1100"]}),
        lambda: World(migrations={"gstg-1100": other_migration("gstg-1100", "Failed")}),
        "Failed",
        "DependencyFailed",
        ["WriteStatus", "ReleaseLock"],
        None,
    ),
    Case(
        "waits for one that waits for it: fails, naming the cycle",
        migration(waitFor={"migrations": ["gstg-1100"]}),
        lambda: World(
            migrations={"gstg-1100": other_migration("gstg-1100", "Gated", waits_for=["gstg-1200"])}
        ),
        "Failed",
        "DependencyCycle",
        ["WriteStatus", "ReleaseLock"],
        None,
        "gstg-1200 -> gstg-1100 -> gstg-1200",
    ),
    Case(
        "the Deployment has not rolled out",
        ROLLED_OUT,
        lambda: World(deployments={"gitlab-toolbox": deployment(updated=0)}),
        "Gated",
        "RolloutPending",
        ["ValidateJob", "WriteStatus"],
        TIMING.gate_poll,
        "0/1 replicas updated",
    ),
    Case(
        "the rollout's new pods wait for pending migrations, with no bypass: the deadlock",
        ROLLED_OUT,
        lambda: World(
            deployments={"gitlab-toolbox": held_rollout()},
            deployment_pods=[held_pod(running_for=40)],
            logs={"gitlab-toolbox-new/dependencies": SCHEMA_BEHIND},
        ),
        "Gated",
        "RolloutWaitsForMigrations",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "(main: current 20261101000002, codebase 20261115000003), and this migration waits "
        "for that rollout (spec.waitFor.rolledOut): neither can finish. Deployment "
        "'gitlab-toolbox': its 'dependencies' init container has no BYPASS_POST_DEPLOYMENT",
    ),
    Case(
        "a held pod waiting to run its check again: the evidence is its last run's log",
        ROLLED_OUT,
        lambda: World(
            deployments={"gitlab-toolbox": held_rollout()},
            deployment_pods=[held_pod()],
            logs={"gitlab-toolbox-new/dependencies": "Checking: main, ci\n"},
            previous_logs={"gitlab-toolbox-new/dependencies": SCHEMA_BEHIND},
        ),
        "Gated",
        "RolloutWaitsForMigrations",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "main: current 20261101000002, codebase 20261115000003",
    ),
    Case(
        "the rollout's new pods wait in the check with the bypass: for something else",
        ROLLED_OUT,
        lambda: World(
            deployments={"gitlab-toolbox": held_rollout(bypass=True)},
            deployment_pods=[held_pod()],
            previous_logs={"gitlab-toolbox-new/dependencies": SCHEMA_BEHIND},
        ),
        "Gated",
        "RolloutPending",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "kubectl logs -c dependencies gitlab-toolbox-new",
    ),
    Case(
        "the image's Deployment moved on to another version",
        with_status(FROM_DEPLOYMENT),
        lambda: World(deployments={"gitlab-toolbox": deployment("toolbox:v17.6.0")}),
        "Gated",
        "ImageChanged",
        ["ValidateJob", "WriteStatus"],
        TIMING.gate_poll,
    ),
    Case(
        "the template is of the last version: waits, without a dry run of the wrong Job",
        TOOLBOX,
        lambda: World(template=template_of(OLD_IMAGE)),
        "Gated",
        "TemplateStale",
        ["WriteStatus"],
        TIMING.gate_poll,
        OLD_IMAGE,
    ),
    Case(
        "another migration holds the environment",
        NEW,
        lambda: World(tenure=None),
        "Gated",
        "EnvironmentLocked",
        ["AcquireLock", "ValidateJob", "WriteStatus"],
        TIMING.lock_poll,
        "pdm-system/pdm-env-gstg",
    ),
    # --- when: the environment's windows, change lock and own rollouts -----------------
    Case(
        "outside the environment's windows: waits with the next opening, takes no lock",
        NEW,
        lambda: World(environment=environment(windows=AFTERNOONS)),
        "Gated",
        "OutsideWindow",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "the next opens at 2026-12-02T13:00:00Z",
    ),
    Case(
        "inside a window: runs",
        NEW,
        lambda: World(environment=environment(windows=[{"start": "11:00", "end": "13:00"}])),
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "a rollback pipeline's run waits for a window too: the admin's rule, not the creator's",
        migration(pipeline="Rollback"),
        lambda: World(environment=environment(windows=AFTERNOONS)),
        "Gated",
        "OutsideWindow",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
    ),
    Case(
        "a rollback pipeline's run waits for a change lock: a person's decision",
        migration(pipeline="Rollback"),
        lambda: World(environment=environment(changeLock=CHANGE_LOCK)),
        "Gated",
        "ChangeLocked",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "alice",
    ),
    Case(
        "every GitLab environment runs this commit and none is being deployed: runs",
        TRACKED,
        lambda: World(environment=GITLAB_GATED, gitlab=DEPLOYED_EVERYWHERE),
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "GitLab does not answer for one GitLab environment: waits, never opens on an error",
        TRACKED,
        lambda: World(environment=GITLAB_GATED, gitlab={"gprd-cny": DEPLOYED}),
        "Gated",
        "GitLabUnreachable",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "gprd",
    ),
    Case(
        "a rollback pipeline's run waits for GitLab's record too: pipeline is the creator's word",
        migration(**{**TRACKED["spec"], "pipeline": "Rollback"}),
        lambda: World(environment=GITLAB_GATED),
        "Gated",
        "GitLabUnreachable",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
    ),
    Case(
        "no token for the gate's GitLab: waits naming both fixes, asks GitLab nothing",
        migration(tracking={"version": {"ref": "master", "sha": SHA}}),
        lambda: World(environment=GITLAB_GATED),
        "Gated",
        "GitLabTokenMissing",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "tokenSecretRef",
    ),
    Case(
        "an open change request in GitLab locks the environment: waits naming it",
        TRACKED,
        lambda: World(environment=LOCKED_IN_GITLAB, issues=when.Issues([CHANGE_REQUEST])),
        "Gated",
        "ChangeLocked",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "#1234 Database maintenance",
    ),
    Case(
        "no change request open: runs",
        TRACKED,
        lambda: World(environment=LOCKED_IN_GITLAB),
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "the change-lock source cannot be read: waits, never taken to be unlocked",
        TRACKED,
        lambda: World(environment=LOCKED_IN_GITLAB, issues=UNREACHABLE),
        "Gated",
        "ChangeLockUnknown",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "connection refused",
    ),
    Case(
        "a window no clock can read: waits naming it",
        NEW,
        lambda: World(
            environment=environment(windows=[{"start": "13:00", "end": "14:00", "timeZone": "X/Y"}])
        ),
        "Gated",
        "InvalidWindow",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "'X/Y'",
    ),
    Case(
        "a change lock: waits with who and why, takes no lock",
        NEW,
        lambda: World(environment=environment(changeLock=CHANGE_LOCK)),
        "Gated",
        "ChangeLocked",
        ["ValidateJob", "WriteStatus"],
        TIMING.policy_poll,
        "change-locked by alice",
    ),
    Case(
        "a change lock set while the pre-flight runs: it is abandoned, the lock given back",
        PF,
        lambda: World(environment=environment(changeLock=CHANGE_LOCK)),
        "Gated",
        "ChangeLocked",
        ["ValidateJob", "ReleaseLock", "WriteStatus"],
        TIMING.policy_poll,
        "CR 1234",
    ),
    Case(
        "a change lock past its until: runs",
        NEW,
        lambda: World(
            environment=environment(changeLock={**CHANGE_LOCK, "until": "2026-12-02T11:00:00Z"})
        ),
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "a Deployment the environment keeps quiet is rolling out: waits",
        NEW,
        lambda: World(
            environment=environment(quietDeployments=["gitlab-webservice-default"]),
            deployments={"gitlab-webservice-default": deployment(updated=0)},
        ),
        "Gated",
        "DeployInProgress",
        ["ValidateJob", "WriteStatus"],
        TIMING.gate_poll,
        "spec.quietDeployments",
    ),
    Case(
        "a Deployment the environment keeps quiet is missing: waits (fails closed)",
        NEW,
        lambda: World(environment=environment(quietDeployments=["gitlab-webservice-default"])),
        "Gated",
        "DeployInProgress",
        ["ValidateJob", "WriteStatus"],
        TIMING.gate_poll,
        "was not found",
    ),
    # --- holding the lock --------------------------------------------------------------
    Case(
        "rolled out: pins the image by digest, writes it, then creates",
        with_status(FROM_DEPLOYMENT),
        lambda: World(deployments={"gitlab-toolbox": deployment()}, deployment_pods=[pinned_pod()]),
        "Running",
        "Created",
        ["AcquireLock", "WriteStatus", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
        DIGEST,
    ),
    Case(
        "another's Job still runs though the Lease is gone: held, the lock given back",
        NEW,
        lambda: World(
            environment_jobs=[
                {
                    "metadata": {
                        "name": "gstg-1100-0a1b2c3d",
                        "labels": {
                            model.LABEL_COMPONENT: render.COMPONENT,
                            model.LABEL_MIGRATION_UID: "uid-gstg-1100",
                        },
                    },
                    "status": {},
                }
            ]
        ),
        "Gated",
        "EnvironmentBusy",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        TIMING.lock_poll,
        "gstg-1100-0a1b2c3d",
    ),
    Case(
        "its own Job exists already (a crash after the create): adopted",
        NEW,
        lambda: World(environment_jobs=[job_named(NEW)]),
        "Running",
        "Adopted",
        ["AcquireLock", "CreateDisruptionBudget", "WriteStatus"],
        0,
    ),
    Case(
        "a Job with its labels that is not the Job it would create: not adopted, fails",
        NEW,
        lambda: World(environment_jobs=[look_alike(job_named(NEW))]),
        "Failed",
        "JobNotOurs",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        None,
        "hostAliases",
    ),
    Case(
        "the create is refused: fails, the lock given back",
        NEW,
        lambda: World(
            create=errors.Invalid("spec.template.spec.containers[0].image: Required", 422)
        ),
        "Failed",
        "JobInvalid",
        ["AcquireLock", "CreateJob", "WriteStatus", "ReleaseLock"],
        None,
        "Required",
    ),
    Case(
        "the create fails for now: retried without the lock",
        NEW,
        lambda: World(create=errors.Transient("the server is currently unable", 503)),
        "Pending",
        "CreateFailed",
        ["AcquireLock", "CreateJob", "WriteStatus", "ReleaseLock"],
        TIMING.create_retry,
        "currently unable",
    ),
    Case(
        "the name is taken by another object's Job: waits for it to go",
        NEW,
        lambda: World(create=errors.AlreadyExists("jobs exists", 409, "AlreadyExists")),
        "Gated",
        "JobNameTaken",
        ["AcquireLock", "CreateJob", "WriteStatus", "ReleaseLock"],
        TIMING.create_retry,
    ),
    Case(
        "no PodDisruptionBudget allowed: a warning, and the Job runs",
        NEW,
        lambda: World(budget=errors.Forbidden("poddisruptionbudgets is forbidden", 403)),
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "Warn", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    # --- the pre-flight ------------------------------------------------------------------
    Case(
        "pre-flight: recorded with its uid once created, in one write; the lock kept",
        WITH_PREFLIGHT,
        World,
        "Pending",
        "PreflightRunning",
        ["AcquireLock", "CreateJob", "WriteStatus"],
        TIMING.gate_poll,
        "db:migrate:status",
    ),
    Case(
        "pre-flight: its name taken (a create whose record was lost): asked again, lock given back",
        WITH_PREFLIGHT,
        lambda: World(create=errors.AlreadyExists("jobs exists", 409, "AlreadyExists")),
        "Pending",
        "PreflightRestarted",
        ["AcquireLock", "CreateJob", "WriteStatus", "ReleaseLock"],
        TIMING.gate_poll,
        "this pass did not create it",
    ),
    Case(
        "pre-flight answered: migrations pending, the Job created",
        PF,
        preflight_done(PF, PENDING_ROW),
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "pre-flight pod Succeeded, its Job not yet Complete: answer read, the Job created",
        PF,
        preflight_pod_ended(PF, PENDING_ROW),
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    Case(
        "pre-flight pod Failed, its Job not yet ended: it may run another, waited for",
        PF,
        preflight_pod_ended(PF, PENDING_ROW, phase="Failed"),
        "Pending",
        "PreflightRunning",
        ["AcquireLock"],
        TIMING.running_resync,
    ),
    Case(
        "a pre-flight Job someone else created under its name: not read, asked again",
        PF,
        lambda: forged_preflight(PF),
        "Pending",
        "PreflightRestarted",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        TIMING.gate_poll,
        "not the one recorded",
    ),
    Case(
        "pre-flight answered: nothing pending, no Job, the lock given back first",
        PF,
        preflight_done(PF, ""),
        "Succeeded",
        "NothingPending",
        ["AcquireLock", "ReleaseLock", "WriteStatus"],
        None,
        "nothing to migrate",
    ),
    Case(
        "pre-flight answered under another tenure of the lock: asked again",
        preflight_running(WITH_PREFLIGHT, tenure="older-lease/" + T0),
        World,
        "Pending",
        "PreflightRunning",
        ["AcquireLock", "CreateJob", "WriteStatus"],
        TIMING.gate_poll,
    ),
    Case(
        "pre-flight pod cannot pull: the migration stays, Stalled",
        PF,
        lambda: World(
            jobs={PF_NAME: preflight_job(PF_NAME)},
            pods={PF_NAME: [waiting_pod(PF_NAME, "ImagePullBackOff")]},
        ),
        "Pending",
        "ImagePullBackOff",
        ["AcquireLock", "WriteStatus"],
        TIMING.running_resync,
    ),
    Case(
        "pre-flight failed: the migration fails, nothing ran",
        PF,
        lambda: World(
            jobs={PF_NAME: preflight_job(PF_NAME, FAILED)},
            pods={PF_NAME: [failed_pod(PF_NAME)]},
            logs={f"{PF_NAME}-x7k2q": "PG::ConnectionBad: could not connect"},
        ),
        "Failed",
        "PreflightFailed",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        None,
        "no migration ran",
    ),
    Case(
        "pre-flight failed on a lock timeout, lock contention retried: the retry made",
        PF,
        lambda: World(
            environment=RETRYING,
            jobs={PF_NAME: preflight_job(PF_NAME, FAILED)},
            pods={PF_NAME: [failed_pod(PF_NAME)]},
            logs={f"{PF_NAME}-x7k2q": LOCK_TIMEOUT_LOG},
        ),
        "Failed",
        "PreflightFailed",
        ["AcquireLock", "CreateMigration", "WriteStatus", "ReleaseLock"],
        None,
        "no migration ran. Fix the cause, then `kubectl pdm retry` gstg-1200 runs it again; "
        "failure class LockContention; retry 1 of 2",
    ),
    Case(
        "approval required, the creator's own pre-flight args find nothing: still approved first",
        preflight_running(CUSTOM_APPROVAL),
        preflight_done(preflight_running(CUSTOM_APPROVAL), ""),
        "Gated",
        "AwaitingApproval",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        TIMING.queued_poll,
        "WARNING",
    ),
    Case(
        "approval required, none given: waits naming the plan, the lock given back",
        preflight_running(APPROVAL),
        preflight_done(preflight_running(APPROVAL), PENDING_ROW),
        "Gated",
        "AwaitingApproval",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        TIMING.queued_poll,
        "20261115000001",
    ),
    Case(
        "approval required, the pre-flight's own args: the wait says so first",
        preflight_running(APPROVAL_OWN_ARGS),
        preflight_done(preflight_running(APPROVAL_OWN_ARGS), PENDING_ROW),
        "Gated",
        "AwaitingApproval",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        TIMING.queued_poll,
        'WARNING: non-default pre-flight args (spec.preflight.args ["/bin/sh", "-c"',
    ),
    Case(
        "pre-flight log cut after the dashes: unreadable, never nothing pending",
        PF,
        preflight_done(PF, "", log=STATUS_TABLE.format(row="").split("   up ")[0]),
        "Failed",
        "PreflightUnreadable",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        None,
        "no complete db:migrate:status table",
    ),
    Case(
        "pre-flight log cut before the blank line that ends the table: unreadable",
        PF,
        preflight_done(
            PF, "", log=STATUS_TABLE.format(row=PENDING_ROW).split("\n\npdm-operator")[0] + "\n"
        ),
        "Failed",
        "PreflightUnreadable",
        ["AcquireLock", "WriteStatus", "ReleaseLock"],
        None,
        "no migration ran",
    ),
    Case(
        "pre-flight pod had the skip variable: a Warning, and the Job runs (it unsets it too)",
        PF,
        preflight_done(
            PF, "", log=templates.SKIP_MARKER + "\n" + STATUS_TABLE.format(row=PENDING_ROW)
        ),
        "Running",
        "Created",
        ["AcquireLock", "Warn", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
    ),
    # --- handed the lock by the holder before -------------------------------------------
    Case(
        "handed the lock, every gate open: creates the Job under it",
        NEW,
        World,
        "Running",
        "Created",
        ["AcquireLock", "CreateJob", "CreateDisruptionBudget", "WriteStatus"],
        YOUNG_JOB_POLL,
        handed=True,
    ),
    Case(
        "handed the lock, suspended since its last pass: gives it back at once",
        migration(suspend=True),
        World,
        "Gated",
        "Suspended",
        ["ValidateJob", "WriteStatus", "ReleaseLock"],
        TIMING.gate_poll,
        handed=True,
    ),
    Case(
        "handed the lock, its image gone: gives it back at once",
        FROM_DEPLOYMENT,
        lambda: World(image=images.Unresolved("DeploymentNotFound", "no Deployment")),
        "Pending",
        "DeploymentNotFound",
        ["WriteStatus", "ReleaseLock"],
        TIMING.image_retry,
        handed=True,
    ),
    Case(
        "handed the lock it took meanwhile, its Job running: keeps it",
        running(NEW),
        lambda: World(jobs={JOB_NAME: job_named(NEW, ready=1)}),
        "Running",
        "Created",
        [],
        TIMING.running_resync,
        handed=True,
    ),
    # --- the Job ------------------------------------------------------------------------
    Case(
        "the Job runs, its pod ready: looks again at the resync",
        running(NEW),
        lambda: World(jobs={JOB_NAME: job_named(NEW, ready=1)}),
        "Running",
        "Created",
        [],
        TIMING.running_resync,
    ),
    Case(
        "the Job runs and Rails announced a migration: progress written, read again when due",
        running(NEW),
        announcing,
        "Running",
        "Created",
        ["WriteStatus"],
        TIMING.progress_read,
    ),
    Case(
        "the Job runs, its log read a moment ago: not read again, looked at when a read is due",
        running(NEW),
        lambda: announcing(progress_read_at=NOW - timedelta(seconds=5)),
        "Running",
        "Created",
        [],
        TIMING.progress_read - 5,
    ),
    Case(
        "the Job runs, its pod's log cannot be read: still Running, progress unknown",
        running(NEW),
        lambda: World(
            jobs={JOB_NAME: job_named(NEW, ready=1)},
            pods={JOB_NAME: [running_pod(JOB_NAME)]},
            stamped_logs={f"{JOB_NAME}-x7k2q": None},
        ),
        "Running",
        "Created",
        ["WriteStatus"],
        TIMING.progress_read,
    ),
    Case(
        "the Job's pod cannot pull its image: Stalled, the Job keeps the environment",
        running(NEW),
        lambda: World(
            jobs={JOB_NAME: job_named(NEW)},
            pods={JOB_NAME: [waiting_pod(JOB_NAME, "ErrImagePull")]},
        ),
        "Running",
        "ErrImagePull",
        ["WriteStatus"],
        TIMING.running_resync,
    ),
    Case(
        "the Job's image name is invalid: suspended, failed, the environment freed",
        running(NEW),
        lambda: World(
            jobs={JOB_NAME: job_named(NEW)},
            pods={JOB_NAME: [waiting_pod(JOB_NAME, "InvalidImageName")]},
        ),
        "Failed",
        "InvalidImageName",
        ["SuspendJob", "WriteStatus", "ReleaseLock"],
        None,
        "suspended",
    ),
    Case(
        "the Job's pod can never start (its image name): Unknown, so no policy retries it",
        running(NEW),
        lambda: World(
            environment=environment(
                retry={"classes": ["Infrastructure"], "attempts": 1, "after": "1h"}
            ),
            jobs={JOB_NAME: job_named(NEW)},
            pods={JOB_NAME: [waiting_pod(JOB_NAME, "InvalidImageName")]},
        ),
        "Failed",
        "InvalidImageName",
        ["SuspendJob", "WriteStatus", "ReleaseLock"],
        None,
        "failure class Unknown",
    ),
    Case(
        "the Job completed: the lock given back before the history write and the status",
        running(NEW),
        lambda: World(jobs={JOB_NAME: job_named(NEW, COMPLETE)}),
        "Succeeded",
        "JobComplete",
        ["ReleaseLock", "MergeHistory", "WriteStatus"],
        None,
    ),
    Case(
        "the Job failed: exit code and the failed migration named; lock given back first",
        running(NEW),
        lambda: World(
            jobs={JOB_NAME: job_named(NEW, FAILED)},
            pods={JOB_NAME: [failed_pod(JOB_NAME, 1)]},
            logs={
                f"{JOB_NAME}-x7k2q": "== 20261115000001 AddIndex: migrating ==\n"
                "rake aborted!\nPG::DuplicateTable: ERROR:  relation exists\n"
            },
        ),
        "Failed",
        "BackoffLimitExceeded",
        ["ReleaseLock", "MergeHistory", "WriteStatus"],
        None,
        "exit code 1",
    ),
    Case(
        "the Job failed on a lock timeout, lock contention retried: the retry made before the end",
        running(NEW),
        lambda: World(
            environment=RETRYING,
            jobs={JOB_NAME: job_named(NEW, FAILED)},
            pods={JOB_NAME: [failed_pod(JOB_NAME, 1)]},
            logs={f"{JOB_NAME}-x7k2q": LOCK_TIMEOUT_LOG},
        ),
        "Failed",
        "BackoffLimitExceeded",
        ["ReleaseLock", "MergeHistory", "CreateMigration", "WriteStatus"],
        None,
        "failure class LockContention; retry 1 of 2 by spec.retry of PostDeployEnvironment "
        "'gstg': pdm/gstg-1200-retry-1, not before 2026-12-02T12:09:30Z",
    ),
    Case(
        "the Job failed on a unique violation: a data error, which no policy retries",
        running(NEW),
        lambda: World(
            environment=RETRYING,
            jobs={JOB_NAME: job_named(NEW, FAILED)},
            pods={JOB_NAME: [failed_pod(JOB_NAME, 1)]},
            logs={f"{JOB_NAME}-x7k2q": UNIQUE_VIOLATION_LOG},
        ),
        "Failed",
        "BackoffLimitExceeded",
        ["ReleaseLock", "MergeHistory", "WriteStatus"],
        None,
        "failure class DataError",
    ),
    Case(
        "the last retry the policy allows failed on a lock timeout: no more retries",
        running(LAST_RETRY),
        lambda: World(
            environment=RETRYING,
            jobs={LAST_RETRY_JOB: job_named(LAST_RETRY, FAILED)},
            pods={LAST_RETRY_JOB: [failed_pod(LAST_RETRY_JOB, 1)]},
            logs={f"{LAST_RETRY_JOB}-x7k2q": LOCK_TIMEOUT_LOG},
        ),
        "Failed",
        "BackoffLimitExceeded",
        ["ReleaseLock", "MergeHistory", "WriteStatus"],
        None,
        "pdm/gstg-1200 was retried 2 time(s)",
    ),
    Case(
        "the Job completed, its history immutable: succeeded all the same, the run unrecorded",
        running(NEW),
        lambda: World(jobs={JOB_NAME: job_named(NEW, COMPLETE)}, history_write=IMMUTABLE),
        "Succeeded",
        "JobComplete",
        ["ReleaseLock", "MergeHistory", "Warn", "WriteStatus"],
        None,
    ),
    Case(
        "the Job failed, its history forbidden: failed all the same, the run unrecorded",
        running(NEW),
        lambda: World(
            jobs={JOB_NAME: job_named(NEW, FAILED)},
            pods={JOB_NAME: [failed_pod(JOB_NAME, 1)]},
            history_write=errors.Forbidden("configmaps is forbidden", 403, "Forbidden"),
        ),
        "Failed",
        "BackoffLimitExceeded",
        ["ReleaseLock", "MergeHistory", "Warn", "WriteStatus"],
        None,
        "exit code 1",
    ),
    Case(
        "the Job was deleted before it ended: failed, never re-created, recorded as unknown",
        running(NEW),
        World,
        "Failed",
        "JobDeleted",
        ["ReleaseLock", "MergeHistory", "WriteStatus"],
        None,
        "never re-run automatically",
    ),
    # --- finished, dry runs ---------------------------------------------------------------
    Case(
        "finished, then its spec edited: only observedGeneration catches up",
        with_status(
            NEW | {"metadata": {**NEW["metadata"], "generation": 2}},
            state="Succeeded",
            observedGeneration=1,
            conditions=[{"type": model.SUCCEEDED, "status": "True", "reason": "JobComplete"}],
        ),
        World,
        "Succeeded",
        "",
        ["WriteStatus"],
        None,
    ),
    Case(
        "a dry run: checked and diffed, never the lock or a Job",
        migration(mode="DryRun"),
        World,
        "Succeeded",
        "DryRunSucceeded",
        ["WriteStatus"],
        None,
        "1 field changed",
    ),
    Case(
        "a dry run waiting for a Deployment without the bypass warns before the deploy",
        migration(mode="DryRun", waitFor={"rolledOut": ["gitlab-toolbox"]}),
        lambda: World(deployments={"gitlab-toolbox": held_rollout()}),
        "Succeeded",
        "DryRunSucceeded",
        ["Warn", "WriteStatus"],
        None,
        "warning (BypassPostDeploymentMissing): Deployment 'gitlab-toolbox': its 'dependencies' "
        "init container has no BYPASS_POST_DEPLOYMENT",
    ),
    Case(
        "a dry run waiting for a Deployment with the bypass: no warning",
        migration(mode="DryRun", waitFor={"rolledOut": ["gitlab-toolbox"]}),
        lambda: World(deployments={"gitlab-toolbox": held_rollout(bypass=True)}),
        "Succeeded",
        "DryRunSucceeded",
        ["WriteStatus"],
        None,
        "1 field changed",
    ),
    Case(
        "a dry run the API server refuses: failed with its words",
        migration(mode="DryRun"),
        lambda: World(dry_run=errors.Invalid("spec.template.spec: Forbidden", 422)),
        "Failed",
        "DryRunRejected",
        ["WriteStatus"],
        None,
        "Forbidden",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_pass_decides(case: Case) -> None:
    world = case.world()
    m = copy.deepcopy(case.migration)
    step = decide.drive(decide.reconcile(m, NOW, SETUP, handed=case.handed), world)
    status = step.status
    assert (status.get("state"), status.get("reason") or "") == (case.state, case.reason)
    assert world.effects() == case.effects
    assert step.requeue == case.requeue
    assert case.says in _deciding_message(status)
    if world.written:
        assert world.written[-1] == status or step.requeue is None


def test_the_preflights_args_and_image_are_recorded_and_in_the_plan_hash() -> None:
    m = preflight_running(APPROVAL_OWN_ARGS)
    started = m["status"]["preflight"]
    assert started["args"] == ["/bin/sh", "-c", "printf 'database: main'"]
    assert started["image"] == IMAGE
    step = decide.drive(decide.reconcile(m, NOW, SETUP), preflight_done(m, PENDING_ROW)())
    pf = step.status["preflight"]
    pending = [
        preflight.Pending(
            "gitlabhq_production", "20261115000001", "Add unique index on project path"
        )
    ]
    assert pf["planHash"] == preflight.plan_hash(
        pf["jobHash"], pending, args=started["args"], image=IMAGE
    )
    assert pf["planHash"] != preflight.plan_hash(
        pf["jobHash"], pending, args=list(preflight.DEFAULT_ARGS), image=IMAGE
    )


def test_a_preflight_pod_that_had_the_skip_variable_warns_naming_its_env_from() -> None:
    m = preflight_running(WITH_PREFLIGHT)
    name = m["status"]["preflight"]["jobName"]
    env_from = [{"configMapRef": {"name": "gitlab-extra-env"}}, {"secretRef": {"name": "s"}}]
    pod = {
        "metadata": {"name": f"{name}-abc"},
        "spec": {"containers": [{"name": model.MIGRATION_CONTAINER, "envFrom": env_from}]},
        "status": {"phase": "Succeeded"},
    }
    world = World(
        jobs={name: preflight_job(name, COMPLETE)},
        pods={name: [pod]},
        logs={f"{name}-abc": templates.SKIP_MARKER + "\n" + STATUS_TABLE.format(row="")},
    )
    decide.drive(decide.reconcile(m, NOW, SETUP), world)
    (warned,) = [a for a in world.asked if isinstance(a, decide.Warn)]
    assert warned.reason == "SkipVariableUnset"
    assert "ConfigMap gitlab-extra-env (envFrom), Secret s (envFrom), the image's ENV" in (
        warned.message
    )


def test_a_waiter_behind_the_lock_reads_neither_jobs_nor_pods() -> None:
    """Fifty migrations queued for one environment: each pass costs the lock's ask
    (and its environment's, which the answerer keeps for a moment)."""
    world = World(tenure=None)
    m = with_status(NEW, conditions=[])
    m["status"]["conditions"] = [
        {"type": model.JOB_VALIDATED, "status": "True", "reason": "DryRunAccepted"}
    ]
    decide.drive(decide.reconcile(m, NOW, SETUP), world)
    kinds = {type(a).__name__ for a in world.asked}
    assert kinds <= {"GetEnvironment", "AcquireLock", "WriteStatus"}, kinds


@pytest.mark.parametrize(
    ("validated_as", "reason", "says"),
    [
        (None, "DryRunAccepted", "(server-side dry run)"),
        ("gstg-1100-0a1b2c3d", "IdenticalJobAccepted", "identical Job gstg-1100-0a1b2c3d"),
    ],
)
def test_a_waiters_job_validated_says_which_check_accepted_it(
    validated_as: str | None, reason: str, says: str
) -> None:
    world = World(tenure=None, validated_as=validated_as)
    step = decide.drive(decide.reconcile(copy.deepcopy(NEW), NOW, SETUP), world)
    validated = conditions.find(step.status["conditions"], model.JOB_VALIDATED)
    assert validated is not None
    assert validated["reason"] == reason
    assert says in validated["message"]


def test_an_unexpected_error_after_the_lock_gives_it_back_and_comes_out() -> None:
    """The pass that took the lock gives it back whatever happens, then fails."""

    class Boom(World):
        def __call__(self, ask: decide.AnyAsk) -> Any:
            if isinstance(ask, decide.EnvironmentJobs):
                self.asked.append(ask)
                raise RuntimeError("a bug")
            return super().__call__(ask)

    world = Boom()
    with pytest.raises(RuntimeError, match="a bug"):
        decide.drive(decide.reconcile(migration(), NOW, SETUP), world)
    assert world.effects() == ["AcquireLock", "ReleaseLock"]


def test_a_write_that_conflicts_comes_out_for_the_worker_to_read_again() -> None:
    class Stale(World):
        def __call__(self, ask: decide.AnyAsk) -> Any:
            if isinstance(ask, decide.WriteStatus):
                raise errors.Conflict("the object has been modified", 409, "Conflict")
            return super().__call__(ask)

    world = Stale()
    with pytest.raises(errors.Conflict):
        decide.drive(decide.reconcile(migration(suspend=True), NOW, SETUP), world)


def test_an_unexpected_error_is_shown_as_stalled_until_a_pass_gets_through() -> None:
    world = World()
    decide.drive(decide.record_error(NEW, NOW, SETUP, RuntimeError("boom")), world)
    (status,) = world.written
    stalled = [c for c in status["conditions"] if c["type"] == model.STALLED]
    assert stalled[0]["status"] == "True"
    assert stalled[0]["reason"] == "ReconcileError"
    assert "RuntimeError: boom" in stalled[0]["message"]
    after = decide.drive(
        decide.reconcile(NEW | {"status": status}, NOW + timedelta(seconds=5), SETUP), World()
    )
    cleared = [c for c in after.status["conditions"] if c["type"] == model.STALLED]
    assert cleared[0]["status"] == "False"


@pytest.mark.parametrize(
    ("holder", "acquired", "active"),
    [
        pytest.param(None, NOW, False, id="the holder is gone"),
        pytest.param(other_migration("gstg-1200", "Running"), NOW, False, id="another uid"),
        pytest.param(running(NEW), NOW, True, id="its Job exists"),
        pytest.param(preflight_running(NEW), NOW, True, id="its pre-flight runs"),
        pytest.param(
            with_status(running(NEW), jobOutcome="Succeeded"), NOW, False, id="its Job ended"
        ),
        pytest.param(with_status(NEW), NOW - timedelta(seconds=5), True, id="creating its Job"),
        pytest.param(
            with_status(NEW), NOW - timedelta(seconds=61), False, id="crashed before the create"
        ),
    ],
)
def test_who_holds_a_lock_still_needs_it(
    holder: Body | None, acquired: datetime, active: bool
) -> None:
    assert decide.holder_active(UID, holder, acquired, NOW) is active


def test_a_history_that_refuses_the_record_says_why_and_shows_the_floor_unknown() -> None:
    world = World(jobs={JOB_NAME: job_named(NEW, COMPLETE)}, history_write=IMMUTABLE)
    step = decide.drive(decide.reconcile(running(NEW), NOW, SETUP), world)
    rollback = step.status["rollback"]
    assert rollback["recorded"] is False
    assert rollback["reason"] == decide.HISTORY_UNWRITABLE == "HistoryUnwritable"
    assert rollback["floor"] == "unknown"
    assert "field is immutable" in rollback["message"]
    assert rollback["history"] == "pdm-system/pdm-history-gstg"
    record = history.decode(rollback["record"])
    assert record is not None
    assert (record.name, record.version) == ("gstg-1200", "v17.5.0")
    assert record.key in rollback["message"]
    warned = [a for a in world.asked if isinstance(a, decide.Warn)]
    assert [w.reason for w in warned] == ["HistoryUnwritable"]
    assert decide.CountHistoryFailure() in world.asked
    assert decide.ShowFloor("unknown") in world.asked


def test_a_history_write_that_may_work_later_is_retried_not_given_up() -> None:
    world = World(
        jobs={JOB_NAME: job_named(NEW, COMPLETE)},
        history_write=errors.Transient("etcdserver: request timed out", 504),
    )
    with pytest.raises(errors.Transient):
        decide.drive(decide.reconcile(running(NEW), NOW, SETUP), world)
    assert decide.CountHistoryFailure() not in world.asked


def test_a_run_recorded_at_a_version_gitlab_never_uses_is_warned_of_floor_unknown() -> None:
    # A run started before its version was checked (an older operator's):
    # a new one with such a version fails before its Job (the row UnknownVersion).
    odd = running(NEW)
    odd["spec"]["gitlabVersion"] = "18-6-stable-ee"
    job = job_named(NEW, COMPLETE)
    world = World(jobs={job["metadata"]["name"]: job})
    step = decide.drive(decide.reconcile(odd, NOW, SETUP), world)
    assert [a.reason for a in world.asked if isinstance(a, decide.Warn)] == ["UnknownVersion"]
    assert step.status["rollback"]["floor"] == "unknown"
    assert decide.ShowFloor("unknown") in world.asked


@pytest.mark.parametrize(
    "read",
    [None, {"data": {}}, errors.Forbidden("configmaps is forbidden", 403, "Forbidden")],
    ids=["missing", "empty", "unreadable"],
)
def test_a_run_that_applied_nothing_shows_the_floor_unknown_without_a_history(
    read: Body | Exception | None,
) -> None:
    """Nothing pending, and no history to read: the floor is not known, so not shown as none."""

    class Reads(World):
        def __call__(self, ask: decide.AnyAsk) -> Any:
            if isinstance(ask, decide.ReadHistory) and isinstance(read, Exception):
                self.asked.append(ask)
                raise read
            return super().__call__(ask)

    m = with_status(NEW, conditions=[{"type": model.JOB_CREATED, "status": "False"}])
    m["status"]["conditions"][0]["reason"] = decide.NOTHING_PENDING
    p = decide.Pass(m, NOW, SETUP)
    world = Reads(history=None if isinstance(read, Exception) else read)
    decide.drive(after_job.record_run(p), world)
    assert p.status["rollback"]["recorded"] is False
    assert p.status["rollback"]["floor"] == "unknown"
    assert decide.ShowFloor("unknown") in world.asked


def test_a_job_deleted_before_its_end_is_recorded_as_unknown_progress() -> None:
    """It may have applied some of its migrations: a rollback below it is never safe."""
    world = World()
    decide.drive(decide.reconcile(running(NEW), NOW, SETUP), world)
    (merge,) = [a for a in world.asked if isinstance(a, decide.MergeHistory)]
    (record,) = [history.decode(v) for v in merge.data.values() if v is not None]
    assert record is not None
    assert record.migrations is None
    assert record.outcome == "Failed"


# --- reading a failure, and a stuck rollout held in the dependencies check ----------
def restarted_failed_pod(job: str) -> Body:
    """A pod whose migration container failed and has been started again since."""
    return {
        "metadata": {"name": f"{job}-x7k2q"},
        "status": {
            "containerStatuses": [
                {
                    "name": model.MIGRATION_CONTAINER,
                    "state": {"running": {"startedAt": T0}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": T0}},
                }
            ]
        },
    }


@pytest.mark.parametrize(("pod", "previous"), [(failed_pod, False), (restarted_failed_pod, True)])
def test_a_failure_is_read_from_the_run_that_failed_far_enough_back_for_rails_abort(
    pod: Callable[[str], Body], previous: bool
) -> None:
    world = World(
        jobs={JOB_NAME: job_named(NEW, FAILED)},
        pods={JOB_NAME: [pod(JOB_NAME)]},
    )
    key = f"{JOB_NAME}-x7k2q"
    (world.previous_logs if previous else world.logs)[key] = (
        "ci: == 20261115000004 AddIndexOnCiBuildsStatus: migrating ==\n"
        "rake aborted!\nStandardError: An error has occurred, this and all later "
        "migrations canceled:\n\nPG::DuplicateTable: ERROR:  relation exists\n"
        + "/srv/gitlab/vendor/frame.rb:1:in `exec'\n"
        * 300
    )
    step = decide.drive(decide.reconcile(running(NEW), NOW, SETUP), world)
    (ask,) = [a for a in world.asked if isinstance(a, decide.LogTail)]
    assert (ask.lines, ask.previous) == (jobs.FAILURE_LOG_LINES, previous)
    failure = step.status["failure"]
    assert failure["migration"] == {
        "version": "20261115000004",
        "name": "AddIndexOnCiBuildsStatus",
        "database": "ci",
        "error": "PG::DuplicateTable: ERROR:  relation exists",
    }
    assert "frame.rb" not in failure["logTail"]
    assert "failed on ci: PG::DuplicateTable" in _deciding_message(step.status)


def stuck_rollout() -> Body:
    out = held_rollout(bypass=True)
    out["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "gitlab-toolbox-7d9" has timed out progressing.',
        }
    ]
    return out


def test_a_stuck_rollout_held_in_the_check_stays_stuck_and_says_where_its_pods_wait() -> None:
    world = World(
        deployments={"gitlab-toolbox": stuck_rollout()},
        deployment_pods=[held_pod(running_for=40)],
    )
    step = decide.drive(decide.reconcile(copy.deepcopy(ROLLED_OUT), NOW, SETUP), world)
    assert step.status["reason"] == "RolloutStuck"
    assert step.requeue == TIMING.policy_poll  # pods listed and a log read each look
    message = _deciding_message(step.status)
    assert "has timed out progressing" in message
    assert "wait in their 'dependencies' init container" in message


def test_a_window_opening_in_seconds_is_looked_at_again_then_not_a_poll_later() -> None:
    m = copy.deepcopy(NEW)
    world = World(environment=environment(windows=[{"start": "12:01", "end": "13:00"}]))
    five_to = NOW + timedelta(seconds=55)
    step = decide.drive(decide.reconcile(m, five_to, SETUP), world)
    assert step.status["reason"] == "OutsideWindow"
    assert step.status["windowOpens"] == "2026-12-02T12:01:00Z"
    assert step.requeue == 5.0


def test_the_next_opening_is_in_the_status_while_outside_and_gone_once_inside() -> None:
    m = copy.deepcopy(NEW)
    outside = World(environment=environment(windows=AFTERNOONS))
    held = decide.drive(decide.reconcile(m, NOW, SETUP), outside)
    assert held.status["windowOpens"] == "2026-12-02T13:00:00Z"
    m["status"] = held.status
    inside = World(environment=environment(windows=AFTERNOONS))
    step = decide.drive(decide.reconcile(m, NOW + timedelta(hours=1), SETUP), inside)
    assert step.status["state"] == "Running"
    assert "windowOpens" not in step.status
    assert "windowOpens" not in inside.written[-1]


def test_a_window_that_closes_while_the_preflight_runs_lets_the_run_go_on() -> None:
    """The pass goes as it would with no windows at all: the pre-flight is followed."""
    closed = World(environment=environment(windows=AFTERNOONS))
    step = decide.drive(decide.reconcile(copy.deepcopy(PF), NOW, SETUP), closed)
    always = World()
    expected = decide.drive(decide.reconcile(copy.deepcopy(PF), NOW, SETUP), always)
    assert step.status["reason"] != "OutsideWindow"
    assert (step.status, step.requeue) == (expected.status, expected.requeue)
    assert closed.effects() == always.effects()


FOLLOWING = migration(
    image={"fromDeployment": {"name": "gitlab-toolbox", "container": "toolbox", "follow": True}},
    waitFor={"rolledOut": ["gitlab-toolbox"]},
)


def test_a_following_migration_resolves_the_image_again_when_its_deployment_moves_on() -> None:
    m = with_status(FOLLOWING)
    moved = World(
        image=images.Resolved("toolbox:v17.6.0", "toolbox:v17.6.0"),
        deployments={"gitlab-toolbox": deployment("toolbox:v17.6.0")},
    )
    step = decide.drive(decide.reconcile(copy.deepcopy(m), NOW, SETUP), moved)
    assert step.status["reason"] == "ImageFollowed"
    assert "image" not in step.status
    assert "sourceImage" not in step.status
    assert step.requeue == TIMING.gate_poll
    assert moved.created == []
    # The next pass resolves what the Deployment runs now, and runs it.
    m["status"] = step.status
    step = decide.drive(decide.reconcile(m, NOW, SETUP), moved)
    assert step.status["state"] == "Running"
    assert step.status["image"] == "toolbox:v17.6.0"
    assert moved.created[0]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "toolbox:v17.6.0"
    )


# --- the environment's retry policy: exactly once, never another's object --------------
def failed_on_lock_timeout(**kw: Any) -> World:
    return World(
        environment=RETRYING,
        jobs={JOB_NAME: job_named(NEW, FAILED)},
        pods={JOB_NAME: [failed_pod(JOB_NAME, 1)]},
        logs={f"{JOB_NAME}-x7k2q": LOCK_TIMEOUT_LOG},
        **kw,
    )


def test_the_policys_retry_copies_the_spec_links_the_first_and_waits_the_delay() -> None:
    world = failed_on_lock_timeout()
    step = decide.drive(decide.reconcile(running(NEW), NOW, SETUP), world)
    made = world.migrations["gstg-1200-retry-1"]
    assert made is not None
    assert made["metadata"]["annotations"] == {
        model.ANNOTATION_RETRY_OF: "gstg-1200",
        retries.ANNOTATION_FIRST: "gstg-1200",
        retries.ANNOTATION_ATTEMPT: "1",
    }
    assert made["metadata"]["namespace"] == NAMESPACE
    # The Job's own end (11:59:30) and the policy's ten minutes.
    assert made["spec"] == {**NEW["spec"], "notBefore": "2026-12-02T12:09:30Z"}
    assert step.status["failure"]["class"] == "LockContention"
    assert step.status["failure"]["retry"] == {
        "name": "gstg-1200-retry-1",
        "attempt": 1,
        "notBefore": "2026-12-02T12:09:30Z",
        "message": "retry 1 of 2 by spec.retry of PostDeployEnvironment 'gstg': "
        "pdm/gstg-1200-retry-1, not before 2026-12-02T12:09:30Z",
    }


def test_a_retry_made_before_a_restart_is_met_again_and_counted_not_made_twice() -> None:
    first = failed_on_lock_timeout()
    decide.drive(decide.reconcile(running(NEW), NOW, SETUP), first)
    # The operator died before the Failed status was written: the next pass (a
    # new leader, a restart) fails it again and meets its own retry.
    again = failed_on_lock_timeout(migrations=dict(first.migrations))
    step = decide.drive(decide.reconcile(running(NEW), NOW + timedelta(minutes=2), SETUP), again)
    assert list(again.migrations) == ["gstg-1200-retry-1"]
    assert again.migrations == first.migrations
    assert step.status["failure"]["retry"]["name"] == "gstg-1200-retry-1"
    assert "Warn" not in again.effects()


def test_a_retry_name_taken_by_another_spec_makes_no_retry_and_warns() -> None:
    squatter = migration(image={"reference": OLD_IMAGE}) | {
        "metadata": {
            **NEW["metadata"],
            "name": "gstg-1200-retry-1",
            "annotations": {
                retries.ANNOTATION_FIRST: "gstg-1200",
                retries.ANNOTATION_ATTEMPT: "1",
                model.ANNOTATION_RETRY_OF: "gstg-1200",
            },
        }
    }
    world = failed_on_lock_timeout(migrations={"gstg-1200-retry-1": squatter})
    step = decide.drive(decide.reconcile(running(NEW), NOW, SETUP), world)
    assert world.migrations["gstg-1200-retry-1"] is squatter
    assert "name" not in step.status["failure"]["retry"]
    assert [a.reason for a in world.asked if isinstance(a, decide.Warn)] == ["RetryNameTaken"]
    assert step.status["state"] == "Failed"


def test_a_retry_the_api_server_cannot_take_now_leaves_the_failure_unwritten_for_next_pass() -> (
    None
):
    world = failed_on_lock_timeout(create_migration=errors.Transient("etcd timeout", 504))
    with pytest.raises(errors.Transient):
        decide.drive(decide.reconcile(running(NEW), NOW, SETUP), world)
    assert not any(model.is_finished(w) for w in world.written)


def test_a_retry_the_api_server_refuses_for_good_is_said_and_the_failure_stored() -> None:
    refused = errors.Forbidden("postdeploymigrations is forbidden", 403, "Forbidden")
    world = failed_on_lock_timeout(create_migration=refused)
    step = decide.drive(decide.reconcile(running(NEW), NOW, SETUP), world)
    assert step.status["state"] == "Failed"
    assert "refuses the retry" in step.status["failure"]["retry"]["message"]
    assert [a.reason for a in world.asked if isinstance(a, decide.Warn)] == ["RetryRefused"]


def test_a_retry_past_its_not_before_still_waits_for_the_environments_window() -> None:
    """A retry is an ordinary migration: its delay over, the windows still decide."""
    retry = copy.deepcopy(LAST_RETRY)
    retry["spec"]["notBefore"] = "2026-12-02T11:30:00Z"
    world = World(environment=environment(windows=AFTERNOONS))
    step = decide.drive(decide.reconcile(retry, NOW, SETUP), world)
    assert (step.status["state"], step.status["reason"]) == ("Gated", "OutsideWindow")
    assert "AcquireLock" not in world.effects()


def test_an_unreadable_not_before_never_starts_early() -> None:
    hold = gates.not_before({"notBefore": "2026-12-07T13:00:00"}, NOW)
    assert hold is not None
    assert (hold.reason, hold.fatal) == ("NotBefore", True)
    assert gates.not_before({}, NOW) is None


# --- progress while the Job runs ----------------------------------------------------------
def test_progress_shows_what_rails_announced_done_and_running_of_the_preflights_total() -> None:
    m = running(NEW)
    m["status"]["preflight"] = {"phase": "Succeeded", "jobHash": HASH, "pendingCount": 7}
    # As a Job created by an operator before progress was kept: the plan is read now.
    assert m["status"].pop("progress") == {"done": 0, "summary": "0/?"}
    assert render.job_name(m["metadata"]["name"], HASH) == m["status"]["jobName"]
    step = decide.drive(decide.reconcile(m, NOW, SETUP), announcing())
    shown = step.status["progress"]
    assert (shown["summary"], shown["done"], shown["total"]) == ("1/7", 1, 7)
    assert shown["current"] == {
        "database": "main",
        "version": "20261115000003",
        "name": "BackfillProjectStatistics",
        "since": "2026-12-02T11:59:10Z",
    }
    assert shown["completed"] == [
        {
            "database": "main",
            "version": "20261115000002",
            "name": "RemoveArchivedFromProjects",
            "seconds": "0.0011",
        }
    ]
    assert "unknown" not in shown


def test_without_a_preflight_for_this_job_the_total_is_unknown() -> None:
    m = running(NEW)
    m["status"]["preflight"] = {"phase": "Succeeded", "jobHash": "another", "pendingCount": 7}
    step = decide.drive(decide.reconcile(m, NOW, SETUP), announcing())
    assert step.status["progress"]["summary"] == "1/?"
    assert "total" not in step.status["progress"]


def test_a_read_reads_only_what_is_new_and_writes_nothing_when_rails_said_nothing() -> None:
    world = announcing()
    m = running(NEW)
    m = m | {"status": decide.drive(decide.reconcile(m, NOW, SETUP), world).status}
    world.stamped_logs[f"{JOB_NAME}-x7k2q"] = (
        ANNOUNCED + '2026-12-02T11:59:40.000000000Z main: -- execute("SELECT pg_sleep(3)")\n'
    )
    later = NOW + timedelta(seconds=TIMING.progress_read)
    again = World(**{**world.__dict__, "asked": [], "written": [], "progress_read_at": NOW})
    step = decide.drive(decide.reconcile(m, later, SETUP), again)
    (read,) = [a for a in again.asked if isinstance(a, decide.LogSince)]
    assert read.since == "2026-12-02T11:59:10Z"  # the second of the last line counted
    assert again.effects() == []
    assert step.status["progress"]["done"] == 1


def test_a_read_that_finds_an_announcement_writes_the_progress_alone() -> None:
    """What ``pdm_status_writes_total{change="progress"}`` counts: a pass whose only
    change is Rails' news patches status.progress and nothing else."""
    world = announcing()
    m = running(NEW)
    m = m | {"status": decide.drive(decide.reconcile(m, NOW, SETUP), world).status}
    world.stamped_logs[f"{JOB_NAME}-x7k2q"] = ANNOUNCED + (
        "2026-12-02T11:59:40.000000000Z main: == 20261115000003 BackfillProjectStatistics: "
        "migrated (0.0020s) ============\n"
    )
    later = NOW + timedelta(seconds=TIMING.progress_read)
    again = World(
        **{**world.__dict__, "asked": [], "written": [], "patches": [], "progress_read_at": NOW}
    )
    step = decide.drive(decide.reconcile(m, later, SETUP), again)
    assert step.status["progress"]["done"] == 2
    (patch,) = again.patches
    assert set(patch) == {"progress"}
    assert statuswriter.change_of(patch) == statuswriter.PROGRESS


def test_a_log_that_cannot_be_read_says_unknown_and_keeps_what_was_read() -> None:
    world = announcing()
    m = running(NEW)
    m = m | {"status": decide.drive(decide.reconcile(m, NOW, SETUP), world).status}
    later = NOW + timedelta(seconds=TIMING.progress_read)
    gone = World(**{**world.__dict__, "asked": [], "written": [], "progress_read_at": NOW})
    gone.stamped_logs = {f"{JOB_NAME}-x7k2q": None}
    step = decide.drive(decide.reconcile(m, later, SETUP), gone)
    shown = step.status["progress"]
    assert "could not be read" in shown["unknown"]
    assert shown["done"] == 1
    assert (step.status["state"], step.requeue) == ("Running", TIMING.progress_read)


def test_a_restarted_container_is_read_from_its_start_and_its_interrupted_one_is_not_current() -> (
    None
):
    world = announcing()
    m = running(NEW)
    m = m | {"status": decide.drive(decide.reconcile(m, NOW, SETUP), world).status}
    restarted = World(**{**world.__dict__, "asked": [], "written": [], "progress_read_at": NOW})
    restarted.pods = {JOB_NAME: [running_pod(JOB_NAME, restarts=1)]}
    restarted.stamped_logs = {
        f"{JOB_NAME}-x7k2q": "2026-12-02T11:59:50.000000000Z Running db:migrate:main rake task\n"
    }
    later = NOW + timedelta(seconds=TIMING.progress_read)
    step = decide.drive(decide.reconcile(m, later, SETUP), restarted)
    (read,) = [a for a in restarted.asked if isinstance(a, decide.LogSince)]
    assert read.since is None
    shown = step.status["progress"]
    assert "current" not in shown
    assert (shown["done"], shown["read"]["restarts"]) == (1, 1)


def test_the_jobs_end_reads_the_last_announcements_at_once_and_nothing_runs_after() -> None:
    world = announcing()
    m = running(NEW)
    m = m | {"status": decide.drive(decide.reconcile(m, NOW, SETUP), world).status}
    done = World(**{**world.__dict__, "asked": [], "written": [], "progress_read_at": NOW})
    done.jobs = {JOB_NAME: job_named(NEW, COMPLETE)}
    done.stamped_logs[f"{JOB_NAME}-x7k2q"] = ANNOUNCED + (
        "2026-12-02T11:59:13.400000000Z main: == 20261115000003 BackfillProjectStatistics: "
        "migrated (3.0056s) ======\n"
    )
    step = decide.drive(decide.reconcile(m, NOW + timedelta(seconds=1), SETUP), done)
    shown = step.status["progress"]
    assert (shown["done"], "current" in shown) == (2, False)
    assert shown["completed"][-1]["seconds"] == "3.0056"
    (observed,) = [a for a in done.asked if isinstance(a, decide.ObserveSteps)]
    assert observed == decide.ObserveSteps(2, (("main", 3.0056),))


def test_the_job_is_recorded_with_nothing_done_of_the_preflights_plan_in_the_same_write() -> None:
    world = preflight_done(PF, PENDING_ROW)()
    step = decide.drive(decide.reconcile(copy.deepcopy(PF), NOW, SETUP), world)
    assert step.status["progress"] == {"done": 0, "total": 1, "summary": "0/1"}
    assert world.effects().count("WriteStatus") == 1
    no_plan = World()
    step = decide.drive(decide.reconcile(copy.deepcopy(NEW), NOW, SETUP), no_plan)
    assert step.status["progress"] == {"done": 0, "summary": "0/?"}


def test_a_status_write_removes_what_a_nested_object_no_longer_has() -> None:
    from pdm_operator.decide.state import merge_patch  # noqa: PLC0415

    old = {"progress": {"done": 1, "current": {"version": "1"}, "read": {"pod": "p"}}, "a": 1}
    new = {"progress": {"done": 2, "read": {"pod": "p"}}}
    assert merge_patch(old, new) == {"progress": {"done": 2, "current": None}, "a": None}


def test_a_log_too_dense_to_get_past_says_unknown_rather_than_stopping_silently() -> None:
    world = announcing()
    m = running(NEW)
    m = m | {"status": decide.drive(decide.reconcile(m, NOW, SETUP), world).status}
    stamp = "2026-12-02T11:59:10.300000000Z"
    dense = World(**{**world.__dict__, "asked": [], "written": [], "progress_read_at": NOW})
    # Everything up to the read limit was read before (the same second, before the last line).
    dense.stamped_logs = {
        f"{JOB_NAME}-x7k2q": f"2026-12-02T11:59:10.000000001Z {'x' * 300 * 1024}\n"
        + ANNOUNCED.splitlines(keepends=True)[-1]
        + f"{stamp} main: -- more\n"
    }
    later = NOW + timedelta(seconds=TIMING.progress_read)
    step = decide.drive(decide.reconcile(m, later, SETUP), dense)
    assert "more than" in step.status["progress"]["unknown"]
