"""Where the operator's memory goes, over time: a diagnostic, off unless asked.

``PDM_OPERATOR_HEAPWATCH=<dir>`` in the operator's environment starts a
thread that, every ``PDM_OPERATOR_HEAPWATCH_EVERY`` seconds (60 by default),
appends one JSON line to ``<dir>/totals.jsonl``: the blocks CPython's object
allocator holds (``sys.getallocatedblocks()``: live small objects and
buffers), pymalloc's arenas (current, high-water mark, their bytes and the
bytes free inside them) and the process's RSS. That costs a few milliseconds
a minute, so the soak (bench/soak.py) runs with it.

``PDM_OPERATOR_HEAPWATCH_TRACE=<frames>`` (a number above 0) also starts
``tracemalloc`` with that many frames a trace, and each line then has the
traced Python objects' bytes, with a snapshot beside it
(``snapshot-<seconds>.pickle``, for ``tracemalloc.Snapshot.load`` and
``compare_to``); the arenas are then missing: ``sys._debugmallocstats()``
prints nothing while tracemalloc's hooks wrap the allocator (CPython 3.11,
``_PyObject_DebugMallocStats`` returns early unless pymalloc is the
allocator in use). Unset, nothing is imported or started.

Why both counts: RSS can grow while the objects do not. CPython's object
allocator takes memory in 1 MiB arenas (256 KiB before 3.10) and gives an
arena back only when every block in it is free, so a burst that fills arenas
and leaves a few live objects in each keeps them all (bench/findings.md,
finding 6). Growth that tracemalloc sees is objects kept; growth only in RSS
and arenas is fragmentation or memory outside Python's allocator.
https://docs.python.org/3/library/tracemalloc.html
https://github.com/python/cpython/blob/3.11/Objects/obmalloc.c (ARENA_SIZE)

Tracing slows every allocation and keeps a trace per live block: for
finding what grows, never in production.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "PDM_OPERATOR_HEAPWATCH"
EVERY_ENV = "PDM_OPERATOR_HEAPWATCH_EVERY"
FRAMES_ENV = "PDM_OPERATOR_HEAPWATCH_TRACE"


def start_from_environment(environ: Mapping[str, str] = os.environ) -> threading.Thread | None:
    """Start tracing and the snapshot thread if ``environ`` asks for it."""
    where = environ.get(ENV)
    if not where:
        return None
    import tracemalloc  # noqa: PLC0415 - only when asked

    directory = Path(where)
    directory.mkdir(parents=True, exist_ok=True)
    every = float(environ.get(EVERY_ENV) or 60)
    frames = int(environ.get(FRAMES_ENV) or 0)
    if frames:
        tracemalloc.start(frames)
    started = time.monotonic()

    def forever() -> None:
        while True:
            try:
                take(directory, time.monotonic() - started, traced=bool(frames))
            except Exception:
                log.exception("heapwatch: no snapshot taken")
            time.sleep(every)

    thread = threading.Thread(target=forever, name="heapwatch", daemon=True)
    thread.start()
    log.warning(
        "heapwatch: memory totals%s every %.0fs in %s",
        f" and a tracemalloc snapshot ({frames} frames)" if frames else "",
        every,
        directory,
    )
    return thread


def take(directory: Path, elapsed: float, *, traced: bool) -> dict[str, Any]:
    """One line of totals, and a snapshot if ``traced``, ``elapsed`` seconds after the start."""
    import tracemalloc  # noqa: PLC0415

    totals: dict[str, Any] = {"t": round(elapsed, 1)}
    if traced:
        tracemalloc.take_snapshot().dump(str(directory / f"snapshot-{int(elapsed):06d}.pickle"))
        current, peak = tracemalloc.get_traced_memory()
        totals.update(traced_bytes=current, traced_peak_bytes=peak)
    else:
        totals.update(pymalloc_arenas())
    totals.update(glibc_malloc())
    totals.update(allocated_blocks=sys.getallocatedblocks(), rss_kib=rss_kib())
    with (directory / "totals.jsonl").open("a") as f:
        f.write(json.dumps(totals) + "\n")
    return totals


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc 2.33 and later)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def glibc_malloc() -> dict[str, int]:
    """What glibc's malloc holds, for memory outside pymalloc's arenas: blocks
    over 512 bytes (large dicts, the watch's JSON), C libraries (OpenSSL),
    tracemalloc's own tables. ``malloc_arena_bytes``: taken from the system by
    the main and the threads' arenas, of which ``malloc_free_bytes`` are free
    inside them (fragmentation: RSS that no object holds); ``malloc_arenas``:
    how many arenas (glibc gives threads up to 8 per core, ``M_ARENA_MAX``).
    Empty on a libc without ``mallinfo2`` (musl, glibc before 2.33).
    https://sourceware.org/glibc/manual/latest/html_node/Statistics-of-Malloc.html
    """
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    found = {
        "malloc_arena_bytes": int(info.arena),
        "malloc_in_use_bytes": int(info.uordblks),
        "malloc_free_bytes": int(info.fordblks),
        "malloc_mmapped_bytes": int(info.hblkhd),
    }
    arenas = _malloc_info_heaps(libc)
    if arenas is not None:
        found["malloc_arenas"] = arenas
    return found


def _malloc_info_heaps(libc: ctypes.CDLL) -> int | None:
    """The number of malloc arenas, from ``malloc_info``'s XML (``<heap nr=...>``)."""
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    libc.open_memstream.restype = ctypes.c_void_p
    stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    if not stream:
        return None
    try:
        libc.malloc_info(0, ctypes.c_void_p(stream))
    finally:
        libc.fclose(ctypes.c_void_p(stream))
    try:
        text = ctypes.string_at(buf, size.value).decode(errors="replace")
    finally:
        libc.free(buf)
    return len(re.findall(r"<heap nr=", text))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def pymalloc_arenas() -> dict[str, int]:
    """pymalloc's arenas now and at most, from ``sys._debugmallocstats()``.

    It writes to the C ``stderr`` (file descriptor 2), which is swapped for a
    temporary file while it runs: a log line another thread writes in that
    instant goes to that file, lost. A diagnostic's price.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as out:
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    found = {}
    for key, pattern in (
        ("arenas_current", r"# arenas allocated current\s*=\s*([\d,]+)"),
        ("arenas_peak", r"# arenas highwater mark\s*=\s*([\d,]+)"),
        ("arena_bytes", r"(\d[\d,]*) arenas \* \d+ bytes/arena\s*=\s*([\d,]+)"),
        ("free_pool_bytes", r"# bytes in available blocks\s*=\s*([\d,]+)"),
        ("unused_pool_bytes", r"\d+ unused pools \* \d+ bytes\s*=\s*([\d,]+)"),
        ("live_block_bytes", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
    ):
        m = re.search(pattern, text)
        if m:
            found[key] = int(m.group(m.lastindex or 1).replace(",", ""))
    return found
