"""The soak's reading of the operator's heap totals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import soak


def test_heap_totals_are_read_in_mib_by_minute(tmp_path: Path) -> None:
    totals = tmp_path / "totals.jsonl"
    lines = [
        {"t": 0.0, "allocated_blocks": 500_000, "rss_kib": 102_400, "arena_bytes": 40 * 2**20,
         "free_pool_bytes": 2**20, "unused_pool_bytes": 2**20, "live_block_bytes": 36 * 2**20,
         "malloc_arena_bytes": 30 * 2**20,
         "malloc_free_bytes": 3 * 2**20, "malloc_mmapped_bytes": 0, "malloc_arenas": 9},
        {"t": 90.0, "allocated_blocks": 510_000, "rss_kib": 112_640},
    ]  # fmt: skip
    totals.write_text("".join(json.dumps(line) + "\n" for line in lines))

    first, second = soak.heap_samples(totals)

    assert first == {
        "minute": 0.0,
        "rss_mib": 100.0,
        "python_blocks": 500_000,
        "pymalloc_mib": 40.0,
        "pymalloc_live_mib": 36.0,
        "pymalloc_free_mib": 2.0,
        "malloc_mib": 30.0,
        "malloc_free_mib": 3.0,
        "malloc_mmapped_mib": 0.0,
        "malloc_arenas": 9,
    }
    assert second["minute"] == 1.5
    assert second["rss_mib"] == 110.0
    assert math.isnan(second["malloc_mib"])  # a libc without mallinfo2


def test_no_heap_totals_is_an_empty_list(tmp_path: Path) -> None:
    assert soak.heap_samples(tmp_path / "totals.jsonl") == []
