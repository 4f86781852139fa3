"""glibc's malloc set for many threads (allocator.py): what the soak's finding changed."""

from __future__ import annotations

import asyncio
import sys

import pytest

from pdm_operator import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_glibc_takes_the_arena_cap_and_the_trim() -> None:
    # M_ARENA_MAX for this test process too: its threads share two arenas, no harm.
    assert allocator.cap_arenas()
    assert isinstance(allocator.trim(), bool)


def test_the_trim_runs_again_and_again_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> int:
        thrice = asyncio.Event()
        calls: list[int] = []
        loop = asyncio.get_running_loop()

        def counted() -> bool:
            calls.append(1)
            if len(calls) == 3:
                loop.call_soon_threadsafe(thrice.set)
            return True

        monkeypatch.setattr(allocator, "trim", counted)
        task = asyncio.create_task(allocator.trim_forever(every=0))
        await asyncio.wait_for(thrice.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(calls)

    assert asyncio.run(scenario()) >= 3
