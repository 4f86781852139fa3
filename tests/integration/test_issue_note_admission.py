"""The IssueNote sink's rules at admission, by the CRD's CEL (crds/): what it
needs, what only it may carry, and that it never blocks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.integration.test_admission import tracking
from tests.support.pdm import Api, migration

pytestmark = pytest.mark.integration

NOTE = {"type": "IssueNote", "project": "gitlab-org/release/tasks", "issue": 21534}
ONLY_NOTES = "issue and internal are for IssueNote sinks"
TWICE = "names an issue (project and issue) no other one names"

REFUSED = [
    ("without-issue", [{"type": "IssueNote", "project": "p"}], "needs project and issue"),
    ("without-project", [{"type": "IssueNote", "issue": 3}], "needs project and issue"),
    ("issue-zero", [{**NOTE, "issue": 0}], "should be greater than or equal to 1"),
    ("blocking", [{**NOTE, "blocking": True}], "an IssueNote is never blocking"),
    ("issue-on-qa", [{"type": "QAIssue", "project": "q", "issue": 2}], ONLY_NOTES),
    ("internal-on-qa", [{"type": "QAIssue", "project": "q", "internal": True}], ONLY_NOTES),
    ("same-issue-twice", [NOTE, {**NOTE, "internal": True}], TWICE),
]  # fmt: skip


@pytest.mark.parametrize(("case", "sinks", "says"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_malformed_issue_note_sink_is_refused_saying_why(
    api: Api, case: str, sinks: list[dict[str, Any]], says: str
) -> None:
    body = migration(f"note-{case}", tracking=tracking(sinks))
    with pytest.raises(ApiException) as refused:
        api.create(body)
    assert refused.value.status == 422, refused.value.body
    assert says in json.loads(refused.value.body)["message"]
    assert api.get(body["metadata"]["name"]) is None


def test_notes_on_two_issues_internal_and_not_blocking_are_accepted(api: Api) -> None:
    sinks = [NOTE, {**NOTE, "issue": 21535, "internal": True, "blocking": False, "required": True}]
    made = api.create(migration("note-ok", pipeline="Rollback", tracking=tracking(sinks)))
    assert [s["issue"] for s in made["spec"]["tracking"]["sinks"]] == [21534, 21535]
