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


def kind_of(condition: Body) -> str:
    """Warning for conditions that mean trouble, Normal otherwise."""
    ctype, status, reason = condition["type"], condition["status"], condition.get("reason")
    if ctype == model.FAILED and status == "True":
        return "Warning"
    if ctype == model.IMAGE_RESOLVED and status == "False":
        return "Warning"
    if ctype == model.JOB_CREATED and status == "False":
        return "Warning"
    if ctype == model.SUCCEEDED and status == "Unknown":
        return "Normal"
    if ctype == model.GATED and reason in ("ImageChanged", "RolloutStuck", "JobNameTaken"):
        return "Warning"
    return "Normal"
