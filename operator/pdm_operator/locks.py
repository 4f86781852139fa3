"""One migration Job per environment, across the cluster and across restarts.

The lock is a coordination.k8s.io Lease named ``pdm-env-<environment>`` in
the operator's namespace, whose ``holderIdentity`` is the holding migration
(``namespace/name/uid``). It has no expiry: a migration holds it from just
before its Job is created until it ends, however long the operator is down in
between. When the holder ends it hands the Lease to the first migration in
its environment's line (one update naming the new holder, instead of a
delete and a create), or deletes it when nobody waits. If that release is
lost (a crash at the wrong moment), or the one handed the lock cannot use it,
the next migration sees a holder that has ended, no longer exists, or has
not created its Job within ``decide.CREATE_GRACE``, and takes the Lease over.
Every change is guarded by the Lease's resourceVersion, so two operators
cannot both win.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pdm_operator import model, timestamps
from pdm_operator.errors import Conflict
from pdm_operator.kube import Kube
from pdm_operator.lines import lease_name
from pdm_operator.model import Body

log = logging.getLogger(__name__)

ACQUIRED_AT = f"{model.GROUP}/acquired-at"


@dataclass(frozen=True)
class Holder:
    namespace: str
    name: str
    uid: str

    @property
    def identity(self) -> str:
        return f"{self.namespace}/{self.name}/{self.uid}"

    def log_fields(self, environment: str) -> dict[str, str]:
        """Log fields, as on every line about a migration."""
        return {"namespace": self.namespace, "migration": self.name, "environment": environment}

    @classmethod
    def of(cls, migration: Body) -> Holder:
        meta = migration["metadata"]
        return cls(meta["namespace"], meta["name"], meta["uid"])

    @classmethod
    def parse(cls, identity: str | None) -> Holder | None:
        parts = (identity or "").split("/")
        return cls(*parts) if len(parts) == 3 and all(parts) else None


@dataclass(frozen=True)
class Taken:
    """The lock is ours. ``tenure`` names this holding of it: it changes
    whenever the lock changes hands (a new Lease, or one taken over), so what
    was learnt under one tenure (the pre-flight's pending list) is not
    trusted under the next.
    """

    tenure: str


@dataclass(frozen=True)
class Released:
    """The lock was given back: handed to ``to``, or deleted (``to`` is None)."""

    to: Holder | None


def tenure(lease: Body) -> str:
    meta = lease.get("metadata") or {}
    return f"{meta.get('uid', '')}/{(meta.get('annotations') or {}).get(ACQUIRED_AT, '')}"


def acquired_at(lease: Body) -> datetime | None:
    """When the Lease was taken (the annotation this module writes), if readable."""
    raw = ((lease.get("metadata") or {}).get("annotations") or {}).get(ACQUIRED_AT)
    return timestamps.parse_or_none(str(raw) if raw else None)


def build_lease(
    base: Body | None,
    *,
    name: str,
    holder: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    transitions: int,
    duration: int | None = None,
) -> Body:
    """A Lease held by ``holder``, keeping ``base``'s metadata (its resourceVersion
    guards the write).

    acquireTime/renewTime are MicroTime, which the official client's models
    re-serialise in a format the API server rejects: times go into
    annotations instead.
    """
    lease: Body = dict(base or {})
    meta = dict(lease.get("metadata") or {})
    meta["name"] = name
    meta["labels"] = {
        **(meta.get("labels") or {}),
        model.LABEL_MANAGED_BY: "pdm-operator",
        **labels,
    }
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    spec: Body = {"holderIdentity": holder, "leaseTransitions": transitions}
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    lease.update(apiVersion="coordination.k8s.io/v1", kind="Lease", metadata=meta, spec=spec)
    return lease


def lease_body(environment: str, holder: Holder, now: str, base: Body | None = None) -> Body:
    """The environment's lock held by ``holder``; taking over an existing one is a transition.

    The lock does not expire, so it needs no duration and nothing reads a renew time.
    """
    transitions = int(((base or {}).get("spec") or {}).get("leaseTransitions") or 0)
    return build_lease(
        base,
        name=lease_name(environment),
        holder=holder.identity,
        labels={model.LABEL_ENVIRONMENT: environment},
        annotations={ACQUIRED_AT: now},
        transitions=transitions + (1 if base else 0),
    )


class EnvironmentLocks:
    """Acquire and release the per-environment Lease."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        holder_active: Callable[[Holder, datetime | None], bool],
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        # Whether a holder still needs the lock: its migration exists (same
        # uid) and has not ended, and has its Job or took the lock just now
        # (given when the Lease was acquired). Injected, so tests can decide it.
        self.holder_active = holder_active

    def acquire(
        self, environment: str, me: Holder, now: str, *, likely_free: bool = False
    ) -> Taken | Holder:
        """Take the lock for ``me``: ``Taken``, or the holder that blocks us.

        ``likely_free``: the caller expects no holder (it is first in its
        environment's line), so the Lease is created without reading it
        first: one call instead of two when right, a refused create more
        when wrong. Either way the API server decides who holds it.
        """
        name = lease_name(environment)
        lease = None if likely_free else self.kube.get_lease(self.namespace, name)
        if lease is None:
            created = self.kube.create_lease(self.namespace, lease_body(environment, me, now))
            if created is not None:
                log.info(
                    "environment %s locked by %s",
                    environment,
                    me.identity,
                    extra=me.log_fields(environment),
                )
                return Taken(tenure(created))
            lease = self.kube.get_lease(self.namespace, name)
            if lease is None:  # deleted between create and get: try again later
                return me
        holder = Holder.parse((lease.get("spec") or {}).get("holderIdentity"))
        if holder == me:
            return Taken(tenure(lease))
        if holder is not None and self.holder_active(holder, acquired_at(lease)):
            return holder
        try:
            taken = self.kube.replace_lease(
                self.namespace, lease_body(environment, me, now, base=lease)
            )
        except Conflict:
            return holder or me
        log.info(
            "environment %s lock taken over by %s from %s (ended or gone)",
            environment,
            me.identity,
            holder.identity if holder else "nobody",
            extra=me.log_fields(environment),
        )
        return Taken(tenure(taken))

    def release(
        self, environment: str, me: Holder, now: str, to: Holder | None = None
    ) -> Released | None:
        """Give the lock back if ``me`` holds it: handed to ``to`` when given (the
        Lease updated to name it, ``now`` its acquisition), else deleted. None
        when it was not ours (any more) or changed meanwhile."""
        lease = self.kube.get_lease(self.namespace, lease_name(environment))
        if lease is None:
            return None
        if Holder.parse((lease.get("spec") or {}).get("holderIdentity")) != me:
            return None
        meta = lease["metadata"]
        fields = me.log_fields(environment)
        if to is not None:
            try:
                self.kube.replace_lease(
                    self.namespace, lease_body(environment, to, now, base=lease)
                )
            except Conflict:
                return None  # changed since the read: whoever changed it decides
            log.info(
                "environment %s handed by %s to %s",
                environment,
                me.identity,
                to.identity,
                extra=fields,
            )
            return Released(to)
        if self.kube.delete_lease(
            self.namespace, meta["name"], meta["uid"], meta["resourceVersion"]
        ):
            log.info("environment %s unlocked by %s", environment, me.identity, extra=fields)
            return Released(None)
        return None
