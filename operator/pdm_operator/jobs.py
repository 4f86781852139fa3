"""What a migration Job's status means for the migration (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pdm_operator import model, timestamps
from pdm_operator.model import Body

LOG_TAIL_LIMIT = 2048
#: How much of a failed pod's log is read to name the failing migration. Rake
#: prints the whole backtrace after the error (and each "Caused by:" error's),
#: so the last 20 lines, or the kubelet's termination message (the last 2 KiB
#: or 80 lines), hold frames only: the "== VERSION Name: migrating" line and
#: the error are further up (tests/unit/golden/rails/, Rails 6.1's own output).
FAILURE_LOG_LINES = 4000


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    reason: str
    message: str
    time: str | None = None


def outcome(job: Body) -> Outcome | None:
    """The end of the Job, or None while it runs.

    Only the terminal conditions count: ``FailureTarget`` and
    ``SuccessCriteriaMet`` come first, while pods are still terminating.
    """
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return Outcome(
                True, "JobComplete", "the migration Job completed", cond.get("lastTransitionTime")
            )
        if cond.get("type") == "Failed":
            return Outcome(
                False,
                cond.get("reason") or "JobFailed",
                cond.get("message") or "the migration Job failed",
                cond.get("lastTransitionTime"),
            )
    return None


@dataclass(frozen=True)
class PodFailure:
    pod: str
    exit_code: int | None
    reason: str
    message: str
    #: The failed run is the container's previous one (it has restarted since).
    previous: bool = False


#: What the API server adds to a Job at create (the selector and these labels
#: of its pod template, from the Job's uid and name), unless ``manualSelector``
#: (kubernetes ``docs/design/selector-generation.md``; the batch/v1 JobSpec's
#: ``manualSelector`` description): not part of what was asked.
GENERATED_LABELS = (
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
)
#: Fields of a Job's spec the system writes after the create.
_AFTER_CREATE = ("selector", "suspend")


def _comparable(job: Body) -> Body:
    spec = {k: v for k, v in (job.get("spec") or {}).items() if k not in _AFTER_CREATE}
    template = dict(spec.get("template") or {})
    meta = dict(template.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in GENERATED_LABELS}
    meta = {k: v for k, v in meta.items() if k in ("labels", "annotations")}
    meta["labels"] = labels
    template["metadata"] = meta
    spec["template"] = template
    return spec


def template_differs(made: Body, found: Body) -> list[str]:
    """Where the Job ``found`` differs from ``made`` (both as the API server stores them).

    The whole spec is compared, pod template included, but for what the
    system writes from the Job's own name and uid (its selector, the
    generated labels) and ``suspend`` (the operator suspends a Job whose pod
    cannot start). A field nobody asked for (a ``hostAliases``, a second
    volume mount) is a difference like any other. Lists are compared by
    position, not by item name as ``diffing.changed_paths`` does for a
    readable diff: two volume mounts of one volume share a name, and a second
    one must not hide behind the first.
    """
    return _paths(_comparable(made), _comparable(found), "spec")


def _paths(a: object, b: object, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _paths(a.get(key), b.get(key), f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += _paths(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [path]


def controlled_by(pods: list[Body], uid: str) -> list[Body]:
    """The pods whose controller is the Job of ``uid``.

    The Job controller writes that owner reference on the pods it creates
    (``controller: true``, the Job's uid: the controllerRef every workload
    controller sets, ``metav1.NewControllerRef`` in kubernetes
    ``pkg/controller/job/job_controller.go``); a pod made by another Job (a
    ``manualSelector`` lets its pods carry any labels, kubernetes
    ``docs/design/selector-generation.md``), or by hand, with the Job's
    labels copied has another controller, or none.
    """
    return [
        pod
        for pod in pods
        if uid
        and any(
            ref.get("controller") is True and ref.get("uid") == uid and ref.get("kind") == "Job"
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []
        )
    ]


def pod_failure(pods: list[Body]) -> PodFailure | None:
    """The exit code and termination message of the most recent failed migration pod."""
    candidates = []
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != model.MIGRATION_CONTAINER:
                continue
            current = (status.get("state") or {}).get("terminated")
            terminated = current or (status.get("lastState") or {}).get("terminated")
            if terminated and terminated.get("exitCode", 0) != 0:
                candidates.append(
                    (terminated.get("finishedAt") or "", pod, terminated, current is None)
                )
    if not candidates:
        return None
    _, pod, terminated, previous = max(candidates, key=lambda c: c[0])
    return PodFailure(
        pod=pod["metadata"]["name"],
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason") or "",
        message=tail(terminated.get("message") or ""),
        previous=previous,
    )


def tail(text: str, limit: int = LOG_TAIL_LIMIT) -> str:
    """The last ``limit`` characters, cut at a line start when possible."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    if text[-limit - 1] == "\n":
        return cut  # the cut already falls on a line start
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < limit // 2 else cut


