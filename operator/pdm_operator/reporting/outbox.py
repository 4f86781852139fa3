"""The outbox: what should be reported, and the state of each delivery (pure).

Records live in ``status.reports``, one per (sink, target). Their desired
state follows the migration, level-based, from its status:

* the pre-flight found the plan, no Job yet -> the plan (``planned``: only
  the sinks that report a plan, an issue note, want anything then);
* the Job exists, no outcome yet -> deployments ``running``;
* the Job ended -> deployments ``success`` or ``failed`` (a deployment whose
  ``running`` never got through is created with its final status directly);
  on success also the Sentry deploy, the QA issue (Regular) and the MR labels.

A record is written before it is attempted; each attempt updates it:
delivered, retried later (exponential back-off with jitter, or the server's
Retry-After), failed for good (an answer that retrying cannot change), or
given up once older than the give-up age.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pdm_operator import conditions, model, preflight, timestamps
from pdm_operator.conditions import Condition
from pdm_operator.model import Body
from pdm_operator.reporting import policy
from pdm_operator.reporting.records import (
    DELIVERED,
    FAILED,
    GAVE_UP,
    NO_MERGE_REQUESTS,
    PENDING,
    PLANNED,
    SETTLED,
    SKIPPED,
    UNDELIVERED,
    WAITING,
    Result,
)
from pdm_operator.reporting.sinks import SINKS

BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
ERROR_LIMIT = 512


@dataclass(frozen=True)
class Intent:
    sink: str
    target: str
    desired: str
    blocking: bool
    required: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.sink, self.target)


def intents(migration: Body) -> list[Intent]:
    """What should be reported now, from the migration's spec and status."""
    spec, status = migration["spec"], migration.get("status") or {}
    tracking = spec.get("tracking")
    if not tracking or spec.get("mode") == "DryRun":
        return []
    started = bool(status.get("jobName"))
    # Succeeded | Failed | None; nothing pending with FinishAndReport counts as a success.
    outcome = status.get("jobOutcome") or (
        "Succeeded" if preflight.reports_nothing_pending(spec, status) else None
    )
    if not started and not outcome:
        if not plan_known(status):
            return []
        final = PLANNED
    else:
        final = {"Succeeded": "success", "Failed": "failed"}.get(outcome or "", "running")
    pipeline = spec.get("pipeline", "Regular")
    out: list[Intent] = []
    for sink in tracking.get("sinks") or []:
        pol = policy.for_sink(sink, pipeline)
        for target, desired in SINKS[sink["type"]].targets(sink, spec, final):
            out.append(Intent(sink["type"], target, desired, pol.blocking, pol.required))
    return out


def plan_known(status: Body) -> bool:
    """Whether the plan is known before the Job: the pre-flight found something
    pending (nothing pending is no plan: with FinishAndReport the outcome
    says so), or a plan was already recorded (a later pre-flight, running again right before
    the Job, does not take back what was reported)."""
    pf = status.get("preflight") or {}
    if pf.get("phase") == "Succeeded" and int(pf.get("pendingCount") or 0) > 0:
        return True
    return any(r.get("desired") == PLANNED for r in status.get("reports") or [])


