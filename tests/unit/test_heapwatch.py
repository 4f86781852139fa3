"""The memory diagnostic: off unless asked, and each line says what RSS is made of."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import pytest

from pdm_operator import heapwatch


def test_nothing_starts_or_traces_without_the_variable() -> None:
    assert heapwatch.start_from_environment({}) is None
    assert heapwatch.start_from_environment({heapwatch.ENV: ""}) is None
    assert not tracemalloc.is_tracing()


def test_an_untraced_line_has_the_blocks_the_arenas_and_rss(tmp_path: Path) -> None:
    line = heapwatch.take(tmp_path, 61.04, traced=False)

    assert json.loads((tmp_path / "totals.jsonl").read_text()) == line
    assert line["t"] == 61.0
    assert line["allocated_blocks"] > 0
    assert line["rss_kib"] > 0
    assert "traced_bytes" not in line
    assert not list(tmp_path.glob("snapshot-*"))
    if sys.platform == "linux":  # glibc: mallinfo2, pymalloc's statistics on C stderr
        assert line["arenas_current"] >= 1
        assert line["arena_bytes"] >= line["arenas_current"] * 2**18
        assert line["arena_bytes"] > line["live_block_bytes"] > 0
        assert line["malloc_arena_bytes"] >= line["malloc_free_bytes"] >= 0
        assert line["malloc_arenas"] >= 1


@pytest.mark.skipif(tracemalloc.is_tracing(), reason="tracemalloc already started")
def test_a_traced_line_has_the_objects_bytes_and_a_snapshot_beside_it(tmp_path: Path) -> None:
    tracemalloc.start(1)
    try:
        kept = [object() for _ in range(1000)]
        line = heapwatch.take(tmp_path, 120.0, traced=True)
    finally:
        tracemalloc.stop()

    assert line["traced_bytes"] >= 1000 * sys.getsizeof(kept[0])
    snapshot = tracemalloc.Snapshot.load(str(tmp_path / "snapshot-000120.pickle"))
    assert snapshot.traces
