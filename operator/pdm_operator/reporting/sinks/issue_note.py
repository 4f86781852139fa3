"""IssueNote: the run's plan, then its outcome, as notes on a GitLab issue the
migration names (GitLab.com's release task issue: release managers read the
list of post-deployment migrations there).

Two notes at most per migration and issue, each posted once:

* **the plan**, as soon as it is known: after the pre-flight found the
  pending list (``status.pendingMigrations``), or when the Job starts if there
  is no pre-flight. It names the image, the version, the pending migrations in
  Rails' order (held ones marked, when the status marks them) and whether an
  approval is awaited. A plan not delivered by the time the run ends is not
  posted any more: the outcome says all it would have said;
* **the outcome**, when the Job has ended (or nothing was pending with
  ``FinishAndReport``): what was applied, held, failed (the migration
  ``status.failure.migration`` names) and, when ``status.progress`` has them,
  how long each took. A migration whose fate is not known (after a failure,
  one the progress does not record as done) says "unknown", never "applied".

Exactly once. GitLab's create (``POST /projects/:id/issues/:issue_iid/notes``,
gitlabhq ``lib/api/notes.rb`` -> ``Notes::CreateService``) is not idempotent:
a retry after a lost answer would post twice. Each note therefore ends with a
hidden marker (an HTML comment GitLab's Markdown does not render) naming the
migration's uid and the note's kind, and before posting, the issue's comments
are listed newest first (``activity_filter=only_comments``, ``sort=desc``,
``order_by=created_at``, 100 a page, following the ``Link`` header) back to
the time the record was planned: a note of the token's own user carrying the
marker is the one a lost answer made, and counts as delivered.

GitLab's rules this follows (``lib/api/notes.rb``, ``lib/api/helpers/
notes_helpers.rb``, ``app/models/concerns/notes/active_record.rb``,
``app/services/notes/create_service.rb``):

* ``body`` is required (Grape: 400 ``body is missing``), may not be blank and
  is at most ``Gitlab::Database::MAX_TEXT_SIZE_LIMIT`` (1,000,000) characters
  (400 ``Note {:note=>[...]}``): the note is cut well below that (``LIMIT``);
* the issue is found by iid among those the token's user can read, else 404
  ``404 Issue Not Found``; posting needs ``create_note`` (403);
* ``internal`` makes an internal note (for members with at least the
  Reporter role); ``created_at`` is dropped unless the user may
  ``set_note_created_at`` (an administrator or owner), so it is never sent:
  GitLab's own time is the note's;
* the body runs through quick actions (``/close``, ``/label`` ... at the start
  of a line, ``Notes::QuickActionsService``) before it is saved. Text that
  comes from the cluster (migration names, Rails' error, the image) is only
  ever written inside inline code on lines that start with ``|`` or ``**``,
  so nothing a PostDeployMigration's creator or a migration's name says can
  act on the issue with the token's rights;
* creating notes is rate limited (``notes_create``: 429, with or without
  Retry-After), handled as every sink's 429.

Policy: never blocking (the CRD refuses ``blocking: true``: a note is for
people and must not hold a migration or a rollback); required for Regular
runs, skipped for rollbacks unless ``required: true`` (a rollback is tracked
on its incident, not on the release task issue).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import gitlab

from pdm_operator import timestamps
from pdm_operator.model import Body
from pdm_operator.reporting.records import PLANNED, Result
from pdm_operator.reporting.sinks.common import (
    OPTS,
    Captured,
    Context,
    explained,
    through_gitlab,
    token_user_id,
    version,
)

TYPE = "IssueNote"
DEFAULTS = {"Regular": (True, False), "Rollback": (False, False)}

#: The note's kind by the record's desired state.
KINDS = {PLANNED: "plan", "success": "outcome", "failed": "outcome"}

#: How far GitLab's clock may be behind ours when a note made by a lost create
#: is looked for after the time its record was planned.
CLOCK_ALLOWANCE = timedelta(seconds=30)
#: Comments looked through for our marker before giving the attempt up (and
#: retrying later): posting without having seen them all could post twice.
SCAN_LIMIT = 5000
#: Characters a note may have: GitLab's limit is 1,000,000; 500 migrations
#: (the most the status keeps) need about 100,000.
LIMIT = 200_000
#: Characters of one value (a name, an error) in a note.
VALUE_LIMIT = 300


def target(sink: Body) -> str:
    """``group/project#iid``: the issue the notes go to."""
    return f"{sink['project']}#{int(sink['issue'])}"