# Rails announces each migration (activerecord/lib/active_record/migration.rb,
# Migration#announce via #migrate: "== VERSION Name: migrating =====", then
# "== VERSION Name: migrated (0.0123s) ===") and, on an error, aborts with
# "StandardError: An error has occurred, this and all later migrations
# canceled:" followed by a blank line and the error (Migrator, and its test
# activerecord/test/cases/migration_test.rb). GitLab's migrations put their
# database's name first ("main: == VERSION Name: migrating"): every GitLab
# migration class includes MigrationHelpers::AnnounceDatabase (gitlabhq
# lib/gitlab/database/migration.rb, lib/gitlab/database/migration_helpers/
# announce_database.rb), whose spec expects /^main: == 1111 MyMigration: migrating/.
_MIGRATING = re.compile(
    r"^(?:([a-z][a-z0-9_]{0,62}): )?== (\d+) ([A-Za-z0-9_:]+): migrating\b", re.MULTILINE
)
_CANCELED = "all later migrations canceled"
ERROR_LIMIT = 500


@dataclass(frozen=True)
class FailedMigration:
    """The migration a failed ``db:migrate`` stopped at, read from its log."""

    version: str
    name: str
    error: str
    #: The database it ran on, when the log says (GitLab's "main: == ..." lines).
    database: str = ""

    def as_status(self) -> Body:
        out: Body = {"version": self.version, "name": self.name}
        if self.database:
            out["database"] = self.database
        if self.error:
            out["error"] = self.error
        return out

    def describe(self) -> str:
        where = f" on {self.database}" if self.database else ""
        what = f"migration {self.version} {self.name} failed{where}"
        return f"{what}: {self.error}" if self.error else what


def failed_migration(log: str) -> FailedMigration | None:
    """The last migration announced as migrating and never as migrated.

    None when every announced migration finished (the failure was elsewhere:
    waiting for the database, configuration) or none was announced in the
    part of the log that is kept.
    """
    started = list(_MIGRATING.finditer(log))
    if not started:
        return None
    last = started[-1]
    database, version, name = last.group(1) or "", last.group(2), last.group(3)
    if f"== {version} {name}: migrated" in log[last.end() :]:
        return None
    error = ""
    # Rails' announcements go to stdout and Rake's abort to stderr: a Ruby
    # whose stdout is a pipe (a container's) buffers it until exit, so the
    # abort can come first in the log. After the migrating line, else the last.
    at = log.find(_CANCELED, last.end())
    if at < 0:
        at = log.rfind(_CANCELED)
    if at >= 0:
        after = log[at + len(_CANCELED) :].split("\n")[1:]
        error = next((line.strip() for line in after if line.strip()), "")[:ERROR_LIMIT]
    return FailedMigration(version, name, error, database)


#: Where a Rake abort's error message ends: a backtrace frame, the next error
#: of the chain, or Rake's summary (rake ``Application#display_error_message``).
_AFTER_ERROR = re.compile(r"^(\S+:\d+:in |Caused by:$|Tasks: TOP =>|\(See full trace)")


