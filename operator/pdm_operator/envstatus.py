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
from typing import cast

from pdm_operator import conditions, environments, history, lines
from pdm_operator.errors import ApiError
from pdm_operator.kube import Kube
from pdm_operator.locks import Holder
from pdm_operator.model import Body
from pdm_operator.statuses import Condition, PostDeployEnvironmentStatus, Run

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
) -> PostDeployEnvironmentStatus:
    """The environment's status from its Lease, line and history (pure)."""
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
        "conditions": cast(
            "list[Condition]",
            conditions.apply(list(old.get("conditions") or []), ready, generation, now),
        ),
    }
    return out


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
    ) -> None:
        self.kube = kube
        self.lock_namespace = lock_namespace
        self.namespaces = namespaces
        self.queue = queue
        self.clock = clock

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
        cm_name = history.configmap_name(name)
        where = environments.history_location(self.lock_namespace, cm_name)
        lease = self.kube.get_lease(self.lock_namespace, lines.lease_name(name))
        configmap = self.kube.get_configmap(self.lock_namespace, cm_name)
        new = compute(body, lease, configmap, self.queue(name), where, self.clock())
        patch = changes(body.get("status") or {}, new)
        if not patch:
            return 0
        self.kube.patch_environment_status(name, {"status": patch})
        return 1
