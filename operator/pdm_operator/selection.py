"""Which of the pending migrations a run applies: holds, ``only``, and marking as executed (pure).

By default the migration Job runs the chart's script, whose
``/scripts/db-migrate`` applies everything pending. A run may instead say
what to apply, by version:

* ``spec.migrations.hold`` (and the environment's standing holds,
  ``PostDeployEnvironment.spec.holds``): everything pending but those;
* ``spec.migrations.only``: just those;
* ``spec.migrations.markExecuted``: record those as executed in
  ``schema_migrations`` without running them (the remedy after a migration
  that cannot succeed blocks deploys, with a replacement scheduled).

What Rails and GitLab offer for that, checked at the source:

* ``db:migrate:up VERSION=…`` runs one migration, and in a multi-database
  application the per-database ``db:migrate:up:<name> VERSION=…`` (rails/rails
  ``activerecord/lib/active_record/railties/databases.rake``: ``up`` raises
  for multiple databases, ``raise_for_multi_db``; the namespaced tasks exist
  only for them, ``DatabaseTasks.for_each`` returns nothing for a single
  configuration). It goes through ``Migrator#run``, which applies exactly
  that version and does nothing when it is already in ``schema_migrations``
  (``activerecord/lib/active_record/migration.rb``, ``run_without_lock``), so
  running it on every database is running it where it is pending. The migration
  paths are ``db:migrate``'s own, ``db/post_migrate`` included, since the Job
  never carries SKIP_POST_DEPLOYMENT_MIGRATIONS.
* ``db:migrate VERSION=…`` is **not** used: it migrates *down* to a target
  below the current version, and GitLab's current version is the newest
  regular migration, above any pending post-deployment one.
* GitLab's own ``gitlab:db:mark_migration_complete[VERSION]`` inserts the
  version into ``schema_migrations`` on every configured database (an
  existing row is "already marked complete", not an error) (gitlabhq
  ``lib/tasks/gitlab/db.rake``).
* GitLab runs its per-database tasks on every database but ``geo``,
  ``embedding`` and ``jh``, whose migrations live elsewhere (``each_database``
  in the same file); a version of ``db/migrate`` is unknown there, and
  ``db:migrate:up:geo`` would abort. So those are left out the same way.
* The chart's Job runs ``set -e; /scripts/wait-for-deps; /scripts/db-migrate``
  (chart ``charts/gitlab/charts/migrations/values.yaml``, ``scriptTpl``;
  a Geo secondary runs ``/scripts/geo-db-migrate`` instead), and CNG's
  ``db-migrate`` runs ``gitlab:db:configure`` and then the custom instance
  setup (CNG ``gitlab-rails/scripts/db-migrate``). A selection replaces that
  one command, and nothing else of the script or the pod: the wiring, the
  ``wait-for-deps`` check and the unset of SKIP_POST_DEPLOYMENT_MIGRATIONS
  stay. A script without ``/scripts/db-migrate`` (a Geo secondary, a script
  of the creator's) cannot be narrowed, and the migration says so instead of
  running everything.

Each version is one Rails boot (one ``gitlab-rake`` per version, every
database in it), plus one to list the tasks: on GitLab a boot takes tens of
seconds, which is the price of running one migration at a time.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pdm_operator import model, render
from pdm_operator.model import Body
from pdm_operator.preflight import Pending

#: The command of the chart's script that a selection replaces.
DB_MIGRATE = "/scripts/db-migrate"
#: The migration container's variable that holds the selection's script, and
#: the command that runs it in ``db-migrate``'s place: one word for the
#: chart's script, whether ``db-migrate`` is a line of its own (``set -e;
#: /scripts/wait-for-deps; /scripts/db-migrate``) or the command that
#: ``wait-for-deps`` runs when the database answers (older charts:
#: ``/scripts/wait-for-deps /scripts/db-migrate``).
SCRIPT_ENV = "PDM_OPERATOR_SELECTED"
COMMAND = f'/bin/bash -e -c "${SCRIPT_ENV}"'
_DB_MIGRATE = re.compile(r"(?<![\w/.-])/scripts/db-migrate(?![\w/.-])")

#: What a pending migration's ``action`` says in the status.
APPLY, HOLD, MARK = "Apply", "Hold", "MarkExecuted"

#: Databases whose migrations are not db/migrate's (gitlabhq lib/tasks/gitlab/db.rake,
#: ``each_database``).
OTHER_PATHS = ("geo", "embedding", "jh")

#: Why a selection cannot be made; each is a Failed reason.
NOT_PENDING = "SelectedNotPending"
NOT_NARROWABLE = "SelectionUnsupported"
LIST_CUT = "PendingListCut"


@dataclass(frozen=True)
class Selection:
    """What the spec (and the environment) ask to apply, by version."""

    hold: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    mark: tuple[str, ...] = ()
    #: Why each held version is held (the environment's reason, or the spec).
    why_held: tuple[tuple[str, str], ...] = ()

    @property
    def active(self) -> bool:
        """Whether the Job runs a chosen list instead of ``db-migrate``."""
        return bool(self.hold or self.only or self.mark)

    def as_status(self) -> Body:
        out: Body = {}
        for key, values in (("hold", self.hold), ("only", self.only), ("markExecuted", self.mark)):
            if values:
                out[key] = list(values)
        return out

    def reason_held(self, version: str) -> str:
        return dict(self.why_held).get(version, "spec.migrations.hold")


def of(spec: Body, environment_holds: Iterable[Body] = (), environment: str = "") -> Selection:
    """The selection a PostDeployMigration's spec and its environment's holds make."""
    migrations: Body = spec.get("migrations") or {}
    why: dict[str, str] = {}
    for entry in environment_holds:
        version = str(entry.get("version") or "")
        if version:
            why.setdefault(
                version, f"held by environment {environment}: {entry.get('reason') or ''}".strip()
            )
    for version in migrations.get("hold") or []:
        why.setdefault(str(version), "spec.migrations.hold")
    mark = tuple(
        sorted({str(v) for v in (migrations.get("markExecuted") or {}).get("versions") or []})
    )
    return Selection(
        hold=tuple(sorted(why)),
        only=tuple(sorted({str(v) for v in migrations.get("only") or []})),
        mark=mark,
        why_held=tuple(sorted(why.items())),
    )


@dataclass(frozen=True)
class Plan:
    """The pending list split by what the run does with each."""

    apply: tuple[Pending, ...]
    held: tuple[Pending, ...]
    mark: tuple[Pending, ...]

    @property
    def versions(self) -> list[str]:
        """The versions the Job acts on (applies, or marks), oldest first, once each."""
        return sorted({p.version for p in (*self.apply, *self.mark)})


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


def split(selection: Selection, pending: Sequence[Pending], pending_count: int) -> Plan | Refusal:
    """Which pending rows are applied, held, or marked; or why no such run can be made.

    Fails closed: a version named in ``only`` or ``markExecuted`` that is not
    pending on any database (applied already, a typo, not in this image) is
    refused, not skipped, and so is a pending list the status had to cut
    (what is past the cut could not be held).
    """
    if pending_count > len(pending):
        return Refusal(
            LIST_CUT,
            f"{pending_count} migrations are pending but only {len(pending)} fit in the status: "
            "a selection (hold, only, markExecuted) needs the whole list; run without one",
        )
    versions = {p.version for p in pending}
    wanted = selection.mark or selection.only
    missing = [v for v in wanted if v not in versions]
    if missing:
        field = "markExecuted.versions" if selection.mark else "only"
        return Refusal(
            NOT_PENDING,
            f"spec.migrations.{field} names {', '.join(missing)}, which the pre-flight does not "
            "list as pending on any database (applied already, or not a migration of this "
            "image): nothing was run",
        )
    held = set(selection.hold)
    apply: list[Pending] = []
    hold: list[Pending] = []
    mark: list[Pending] = []
    for p in pending:
        if selection.mark:  # marking never applies anything: the rest stays pending
            (mark if p.version in selection.mark else hold).append(p)
        elif p.version in held or (selection.only and p.version not in selection.only):
            hold.append(p)
        else:
            apply.append(p)
    return Plan(tuple(apply), tuple(hold), tuple(mark))


def summary(selection: Selection, plan: Plan) -> str:
    """``this run applies 2 (…); holds 1: V (why)`` for conditions and events."""
    held = sorted({p.version for p in plan.held})
    why = [f"{v} ({selection.reason_held(v)})" for v in held if v in selection.hold]
    why += [v for v in held if v not in selection.hold]
    if selection.mark:
        done = f"this run marks {', '.join(plan.versions)} as executed without running them"
    else:
        done = f"this run applies {len(plan.versions)}: {', '.join(plan.versions) or 'none'}"
    return done + (f"; holds {len(held)}: {', '.join(why)}" if held else "; holds none")


def action(selection: Selection, plan: Plan, p: Pending) -> str:
    if p in plan.mark:
        return MARK
    if p in plan.held:
        return HOLD
    return APPLY


def annotate(selection: Selection, plan: Plan, pending: Sequence[Pending]) -> list[Body]:
    """``status.pendingMigrations`` entries with what the run does with each."""
    out = []
    for p in pending:
        entry = p.as_status()
        entry["action"] = action(selection, plan, p)
        if entry["action"] == HOLD:
            entry["heldBecause"] = (
                selection.reason_held(p.version)
                if p.version in selection.hold
                else "not in spec.migrations.only"
                if selection.only
                else "not in spec.migrations.markExecuted"
            )
        out.append(entry)
    return out


def script(plan: Plan, *, marking: bool) -> str:
    """What runs in ``/scripts/db-migrate``'s place: one ``gitlab-rake`` per version.

    Bash lines, run by :data:`COMMAND` with ``-e``: a version that fails
    stops the rest, as ``db:migrate`` stops at its first failure.
    """
    versions = " ".join(shlex.quote(v) for v in plan.versions)
    if marking:
        return (
            f"echo 'pdm-operator: marking as executed without running them: {versions}'\n"
            f"for pdm_version in {versions}; do\n"
            '  gitlab-rake "gitlab:db:mark_migration_complete[$pdm_version]"\n'
            "done\n"
        )
    skip = "|".join(OTHER_PATHS)
    return (
        f"echo 'pdm-operator: applying {len(plan.versions)} migration(s) one at a time "
        f"(db:migrate:up), holding {len({p.version for p in plan.held})}: {versions}'\n"
        "pdm_tasks=$(gitlab-rake -P)\n"
        "pdm_up=$(printf '%s\\n' \"$pdm_tasks\" "
        "| sed -n 's/^[^ ]* \\(db:migrate:up:[A-Za-z0-9_]*\\)$/\\1/p' "
        f"| grep -v -x -E 'db:migrate:up:({skip})' || true)\n"
        'if [ -z "$pdm_up" ]; then pdm_up=db:migrate:up; fi\n'
        f"for pdm_version in {versions}; do\n"
        '  gitlab-rake VERSION="$pdm_version" $pdm_up\n'
        "done\n"
    )


def _replace(argv: list[str], text: str) -> tuple[list[str], int]:
    found = 0
    out = []
    for arg in argv:
        hits = len(_DB_MIGRATE.findall(arg))
        found += hits
        out.append(_DB_MIGRATE.sub(lambda _m: text, arg) if hits else arg)
    return out, found


def job(base: Body, migration_name: str, plan: Plan, *, marking: bool) -> Body | Refusal:
    """The migration Job that acts on ``plan``: ``base`` with its ``db-migrate`` replaced.

    Named like any migration Job, from the hash of its own spec (the Job's
    name changes with what it runs, so it never adopts the Job of another
    selection).
    """
    out = copy.deepcopy(base)
    pod = out["spec"]["template"]["spec"]
    for c in pod.get("containers") or []:
        if c.get("name") != model.MIGRATION_CONTAINER:
            continue
        command, hits_c = _replace(list(c.get("command") or []), COMMAND)
        args, hits_a = _replace(list(c.get("args") or []), COMMAND)
        if hits_c + hits_a != 1:
            return Refusal(
                NOT_NARROWABLE,
                f"the migration container's script runs {DB_MIGRATE} "
                f"{hits_c + hits_a} times, not once (a Geo secondary runs /scripts/geo-db-migrate; "
                "spec.job.command/args replace the chart's script): holds, only and markExecuted "
                "replace that one command, so they cannot narrow this Job; nothing was run",
            )
        if command:
            c["command"] = command
        c["args"] = args
        env = [e for e in c.get("env") or [] if e.get("name") != SCRIPT_ENV]
        c["env"] = [*env, {"name": SCRIPT_ENV, "value": script(plan, marking=marking)}]
    return render.renamed(out, migration_name)


def held(status: Body) -> list[str]:
    return sorted(
        {
            str(e.get("version"))
            for e in status.get("pendingMigrations") or []
            if e.get("action") == HOLD
        }
    )
