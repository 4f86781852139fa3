"""When the operator makes its own full garbage collections."""

from __future__ import annotations

import asyncio
import gc

import pytest

from pdm_operator import heap


class World:
    def __init__(self) -> None:
        self.now = 1000.0
        self.running = 0
        self.started = 0

    def quiet(self) -> heap.Quiet:
        return heap.Quiet(
            lambda: (self.running, self.started),
            quiet=1.0,
            every=60.0,
            at_most=600.0,
            clock=lambda: self.now,
        )

    def pass_(self, seconds: float = 0.5) -> None:
        self.started += 1
        self.now += seconds


def test_a_quiet_operator_collects_once_a_minute_after_a_second_without_passes() -> None:
    w = World()
    q = w.quiet()
    w.now += 59.0
    assert not q.due()  # not a minute yet
    w.now += 1.0
    assert q.due()
    q.collected()
    w.now += 1.0
    assert not q.due()


def test_a_busy_operator_waits_for_a_quiet_second() -> None:
    w = World()
    q = w.quiet()
    w.now += 120.0
    for _ in range(10):
        w.pass_(0.5)  # a pass started since the last look: not quiet
        assert not q.due()
    w.running = 1
    w.now += 5.0
    assert not q.due()  # one still running, started before: not quiet either
    w.running = 0
    assert not q.due()  # it ended since the last look
    w.now += 0.5
    assert not q.due()
    w.now += 0.5
    assert q.due()


def test_a_never_quiet_operator_collects_every_ten_minutes_anyway() -> None:
    w = World()
    q = w.quiet()
    for _ in range(1199):
        w.pass_(0.5)
        assert not q.due()
    w.pass_(0.5)
    assert q.due()


def test_full_collections_are_left_to_the_operator() -> None:
    before = gc.get_threshold()
    try:
        heap.defer_full_collections()
        assert gc.get_threshold() == (before[0], before[1], heap.RARE)
    finally:
        gc.set_threshold(*before)


def test_the_collector_collects_when_due_and_stops_when_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda: collected.append(1) or 0)
    w = World()
    q = w.quiet()
    w.now += 600.0  # due at the first look

    async def main() -> None:
        task = asyncio.create_task(heap.collect_when_quiet(q, check=0.001))
        while not collected:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 10))
    assert collected == [1]
    assert q.last == w.now