def merge(records: list[Body] | None, wanted: list[Intent], now: datetime) -> list[Body]:
    """Records for ``wanted``, keeping the delivery progress of unchanged ones.

    A record whose desired state changed (running -> success) starts over
    (attempts, errors, timers) but keeps its remote id: the deployment made
    for ``running`` is the one updated to ``success``.
    """
    by_key = {(r.get("sink"), r.get("target")): r for r in records or []}
    out: list[Body] = []
    for intent in wanted:
        old = by_key.get(intent.key)
        if old is not None and old.get("desired") == intent.desired:
            rec = copy.deepcopy(old)
            rec["blocking"] = intent.blocking
        else:
            rec = {
                "sink": intent.sink,
                "target": intent.target,
                "desired": intent.desired,
                "state": PENDING if intent.required else SKIPPED,
                "blocking": intent.blocking,
                "attempts": 0,
            }
            for kept in ("remoteId", "conflict"):  # the same deployment, the same neighbours
                if old is not None and old.get(kept):
                    rec[kept] = old[kept]
            # The lookup of a create whose answer was lost only matches
            # deployments made after the first record of this key was planned.
            rec["plannedTime"] = (old or {}).get("plannedTime") or timestamps.rfc3339(now)
            if old is not None and old.get("nextAttemptTime") and old.get("state") == PENDING:
                # The same server asked us to wait (Retry-After) or is failing
                # (back-off): a new desired state does not make it ready sooner.
                rec["nextAttemptTime"] = old["nextAttemptTime"]
        out.append(rec)
    # Records no longer wanted (a sink removed) are not possible: spec.tracking
    # is immutable. Records of the same key appear once.
    return out


def due(records: list[Body], now: datetime) -> list[Body]:
    """Pending records whose next attempt time has come."""
    ready = []
    for rec in records:
        if rec.get("state") not in (PENDING, WAITING):
            continue
        nxt = rec.get("nextAttemptTime")
        if nxt is None or timestamps.parse(nxt) <= now:
            ready.append(rec)
    return ready


def next_wakeup(records: list[Body], now: datetime) -> float | None:
    """Seconds until the next pending record is due (None: nothing pending)."""
    waits = []
    for rec in records:
        if rec.get("state") not in (PENDING, WAITING):
            continue
        nxt = rec.get("nextAttemptTime")
        waits.append(
            0.0 if nxt is None else max(0.0, (timestamps.parse(nxt) - now).total_seconds())
        )
    return min(waits) if waits else None


def backoff(attempts: int, jitter: Callable[[], float] = random.random) -> float:
    """Exponential back-off with ±20% jitter: 2, 4, 8 … capped at 5 minutes."""
    base = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempts - 1)))
    return float(base * (0.8 + 0.4 * jitter()))


def after_attempt(
    record: Body,
    result: Result,
    now: datetime,
    give_up_after: float,
    jitter: Callable[[], float] = random.random,
) -> Body:
    rec = copy.deepcopy(record)
    if result.waiting:
        rec["state"] = WAITING
        delay = result.retry_after if result.retry_after is not None else BACKOFF_BASE
        rec["nextAttemptTime"] = timestamps.rfc3339_ceil(now + timedelta(seconds=delay))
        if result.note:
            rec["note"] = result.note[:ERROR_LIMIT]
        return rec
    rec["attempts"] = int(rec.get("attempts") or 0) + 1
    rec["lastAttemptTime"] = timestamps.rfc3339(now)
    rec.setdefault("firstAttemptTime", timestamps.rfc3339(now))
    if result.remote_id:
        rec["remoteId"] = result.remote_id
    if result.conflict:
        rec["conflict"] = result.conflict[:ERROR_LIMIT]
    rec.pop("note", None)
    if result.no_merge_requests:
        rec["state"] = NO_MERGE_REQUESTS
        rec["lastError"] = (result.error or "no merge requests linked")[:ERROR_LIMIT]
        rec.pop("nextAttemptTime", None)
        return rec
    if result.delivered:
        rec["state"] = DELIVERED
        rec["deliveredTime"] = timestamps.rfc3339(now)
        rec.pop("nextAttemptTime", None)
        rec.pop("lastError", None)
        return rec
    rec["lastError"] = (result.error or "unknown error")[:ERROR_LIMIT]
    if result.permanent:
        rec["state"] = FAILED
        rec.pop("nextAttemptTime", None)
        return rec
    age = (now - timestamps.parse(rec["firstAttemptTime"])).total_seconds()
    if age >= give_up_after:
        rec["state"] = GAVE_UP
        rec.pop("nextAttemptTime", None)
        return rec
    rec["state"] = PENDING
    delay = (
        result.retry_after if result.retry_after is not None else backoff(rec["attempts"], jitter)
    )
    rec["nextAttemptTime"] = timestamps.rfc3339_ceil(now + timedelta(seconds=delay))
    return rec


