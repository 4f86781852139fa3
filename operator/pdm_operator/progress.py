"""Progress while the migration Job runs, read from Rails' own announcements (pure).

What Rails prints, checked at the source:

* ``ActiveRecord::Migration#migrate`` announces each migration before and
  after it runs: ``announce "migrating"``, then ``announce "migrated (%.4fs)" %
  time.real`` and a blank ``write``; ``announce`` writes ``"== %s %s" %
  ["#{version} #{name}: #{message}", "=" * (75 - length)]`` (rails/rails
  ``activerecord/lib/active_record/migration.rb``; Rails 6.1.7 as Debian ships
  it, lines 840-884). The time is the migration's own, as Rails measured it.
* GitLab's migrations put the database's configuration name first: every
  migration class includes ``MigrationHelpers::AnnounceDatabase``, whose
  ``write`` prefixes any non-empty text with ``"#{db_config_name}: "``
  (gitlabhq ``lib/gitlab/database/migration_helpers/announce_database.rb``),
  so a line reads ``main: == 20261115000001 AddUniqueIndex: migrating ====``
  (tests/unit/golden/rails/, the stand-in's real Rails 6.1 output).

What a step is: one ``migrated`` announcement, that is one (database,
version). ``db:migrate`` runs once per database (``db:migrate:main``, then
``db:migrate:ci``), and each applies every version its ``schema_migrations``
lacks, announcing it even when GitLab's ``restrict_gitlab_migration`` makes it
do nothing there ("The migration is skipped since it modifies the
schemas…": its version is recorded all the same). The pre-flight lists the
same pairs (one ``down`` row per database a version is pending in), so a
migration pending on main and ci is two steps, and the total is the
pre-flight's count. Without a pre-flight made for this very Job, the total is
not known and is never guessed.

How the log is read (``kubectl logs --timestamps --since-time``): every line
comes with the kubelet's timestamp, ``RFC3339NanoFixed`` (nine fraction
digits, UTC: comparable as text), and ``sinceTime`` returns the lines not
before a time the API server passes on to the kubelet to the second
(``metav1.Time.MarshalQueryParameter`` formats ``time.RFC3339``; kubernetes
``pkg/kubelet/kuberuntime/logs/logs.go`` skips a line only if its timestamp
is *before* ``since``). So a read starts at the second of the last line
counted and skips what it counted already: the lines before that line's
exact timestamp, and as many at that timestamp as were counted
(:class:`Position`). A line cut at the end of an answer (``limitBytes``) is
left for the next read.

The line's timestamp is when the container wrote it, so ``current.since`` is
when the migration started, as near as the log tells. A Ruby whose stdout is
a pipe may buffer it (the stand-in syncs it, GitLab's images were not
checked): the announcements then come late, in bursts, and the times are
those of the burst. Progress is informational: nothing here decides anything
about the migration's outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pdm_operator.model import Body

#: Completed steps kept in ``status.progress.completed`` (the newest); ``done``
#: counts them all.
KEPT = 20
#: The most bytes of new log one read asks for (``limitBytes``).
READ_LIMIT = 256 * 1024
#: Shown for a count not known.
UNKNOWN = "?"

# The kubelet's prefix ("2026-12-06T13:21:03.123456789Z "), then Rails' line.
_STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (.*)$")
# Bounded: what a pod prints lands in the status (20 steps kept).
_ANNOUNCED = re.compile(
    r"^(?:([a-z][a-z0-9_]{0,62}): )?== (\d{1,20}) ([A-Za-z0-9_:]{1,200}): "
    r"(migrating|migrated \((\d{1,12}\.\d{1,6})s\)) ="
)


@dataclass(frozen=True)
class Position:
    """Where the next read goes on: the timestamp of the last line counted,
    and how many lines with exactly that timestamp were counted."""

    time: str = ""
    seen: int = 0

    @property
    def since(self) -> str | None:
        """``sinceTime`` for the next read: the second of ``time`` (None: from the start)."""
        return self.time[:19] + "Z" if self.time else None

    def as_status(self) -> Body:
        return {"time": self.time, "seen": self.seen}

    @classmethod
    def of(cls, status: Body | None) -> Position:
        status = status or {}
        return cls(str(status.get("time") or ""), int(status.get("seen") or 0))


@dataclass(frozen=True)
class Announcement:
    time: str
    database: str
    version: str
    name: str
    #: Rails' measured seconds ("0.0087") for ``migrated``; "" for ``migrating``.
    seconds: str = ""

    @property
    def migrated(self) -> bool:
        return bool(self.seconds)


def _second(stamp: str) -> str:
    return stamp[:19] + "Z"


def read_lines(chunk: str, after: Position) -> tuple[list[tuple[str, str]], Position]:
    """The new complete lines of a ``--timestamps`` log chunk read since
    ``after.since``, as (timestamp, text), and the position after the last.

    A last line without its newline is not complete (an answer cut at
    ``limitBytes``, or a write half done): it is read again next time. A line
    with no kubelet timestamp is skipped (there is none in a log read with
    ``timestamps=true``, but a bad one must not move the position).
    """
    lines = chunk.split("\n")
    complete = lines[:-1]  # the last is "" after a final newline, else cut
    out: list[tuple[str, str]] = []
    time, seen = after.time, after.seen
    skip_at_time = after.seen
    for raw in complete:
        m = _STAMPED.match(raw.rstrip("\r"))
        if m is None:
            continue
        stamp, text = m.group(1), m.group(2)
        if after.time and stamp < after.time:
            continue  # the same second, before the last line counted
        if stamp == after.time and skip_at_time > 0:
            skip_at_time -= 1
            continue
        seen = seen + 1 if stamp == time else 1
        time = stamp
        out.append((stamp, text))
    return out, Position(time, seen)


def announcements(lines: list[tuple[str, str]]) -> list[Announcement]:
    """Rails' ``migrating`` / ``migrated (…s)`` lines among ``lines``, in order."""
    found = []
    for stamp, text in lines:
        m = _ANNOUNCED.match(text)
        if m:
            found.append(
                Announcement(stamp, m.group(1) or "", m.group(2), m.group(3), m.group(5) or "")
            )
    return found


