"""Kubernetes Events about a migration (pure rendering)."""

from __future__ import annotations

import hashlib

from pdm_operator import deployments, environments, gates, model, when
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
WARNING_GATES = frozenset(
    {
        "ImageChanged",
        "RolloutStuck",
        gates.ROLLOUT_WAITS_FOR_MIGRATIONS,
        "JobNameTaken",
        "EnvironmentBusy",
        *environments.HOLDS,
        # Someone must act: an admin's window, a token or commit for GitLab's record.
        when.INVALID_WINDOW,
        *deployments.NEEDS_ACTION,
    }
)


def kind_of(condition: Body) -> str:
    """Warning for conditions that mean trouble, Normal otherwise."""
    ctype, status = condition["type"], condition["status"]
    if (ctype, status) in WARNING_CONDITIONS:
        return "Warning"
    if ctype == model.GATED and status == "True" and condition.get("reason") in WARNING_GATES:
        return "Warning"
    if ctype == model.REPORTED and status == "False" and condition.get("reason") != "Pending":
        return "Warning"  # a report failed or was given up; Pending is the normal wait
    return "Normal"


def reason_of(condition: Body) -> str:
    """The Event's reason: the condition's, prefixed for reports (ReportDelivered)."""
    reason = str(condition["reason"])
    return f"Report{reason}" if condition["type"] == model.REPORTED else reason


def announced(condition: Body, current: list[Body]) -> bool:
    """Whether a transition of ``condition`` gets a log line and an Event.

    Not the companions: the other end condition (Succeeded=False beside
    Failed=True), a check passed on the way (JobValidated=True, and
    ImageResolved=True: the conditions say so, and the JobCreated Event names
    the image the Job runs), gates that opened (Gated=False: it is always written with what
    follows, the Job created, the pre-flight started or a create that failed,
    and that has the Event), reports that ended undelivered (Reported=False but
    Pending: the reporter posts an Event for each such record, and the
    condition names only the first), and kstatus' view of the state
    (Reconciling, and Stalled of a failed migration), whose own transition has
    its Event.
    """
    ctype, status = condition["type"], condition["status"]
    if ctype == model.REPORTED and status == "False" and condition.get("reason") != "Pending":
        return False
    if ctype in (model.SUCCEEDED, model.FAILED, model.GATED) and status == "False":
        return False
    if ctype in (model.JOB_VALIDATED, model.IMAGE_RESOLVED) and status == "True":
        return False
    failed = any(c.get("type") == model.FAILED and c.get("status") == "True" for c in current)
    return not (ctype == model.RECONCILING or (ctype == model.STALLED and failed))


def told_by_another(condition: Body, changed: list[Body]) -> bool:
    """Whether the Event of ``condition`` would repeat another of the same write.

    The pre-flight's answer (Preflight=True, MigrationsPending) is written
    with the Job it leads to, whose Created Event counts what the pre-flight
    found: one Event, not two, for one step (the log line stays). An answer
    that leads elsewhere (an approval to wait for, nothing to run) keeps its
    Event.
    """
    return (
        condition["type"] == model.PREFLIGHT
        and condition["status"] == "True"
        and condition.get("reason") == "MigrationsPending"
        and any(c["type"] == model.JOB_CREATED and c["status"] == "True" for c in changed)
    )
