"""When a run may start: windows on an injected clock, change locks (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pdm_operator import timestamps, when

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri"]
#: GitLab.com's habit: weekdays, from 13:00 UTC.
AFTERNOONS = [{"days": WEEKDAYS, "start": "13:00", "end": "16:00", "timeZone": "UTC"}]


def at(text: str) -> datetime:
    return timestamps.parse(text)


def opens(raw: list[dict[str, object]], now: str) -> str | None:
    hold = when.outside("gprd", raw, at(now))
    if hold is None:
        return None
    assert hold.reason == when.OUTSIDE_WINDOW
    assert hold.opens is not None
    assert timestamps.rfc3339(hold.opens) in hold.message
    return timestamps.rfc3339(hold.opens)


@pytest.mark.parametrize(
    ("now", "next_opening"),
    [
        ("2026-12-02T12:59:59Z", "2026-12-02T13:00:00Z"),  # Wednesday, a second early
        ("2026-12-02T13:00:00Z", None),  # opens on the minute
        ("2026-12-02T15:59:59Z", None),
        ("2026-12-02T16:00:00Z", "2026-12-03T13:00:00Z"),  # closed at its end
        ("2026-12-04T17:00:00Z", "2026-12-07T13:00:00Z"),  # Friday evening: Monday
        ("2026-12-05T13:30:00Z", "2026-12-07T13:00:00Z"),  # Saturday, same hours
    ],
)
def test_a_weekday_window_opens_and_closes_on_the_minute(now: str, next_opening: str) -> None:
    assert opens(AFTERNOONS, now) == next_opening


def test_no_windows_means_any_time() -> None:
    assert when.outside("gprd", [], at("2026-12-05T03:00:00Z")) is None


def test_the_next_opening_is_the_earliest_of_several_ranges() -> None:
    raw = [
        {"days": ["Tue", "Thu"], "start": "13:00", "end": "15:00"},
        {"days": ["Wed"], "start": "20:00", "end": "21:00"},
    ]
    assert opens(raw, "2026-12-02T12:00:00Z") == "2026-12-02T20:00:00Z"
    assert opens(raw, "2026-12-02T21:00:00Z") == "2026-12-03T13:00:00Z"


def test_a_window_whose_end_is_not_after_its_start_runs_past_midnight() -> None:
    raw = [{"days": ["Fri"], "start": "22:00", "end": "02:00"}]
    assert opens(raw, "2026-12-05T01:59:00Z") is None  # Saturday morning: Friday's window
    assert opens(raw, "2026-12-05T02:00:00Z") == "2026-12-11T22:00:00Z"
    whole_day = [{"days": ["Sun"], "start": "00:00", "end": "24:00"}]
    assert opens(whole_day, "2026-12-06T23:59:59Z") is None
    assert opens(whole_day, "2026-12-07T00:00:00Z") == "2026-12-13T00:00:00Z"


def test_a_windows_hours_are_local_to_its_time_zone_across_daylight_saving() -> None:
    raw = [{"days": WEEKDAYS, "start": "13:00", "end": "16:00", "timeZone": "Europe/Amsterdam"}]
    # Winter (UTC+1) and summer (UTC+2): the same local 13:00.
    assert opens(raw, "2026-12-02T11:00:00Z") == "2026-12-02T12:00:00Z"
    assert opens(raw, "2026-07-01T10:00:00Z") == "2026-07-01T11:00:00Z"
    # Friday 27 March 2026 is winter time, Monday 30 March summer time.
    assert opens(raw, "2026-03-27T16:00:00Z") == "2026-03-30T11:00:00Z"


def test_an_unknown_time_zone_holds_naming_the_window() -> None:
    raw = [*AFTERNOONS, {"start": "01:00", "end": "02:00", "timeZone": "Mars/Olympus_Mons"}]
    hold = when.outside("gprd", raw, at("2026-12-02T14:00:00Z"))
    assert hold is not None
    assert hold.reason == when.INVALID_WINDOW
    assert "spec.windows[1].timeZone 'Mars/Olympus_Mons'" in hold.message
    assert hold.opens is None


def lock(**fields: str) -> dict[str, str]:
    return {"reason": "CR 1234: database maintenance", "by": "alice", **fields}


def test_a_change_lock_holds_with_who_and_why_until_it_is_lifted() -> None:
    hold = when.locked("gprd", lock(at="2026-12-02T09:00:00Z"), at("2026-12-02T12:00:00Z"))
    assert hold is not None
    assert hold.reason == when.CHANGE_LOCKED
    assert "alice" in hold.message
    assert "CR 1234: database maintenance" in hold.message
    assert "kubectl pdm unlock gprd" in hold.message
    assert hold.opens is None
    assert when.locked("gprd", None, at("2026-12-02T12:00:00Z")) is None


def test_a_change_lock_lapses_at_its_until() -> None:
    raw = lock(until="2026-12-02T18:00:00Z")
    hold = when.locked("gprd", raw, at("2026-12-02T17:59:59Z"))
    assert hold is not None
    assert hold.opens == datetime(2026, 12, 2, 18, tzinfo=UTC)
    assert when.locked("gprd", raw, at("2026-12-02T18:00:00Z")) is None


def test_a_change_lock_whose_until_cannot_be_read_holds_until_unlocked() -> None:
    hold = when.locked("gprd", lock(until="next tuesday"), at("2030-01-01T00:00:00Z"))
    assert hold is not None
    assert "cannot be read" in hold.message


def test_overlapping_windows_are_one_opening_touching_ones_two() -> None:
    overlapping = when.parse(
        [{"start": "13:00", "end": "16:00"}, {"start": "15:00", "end": "18:00"}]
    )
    assert when.open_since(overlapping, at("2026-12-02T17:00:00Z")) == at("2026-12-02T13:00:00Z")
    touching = when.parse(
        [
            {"days": ["Mon"], "start": "22:00", "end": "24:00"},
            {"days": ["Tue"], "start": "00:00", "end": "06:00"},
        ]
    )
    assert when.open_since(touching, at("2026-12-07T23:00:00Z")) == at("2026-12-07T22:00:00Z")
    assert when.open_since(touching, at("2026-12-08T01:00:00Z")) == at("2026-12-08T00:00:00Z")


def test_a_window_a_daylight_saving_change_erases_is_skipped_that_day() -> None:
    # 29 March 2026, Europe/Amsterdam: 02:00 becomes 03:00; 02:30-03:00 does not exist.
    raw = [{"days": ["Sun"], "start": "02:30", "end": "03:00", "timeZone": "Europe/Amsterdam"}]
    assert opens(raw, "2026-03-28T12:00:00Z") == "2026-04-05T00:30:00Z"  # the next Sunday