def summary(done: int | None, total: int | None) -> str:
    """``2/3`` for the printer column; ``?`` for what is not known."""
    return f"{UNKNOWN if done is None else done}/{UNKNOWN if total is None else total}"


def start(total: int | None) -> Body:
    """Progress before anything was read: nothing done of ``total``."""
    out: Body = {"done": 0, "summary": summary(0, total)}
    if total is not None:
        out["total"] = total
    return out


def advance(progress: Body, found: list[Announcement]) -> tuple[Body, list[Announcement]]:
    """``progress`` after Rails' announcements ``found``, and the steps they completed.

    ``migrating`` makes a migration the current one (since its line's time);
    ``migrated`` counts a step, keeps its time as Rails printed it among the
    last :data:`KEPT`, and ends the current one if it is the same. A
    ``migrated`` whose ``migrating`` was never read (before the first read,
    or in a run whose log is gone) counts as well.
    """
    out = dict(progress)
    completed = list(out.get("completed") or [])
    finished: list[Announcement] = []
    for a in found:
        who = {"database": a.database, "version": a.version, "name": a.name}
        if not a.database:
            del who["database"]
        if not a.migrated:
            out["current"] = {**who, "since": _second(a.time)}
            continue
        finished.append(a)
        out["done"] = int(out.get("done") or 0) + 1
        completed = [*completed, {**who, "seconds": a.seconds}][-KEPT:]
        current = out.get("current") or {}
        if (current.get("database", ""), current.get("version")) == (a.database, a.version):
            out.pop("current", None)
    if completed:
        out["completed"] = completed
    total = out.get("total")
    if total is not None and int(out.get("done") or 0) > int(total):
        # More than the plan: the plan was not this run's. Unknown, not a guess.
        out.pop("total")
    out["summary"] = summary(int(out.get("done") or 0), out.get("total"))
    return out, finished
