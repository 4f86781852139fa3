"""Sleeping until poked, in a way that a cancellation always ends."""

from __future__ import annotations

import asyncio
import contextlib


async def sleep_until_poked(poked: asyncio.Event, seconds: float) -> None:
    """Return when ``poked`` is set or ``seconds`` have passed.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation
    that arrives while the event is being set, and a worker that survives
    ``cancel()`` keeps acting after leadership is lost and hangs the shutdown.
    ``asyncio.timeout`` raises TimeoutError only for its own deadline.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await poked.wait()