def failure_excerpt(log: str, limit: int = LOG_TAIL_LIMIT) -> str:
    """What a person needs of a failed migration's log: the failing migration's
    lines and Rake's abort through Rails' error message, without the backtrace
    that follows (in the order they are in the log).

    Falls back to the log's last ``limit`` characters when no migration was
    announced as migrating and never migrated (the failure was elsewhere), and
    when Rails' abort text is not there: then there is no backtrace to leave out,
    and the error may stand before the announcement (stderr and stdout are two
    pipes; the container log orders them by arrival).
    """
    started = list(_MIGRATING.finditer(log))
    if not started or _CANCELED not in log or failed_migration(log) is None:
        return tail(log, limit)
    lines = log.split("\n")
    first = log[: started[-1].start()].count("\n")
    keep = set(_until_frame(lines, first))
    canceled = [i for i, line in enumerate(lines) if _CANCELED in line]
    if canceled and canceled[-1] not in keep:
        # The abort came before the migrating line (stdout buffered): its block too.
        aborted = [i for i in range(canceled[-1] + 1) if lines[i].endswith("aborted!")]
        start = aborted[-1] if aborted else canceled[-1]
        keep |= set(_until_frame(lines, start))
    kept = [lines[i] for i in sorted(keep)]
    return tail("\n".join(kept).rstrip("\n") + "\n", limit)


def _until_frame(lines: list[str], start: int) -> range:
    """Lines from ``start`` up to the first backtrace frame after Rails' error."""
    in_error = False
    for i in range(start, len(lines)):
        if in_error and _AFTER_ERROR.match(lines[i]):
            return range(start, i)
        in_error = in_error or _CANCELED in lines[i]
    return range(start, len(lines))


@dataclass(frozen=True)
class Stuck:
    """Why a migration Job's pod has not started, in the cluster's words."""

    reason: str
    message: str
    permanent: bool  # no retry of Kubernetes' can fix it: the spec must change


#: Container ``state.waiting.reason`` values that mean the pod cannot start, and
#: whether they are permanent. A pull that fails may succeed on the next try (a
#: registry outage); an invalid name never will; a missing Secret or ConfigMap
#: key can still be created.
WAITING: dict[str, bool] = {
    "InvalidImageName": True,
    "ErrImagePull": False,
    "ImagePullBackOff": False,
    "CreateContainerConfigError": False,
    "CreateContainerError": False,
}


def stuck(pods: list[Body], events: list[Body]) -> Stuck | None:
    """The first reason the Job's pod is not running, or None.

    ``events`` are the Job's own (the Job controller reports a pod it cannot
    create as a ``FailedCreate`` Warning event, and sets no condition). A pod
    refused by admission (Pod Security, a webhook, a missing ServiceAccount or
    PriorityClass) will be refused again: permanent, unless the refusal is a
    quota, which frees up.
    """
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for cs in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in WAITING:
                text = waiting.get("message") or reason
                return Stuck(
                    reason, f"pod {name}, container {cs.get('name')}: {text}", WAITING[reason]
                )
        for cond in status.get("conditions") or []:
            if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
                "PodScheduled",
                "False",
                "Unschedulable",
            ):
                return Stuck("Unschedulable", f"pod {name}: {cond.get('message') or ''}", False)
    if pods:
        return None
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return None
    last = max(failed, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    message = str(last.get("message") or "")
    return Stuck("PodCreateFailed", message, "exceeded quota" not in message)


def next_look(job: Body, now: datetime, resync: float) -> float:
    """When to look at a young Job again: as old as it is (at least 5 s), up to ``resync``.

    A Job that has just started changes fast (its pod is scheduled, pulls,
    starts); an older one is looked at less often, down to the running resync.
    """
    created = job["metadata"].get("creationTimestamp")
    if not created:
        return resync
    age = (now - timestamps.parse(created)).total_seconds()
    return min(resync, max(5.0, age))