def reported_condition(records: list[Body]) -> Condition | None:
    """The Reported condition: True when every required record is delivered."""
    if not records:
        return None
    pending = [r for r in records if r.get("state") in (PENDING, WAITING)]
    failed = [r for r in records if r.get("state") in UNDELIVERED]
    if pending:
        first = pending[0]
        detail = f"{first['sink']} {first['target']} ({first['desired']})"
        if first.get("lastError"):
            detail += f": attempt {first.get('attempts', 0)}: {first['lastError']}"
        elif first.get("note"):
            detail += f": {first['note']}"
        more = f" and {len(pending) - 1} more" if len(pending) > 1 else ""
        return Condition(
            model.REPORTED, "False", "Pending", f"{len(pending)} pending: {detail}{more}"
        )
    if failed:
        first = failed[0]
        reason = {FAILED: "DeliveryFailed", GAVE_UP: "GaveUp"}.get(
            first["state"], "NoMergeRequestsLinked"
        )
        return Condition(
            model.REPORTED,
            "False",
            reason,
            f"{first['sink']} {first['target']} ({first['desired']}): {first.get('lastError', '')}",
        )
    delivered = sum(1 for r in records if r.get("state") == DELIVERED)
    return Condition(model.REPORTED, "True", "Delivered", f"{delivered} report(s) delivered")


@dataclass(frozen=True)
class Blocking:
    """Where the blocking reports stand for a migration whose Job succeeded."""

    done: bool
    failed: bool
    message: str


def blocking_state(migration: Body, now: datetime) -> Blocking:
    """Whether the blocking reports of the final outcome are all delivered, or can no longer be."""
    status = migration.get("status") or {}
    wanted = [i for i in intents(migration) if i.blocking and i.required]
    if not wanted:
        return Blocking(True, False, "")
    records = {(r.get("sink"), r.get("target")): r for r in status.get("reports") or []}
    waiting = []
    for intent in wanted:
        rec = records.get(intent.key)
        if rec is None or rec.get("desired") != intent.desired:
            waiting.append(f"{intent.sink} {intent.target}")
            continue
        if rec.get("state") == DELIVERED:
            continue
        if rec.get("state") in UNDELIVERED:
            return Blocking(
                False, True, f"{intent.sink} {intent.target} failed: {rec.get('lastError', '')}"
            )
        waiting.append(
            f"{intent.sink} {intent.target}"
            + (f" ({rec['lastError']})" if rec.get("lastError") else "")
        )
    if not waiting:
        return Blocking(True, False, "")
    deadline = int(
        ((migration["spec"].get("tracking") or {}).get("blockingDeadlineSeconds")) or 600
    )
    ended = status.get("jobCompletionTime")
    if ended and (now - timestamps.parse(ended)).total_seconds() >= deadline:
        return Blocking(
            False,
            True,
            f"not delivered within {deadline}s of the Job's end: " + ", ".join(waiting),
        )
    return Blocking(False, False, "waiting for blocking reports: " + ", ".join(waiting))


def needs_reporting(migration: Body) -> bool:
    """Whether the reporter has work: an intent without a settled record."""
    wanted = intents(migration)
    if not wanted:
        return False
    records = {
        (r.get("sink"), r.get("target")): r
        for r in (migration.get("status") or {}).get("reports") or []
    }
    for intent in wanted:
        rec = records.get(intent.key)
        if rec is None or rec.get("desired") != intent.desired or rec.get("state") not in SETTLED:
            return True
    return False


def is_reported(status: Body | None) -> bool:
    return conditions.is_true((status or {}).get("conditions"), model.REPORTED)
