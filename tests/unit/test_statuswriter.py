"""What a status write is counted as (``pdm_status_writes_total{change}``)."""

from __future__ import annotations

import pytest

from pdm_operator import statuswriter
from pdm_operator.model import Body

PROGRESS: Body = {"done": 2, "summary": "2/7"}
REPORTED: Body = {"type": "Reported", "status": "True", "reason": "Delivered"}


@pytest.mark.parametrize(
    ("patch", "change"),
    [
        ({"progress": PROGRESS}, statuswriter.PROGRESS),
        ({"reports": []}, statuswriter.REPORTS),
        ({"reports": [], "conditions": [REPORTED]}, statuswriter.REPORTS),
        # The progress read with the Job's end goes with its outcome: not progress.
        ({"progress": PROGRESS, "state": "Succeeded"}, statuswriter.STATE),
        ({"conditions": [REPORTED]}, statuswriter.STATE),
        ({"observedGeneration": 2}, statuswriter.STATE),
        ({"reports": [], "state": "Failed"}, statuswriter.STATE),
    ],
)
def test_a_write_is_counted_by_what_it_changes(patch: Body, change: str) -> None:
    assert statuswriter.change_of(patch) == change
