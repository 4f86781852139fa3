"""Counting blocking calls in progress (they outlive a cancelled task)."""

from __future__ import annotations

import threading


class InFlight:
    """A thread-safe count of blocking passes in progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __enter__(self) -> None:
        with self._lock:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.count -= 1
