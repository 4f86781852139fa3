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


def summarize(conditions: list[Body] | None) -> tuple[str, str]:
    """The one-word state and the reason behind it, for ``kubectl get pdm``."""
    for ctype, state in (
        (model.FAILED, model.STATE_FAILED),
        (model.SUCCEEDED, model.STATE_SUCCEEDED),
    ):
        cond = find(conditions, ctype)
        if cond and cond.get("status") == "True":
            return state, str(cond.get("reason", ""))
    succeeded = find(conditions, model.SUCCEEDED)
    if succeeded and succeeded.get("status") == "Unknown":
        return model.STATE_REPORTING, str(succeeded.get("reason", ""))
    job = find(conditions, model.JOB_CREATED)
    if job and job.get("status") == "True":
        return model.STATE_RUNNING, str(job.get("reason", ""))
    gated = find(conditions, model.GATED)
    if gated and gated.get("status") == "True":
        return model.STATE_GATED, str(gated.get("reason", ""))
    image = find(conditions, model.IMAGE_RESOLVED)
    if image and image.get("status") == "False":
        return model.STATE_PENDING, str(image.get("reason", ""))
    return model.STATE_PENDING, ""
