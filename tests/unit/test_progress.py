"""Progress from Rails' announcements: the parser over Rails' real output
(tests/unit/golden/rails/, Rails 6.1 through the stand-in) and logs read in
pieces, as the kubelet hands them out with ``timestamps=true`` and ``sinceTime``."""

from __future__ import annotations

from pathlib import Path

from pdm_operator import progress
from pdm_operator.progress import Position

GOLDEN = Path(__file__).parent / "golden" / "rails"


def stamped(text: str, second: int = 0, *, per_second: int = 1000) -> str:
    """``text`` as the kubelet returns it with timestamps: one stamp per line,
    ``per_second`` lines a second from 12:00:``second``."""
    out = []
    for i, line in enumerate(text.splitlines()):
        s, n = divmod(i, per_second)
        out.append(
            f"2026-12-06T12:{(second + s) // 60:02d}:{(second + s) % 60:02d}.{n:09d}Z {line}"
        )
    return "".join(f"{line}\n" for line in out)


def since(log: str, at: Position) -> str:
    """The kubelet's answer to a read since ``at.since``: no line before that second."""
    cut = at.since
    return "".join(
        line for line in log.splitlines(keepends=True) if not cut or line[:19] >= cut[:19]
    )


def read_all(log: str, pieces: list[int] | None = None, total: int = 7) -> tuple[dict, Position]:
    """Progress after reading ``log`` as it grows: the first ``pieces[i]`` bytes of
    it are there at read i (the whole log at the last)."""
    state: dict = progress.start(total)
    at = Position()
    for end in [*(pieces or []), len(log)]:
        lines, at = progress.read_lines(since(log[:end], at), at)
        state, _ = progress.advance(state, progress.announcements(lines))
    return state, at


def test_every_migration_rails_announces_on_main_and_ci_is_one_step() -> None:
    # Pending: 0002-0004 on main (0001 ran before), 0001-0004 on ci: 7 steps,
    # those on ci that only say "skipped" included (Rails records them there).
    log = stamped((GOLDEN / "migrate-post-deployment.txt").read_text())
    state, _ = read_all(log)
    assert state["done"] == 7
    assert state["summary"] == "7/7"
    assert "current" not in state
    assert state["completed"][0] == {
        "database": "main",
        "version": "20261115000002",
        "name": "RemoveArchivedFromProjects",
        "seconds": "0.0011",
    }
    assert state["completed"][-1] == {
        "database": "ci",
        "version": "20261115000004",
        "name": "AddIndexOnCiBuildsStatus",
        "seconds": "0.0012",
    }
    assert next(s["seconds"] for s in state["completed"] if s["version"].endswith("3")) == "3.0056"


def test_a_log_read_in_pieces_cut_anywhere_counts_each_step_once() -> None:
    log = stamped((GOLDEN / "migrate-post-deployment.txt").read_text(), per_second=3)
    whole, _ = read_all(log)
    for step in (1, 7, 50, 211):
        pieces = list(range(step, len(log), step))
        state, _ = read_all(log, pieces)
        assert state == whole, step


def test_the_migration_that_runs_now_is_current_since_its_migrating_line() -> None:
    text = (GOLDEN / "migrate-post-deployment.txt").read_text()
    log = stamped(text, per_second=1)  # line i at 12:00:00 + i s
    line = next(i for i, t in enumerate(text.splitlines()) if "Statistics: migrating" in t)
    upto = log.index("BackfillProjectStatistics: migrating")
    upto = log.index("\n", upto) + 1
    state, at = read_all(log[:upto])
    assert state["done"] == 1
    assert state["summary"] == "1/7"
    assert state["current"] == {
        "database": "main",
        "version": "20261115000003",
        "name": "BackfillProjectStatistics",
        "since": f"2026-12-06T12:00:{line:02d}Z",
    }
    assert at.since == f"2026-12-06T12:00:{line:02d}Z"


def test_a_failed_migration_stays_current_and_is_not_counted() -> None:
    state, _ = read_all(stamped((GOLDEN / "migrate-lock-timeout.txt").read_text()))
    assert state["done"] == 1
    assert state["current"]["name"] == "RemoveArchivedFromProjects"


def test_a_line_cut_at_the_end_of_an_answer_is_read_again_whole() -> None:
    log = stamped("main: == 1 A: migrating ====\nmain: == 1 A: migrated (0.5000s) ====\n")
    cut = log[: log.index("migrated") + 3]
    lines, at = progress.read_lines(cut, Position())
    assert [t for _, t in lines] == ["main: == 1 A: migrating ===="]
    lines, _ = progress.read_lines(since(log, at), at)
    assert [t for _, t in lines] == ["main: == 1 A: migrated (0.5000s) ===="]


def test_lines_with_the_same_timestamp_are_told_apart_by_their_count() -> None:
    stamp = "2026-12-06T12:00:00.000000001Z"
    log = f"{stamp} == 1 A: migrated (0.1000s) ===\n{stamp} == 2 B: migrated (0.2000s) ===\n"
    lines, at = progress.read_lines(log[: log.index("\n") + 1], Position())
    assert at == Position(stamp, 1)
    lines, at = progress.read_lines(log, at)
    assert [t for _, t in lines] == ["== 2 B: migrated (0.2000s) ==="]
    assert at == Position(stamp, 2)


def test_a_plain_rails_log_without_database_names_counts_too() -> None:
    state, _ = read_all(stamped("== 20261115000001 AddX: migrating ===\n"))
    assert state["current"] == {
        "version": "20261115000001",
        "name": "AddX",
        "since": "2026-12-06T12:00:00Z",
    }


def test_lines_that_only_look_like_announcements_are_not_counted() -> None:
    text = (
        "main: -- execute(\"SELECT '== 1 A: migrated (0.1s) ='\")\n"
        "== 1 A: migrated (fast) ===\n"
        "rake aborted! == 1 A: migrating ===\n"
    )
    state, _ = read_all(stamped(text))
    assert state["done"] == 0
    assert "current" not in state


def test_without_a_plan_the_total_is_unknown_and_more_steps_than_planned_make_it_unknown() -> None:
    found = progress.announcements(
        [("2026-12-06T12:00:00.000000000Z", f"== {v} A{v}: migrated (0.1000s) ===") for v in (1, 2)]
    )
    unknown, _ = progress.advance(progress.start(None), found)
    assert (unknown["summary"], "total" in unknown) == ("2/?", False)
    over, _ = progress.advance(progress.start(1), found)
    assert (over["summary"], "total" in over) == ("2/?", False)


def test_only_the_last_steps_are_kept_and_done_counts_them_all() -> None:
    found = progress.announcements(
        [("2026-12-06T12:00:00.000000000Z", f"== {v} A: migrated (0.1000s) ===") for v in range(50)]
    )
    state, finished = progress.advance(progress.start(50), found)
    assert state["done"] == 50
    assert len(finished) == 50
    assert len(state["completed"]) == progress.KEPT
    assert state["completed"][-1]["version"] == "49"


def test_an_announcement_too_long_to_be_rails_is_not_taken_into_the_status() -> None:
    long_name = "A" * 201
    state, _ = read_all(
        stamped(f"== 1 {long_name}: migrating ===\n== {'9' * 21} B: migrating ===\n")
    )
    assert "current" not in state
