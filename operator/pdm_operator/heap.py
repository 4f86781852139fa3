"""Full garbage collections at a quiet moment, not in the middle of a burst.

CPython collects its oldest generation when ``threshold2`` younger
collections have happened since the last one *and* the objects that
survived into it since grew by a quarter
(https://docs.python.org/3.11/library/gc.html#gc.set_threshold; the 25% rule
is the note on ``long_lived_pending`` in CPython's
``Include/internal/pycore_gc.h``). A burst of hundreds of new migrations
grows the heap that fast: full collections came every few seconds of it,
each stopping every thread for 100 to 135 ms while the first passes of the
burst were creating their Jobs (bench/findings.md).

So the automatic full collection is made rare (:data:`RARE`), and the
operator makes one itself when no pass has started or run for a second, at
most once a minute, and at the latest every ten minutes, busy or not. The
young generations are collected as before: their garbage dies young.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

#: Younger-generation collections between two automatic full ones (CPython's
#: default is 10). Kept finite: a process whose quiet moments never come still
#: collects on its own.
RARE = 1000


def defer_full_collections() -> None:
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, RARE)


class Quiet:
    """When to collect: after ``quiet`` seconds without a pass, at most every
    ``every`` seconds, and in any case after ``at_most`` seconds.

    ``activity`` returns ``(passes running, passes started so far)``: quiet
    means none running and none started since the last look.
    """

    def __init__(
        self,
        activity: Callable[[], tuple[int, int]],
        *,
        quiet: float = 1.0,
        every: float = 60.0,
        at_most: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.activity = activity
        self.quiet, self.every, self.at_most = quiet, every, at_most
        self.clock = clock
        self.last = self.busy = clock()
        self.seen = activity()

    def due(self) -> bool:
        """Look now (every ``quiet`` seconds or more often): collect?"""
        now, seen = self.clock(), self.activity()
        if seen[0] or seen != self.seen:
            self.busy = now  # a pass runs, or one started since the last look
        self.seen = seen
        since = now - self.last
        return since >= self.at_most or (since >= self.every and now - self.busy >= self.quiet)

    def collected(self) -> None:
        self.last = self.clock()


async def collect_when_quiet(quiet: Quiet, check: float = 0.5) -> None:
    """Run until cancelled: a full collection whenever ``quiet`` says so."""
    while True:
        await asyncio.sleep(check)
        if quiet.due():
            gc.collect()
            quiet.collected()
