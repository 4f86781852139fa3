"""Leader election for HA: one active operator, the others on standby.

Why not Kopf peering: it pauses Kopf's own watch processing, but has no hook
for this operator's workers and reporters, no lock between peers, and lets a
lower-priority peer act briefly when two start together. A migration must
never be acted on by two operators, so leadership is a
``coordination.k8s.io`` Lease, as controller-runtime does it:

* the leader renews every ``renew`` seconds; a standby takes the Lease over
  only when it has seen no renewal (no new resourceVersion) for ``duration``
  seconds by its own clock, so clock skew between nodes does not matter;
* a leader that could not renew for ``duration - renew`` seconds stops
  acting before any standby may start;
* on shutdown the leader stops and drains its workers first, then releases
  the Lease, so a standby takes over at once.

Every write is guarded by the Lease's resourceVersion.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pdm_operator import model
from pdm_operator.errors import Conflict
from pdm_operator.kube import Kube
from pdm_operator.locks import build_lease
from pdm_operator.model import Body

log = logging.getLogger(__name__)

RENEWED_AT = f"{model.GROUP}/renewed-at"


@dataclass
class LeaderElection:
    kube: Kube
    namespace: str
    identity: str
    name: str = "pdm-operator-leader"
    duration: float = 15.0
    renew: float = 5.0
    monotonic: Callable[[], float] = time.monotonic
    #: (resourceVersion, when we first saw it) of the Lease as last observed.
    observed: tuple[str, float] | None = field(default=None)
    last_renewal: float | None = field(default=None)

    def _body(self, base: Body | None) -> Body:
        old = (base or {}).get("spec") or {}
        transitions = int(old.get("leaseTransitions") or 0)
        if base is not None and old.get("holderIdentity") != self.identity:
            transitions += 1
        return build_lease(
            base,
            name=self.name,
            holder=self.identity,
            labels={},
            annotations={RENEWED_AT: f"{time.time():.3f}"},
            transitions=transitions,
            duration=int(self.duration),
        )

    def try_acquire_or_renew(self) -> bool:
        """One round (blocking): True when this process holds the Lease now."""
        now = self.monotonic()
        lease = self.kube.get_lease(self.namespace, self.name)
        try:
            if lease is None:
                if self.kube.create_lease(self.namespace, self._body(None)) is None:
                    return False  # someone else created it first
                return self._renewed(now)
            rv = str(lease["metadata"].get("resourceVersion"))
            if self.observed is None or self.observed[0] != rv:
                self.observed = (rv, now)
            holder = (lease.get("spec") or {}).get("holderIdentity")
            if holder == self.identity:
                self.kube.replace_lease(self.namespace, self._body(lease))
                return self._renewed(now)
            unchanged_for = now - self.observed[1]
            if holder and unchanged_for < self.duration:
                return False
            self.kube.replace_lease(self.namespace, self._body(lease))
            log.info(
                "leadership taken over from %s (silent for %.1fs)",
                holder or "nobody",
                unchanged_for,
            )
            return self._renewed(now)
        except Conflict:
            return False

    def _renewed(self, now: float) -> bool:
        self.last_renewal = now
        return True

    def still_safe(self) -> bool:
        """Whether the leader may keep acting: no standby can have taken over yet."""
        return (
            self.last_renewal is not None
            and self.monotonic() - self.last_renewal < self.duration - self.renew
        )

    def release(self) -> None:
        """Give the Lease up (after draining), so a standby takes over at once."""
        lease = self.kube.get_lease(self.namespace, self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        meta = lease["metadata"]
        self.kube.delete_lease(self.namespace, self.name, meta["uid"], meta["resourceVersion"])
        self.last_renewal = None