def targets(sink: Body, spec: Body, final: str) -> list[tuple[str, str]]:
    """The plan while the run has not ended (``planned``, ``running``), then the outcome."""
    desired = {PLANNED: PLANNED, "running": PLANNED}.get(final, final)
    return [(target(sink), desired)] if desired in KINDS else []


def deliver(record: Body, ctx: Context) -> Result:
    return through_gitlab(record, ctx, post_once)


# --- the marker -----------------------------------------------------------------

_MARKER = re.compile(
    r"<!-- pdm-operator note uid=(?P<uid>[0-9A-Za-z-]{1,64}) kind=(?P<kind>[a-z]+) -->"
)


def marker(uid: str, kind: str) -> str:
    """The hidden line that makes a note findable: the migration's uid and the note's kind."""
    return f"<!-- pdm-operator note uid={uid} kind={kind} -->"


def parse_marker(body: str) -> tuple[str, str] | None:
    """(uid, kind) of the marker ending a note's body, if it has one.

    Only the last line counts: text from the cluster inside the note (a
    migration's name, Rails' error) could contain a look-alike, and must not
    pass for the marker of another kind.
    """
    lines = (body or "").rstrip().splitlines()
    found = _MARKER.fullmatch(lines[-1].strip()) if lines else None
    return (found["uid"], found["kind"]) if found else None


# --- the text (pure) ------------------------------------------------------------


