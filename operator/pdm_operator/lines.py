"""Each environment's line: its unfinished migrations, oldest first, and
which of them wait for its lock (pure).

One migration at a time holds an environment (its Lease, ``locks.py``); the
others wait in line. The pass says a migration waits (Gated, ``LOCKED``);
the controller keeps the lines: the holder hands its lock to the first in
line (``locks.EnvironmentLocks.release``) and its end pokes that one, not
everyone, and a new migration with older ones ahead queues its first pass
behind the passes that start and end Jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

from pdm_operator import model

#: The gate reason of a migration waiting for its environment's lock.
LOCKED = "EnvironmentLocked"

LEASE_PREFIX = "pdm-env-"


def lease_name(environment: str) -> str:
    """The environment's lock: the name of its Lease (``locks.py`` takes and gives it back)."""
    return f"{LEASE_PREFIX}{environment}"


#: A place in line: (creationTimestamp, name): oldest first, by name on a tie.
Order = tuple[str, str]
K = TypeVar("K", bound=Hashable)


def waits(state: str, reason: str) -> bool:
    """Whether a migration in ``state`` for ``reason`` waits for its environment's lock."""
    return state == model.STATE_GATED and reason == LOCKED


class Lines(Generic[K]):
    """The lines of every environment, by migration key.

    Changed by the controller's event loop; read also from a pass's thread
    (the holder that gives its lock back asks who is first), hence the lock.
    """

    def __init__(self) -> None:
        self._members: dict[str, dict[K, Order]] = {}
        self._waiting: dict[str, set[K]] = {}
        self._lock = threading.Lock()

    def join(self, environment: str, key: K, order: Order) -> None:
        with self._lock:
            self._members.setdefault(environment, {})[key] = order

    def leave(self, environment: str, key: K) -> None:
        with self._lock:
            self._members.get(environment, {}).pop(key, None)
            self._waiting.get(environment, set()).discard(key)

    def set_waiting(self, environment: str, key: K, waiting: bool) -> None:
        with self._lock:
            if waiting and key in self._members.get(environment, {}):
                self._waiting.setdefault(environment, set()).add(key)
            else:
                self._waiting.get(environment, set()).discard(key)

    def first(self, environment: str, *, but: K | None = None) -> K | None:
        """The oldest migration waiting for ``environment``'s lock (other than ``but``)."""
        with self._lock:
            members = self._members.get(environment, {})
            waiting = (k for k in self._waiting.get(environment, ()) if k != but)
            return min(waiting, key=members.__getitem__, default=None)

    def waiting(self, environment: str) -> list[K]:
        """The migrations waiting for ``environment``'s lock, oldest first."""
        with self._lock:
            members = self._members.get(environment, {})
            found = [k for k in self._waiting.get(environment, ()) if k in members]
            return sorted(found, key=members.__getitem__)

    def has_older(self, environment: str, key: K) -> bool:
        """Whether an older unfinished migration of ``environment`` is ahead of ``key``."""
        with self._lock:
            members = self._members.get(environment, {})
            mine = members.get(key)
            return mine is not None and any(order < mine for order in members.values())
