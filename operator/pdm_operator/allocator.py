"""glibc's malloc, set for a process of many threads that each allocate a little.

CPython takes objects up to 512 bytes from its own arenas (pymalloc) and
everything larger from ``malloc``: the watch's and the API's JSON bodies,
the dicts they are parsed into, TLS buffers. glibc gives each thread that
allocates while another holds an arena lock an arena of its own, up to
8 per core (``M_ARENA_MAX``, counted from the *node's* cores, not the pod's
CPU limit), and an arena's free memory goes back to the system only from its
top. The operator runs its API calls on 32 threads and its reports on 16
more: each ends up with an arena holding the high-water mark of the bodies
it parsed, with the free holes between what is still live.

The soak (bench/soak.py) measured it (bench/findings.md, "The soak's
memory"): the Python objects' bytes stayed flat over 10 minutes while RSS
grew, in pymalloc's arenas and in glibc's 16; with these settings RSS grew
a third as fast over the same minutes (one run each).

So the operator caps the arenas at :data:`ARENAS` before any thread starts
(the threads then share them), and gives back the free pages inside every
arena every :data:`TRIM_EVERY` seconds (``malloc_trim(0)``: since glibc 2.8
it releases whole free pages anywhere in an arena, ``madvise(MADV_DONTNEED)``,
not only from the top).
https://sourceware.org/glibc/manual/latest/html_node/Memory-Allocation-Tunables.html
https://man7.org/linux/man-pages/man3/mallopt.3.html (M_ARENA_MAX)
https://man7.org/linux/man-pages/man3/malloc_trim.3.html

On a libc without these (musl), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

log = logging.getLogger(__name__)

#: ``M_ARENA_MAX`` in glibc's malloc.h.
M_ARENA_MAX = -8

#: Arenas for the whole process: the main one and one more.
ARENAS = 2

#: Seconds between two ``malloc_trim``.
TRIM_EVERY = 60.0


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 - glibc's, absent from musl
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def cap_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas; whether glibc took it. Call before threads start."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas) == 1)


def trim() -> bool:
    """Give the free pages of every arena back; whether any was."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)


async def trim_forever(every: float = TRIM_EVERY) -> None:
    """:func:`trim` every ``every`` seconds, on a thread (it locks each arena in turn)."""
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(trim)
