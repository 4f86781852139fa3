"""The state of one pass, and how a pass ends: fail, release, finish, write."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime

from pdm_operator import (
    conditions,
    lines,
    model,
    preflight,
    timestamps,
)
from pdm_operator.conditions import Condition
from pdm_operator.decide.asks import Decision, ReleaseLock, WriteStatus
from pdm_operator.errors import Invalid
from pdm_operator.model import Body

NOTHING_PENDING = preflight.NOTHING_PENDING


nothing_pending = preflight.nothing_pending


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
    #: Waiting on the environment's declaration or policy: an admin's edit
    #: wakes nobody, so this is how soon it is seen.
    policy_poll: float = 10.0
    running_resync: float = 30.0
    #: While the Job runs: how often its log is read for progress at most
    #: (decide/progress_log.py); a running Job is looked at this often.
    progress_read: float = 15.0


@dataclass(frozen=True)
class Setup:
    """What a decision needs to know about the operator, not the migration."""

    #: Where the environments' Leases and history ConfigMaps live.
    lock_namespace: str
    timing: Timing = field(default_factory=Timing)


@dataclass
class Step:
    """What a pass leaves behind: the status now stored, and when to look again."""

    status: Body
    requeue: float | None  # None: the migration has ended, nothing more to do


#: ``status.rollback.reason`` and the Warning's reason: the history refused the run's record.
HISTORY_UNWRITABLE = "HistoryUnwritable"


class Pass:
    """The state of one pass: the migration, its status as stored and as it will be."""

    def __init__(self, migration: Body, now: datetime, setup: Setup) -> None:
        self.migration = migration
        self.meta = migration["metadata"]
        self.spec = migration["spec"]
        self.setup = setup
        self.timing = setup.timing
        self.stored: Body = copy.deepcopy(migration.get("status") or {})
        self.status: Body = copy.deepcopy(self.stored)
        self.generation = int(self.meta.get("generation") or 1)
        self.at = now
        self.now = timestamps.rfc3339(now)
        self.stalled_before = conditions.is_true(self.stored.get("conditions"), model.STALLED)
        #: Whether this pass itself found the migration stuck (Stalled=True).
        self.stalled_now = False
        #: The environment lock's tenure, once this pass holds the lock.
        self.tenure: str | None = None
        #: This pass gave the lock back already (asking again would only read the Lease).
        self.released = False
        #: The environment's standing holds (``PostDeployEnvironment.spec.holds``).
        self.environment_holds: tuple[Body, ...] = ()

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

    @property
    def lease(self) -> str:
        """The environment's Lease, as messages name it."""
        return f"{self.setup.lock_namespace}/{lines.lease_name(self.environment)}"

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


def fail(p: Pass, reason: str, message: str) -> None:
    p.set(model.SUCCEEDED, False, reason, message)
    p.set(model.FAILED, True, reason, message)
    p.status.setdefault("failure", {"reason": reason, "message": message})
    p.status["completionTime"] = p.now


def release(p: Pass) -> Decision[None]:
    """Give the environment's lock back if this migration holds it (once a pass)."""
    if not p.released:
        yield ReleaseLock()
        p.released = True


def finish(p: Pass) -> Decision[Step]:
    step = yield from write(p, None)
    yield from release(p)
    return step


def write(p: Pass, requeue: float | None) -> Decision[Step]:
    """Store the status if it changed (every transition is announced by the writer)."""
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
    p.status["conditions"] = sorted(p.conditions, key=lambda c: c.get("type") != model.RECONCILING)
    p.status["observedGeneration"] = p.generation
    if p.status == p.stored:
        return Step(p.stored, requeue)
    written: Body | None = yield WriteStatus(
        merge_patch(p.stored, p.status),
        copy.deepcopy(p.status),
        list(p.stored.get("conditions") or []),
    )
    if written is None:  # the migration was deleted meanwhile
        return Step(p.status, None)
    p.stored = copy.deepcopy(p.status)
    return Step(p.stored, requeue)


def preflight_running(status: Body) -> bool:
    """A pre-flight runs for this migration: it needs the lock it was started under."""
    return (status.get("preflight") or {}).get("phase") == "Running"


def owned(job: Body, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])


def nothing_pending_message(p: Pass) -> str:
    databases = ", ".join((p.status.get("preflight") or {}).get("databases") or [])
    held = sorted(
        {
            str(e.get("version"))
            for e in p.status.get("pendingMigrations") or []
            if e.get("action") == "Hold"
        }
    )
    if held:  # pending, but a selection left every one out
        return (
            f"nothing to run: every pending migration is held ({', '.join(held[:10])}), "
            "so no migration Job was created; they stay pending for a later run"
        )
    return (
        f"nothing to migrate: no migration is pending in {databases or 'the database'}, "
        "so no migration Job was created"
    )


def merge_patch(old: Body, new: Body) -> Body:
    """A JSON merge patch from ``old`` to ``new``: removed keys become null, at every
    level. A merge patch merges objects into objects (RFC 7386), so an object
    sent whole would keep the keys it no longer has (``status.progress.current``
    once the migration it named is done); lists are replaced whole."""
    patch: Body = {}
    for k, v in new.items():
        before = old.get(k)
        if before == v:
            continue
        if isinstance(before, dict) and isinstance(v, dict):
            patch[k] = merge_patch(before, v)
        else:
            patch[k] = v
    for k in old:
        if k not in new:
            patch[k] = None
    return patch


def invalid_job(e: Invalid, refused: str) -> str:
    """Why the Job can never be created: the client's refusal or the server's."""
    if e.status:
        return f"the API server {refused}: {e.message}"
    return f"the Job cannot be sent to the API server: {e.message}"
