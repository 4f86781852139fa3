"""An environment that starts its own runs: one per window opening (pure).

GitLab.com starts post-deployment migrations by ChatOps, roughly once a
weekday after the deploy. ``spec.schedule`` lets the environment do it: while
one of its windows is open, no change lock holds, and no run it started
before is unfinished, it creates a PostDeployMigration from its template. The
migration then waits on every gate as one made by hand would (the GitLab
deployments gate, quiet Deployments, approval, the lock).

Exactly one per opening, across restarts and several replicas: the name is
the opening's (``<environment>-<YYYYMMDD-HHMM>`` in UTC), so a second create
meets the first (409) and counts as done; and ``status.scheduled.opening``
records it, so a run deleted by hand is not made again within the same
opening. The template is the platform admin's (the environment is theirs to
write), so the operator creating it grants no one anything: the migration is
held to the same environment rules as any other.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pdm_operator import model, timestamps, when
from pdm_operator.model import Body

#: The label on the migrations a schedule made: its environment's name.
LABEL_SCHEDULED_BY = f"{model.GROUP}/scheduled-by"
#: The annotation with the window opening a scheduled migration was made for.
ANNOTATION_OPENING = f"{model.GROUP}/window-opening"
#: The environment's condition that says what the schedule did last.
SCHEDULED = "Scheduled"
#: A PostDeployMigration's name may have 54 characters (its CRD's rule).
MAX_NAME = 54
_STAMP = "%Y%m%d-%H%M"


@dataclass(frozen=True)
class Start:
    """Create ``migration`` for the window opened at ``opening``."""

    opening: datetime
    migration: Body

    @property
    def name(self) -> str:
        return f"{self.migration['metadata']['namespace']}/{self.migration['metadata']['name']}"


@dataclass(frozen=True)
class Wait:
    """No run now: the condition says why (``reason``, ``message``)."""

    reason: str
    message: str


def name_for(environment: str, opening: datetime) -> str:
    stamp = opening.astimezone(UTC).strftime(_STAMP)
    return f"{environment[: MAX_NAME - len(stamp) - 1]}-{stamp}"


def due(environment: Body, now: datetime) -> datetime | Wait | None:
    """The window opening a run of ``environment``'s schedule is due for at ``now``,
    why none can start, or None: nothing to do (no schedule, or this opening's
    run was started)."""
    name = str(environment["metadata"]["name"])
    spec = environment.get("spec") or {}
    schedule = spec.get("schedule")
    if not schedule:
        return None
    if schedule.get("suspend"):
        return Wait("Suspended", "spec.schedule.suspend is true: no run is started")
    opening = _opening(spec, now)
    done = ((environment.get("status") or {}).get("scheduled") or {}).get("opening")
    if isinstance(opening, Wait) or done == timestamps.rfc3339(opening):
        return opening if isinstance(opening, Wait) else None
    locked = when.locked(name, spec.get("changeLock"), now)
    if locked is not None:
        return Wait(when.CHANGE_LOCKED, f"no run is started: {locked.message}")
    return opening


def _opening(spec: Body, now: datetime) -> datetime | Wait:
    """When the window open at ``now`` opened, or why no run can start now."""
    try:
        windows = when.parse(spec.get("windows") or [])
    except when.InvalidWindowError as e:
        return Wait(when.INVALID_WINDOW, str(e))
    opening = when.open_since(windows, now)
    if opening is None:
        nxt = when.next_opening(windows, now)
        after = f" at {timestamps.rfc3339(nxt)}" if nxt else ""
        return Wait("WaitingForWindow", f"the next run starts when a window opens{after}")
    return opening


def start(environment: Body, opening: datetime, unfinished: Sequence[str]) -> Start | Wait:
    """The run for ``opening``, unless one this schedule made has not ended
    (``unfinished``: their namespace/names)."""
    if unfinished:
        return Wait(
            "PreviousRunUnfinished",
            f"{', '.join(unfinished)} (started by this schedule) has not ended; "
            "one scheduled run at a time",
        )
    name = str(environment["metadata"]["name"])
    schedule = environment["spec"]["schedule"]
    return Start(opening, migration(name, str(schedule["namespace"]), schedule, opening))


def migration(environment: str, namespace: str, schedule: Body, opening: datetime) -> Body:
    """The PostDeployMigration the schedule makes for ``opening``."""
    spec = copy.deepcopy(schedule.get("template") or {})
    spec["environment"] = environment
    source = (spec.get("image") or {}).get("fromDeployment")
    if isinstance(source, dict):
        # A scheduled run stands for whatever is deployed: a rollout while it
        # waits (the day's deploy) moves it on, rather than leaving it stale.
        source.setdefault("follow", True)
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {
            "name": name_for(environment, opening),
            "namespace": namespace,
            "labels": {LABEL_SCHEDULED_BY: environment, model.LABEL_ENVIRONMENT: environment},
            "annotations": {ANNOTATION_OPENING: timestamps.rfc3339(opening)},
        },
        "spec": spec,
    }


def for_comparison(made: Body) -> Body:
    """``made`` under a generated name, for a server-side dry run that says what the
    API server stores for it (the CRD's defaults filled in) while the name is taken."""
    meta = {k: v for k, v in made["metadata"].items() if k != "name"}
    return {**made, "metadata": {**meta, "generateName": "pdm-schedule-check-"}}


def is_its_run(found: Body | None, made: Body, stored: Body) -> bool:
    """Whether ``found``, under the name of the run the schedule would make
    (``made``), is that run: made before a restart, or by a second replica.

    Its label, and its spec field for field what the API server stores for
    ``made`` (``stored``: a dry run of it), which is not suspended. The name
    alone is not enough: anyone who may create PostDeployMigrations in the
    namespace could take it first with another spec, and the schedule would
    record their run as its own.
    """
    if found is None:
        return False
    labels = (found.get("metadata") or {}).get("labels") or {}
    wanted = made["metadata"]["labels"][LABEL_SCHEDULED_BY]
    return labels.get(LABEL_SCHEDULED_BY) == wanted and found.get("spec") == stored.get("spec")