def code(value: Any, limit: int = VALUE_LIMIT) -> str:
    """``value`` as inline code: one line, no backticks or pipes, at most ``limit``.

    Inside inline code GitLab renders no mention, reference or HTML, and a
    quick action is only read at the start of a line.
    """
    text = " ".join(str(value).split())
    text = text.replace("`", "'").replace("|", "/")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{text}`" if text else "` `"


def _seconds(value: Any) -> str:
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def durations(status: Body) -> dict[str, float]:
    """Each finished migration's duration in seconds, by version, from ``status.progress``.

    Read leniently: the progress is recorded by another part of the operator
    and may be absent; entries with a version and a number of seconds
    (``seconds`` or ``durationSeconds``) under ``done`` or ``migrations`` count.
    """
    progress = status.get("progress") or {}
    if not isinstance(progress, dict):
        return {}
    found: dict[str, float] = {}
    for key in ("done", "migrations", "completed"):
        entries = progress.get(key)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("version"):
                continue
            seconds = entry.get("seconds", entry.get("durationSeconds"))
            if isinstance(seconds, int | float) and not isinstance(seconds, bool):
                found[str(entry["version"])] = float(seconds)
    return found


def held(entry: Body) -> bool:
    """Whether a pending entry was held back from this run: its ``action`` (spec.migrations
    hold/only, the environment's holds: ``pdm_operator.selection``)."""
    return entry.get("action") == "Hold"


def marked(entry: Body) -> bool:
    """Whether the run records this entry as executed without running it (markExecuted)."""
    return entry.get("action") == "MarkExecuted"


def fates(status: Body, outcome: str) -> list[tuple[Body, str]]:
    """Each pending migration with what became of it: applied, held, failed or unknown.

    On success every migration not held was applied. On failure the failing
    one is known from the log, and those ``status.progress`` records as done
    were applied; every other one is unknown (fail closed: the progress is
    read at a bounded rate and may lag the log, so a migration missing from
    it is never called "not run", nor one without a record "applied").
    """
    pending = [dict(m) for m in status.get("pendingMigrations") or []]
    failing = str(((status.get("failure") or {}).get("migration") or {}).get("version") or "")
    done = durations(status)
    out = []
    for entry in pending:
        v = str(entry.get("version") or "")
        if held(entry):
            fate = "held"
        elif marked(entry):
            fate = "marked executed" if outcome == "success" else "unknown"
        elif outcome == "success":
            fate = "applied"
        elif v and v == failing:
            fate = "failed"
        elif v in done:
            fate = "applied"
        else:
            fate = "unknown"
        out.append((entry, fate))
    return out


def _version_line(spec: Body, sink: Body) -> list[str]:
    lines = []
    shipped = version(spec, sink)
    if shipped:
        lines.append(f"| Version | {code(shipped['ref'])} {code(str(shipped['sha'])[:11])} |")
    if spec.get("gitlabVersion"):
        lines.append(f"| GitLab version | {code(spec['gitlabVersion'])} |")
    return lines


def _header(migration: Body, what: str) -> list[str]:
    meta, spec = migration["metadata"], migration["spec"]
    return [
        f"**Post-deployment migrations {what}** in {code(spec['environment'])} "
        f"({code(meta['namespace'] + '/' + meta['name'])})",
        "",
        "| | |",
        "|---|---|",
    ]


def _table(rows: Iterable[tuple[Body, str]], took: dict[str, float], count: int) -> list[str]:
    lines = ["| # | Version | Migration | Database | State | Took |", "|---|---|---|---|---|---|"]
    shown = 0
    for i, (entry, fate) in enumerate(rows, 1):
        v = str(entry.get("version") or "")
        lines.append(
            f"| {i} | {code(v)} | {code(entry.get('name') or '')} | "
            f"{code(entry.get('database') or '')} | {fate} | "
            f"{_seconds(took[v]) if v in took else ''} |"
        )
        shown += 1
    if count > shown:
        lines.append(f"| | | and {count - shown} more not listed in the status | | | |")
    return lines


def render_plan(migration: Body, sink: Body) -> str:
    """The plan note: image, version, pending list (held marked), approval."""
    spec, status = migration["spec"], migration.get("status") or {}
    pf = status.get("preflight") or {}
    lines = _header(migration, "planned")
    if status.get("image"):
        lines.append(f"| Image | {code(status['image'])} |")
    lines += _version_line(spec, sink)
    pending = [dict(m) for m in status.get("pendingMigrations") or []]
    count = int(pf.get("pendingCount") or len(pending))
    if pf.get("phase") == "Succeeded":
        kept = sum(1 for m in pending if held(m))
        lines.append(
            f"| Pending | {count}" + (f" ({kept} held, not run now)" if kept else "") + " |"
        )
        if pf.get("planHash"):
            lines.append(f"| Plan | {code(str(pf['planHash'])[:19])} |")
    else:
        lines.append("| Pending | not listed: no pre-flight ran (spec.preflight) |")
    if (spec.get("approval") or {}).get("required") and not status.get("approval"):
        meta = migration["metadata"]
        command = f"kubectl pdm approve -n {meta['namespace']} {meta['name']}"
        if pf.get("planHash"):  # approves this plan only, not whatever is pending by then
            command += f" --plan {pf['planHash']}"
        lines.append(f"| Approval | awaited: {code(command)} |")
    if pending:
        rows = [
            (m, "held" if held(m) else "to mark executed" if marked(m) else "pending")
            for m in pending
        ]
        lines += ["", *_table(rows, {}, count)]
    return _finish(lines, migration, "plan")


def render_outcome(migration: Body, sink: Body, outcome: str) -> str:
    """The outcome note: applied, held, failed (and where), durations when recorded."""
    spec, status = migration["spec"], migration.get("status") or {}
    word = "succeeded" if outcome == "success" else "failed"
    lines = _header(migration, word)
    if status.get("image"):
        lines.append(f"| Image | {code(status['image'])} |")
    lines += _version_line(spec, sink)
    start, end = status.get("startTime"), status.get("jobCompletionTime")
    if start and end:
        took = (timestamps.parse(end) - timestamps.parse(start)).total_seconds()
        lines.append(f"| Ran | {code(start)} to {code(end)} ({_seconds(max(0.0, took))}) |")
    rows = fates(status, outcome)
    pf = status.get("preflight") or {}
    count = int(pf.get("pendingCount") or len(rows))
    tally: dict[str, int] = {}
    for _, fate in rows:
        tally[fate] = tally.get(fate, 0) + 1
    if rows:
        summary = ", ".join(f"{n} {fate}" for fate, n in tally.items())
        lines.append(f"| Migrations | {summary} (of {count} pending) |")
    elif pf.get("phase") == "Succeeded" and not count:
        lines.append("| Migrations | nothing was pending |")
    else:
        lines.append("| Migrations | not listed: no pre-flight ran (spec.preflight) |")
    failure = status.get("failure") or {}
    if outcome != "success":
        failed_at = failure.get("migration") or {}
        if failed_at:
            where = " ".join(
                code(failed_at[k]) for k in ("version", "name", "database") if failed_at.get(k)
            )
            lines.append(f"| Failed at | {where} |")
            if failed_at.get("error"):
                lines.append(f"| Error | {code(failed_at['error'])} |")
        if failure.get("reason"):
            said = f" {code(failure['message'])}" if failure.get("message") else ""
            lines.append(f"| Reason | {code(failure['reason'])}{said} |")
        if any(fate == "unknown" for _, fate in rows):
            lines.append(
                "| Unknown | which of the others ran is not recorded: "
                "`gitlab-rake db:migrate:status` tells |"
            )
    if rows:
        lines += ["", *_table(rows, durations(status), count)]
    return _finish(lines, migration, "outcome")


def _finish(lines: list[str], migration: Body, kind: str) -> str:
    uid = str(migration["metadata"].get("uid") or "")
    tail = ["", marker(uid, kind)]
    body, size = [], sum(len(t) + 1 for t in tail)
    for line in lines:
        if size + len(line) + 1 > LIMIT - 100:
            body.append("| | note cut at its size limit: see the PostDeployMigration's status |")
            break
        body.append(line)
        size += len(line) + 1
    return "\n".join(body + tail)


def render(migration: Body, sink: Body, desired: str) -> str:
    if desired == PLANNED:
        return render_plan(migration, sink)
    return render_outcome(migration, sink, desired)


# --- the delivery ---------------------------------------------------------------


def _sink_of(ctx: Context, record: Body) -> Body:
    return ctx.sink(TYPE, match=lambda s: target(s) == record["target"])


def find_ours(
    gl: gitlab.Gitlab, issue: Any, record: Body, uid: str, kind: str
) -> tuple[Any | None, bool]:
    """Our note of ``kind`` on the issue, made by an attempt whose answer was lost.

    Returns (the note or None, whether every comment since the record was
    planned was looked at). Comments are listed newest first and looked
    through back to the record's planned time (less GitLab's clock allowance).
    """
    me = token_user_id(gl)
    planned = record.get("plannedTime") or record.get("firstAttemptTime")
    since = timestamps.parse(planned) - CLOCK_ALLOWANCE if planned else None
    notes = issue.notes.list(
        iterator=True,
        per_page=100,
        sort="desc",
        order_by="created_at",
        activity_filter="only_comments",
        **OPTS,
    )
    for seen, note in enumerate(notes):
        if seen >= SCAN_LIMIT:
            return None, False
        attrs = note.attributes
        created = attrs.get("created_at")
        if since is not None and created and timestamps.parse(created) < since:
            return None, True
        if (attrs.get("author") or {}).get("id") != me:
            continue
        if parse_marker(str(attrs.get("body") or "")) == (uid, kind):
            return note, True
    return None, True


def post_once(gl: gitlab.Gitlab, record: Body, ctx: Context, captured: Captured) -> Result:
    """Post the record's note unless a lost attempt already did."""
    project_path, _, iid = str(record["target"]).rpartition("#")
    sink = _sink_of(ctx, record)
    kind = KINDS[record["desired"]]
    uid = str(ctx.migration["metadata"].get("uid") or "")
    if not uid:  # the API server always sets one; without it, a retry could post twice
        return Result(error="the migration has no uid to mark its note with", permanent=True)
    project = gl.projects.get(project_path, lazy=True)
    issue = project.issues.get(int(iid), lazy=True)
    with explained(f"look up the notes of issue #{iid}", project_path, captured):
        ours, complete = find_ours(gl, issue, record, uid, kind)
    if ours is not None:
        return Result(delivered=True, remote_id=str(ours.attributes["id"]))
    if not complete:
        return Result(
            error=(
                f"issue #{iid} in {project_path} has more than {SCAN_LIMIT} comments since "
                "the report was planned: not posting without having looked through them all"
            )
        )
    body = render(ctx.migration, sink, record["desired"])
    data: dict[str, Any] = {"body": body}
    if sink.get("internal"):
        data["internal"] = True
    with explained(f"create the note on issue #{iid}", project_path, captured):
        note = issue.notes.create(data, **OPTS)
    return Result(delivered=True, remote_id=str(note.attributes["id"]))
