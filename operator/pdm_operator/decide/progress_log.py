"""While the Job runs: its progress, from what Rails announced in its pod's log since
the last read (``status.progress``; the parsing is the pure module ``progress``).

Informational only, and bounded:

* at most one read every ``Timing.progress_read`` seconds per migration (the
  operator remembers when it last read, ``ProgressReadAt``), and one more at
  the Job's end; each read asks only for the lines since the last counted
  (``sinceTime``), at most ``progress.READ_LIMIT`` bytes;
* the status changes (so the pass writes) only when Rails announced
  something, when a read was cut at its limit (the position must move on),
  or when the log could not be read (``unknown`` says why);
* a log that cannot be read, a pod that is gone or not started yet never
  fails nor delays the migration: the pass goes on as it would have.
"""

from __future__ import annotations

from datetime import datetime

from pdm_operator import model, progress, render
from pdm_operator.decide.asks import Decision, JobPods, LogSince, ObserveSteps, ProgressReadAt
from pdm_operator.decide.state import Pass
from pdm_operator.model import Body


def planned_steps(p: Pass) -> int | None:
    """The plan's step count: the pre-flight's pending (database, version) pairs,
    when its answer was made for this very Job; None (unknown) otherwise.

    A selection's Job (``pdm_operator.selection``: its name is
    ``preflight.migrationJob``) runs ``db:migrate:up`` per version, which
    announces a version on each database where it is pending: the pairs it
    applies (``action: Apply``; a mark announces nothing).
    """
    pf: Body = p.status.get("preflight") or {}
    job_hash = str(pf.get("jobHash") or "")
    if pf.get("phase") != "Succeeded" or not job_hash or "pendingCount" not in pf:
        return None
    entries = p.status.get("pendingMigrations") or []
    if pf.get("migrationJob") and pf["migrationJob"] == p.status.get("jobName"):
        return sum(1 for e in entries if e.get("action") == "Apply")
    if render.job_name(p.name, job_hash) != p.status.get("jobName"):
        return None
    return int(pf["pendingCount"])


def _pod_to_read(pods: list[Body]) -> tuple[str, int] | None:
    """The pod whose migration container runs (else the newest that ran) and its restarts."""
    best: tuple[int, str, str, int] | None = None
    for pod in pods:
        meta = pod.get("metadata") or {}
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != model.MIGRATION_CONTAINER:
                continue
            state = cs.get("state") or {}
            if not (state.get("running") or state.get("terminated")):
                continue  # not started: no log yet
            rank = (1 if state.get("running") else 0, str(meta.get("creationTimestamp") or ""))
            found = (*rank, str(meta.get("name")), int(cs.get("restartCount") or 0))
            if best is None or found[:2] > best[:2]:
                best = found
    return None if best is None else (best[2], best[3])


def follow_log(p: Pass, job: Body, *, final: bool = False) -> Decision[float | None]:
    """Read what is new in the log if a read is due (always when ``final``: the Job
    has ended), into ``p.status["progress"]``. Returns the seconds until the next
    read is due, or None when there is nothing to follow (no pod has run yet)."""
    every = p.timing.progress_read
    last: datetime | None = yield ProgressReadAt()
    if not final and last is not None:
        waited = (p.at - last).total_seconds()
        if waited < every:
            return every - waited
    meta = job["metadata"]
    found = _pod_to_read((yield JobPods(meta["name"], meta.get("uid", ""))))
    if found is None:
        return None
    pod, restarts = found
    before: Body = p.status.get("progress") or progress.start(planned_steps(p))
    now: Body = dict(before)
    read: Body = dict(now.get("read") or {})
    if (read.get("pod"), int(read.get("restarts") or 0)) != (pod, restarts):
        # Another pod, or its container started again: a new log from its start;
        # what ran before was interrupted (each migration is its own transaction).
        read = {"pod": pod, "restarts": restarts}
        now.pop("current", None)
    at = progress.Position.of(read)
    said_or_cut = False
    chunk: str | None = yield LogSince(pod, at.since, progress.READ_LIMIT)
    if chunk is None:
        now["unknown"] = (
            f"the log of pod {pod} could not be read: progress is unknown until it can be"
        )
    else:
        now.pop("unknown", None)
        lines, after = progress.read_lines(chunk, at)
        if after == at and len(chunk.encode()) >= progress.READ_LIMIT:
            now["unknown"] = (
                f"the log of pod {pod} holds more than {progress.READ_LIMIT} bytes around "
                "the last line read: progress is unknown"
            )
        said = progress.announcements(lines)
        now, steps = progress.advance(now, said)
        cut = len(chunk.encode()) >= progress.READ_LIMIT
        if said or cut:
            # Only then does the position move: lines without an announcement are
            # read again next time (idempotent), so they cost no status write.
            read.update(after.as_status())
            said_or_cut = True
        if steps:
            yield ObserveSteps(
                int(now.get("done") or 0),
                tuple((s.database, float(s.seconds)) for s in steps),
            )
    if final:
        now.pop("current", None)
    if said_or_cut or _shown(now) != _shown(before):
        # Where the reading stands is stored only with a change a person sees
        # (or a cut read): a read that found nothing new costs no write.
        p.status["progress"] = {**now, "read": read}
    return every


def _shown(shown: Body) -> Body:
    return {k: v for k, v in shown.items() if k != "read"}
