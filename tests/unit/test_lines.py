"""Each environment's line: oldest first, only those waiting for the lock."""

from __future__ import annotations

from pdm_operator import lines
from pdm_operator.lines import Lines


def test_the_oldest_waiting_migration_of_the_environment_is_first() -> None:
    line: Lines[str] = Lines()
    line.join("gstg", "b", ("2026-12-02T10:00:02Z", "b"))
    line.join("gstg", "a", ("2026-12-02T10:00:01Z", "a"))
    line.join("gstg", "a2", ("2026-12-02T10:00:01Z", "a2"))  # same second: by name
    line.join("gprd", "z", ("2026-12-02T09:00:00Z", "z"))
    assert line.first("gstg") is None  # nobody waits yet
    for key in ("b", "a2", "z"):
        line.set_waiting("gprd" if key == "z" else "gstg", key, True)
    assert line.first("gstg") == "a2"  # "a" holds the lock: not waiting
    assert line.first("gprd") == "z"
    line.set_waiting("gstg", "a2", False)  # it took the lock
    assert line.first("gstg") == "b"
    line.leave("gstg", "b")
    assert line.first("gstg") is None


def test_a_migration_knows_whether_older_ones_of_its_environment_are_ahead() -> None:
    line: Lines[str] = Lines()
    line.join("gstg", "old", ("2026-12-02T10:00:01Z", "old"))
    line.join("gstg", "new", ("2026-12-02T10:00:02Z", "new"))
    line.join("gprd", "older-elsewhere", ("2026-12-01T00:00:00Z", "older-elsewhere"))
    assert line.has_older("gstg", "new")
    assert not line.has_older("gstg", "old")
    line.leave("gstg", "old")
    assert not line.has_older("gstg", "new")


def test_one_not_in_line_cannot_wait_in_it() -> None:
    line: Lines[str] = Lines()
    line.set_waiting("gstg", "ghost", True)
    assert line.first("gstg") is None
    assert lines.waits("Gated", lines.LOCKED)
    assert not lines.waits("Gated", "Suspended")
    assert not lines.waits("Pending", lines.LOCKED)


def test_the_first_but_one_is_the_next_oldest_waiting() -> None:
    # A waiter handed the lock that cannot use it hands it on, not to itself.
    line: Lines[str] = Lines()
    for key, second in (("a", "01"), ("b", "02"), ("c", "03")):
        line.join("gstg", key, (f"2026-12-02T10:00:{second}Z", key))
        line.set_waiting("gstg", key, True)
    assert line.first("gstg", but="a") == "b"
    assert line.first("gstg", but="b") == "a"
    line.leave("gstg", "b")
    line.leave("gstg", "c")
    assert line.first("gstg", but="a") is None
