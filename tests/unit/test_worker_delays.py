"""How long a worker sleeps before its next pass when nothing pokes it
(``controller.requeue_delay``) and after a pass that failed
(``controller.error_backoff``): pure, with the jitter passed in."""

from __future__ import annotations

import pytest

from pdm_operator import controller as ctl

POLL = 60.0


def low(a: float, b: float) -> float:
    return a


def high(a: float, b: float) -> float:
    return b


def never(a: float, b: float) -> float:
    raise AssertionError("no jitter was due")


@pytest.mark.parametrize("requeue", [0.0, 2.0, 5.0, 30.0, 120.0])
def test_a_migration_not_behind_others_sleeps_what_its_pass_asked_without_jitter(
    requeue: float,
) -> None:
    assert ctl.requeue_delay(requeue, behind_others=False, queued_poll=POLL, uniform=never) == (
        requeue
    )


def test_a_pass_that_asks_for_no_wait_runs_again_at_once() -> None:
    # The worker sleeps only for a delay above 0.
    assert ctl.requeue_delay(0.0, behind_others=False, queued_poll=POLL) == 0.0


def test_one_behind_others_polls_no_sooner_than_the_queued_poll_spread_by_a_quarter() -> None:
    assert ctl.requeue_delay(5.0, behind_others=True, queued_poll=POLL, uniform=low) == 45.0
    assert ctl.requeue_delay(5.0, behind_others=True, queued_poll=POLL, uniform=high) == 75.0
    # Even one whose pass asked to look again at once.
    assert ctl.requeue_delay(0.0, behind_others=True, queued_poll=POLL, uniform=low) == 45.0


def test_one_behind_others_keeps_a_longer_wait_its_pass_asked_for() -> None:
    assert ctl.requeue_delay(120.0, behind_others=True, queued_poll=POLL, uniform=high) == 120.0


def test_the_jitter_of_a_queued_poll_is_drawn_between_three_quarters_and_five_quarters() -> None:
    drawn: list[tuple[float, float]] = []

    def record(a: float, b: float) -> float:
        drawn.append((a, b))
        return 1.0

    assert ctl.requeue_delay(5.0, behind_others=True, queued_poll=POLL, uniform=record) == POLL
    assert drawn == [(0.75, 1.25)]


def test_without_an_injected_jitter_a_queued_poll_stays_within_its_spread() -> None:
    for _ in range(200):
        assert 45.0 <= ctl.requeue_delay(0.0, behind_others=True, queued_poll=POLL) <= 75.0


def test_the_back_off_after_failures_doubles_up_to_its_cap() -> None:
    backoff = ctl.ERROR_BACKOFF_START
    sleeps = []
    for _ in range(9):
        delay, backoff = ctl.error_backoff(backoff, uniform=lambda a, b: 1.0)
        sleeps.append(delay)
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert backoff == ctl.ERROR_BACKOFF_CAP


def test_the_sleep_after_a_failure_is_its_back_off_spread_by_a_fifth() -> None:
    assert ctl.error_backoff(10.0, uniform=low) == (8.0, 20.0)
    assert ctl.error_backoff(10.0, uniform=high) == (12.0, 20.0)
    # The next back-off does not carry this sleep's jitter.
    assert ctl.error_backoff(40.0, uniform=high) == (48.0, ctl.ERROR_BACKOFF_CAP)
