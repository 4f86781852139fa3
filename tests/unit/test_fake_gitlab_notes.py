"""The fake GitLab's issue notes endpoint validates and pages as GitLab does
(``lib/api/notes.rb``, ``API::Helpers::NotesHelpers``, ``Notes::ActiveRecord``),
seen through requests and python-gitlab."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gitlab
import pytest
import requests

from tests.support.fake_gitlab import MAX_NOTE_LENGTH, FakeGitLab, project_path

PROJECT = "gitlab-org/release/tasks"


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab() as server:
        server.add_issue(PROJECT, "Release 18.6.0")
        yield server
        assert server.server_errors == []


def notes_url(fake: FakeGitLab, iid: int | str = 1) -> str:
    return f"{fake.url}/api/v4/projects/{project_path(PROJECT)}/issues/{iid}/notes"


def post(fake: FakeGitLab, body: Any, iid: int | str = 1) -> requests.Response:
    return requests.post(
        notes_url(fake, iid), json=body, headers={"PRIVATE-TOKEN": fake.token}, timeout=5
    )


def get(fake: FakeGitLab, **query: Any) -> requests.Response:
    return requests.get(
        notes_url(fake), params=query, headers={"PRIVATE-TOKEN": fake.token}, timeout=5
    )


def test_a_note_needs_a_body_that_is_neither_blank_nor_too_long(fake: FakeGitLab) -> None:
    missing = post(fake, {"internal": True})
    assert (missing.status_code, missing.json()) == (400, {"error": "body is missing"})
    blank = post(fake, {"body": "  "})
    assert blank.status_code == 400
    assert "can't be blank" in blank.json()["message"]
    long = post(fake, {"body": "x" * (MAX_NOTE_LENGTH + 1)})
    assert long.status_code == 400
    assert "is too long (maximum is 1000000 characters)" in long.json()["message"]
    assert post(fake, {"body": "x" * MAX_NOTE_LENGTH}).status_code == 201


def test_a_missing_issue_or_a_bad_iid_is_refused_before_anything_is_saved(
    fake: FakeGitLab,
) -> None:
    assert post(fake, {"body": "hi"}, iid=7).json() == {"message": "404 Issue Not Found"}
    assert post(fake, {"body": "hi"}, iid="x").json() == {"error": "noteable_id is invalid"}
    assert requests.post(notes_url(fake), json={"body": "hi"}, timeout=5).status_code == 401
    fake.forbid(PROJECT, "create_note")
    assert post(fake, {"body": "hi"}).status_code == 403
    assert fake.notes(PROJECT, 1) == []


def test_quick_actions_are_executed_and_a_note_of_commands_only_is_not_saved(
    fake: FakeGitLab,
) -> None:
    only = post(fake, {"body": "/close"})
    assert only.status_code == 202
    assert fake.issues(PROJECT)[0]["state"] == "closed"
    mixed = post(fake, {"body": "reopening\n/reopen\n| /label ~x |"})
    assert mixed.status_code == 201
    assert mixed.json()["body"] == "reopening\n| /label ~x |"
    assert fake.quick_actions(PROJECT, 1) == ["/close", "/reopen"]


def test_created_at_is_ignored_for_a_user_who_is_no_administrator(fake: FakeGitLab) -> None:
    made = post(fake, {"body": "hi", "created_at": "2001-01-01T00:00:00Z"}).json()
    assert not made["created_at"].startswith("2001")


def test_the_list_is_paged_sorted_and_filtered_as_gitlab_does(fake: FakeGitLab) -> None:
    for i in range(5):
        fake.add_note(PROJECT, 1, f"c{i}")
    fake.add_note(PROJECT, 1, "added ~label", system=True)
    first = get(fake, per_page=2, activity_filter="only_comments")
    assert [n["body"] for n in first.json()] == ["c4", "c3"]  # newest first by default
    assert (first.headers["X-Next-Page"], first.headers["X-Total"]) == ("2", "5")
    assert 'rel="next"' in first.headers["Link"]
    last = get(fake, per_page=2, page=3, activity_filter="only_comments")
    assert [n["body"] for n in last.json()] == ["c0"]
    assert last.headers["X-Next-Page"] == ""
    assert 'rel="next"' not in last.headers["Link"]
    asc = get(fake, sort="asc", per_page=100)
    assert [n["body"] for n in asc.json()][:2] == ["c0", "c1"]
    assert [n["body"] for n in get(fake, activity_filter="only_activity").json()] == [
        "added ~label"
    ]
    for bad in ({"sort": "up"}, {"order_by": "id"}, {"activity_filter": "x"}, {"per_page": 0}):
        assert get(fake, **bad).status_code == 400


def test_python_gitlab_follows_the_link_header_through_every_page(fake: FakeGitLab) -> None:
    for i in range(250):
        fake.add_note(PROJECT, 1, f"c{i}")
    gl = gitlab.Gitlab(fake.url, private_token=fake.token, timeout=5, keep_base_url=True)
    issue = gl.projects.get(PROJECT, lazy=True).issues.get(1, lazy=True)
    listed = list(issue.notes.list(iterator=True, per_page=100, sort="desc"))
    assert len(listed) == 250
    assert listed[0].attributes["body"] == "c249"


def test_the_notes_rate_limit_answers_429_with_or_without_retry_after(fake: FakeGitLab) -> None:
    fake.notes_rate_limit = 1
    assert post(fake, {"body": "one"}).status_code == 201
    limited = post(fake, {"body": "two"})
    assert limited.status_code == 429
    assert "Retry-After" not in limited.headers
    fake.notes_retry_after = 60
    assert post(fake, {"body": "two"}).headers["Retry-After"] == "60"
    assert len(fake.notes(PROJECT, 1)) == 1
