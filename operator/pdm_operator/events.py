"""Kubernetes Events about a migration (pure rendering)."""

from __future__ import annotations

import hashlib

from pdm_operator import model
from pdm_operator.model import Body

MESSAGE_LIMIT = 1024
COMPONENT = "pdm-operator"


def event_for(migration: Body, kind: str, reason: str, message: str, now: str) -> Body:
    """A core/v1 Event on ``migration``; ``kind`` is Normal or Warning.

    The name is derived from the object, reason and time, so retrying a post
    after a lost answer does not make a second event.
    """
    meta = migration["metadata"]
    suffix = hashlib.sha256(f"{meta.get('uid')}/{reason}/{message}/{now}".encode()).hexdigest()[:10]
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": model.API_VERSION,
            "kind": model.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


#: Condition (type, status) pairs that mean trouble.
WARNING_CONDITIONS = frozenset(
    {
        (model.FAILED, "True"),
        (model.STALLED, "True"),
        (model.IMAGE_RESOLVED, "False"),
        (model.TEMPLATE_RESOLVED, "False"),
        (model.JOB_VALIDATED, "False"),
        (model.JOB_CREATED, "False"),
    }
)
#: Gates that hold for a reason someone should look at, not a normal wait.
WARNING_GATES = frozenset({"ImageChanged", "RolloutStuck", "JobNameTaken", "EnvironmentBusy"})


def kind_of(condition: Body) -> str:
    """Warning for conditions that mean trouble, Normal otherwise."""
    ctype, status = condition["type"], condition["status"]
    if (ctype, status) in WARNING_CONDITIONS:
        return "Warning"
    if ctype == model.GATED and status == "True" and condition.get("reason") in WARNING_GATES:
        return "Warning"
    return "Normal"
