"""Conditions as the Kubernetes API conventions want them, as pure functions.

A condition keeps its ``lastTransitionTime`` unless its status really changes:
a new reason or message alone is not a transition. That is what lets
``kubectl wait`` and alerting rely on the timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdm_operator import model
from pdm_operator.model import Body


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def find(conditions: list[Body] | None, ctype: str) -> Body | None:
    for cond in conditions or []:
        if cond.get("type") == ctype:
            return cond
    return None


def is_true(conditions: list[Body] | None, ctype: str) -> bool:
    cond = find(conditions, ctype)
    return cond is not None and cond.get("status") == "True"


def apply(conditions: list[Body] | None, new: Condition, generation: int, now: str) -> list[Body]:
    """Return the conditions with ``new`` set; the input list is not modified."""
    old = find(conditions, new.type)
    keep_time = old is not None and old.get("status") == new.status
    updated = {
        "type": new.type,
        "status": new.status,
        "reason": new.reason,
        "message": new.message,
        "observedGeneration": generation,
        "lastTransitionTime": old.get("lastTransitionTime", now) if keep_time and old else now,
    }
    out = [updated if c.get("type") == new.type else dict(c) for c in conditions or []]
    if old is None:
        out.append(updated)
    return out


def transitions(old: list[Body] | None, new: list[Body]) -> list[Body]:
    """Conditions whose status or reason changed from ``old`` to ``new`` (for events)."""
    changed = []
    for cond in new:
        before = find(old, cond["type"])
        if before is None or (before.get("status"), before.get("reason")) != (
            cond.get("status"),
            cond.get("reason"),
        ):
            changed.append(cond)
    return changed


#: Which condition decides the state, first match wins.
STATE_BY_CONDITION: tuple[tuple[str, str, str], ...] = (
    (model.FAILED, "True", model.STATE_FAILED),
    (model.SUCCEEDED, "True", model.STATE_SUCCEEDED),
    (model.SUCCEEDED, "Unknown", model.STATE_REPORTING),
    (model.JOB_CREATED, "True", model.STATE_RUNNING),
    # An error that stops every pass outranks what the last good pass said.
    (model.STALLED, "True", model.STATE_PENDING),
    # A template that went missing while a gate held outranks the old gate.
    (model.TEMPLATE_RESOLVED, "False", model.STATE_PENDING),
    # The gates were open and the pre-flight is asking Rails what is pending.
    (model.PREFLIGHT, "Unknown", model.STATE_PENDING),
    (model.GATED, "True", model.STATE_GATED),
    # Creating the Job failed (a quota, an unavailable API server): retried.
    (model.JOB_CREATED, "False", model.STATE_PENDING),
    (model.IMAGE_RESOLVED, "False", model.STATE_PENDING),
)


def kstatus(conditions: list[Body], state: str, reason: str) -> list[Condition]:
    """``Reconciling`` and ``Stalled`` as kstatus reads them (cli-utils
    ``pkg/kstatus/status/generic.go``, ``checkGenericProperties``): Reconciling
    True → InProgress, Stalled True → Failed, neither → Current.

    Reconciling is True until the migration has ended (Succeeded or Failed).
    A failed migration is Stalled, with the failure's reason; a running one
    keeps whatever Stalled the pass decided (a pod that cannot start).
    """
    failed = find(conditions, model.FAILED)
    succeeded = find(conditions, model.SUCCEEDED)
    ended = any(c is not None and c.get("status") == "True" for c in (failed, succeeded))
    out = []
    if failed is not None and failed.get("status") == "True":
        out.append(
            Condition(
                model.STALLED,
                "True",
                str(failed.get("reason") or "Failed"),
                str(failed.get("message") or ""),
            )
        )
    if ended:
        out.append(
            Condition(model.RECONCILING, "False", state, f"the migration has ended: {state}")
        )
    else:
        out.append(
            Condition(
                model.RECONCILING, "True", state, f"{state}" + (f" ({reason})" if reason else "")
            )
        )
    return out


def summarize(conditions: list[Body] | None) -> tuple[str, str]:
    """The one-word state and the reason behind it, for ``kubectl get pdm``.

    A running migration whose pod cannot start stays Running (its Job exists
    and may start any moment), with the reason it is stuck.
    """
    for ctype, status, state in STATE_BY_CONDITION:
        cond = find(conditions, ctype)
        if cond and cond.get("status") == status:
            stalled = find(conditions, model.STALLED)
            if state == model.STATE_RUNNING and stalled and stalled.get("status") == "True":
                return state, str(stalled.get("reason", ""))
            return state, str(cond.get("reason", ""))
    # Nothing decided yet (the gates open, the Job about to be created): say
    # what the pass last found, never an empty reason.
    gated = find(conditions, model.GATED)
    return model.STATE_PENDING, str((gated or {}).get("reason") or "Progressing")
