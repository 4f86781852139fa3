"""The status of each declared environment: lock holder, line, last runs, floor, history.

``kubectl get pdenv`` is the first thing a release manager looks at: who
holds the environment, how many wait, what ran last, and the rollback floor.
Each of those already has a home (the Lease, the controller's lines, the
history ConfigMap), so this module only gathers them into the
PostDeployEnvironment's status, on a timer, and writes when something
changed (a JSON merge patch of the status subresource, one per change).

``status.history`` is how ``pdm-operator rollback-check`` finds the history:
from the environment object, never from a guessed namespace.

Which operator writes: the one whose watched namespaces meet the
environment's ``spec.namespaces`` (all of them for a cluster-wide install),
and only while it leads. Two installs serving one environment would also
share its Lease; that is a misconfiguration the docs warn of.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import cast

from pdm_operator import conditions, environments, history, lines, model, schedule, timestamps, when
from pdm_operator.errors import AlreadyExists, ApiError, Invalid
from pdm_operator.kube import Kube
from pdm_operator.locks import Holder
from pdm_operator.model import Body
from pdm_operator.statuses import Condition, PostDeployEnvironmentStatus, Run, Scheduled

log = logging.getLogger(__name__)

#: Runs shown in the status, newest first.
SHOWN_RUNS = 5
#: Migrations of the line named in the status (all are counted).
SHOWN_QUEUE = 10
READY = "Ready"


def compute(  # noqa: PLR0917 - the gathered facts, named at the one call site
    body: Body,
    lease: Body | None,
    history_configmap: Body | None,
    queue: list[str],
    where: str,
    now: str,
    scheduled: tuple[conditions.Condition, Scheduled | None] | None = None,
) -> PostDeployEnvironmentStatus:
    """The environment's status from its Lease, line, history and windows (pure);
    ``scheduled``: what its schedule did this round (its condition, and the run
    it started), None when it had nothing to say."""
    holder = Holder.parse(((lease or {}).get("spec") or {}).get("holderIdentity"))
    records = history.runs(history_configmap)
    generation = int((body.get("metadata") or {}).get("generation") or 1)
    shown: list[Run] = []
    for r in reversed(records[-SHOWN_RUNS:]):
        run = Run(
            migration=f"{r.namespace}/{r.name}",
            version=r.version,
            outcome=r.outcome,
            completed=r.completed,
        )
        if r.migrations is not None:
            run["migrations"] = len(r.migrations)
        shown.append(run)
    old = body.get("status") or {}
    ready = conditions.Condition(
        READY, "True", "Serving", f"runs are recorded in ConfigMap {where}"
    )
    elsewhere = str(old.get("history") or "")
    if elsewhere and elsewhere != where:
        # Another operator (another install, or this one before it moved)
        # records this environment's runs: two histories, and rollback-check
        # would answer from whichever wrote last. Say so; never take it over.
        ready = conditions.Condition(
            READY,
            "False",
            "HistoryElsewhere",
            f"this environment's runs are recorded in {elsewhere}, but an operator whose "
            f"history is {where} serves it too: one operator per environment. If the "
            "history moved for good, a cluster admin clears status.history",
        )
        where = elsewhere
    conds = conditions.apply(list(old.get("conditions") or []), ready, generation, now)
    if scheduled is not None:
        conds = conditions.apply(conds, scheduled[0], generation, now)
    elif not (body.get("spec") or {}).get("schedule"):
        conds = [c for c in conds if c.get("type") != schedule.SCHEDULED]
    out: PostDeployEnvironmentStatus = {
        "observedGeneration": generation,
        "history": where,
        "holder": f"{holder.namespace}/{holder.name}" if holder else None,
        "queued": len(queue),
        "queue": queue[:SHOWN_QUEUE],
        # As rollback-check answers: "unknown" with no history or an unreadable run.
        "floor": history.floor_version(records),
        "lastRun": f"{shown[0]['migration']} ({shown[0]['outcome']})" if shown else None,
        "runs": shown,
        "conditions": cast("list[Condition]", conds),
        **_window(body, timestamps.parse(now)),
    }
    started = scheduled[1] if scheduled is not None else None
    if started is not None:
        out["scheduled"] = started
    return out


def _window(body: Body, now: datetime) -> PostDeployEnvironmentStatus:
    """Whether a window is open, and when the next opens while none is (None
    removes the field: no windows, or none readable)."""
    try:
        windows = when.parse((body.get("spec") or {}).get("windows") or [])
    except when.InvalidWindowError:
        windows = ()
    if not windows:
        return {"windowOpen": None, "nextOpening": None}
    if when.open_since(windows, now) is not None:
        return {"windowOpen": True, "nextOpening": None}
    nxt = when.next_opening(windows, now)
    return {"windowOpen": False, "nextOpening": timestamps.rfc3339(nxt) if nxt else None}


def changes(old: Mapping[str, object], new: PostDeployEnvironmentStatus) -> Body:
    """The merge patch from ``old`` to ``new`` (None removes a field), empty when equal."""
    return {k: v for k, v in new.items() if old.get(k) != v}


def serves(body: Body, namespaces: list[str]) -> bool:
    """Whether an operator watching ``namespaces`` (empty: all) serves this environment."""
    if not namespaces:
        return True
    declared = set((body.get("spec") or {}).get("namespaces") or [])
    return bool(declared & set(namespaces))


class EnvironmentStatus:
    """Writes each served environment's status when it changed (run from the controller)."""

    def __init__(
        self,
        kube: Kube,
        lock_namespace: str,
        namespaces: list[str],
        queue: Callable[[str], list[str]],
        clock: Callable[[], str],
        *,
        changed: Callable[[str], None] = lambda _: None,
    ) -> None:
        """``changed``: called with an environment's name when its spec changed
        since the last round (a lock set or lifted, a window edited), so the
        migrations that wait on it look again now, not a poll later."""
        self.kube = kube
        self.lock_namespace = lock_namespace
        self.namespaces = namespaces
        self.queue = queue
        self.clock = clock
        self.changed = changed
        self._generations: dict[str, int] = {}

    def refresh(self) -> int:
        """One round over every environment; the number of statuses written."""
        written = 0
        for body in self.kube.list_environments():
            if not serves(body, self.namespaces):
                continue
            try:
                written += self._one(body)
            except ApiError as e:
                name = (body.get("metadata") or {}).get("name")
                log.warning("status of PostDeployEnvironment %s not written: %s", name, e)
        return written

    def _one(self, body: Body) -> int:
        name = str(body["metadata"]["name"])
        generation = int(body["metadata"].get("generation") or 0)
        if self._generations.setdefault(name, generation) != generation:
            self._generations[name] = generation
            self.changed(name)
        cm_name = history.configmap_name(name)
        where = environments.history_location(self.lock_namespace, cm_name)
        lease = self.kube.get_lease(self.lock_namespace, lines.lease_name(name))
        configmap = self.kube.get_configmap(self.lock_namespace, cm_name)
        now = self.clock()
        said = self._schedule(body, timestamps.parse(now))
        new = compute(body, lease, configmap, self.queue(name), where, now, said)
        patch = changes(body.get("status") or {}, new)
        if not patch:
            return 0
        self.kube.patch_environment_status(name, {"status": patch})
        return 1

    def _schedule(
        self, body: Body, now: datetime
    ) -> tuple[conditions.Condition, Scheduled | None] | None:
        """Start the run the environment's schedule is due for, if any (``schedule``)."""
        found = schedule.due(body, now)
        if found is None:
            return None
        if isinstance(found, schedule.Wait):
            return _said("False", found.reason, found.message), None
        name = str(body["metadata"]["name"])
        namespace = str(body["spec"]["schedule"]["namespace"])
        mine = self.kube.list_migrations(namespace, f"{schedule.LABEL_SCHEDULED_BY}={name}")
        # A suspended one runs nothing until someone lets it: it holds no opening.
        unfinished = [
            f"{namespace}/{m['metadata']['name']}"
            for m in mine
            if not model.is_finished(m.get("status") or {})
            and not (m.get("spec") or {}).get("suspend")
        ]
        decided = schedule.start(body, found, unfinished)
        if isinstance(decided, schedule.Wait):
            return _said("False", decided.reason, decided.message), None
        return self._start(name, namespace, decided)

    def _start(
        self, name: str, namespace: str, decided: schedule.Start
    ) -> tuple[conditions.Condition, Scheduled | None]:
        opening = timestamps.rfc3339(decided.opening)
        try:
            self.kube.create_migration(namespace, decided.migration)
        except AlreadyExists:
            # Made for this opening before a restart (the name is the opening's),
            # unless someone took the name: then say so, and start nothing.
            other = self.kube.get_migration(namespace, decided.migration["metadata"]["name"])
            stored = self.kube.create_migration(
                namespace, schedule.for_comparison(decided.migration), dry_run=True
            )
            if not schedule.is_its_run(other, decided.migration, stored):
                message = (
                    f"PostDeployMigration {decided.name} exists but is not this schedule's "
                    "run (its label, its template's spec, or it is suspended); no run is "
                    "started for this opening"
                )
                return _said("False", "NameTaken", message), None
        except Invalid as e:
            message = (
                "the API server refuses the PostDeployMigration of spec.schedule.template: "
                + e.message
            )
            return _said("False", "TemplateRejected", message), None
        except ApiError as e:
            message = f"{decided.name} not created yet: {e.message}"
            return _said("False", "CreateFailed", message), None
        log.info("environment %s: started %s for the opening at %s", name, decided.name, opening)
        message = f"started {decided.name} for the window opening at {opening}"
        return _said("True", "Started", message), Scheduled(opening=opening, migration=decided.name)


def _said(status: str, reason: str, message: str) -> conditions.Condition:
    return conditions.Condition(schedule.SCHEDULED, status, reason, message)
