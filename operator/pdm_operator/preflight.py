"""The pre-flight: which migrations a run would apply, asked of Rails first (pure).

Before the migration Job runs, a read-only Job with the very same pod (image,
the chart's wiring, env, security) runs Rails' status task instead of
``db-migrate``, and this module reads its answer.

What Rails prints, checked at the source (rails/rails):

* ``rake db:migrate:status`` runs ``DatabaseTasks.migrate_status`` once per
  database of the environment (``activerecord/lib/active_record/railties/
  databases.rake``; GitLab has ``main`` and ``ci``). It only reads: it aborts
  with "Schema migrations table does not exist yet." when there is none, and
  otherwise prints a blank line, ``database: <name>``, a blank line, the header
  ``Status  Migration ID    Migration Name``, 50 dashes, one row per migration
  (``status.center(8)``, ``version.ljust(14)``, name) and a blank line
  (``activerecord/lib/active_record/tasks/database_tasks.rb``, ``migrate_status``).
* A row's status is ``up`` when its version is in ``schema_migrations`` and
  ``down`` otherwise; its name is the file name's, humanized ("Add index to
  users"), and a version recorded without a file is ``up`` with
  ``********** NO FILE **********`` (``activerecord/lib/active_record/
  migration.rb``, ``MigrationContext#migrations_status``).
* The migration paths are the ones ``db:migrate`` would run: GitLab adds
  ``db/post_migrate`` unless ``SKIP_POST_DEPLOYMENT_MIGRATIONS`` is present
  (gitlabhq ``lib/gitlab/database.rb``, ``add_post_migrate_path_to_rails``),
  and the pre-flight pod, like the migration Job, never carries it. So the
  ``down`` rows are exactly what the migration Job will apply: after a regular
  deploy, the post-deployment migrations (a regular migration still pending
  would run too, and is listed as well).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass

from pdm_operator import conditions, model, render, templates, versionskip
from pdm_operator.model import Body

#: The chart's migration script with the status task in place of
#: ``/scripts/db-migrate``: the image ENTRYPOINT still renders the
#: configuration first (no ``command``), ``wait-for-deps`` still waits for the
#: database. ``gitlab-rake`` is the toolbox's rake wrapper (CNG
#: ``gitlab-toolbox/scripts/bin/gitlab-rake``). Then the milestone of each
#: post-deployment migration file, for the version-skip check
#: (:data:`versionskip.LISTING`: it only reads files).
DEFAULT_ARGS: tuple[str, ...] = (
    "/bin/bash",
    "-c",
    "set -e;\n/scripts/wait-for-deps;\ngitlab-rake db:migrate:status;\n" + versionskip.LISTING,
)
DEFAULT_DEADLINE = 900
#: A read-only pod may be retried: an eviction or a node loss costs nothing.
BACKOFF_LIMIT = 2
#: The finished pre-flight Job stays this long for ``kubectl logs``.
TTL_AFTER_FINISHED = 3600
#: Pending migrations kept in the status; the count and the plan hash cover all.
STATUS_LIMIT = 500
#: The most of the pre-flight's log that is read (GitLab lists some thousands
#: of migrations per database, under 100 bytes each).
LOG_LIMIT = 8 * 1024 * 1024

COMPONENT = "post-deploy-migration-preflight"

#: JobCreated=False with this reason: nothing was pending, no Job will exist.
NOTHING_PENDING = "NothingPending"


def nothing_pending(status: Body) -> bool:
    """The pre-flight found nothing pending and the migration ends without a Job."""
    cond = conditions.find(status.get("conditions"), model.JOB_CREATED)
    return cond is not None and cond.get("reason") == NOTHING_PENDING


def reports_nothing_pending(spec: Body, status: Body) -> bool:
    """A migration that ended with nothing pending reports as a success would."""
    wanted = (spec.get("preflight") or {}).get("whenNonePending") == "FinishAndReport"
    return wanted and nothing_pending(status)


@dataclass(frozen=True)
class Pending:
    database: str
    version: str
    name: str

    def as_status(self) -> Body:
        return {"database": self.database, "version": self.version, "name": self.name}

    def describe(self) -> str:
        return f"{self.version} {self.name} ({self.database})"


@dataclass(frozen=True)
class Answer:
    """What the status task said: the databases it listed and the pending rows."""

    databases: tuple[str, ...]
    pending: tuple[Pending, ...]


_DATABASE = re.compile(r"^database: (\S+)\s*$")
_HEADER = re.compile(r"^\s*Status\s+Migration ID\s+Migration Name\s*$")
_ROW = re.compile(r"^\s*(up|down)\s+(\d+)\s+(.*?)\s*$")
_DASHES = re.compile(r"^\s*-+\s*$")
#: Inside a block: the line each stage waits for, and the stage after it.
_NEXT = {"header": (_HEADER, "dashes"), "dashes": (_DASHES, "rows")}


def parse_status(log: str) -> Answer | None:
    """The ``down`` rows of every database block; None unless every block is complete.

    Lines outside a block (the ENTRYPOINT's, ``wait-for-deps``') are ignored.
    A block counts only once its header, its dashes, its rows and the blank
    line Rails prints after them were all seen (``migrate_status`` ends with
    a bare ``puts``, rails/rails ``activerecord/lib/active_record/tasks/
    database_tasks.rb``). A log that ends inside a block (a pod killed, a
    log cut at its limit) is unreadable, never "nothing pending": cut after
    the dashes it would show no row, cut mid-rows a shorter list. So is a
    block that another begins inside, and a row inside a block that is
    neither ``up`` nor ``down``.
    """
    databases: list[str] = []
    pending: list[Pending] = []
    database = ""
    block: list[Pending] = []
    stage = ""  # "" outside a block, then "header", "dashes", "rows"
    for raw in log.splitlines():
        line = raw.rstrip()
        m = _DATABASE.match(line)
        if m:
            if stage:
                return None  # the block before never ended
            database, stage, block = m.group(1), "header", []
        elif not stage:
            continue
        elif not raw:
            if stage == "rows":
                # The blank line that ends a block (empty: a row cut after its
                # first spaces is not one): only now do its rows count.
                databases.append(database)
                pending.extend(block)
                stage = ""
        elif stage in _NEXT:
            expected, following = _NEXT[stage]
            if not expected.match(line):
                return None
            stage = following
        else:
            row = _ROW.match(line)
            if row is None:
                return None
            if row.group(1) == "down":
                block.append(Pending(database, row.group(2), row.group(3)))
    if stage or not databases:
        return None  # the log ends inside a block, or holds none
    return Answer(tuple(databases), tuple(pending))


def job(migration_job: Body, args: list[str], run: int, deadline: int) -> Body:
    """The pre-flight Job: the migration Job's pod, running the status task.

    Everything that reaches the database (image, env, init containers,
    volumes, service account, security contexts) is the migration Job's; only
    the migration container's ``args`` (which, like the migration Job's,
    unset SKIP_POST_DEPLOYMENT_MIGRATIONS first: ``templates.unset_skip``)
    and its ``command`` (dropped if it carries a script of its own),
    the Job's limits, its labels and name differ. Its component label says it
    is not the migration Job (adoption and the one-Job-per-environment guard
    select on it); it keeps the migration-uid label, so its end wakes the
    migration like the migration Job's does. No eviction protection: running
    it again costs nothing.
    """
    out = copy.deepcopy(migration_job)
    meta = out["metadata"]
    labels = dict(meta.get("labels") or {})
    labels[model.LABEL_COMPONENT] = COMPONENT
    pod = out["spec"]["template"]
    pod_labels = dict((pod.get("metadata") or {}).get("labels") or {})
    pod_labels[model.LABEL_COMPONENT] = COMPONENT
    pod.setdefault("metadata", {})["labels"] = pod_labels
    annotations = dict(pod["metadata"].get("annotations") or {})
    annotations.pop(render.SAFE_TO_EVICT, None)
    pod["metadata"]["annotations"] = annotations
    for c in pod["spec"]["containers"]:
        if c.get("name") == model.MIGRATION_CONTAINER:
            # Never a command that carries a script of its own
            # (``sh -c db-migrate``): it ignores the status task's args, and
            # the read-only pre-flight would migrate. Then the image
            # ENTRYPOINT runs the args, as in the chart's Job. A command that
            # runs its args (``sh -c`` with the script in args, or a wrapper)
            # stays: an image may need it.
            command = c.pop("command", None)
            if templates.runs_own_script(command):
                command = None
            command, c["args"] = templates.unset_skip(command, args)
            if command:
                c["command"] = command
    out["spec"]["activeDeadlineSeconds"] = deadline
    out["spec"]["backoffLimit"] = BACKOFF_LIMIT
    out["spec"]["ttlSecondsAfterFinished"] = TTL_AFTER_FINISHED
    digest = render.inputs_hash({"spec": out["spec"], "run": run})
    base = str(meta["name"]).rsplit("-", 1)[0]
    meta["name"] = f"{base}-p{digest[: render.HASH_LENGTH - 1]}"
    meta["labels"] = labels
    meta["annotations"] = {model.ANNOTATION_INPUTS_HASH: digest}
    return out


def migration_container(job_or_pod: Body) -> Body:
    """The migration container of a Job or a pod ({} when it has none)."""
    spec = job_or_pod.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or spec
    containers = pod_spec.get("containers") or []
    return next((c for c in containers if c.get("name") == model.MIGRATION_CONTAINER), {})


def plan_hash(
    job_hash: str,
    pending: tuple[Pending, ...] | list[Pending],
    *,
    args: list[str] | tuple[str, ...],
    image: str,
    selection: Body | None = None,
    version_skip: Body | None = None,
) -> str:
    """What an approval approves: the Job, the pending list, and the pod that found it.

    The migration Job's inputs (``job_hash``) and the pending list alone are
    not enough: the list is whatever the pre-flight printed, so pre-flight
    args that print a one-row table would get one row approved while the Job
    applies everything pending. The pre-flight container's args (as given,
    :func:`given_args`) and image are part of the plan, and shown to the
    approver. So is a selection (``spec.migrations``, the environment's
    holds: :mod:`pdm_operator.selection`), which decides the Job that runs:
    a plan approved with a hold is not the plan without it. (Absent when
    empty, so a plan without one hashes as it always did.)
    """
    plan: Body = {
        "job": job_hash,
        "pending": [[p.database, p.version] for p in pending],
        "preflight": {"args": list(args), "image": image},
    }
    if selection:
        plan["selection"] = selection
    if version_skip:  # what an approval acknowledges (versionskip)
        plan["versionSkip"] = version_skip
    canonical = json.dumps(
        plan,
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def given_args(spec: Body) -> list[str]:
    """The pre-flight's args as the PostDeployMigration gives them (or the default)."""
    return list((spec.get("preflight") or {}).get("args") or DEFAULT_ARGS)


def default_args(args: list[str] | tuple[str, ...] | None) -> bool:
    """Whether ``args`` are the operator's status task (not a script of the creator's)."""
    return args is not None and list(args) == list(DEFAULT_ARGS)


def describe_args(args: list[str] | tuple[str, ...] | None) -> str:
    """The args on one line, exactly (JSON), for conditions and the approver."""
    return json.dumps(list(args or []))


def from_status(entries: list[Body] | None) -> list[Pending]:
    return [
        Pending(str(e.get("database", "")), str(e.get("version", "")), str(e.get("name", "")))
        for e in entries or []
    ]


def summary(pending: list[Pending] | tuple[Pending, ...], shown: int = 5) -> str:
    """``3 pending: 2026… Add index (main), …`` for conditions and events."""
    if not pending:
        return "no migration is pending"
    listed = ", ".join(p.describe() for p in pending[:shown])
    more = f" and {len(pending) - shown} more" if len(pending) > shown else ""
    noun = "migration" if len(pending) == 1 else "migrations"
    return f"{len(pending)} {noun} pending: {listed}{more}"
