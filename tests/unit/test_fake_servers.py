"""The fake GitLab and Sentry servers behave as documented, seen through real clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import gitlab
import pytest
import requests

from tests.support.fake_gitlab import (
    CI_DEPLOYMENT_FORBIDDEN,
    FakeGitLab,
    project_path,
    transition_error,
)
from tests.support.fake_sentry import DATETIME_FORMAT_ERROR, FakeSentry
from tests.support.waiting import wait_until

PROJECT = "gitlab-org/gitlab"
SHA = "5f3a9c1e" * 5
ORG, VERSION = "gitlab", "18.6.0-ee"


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLab]:
    with FakeGitLab() as fake:
        fake.add_commits(PROJECT, shas=["f" * 40, SHA])
        yield fake
        assert fake.server_errors == []


@pytest.fixture
def gl(fake_gitlab: FakeGitLab) -> Iterator[gitlab.Gitlab]:
    with gitlab.Gitlab(fake_gitlab.url, private_token=fake_gitlab.token, timeout=5) as client:
        yield client


@pytest.fixture
def project(gl: gitlab.Gitlab) -> Any:
    return gl.projects.get(PROJECT, lazy=True)


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    with FakeSentry(releases=[(ORG, VERSION)]) as fake:
        yield fake
        assert fake.server_errors == []


def deployment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "environment": "gprd",
        "sha": SHA,
        "ref": "master",
        "tag": False,
        "status": "running",
    }
    body.update(overrides)
    return body


def api(fake: FakeGitLab, path: str) -> str:
    return f"{fake.url}/api/v4/projects/{project_path(PROJECT)}/{path}"


def auth(fake: FakeGitLab) -> dict[str, str]:
    return {"PRIVATE-TOKEN": fake.token}


def deploys_url(fake: FakeSentry, org: str = ORG, version: str = VERSION) -> str:
    return f"{fake.url}/api/0/organizations/{org}/releases/{version}/deploys/"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- GitLab: deployments ----------------------------------------------------------------


def test_create_deployment_and_list_it_by_environment(project: Any) -> None:
    created = project.deployments.create(deployment_body())
    project.deployments.create(deployment_body(environment="gstg"))

    listed = project.deployments.list(environment="gprd", get_all=True)

    assert [d.id for d in listed] == [created.id]
    assert listed[0].environment["name"] == "gprd"
    assert listed[0].status == "running"


def test_deployment_json_has_the_documented_fields(fake_gitlab: FakeGitLab, project: Any) -> None:
    fake_gitlab.add_ref(PROJECT, "v1.0", SHA)
    running = project.deployments.create(deployment_body())
    done = project.deployments.create(deployment_body(status="success", tag=True, ref="v1.0"))

    assert (running.iid, done.iid) == (1, 2)
    assert running.finished_at is None
    assert done.finished_at is not None
    assert done.tag is True
    assert running.deployable is None
    assert running.user == {"id": 1, "username": "pdm-bot", "name": "PDM Bot", "state": "active"}
    assert running.environment["id"] == done.environment["id"]
    assert running.created_at.endswith("Z")
    assert fake_gitlab.deployments(PROJECT) == [running.asdict(), done.asdict()]


def test_create_with_status_created_is_rejected(project: Any) -> None:
    with pytest.raises(gitlab.GitlabCreateError) as err:
        project.deployments.create(deployment_body(status="created"))

    assert err.value.response_code == 400
    assert err.value.error_message == "status does not have a valid value"


def test_create_reports_every_missing_field(fake_gitlab: FakeGitLab) -> None:
    response = requests.post(
        api(fake_gitlab, "deployments"), json={"sha": SHA}, headers=auth(fake_gitlab), timeout=5
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "environment is missing, ref is missing, tag is missing, status is missing"
    }


def test_create_accepts_a_form_encoded_body(fake_gitlab: FakeGitLab) -> None:
    response = requests.post(
        api(fake_gitlab, "deployments"),
        data=deployment_body(tag="false", status="success"),
        headers=auth(fake_gitlab),
        timeout=5,
    )

    assert response.status_code == 201
    assert response.json()["tag"] is False
    assert response.json()["status"] == "success"


def test_create_equal_to_the_last_success_returns_it(project: Any) -> None:
    first = project.deployments.create(deployment_body(status="success"))
    again = project.deployments.create(deployment_body(status="success"))
    other = project.deployments.create(deployment_body(status="success", sha="f" * 40))

    assert again.id == first.id
    assert other.id != first.id


def test_update_to_the_same_status_is_400(project: Any) -> None:
    deployment = project.deployments.create(deployment_body(status="success"))

    with pytest.raises(gitlab.GitlabUpdateError) as err:
        project.deployments.update(deployment.id, {"status": "success"})

    assert err.value.response_code == 400
    assert err.value.error_message == transition_error("success")["message"]
    assert err.value.error_message == {"status": ['cannot transition via "succeed"']}


def test_update_moves_a_deployment_along(project: Any) -> None:
    deployment = project.deployments.create(deployment_body())
    deployment.status = "success"
    deployment.save()

    fetched = project.deployments.get(deployment.id)
    assert fetched.status == "success"
    assert fetched.finished_at is not None
    with pytest.raises(gitlab.GitlabUpdateError) as err:
        project.deployments.update(deployment.id, {"status": "running"})
    assert err.value.error_message == {"status": ['cannot transition via "run"']}


def test_update_of_a_ci_deployment_is_403(fake_gitlab: FakeGitLab, project: Any) -> None:
    made_by_ci = fake_gitlab.add_ci_deployment(PROJECT, "gprd", "master", SHA, "running")
    assert made_by_ci["deployable"]["status"] == "running"

    with pytest.raises(gitlab.GitlabUpdateError) as err:
        project.deployments.update(made_by_ci["id"], {"status": "success"})

    assert err.value.response_code == 403
    assert err.value.error_message == CI_DEPLOYMENT_FORBIDDEN
    assert fake_gitlab.deployments(PROJECT)[0]["status"] == "running"


def test_unknown_deployment_is_404(project: Any) -> None:
    with pytest.raises(gitlab.GitlabGetError) as err:
        project.deployments.get(424242)

    assert err.value.response_code == 404
    assert err.value.error_message == "404 Not found"


def test_list_filters_by_status(project: Any) -> None:
    project.deployments.create(deployment_body())
    done = project.deployments.create(deployment_body(status="success"))

    assert [d.id for d in project.deployments.list(status="success")] == [done.id]


def test_list_orders_and_sorts(fake_gitlab: FakeGitLab, project: Any) -> None:
    for branch in ("b", "c", "a"):
        fake_gitlab.add_ref(PROJECT, branch, SHA)
    ids = [project.deployments.create(deployment_body(ref=r)).id for r in ("b", "c", "a")]

    newest_first = project.deployments.list(order_by="id", sort="desc")
    by_ref = project.deployments.list(order_by="ref")

    assert [d.id for d in newest_first] == ids[::-1]
    assert [d.ref for d in by_ref] == ["a", "b", "c"]


def test_list_filters_by_updated_after(project: Any) -> None:
    old = project.deployments.create(deployment_body())
    new = project.deployments.create(deployment_body(environment="gstg"))
    project.deployments.update(new.id, {"status": "success"})
    since = project.deployments.get(new.id).updated_at

    found = project.deployments.list(order_by="updated_at", updated_after=since)

    assert old.updated_at <= since
    assert new.id in [d.id for d in found]
    assert all(d.updated_at >= since for d in found)


def test_finished_filter_must_be_paired_with_its_sorting(project: Any) -> None:
    with pytest.raises(gitlab.GitlabListError) as err:
        project.deployments.list(finished_after="2024-01-01T00:00:00Z", status="success")

    assert err.value.response_code == 400
    assert err.value.error_message == (
        "400 Bad request - `finished_at` filter and `finished_at` sorting must be paired"
    )


def test_list_pages_with_headers_and_links(fake_gitlab: FakeGitLab, project: Any) -> None:
    ids = [project.deployments.create(deployment_body()).id for _ in range(5)]

    response = requests.get(
        api(fake_gitlab, "deployments"),
        params={"per_page": 2, "page": 2},
        headers=auth(fake_gitlab),
        timeout=5,
    )

    assert [d["id"] for d in response.json()] == ids[2:4]
    assert response.headers["X-Page"] == "2"
    assert response.headers["X-Per-Page"] == "2"
    assert response.headers["X-Total"] == "5"
    assert response.headers["X-Total-Pages"] == "3"
    assert response.headers["X-Next-Page"] == "3"
    assert "page=3" in response.links["next"]["url"]
    assert [d.id for d in project.deployments.list(per_page=2, get_all=True)] == ids


def test_project_by_numeric_id(fake_gitlab: FakeGitLab, gl: gitlab.Gitlab, project: Any) -> None:
    created = project.deployments.create(deployment_body())
    by_id = gl.projects.get(fake_gitlab.project_id(PROJECT), lazy=True)

    assert [d.id for d in by_id.deployments.list()] == [created.id]
    assert gl.projects.get(PROJECT).path_with_namespace == PROJECT
    with pytest.raises(gitlab.GitlabListError) as err:
        gl.projects.get(999, lazy=True).deployments.list()
    assert err.value.error_message == "404 Project Not Found"


# -- GitLab: merge requests and issues ---------------------------------------------------


def test_merge_requests_of_a_deployment_and_add_labels(
    fake_gitlab: FakeGitLab, project: Any
) -> None:
    deployment = project.deployments.create(deployment_body(status="success"))
    first = fake_gitlab.add_merge_request(PROJECT, "Add a migration", labels=["database"])
    second = fake_gitlab.add_merge_request(PROJECT, "Fix a typo")
    fake_gitlab.add_merge_request(PROJECT, "Not deployed")
    fake_gitlab.link_merge_requests(PROJECT, deployment.id, [first, second])

    shipped = project.deployments.get(deployment.id).mergerequests.list(get_all=True)
    assert sorted(mr.iid for mr in shipped) == [first, second]
    assert {mr.title for mr in shipped} == {"Add a migration", "Fix a typo"}
    assert all(mr.project_id == fake_gitlab.project_id(PROJECT) for mr in shipped)

    updated = project.mergerequests.update(first, {"add_labels": "workflow::post-deploy,database"})
    assert updated["labels"] == ["database", "workflow::post-deploy"]
    assert fake_gitlab.merge_request(PROJECT, first)["labels"] == updated["labels"]


def test_updated_filter_needs_updated_sort(project: Any) -> None:
    with pytest.raises(gitlab.GitlabListError) as err:
        project.deployments.list(updated_after="2024-01-01T00:00:00Z")

    assert err.value.response_code == 400
    assert err.value.error_message == (
        "400 Bad request - `updated_at` filter requires `updated_at` sort"
    )


def test_deployment_ref_and_sha_must_exist_in_the_project(
    fake_gitlab: FakeGitLab, project: Any
) -> None:
    with pytest.raises(gitlab.GitlabCreateError) as err:
        project.deployments.create(deployment_body(ref="v99.0", environment="db/gprd"))
    assert (err.value.response_code, err.value.error_message) == (
        400,
        {"ref": ["The branch or tag does not exist"]},
    )
    with pytest.raises(gitlab.GitlabCreateError) as err:
        project.deployments.create(deployment_body(sha="abcdef1" * 5 + "12345", environment="db/x"))
    assert (err.value.response_code, err.value.error_message) == (
        400,
        {"sha": ["The commit does not exist"]},
    )
    assert fake_gitlab.deployments(PROJECT) == []
    other = gitlab.Gitlab(fake_gitlab.url, private_token=fake_gitlab.token, timeout=5)
    with pytest.raises(gitlab.GitlabCreateError) as err:
        other.projects.get("gitlab-org/gitaly", lazy=True).deployments.create(deployment_body())
    assert err.value.error_message == {"ref": ["The branch or tag does not exist"]}


@pytest.mark.parametrize("name", ["/db", "db/", "d" * 256, "db|gprd"])
def test_environment_names_follow_gitlab(project: Any, name: str) -> None:
    with pytest.raises(gitlab.GitlabCreateError) as err:
        project.deployments.create(deployment_body(environment=name))
    assert err.value.response_code == 400
    assert "name" in err.value.error_message


@pytest.mark.parametrize("ability", ["create_deployment", "create_environment"])
def test_creating_a_deployment_needs_both_abilities(
    fake_gitlab: FakeGitLab, project: Any, ability: str
) -> None:
    fake_gitlab.forbid(PROJECT, ability)
    with pytest.raises(gitlab.GitlabCreateError) as err:
        project.deployments.create(deployment_body())
    assert (err.value.response_code, err.value.error_message) == (403, "403 Forbidden")


def test_the_token_user_and_the_creator_of_each_deployment(
    fake_gitlab: FakeGitLab, gl: gitlab.Gitlab, project: Any
) -> None:
    gl.auth()
    assert gl.user is not None
    assert gl.user.username == "pdm-bot"
    theirs = fake_gitlab.add_api_deployment(PROJECT, "db/gprd", "master", SHA)
    ours = project.deployments.create(deployment_body(environment="db/gstg", status="success"))
    assert theirs["user"]["username"] == "release-tools"
    assert theirs["deployable"] is None
    assert ours.user["username"] == "pdm-bot"
    # Equal to the environment's last success: GitLab answers with that one, theirs.
    again = project.deployments.create(deployment_body(environment="db/gprd", status="success"))
    assert (again.id, again.user["username"]) == (theirs["id"], "release-tools")


def test_merge_requests_are_linked_after_success_like_gitlab(
    fake_gitlab: FakeGitLab, project: Any
) -> None:
    first_mr = fake_gitlab.add_merge_request(PROJECT, "Before the first deployment")
    fake_gitlab.add_merge_request(PROJECT, "Still open", state="opened")
    first = project.deployments.create(
        deployment_body(environment="db/gprd", sha=fake_gitlab.head(PROJECT), status="running")
    )
    assert fake_gitlab.merge_requests_of(PROJECT, first.id) == []
    project.deployments.update(first.id, {"status": "success"})
    # First success of the environment: every merged merge request into its ref.
    wait_until(lambda: fake_gitlab.merge_requests_of(PROJECT, first.id), timeout=5, what="linking")
    assert fake_gitlab.merge_requests_of(PROJECT, first.id) == [first_mr]

    second_mr = fake_gitlab.add_merge_request(PROJECT, "Shipped by the second")
    fake_gitlab.hold_linking()
    second = project.deployments.create(
        deployment_body(environment="db/gprd", sha=fake_gitlab.head(PROJECT), status="success")
    )
    # Linked asynchronously: a successful deployment may have none yet.
    assert project.deployments.get(second.id).mergerequests.list() == []
    fake_gitlab.release_linking()
    wait_until(lambda: fake_gitlab.merge_requests_of(PROJECT, second.id), timeout=5, what="linking")
    assert fake_gitlab.merge_requests_of(PROJECT, second.id) == [second_mr]


@pytest.mark.parametrize(("environment", "legacy"), [("db/other", False), ("db/gprd", True)])
def test_environments_in_a_folder_may_never_be_linked(
    fake_gitlab: FakeGitLab, project: Any, environment: str, legacy: bool
) -> None:
    fake_gitlab.legacy_folder_linking = legacy
    fake_gitlab.add_merge_request(PROJECT, "Merged")
    unlinked = project.deployments.create(
        deployment_body(environment=environment, sha=fake_gitlab.head(PROJECT), status="success")
    )
    linked = project.deployments.create(
        deployment_body(environment="gprd", sha=fake_gitlab.head(PROJECT), status="success")
    )
    wait_until(lambda: fake_gitlab.merge_requests_of(PROJECT, linked.id), timeout=5, what="linking")
    assert fake_gitlab.merge_requests_of(PROJECT, unlinked.id) == []


def test_merge_request_labels_replace_and_remove(fake_gitlab: FakeGitLab, project: Any) -> None:
    iid = fake_gitlab.add_merge_request(PROJECT, "MR", labels=["a", "b"])

    replaced = project.mergerequests.update(iid, {"labels": "c,c,d"})
    removed = project.mergerequests.update(iid, {"remove_labels": "c"})

    assert replaced["labels"] == ["c", "d"]
    assert removed["labels"] == ["d"]
    with pytest.raises(gitlab.GitlabGetError) as err:
        project.mergerequests.get(99)
    assert err.value.response_code == 404


def test_issues_are_created_and_searched(fake_gitlab: FakeGitLab, project: Any) -> None:
    issue = project.issues.create(
        {"title": "Post-deploy migration failed", "description": "in gprd", "labels": "pdm,gprd"}
    )
    project.issues.create({"title": "Something else", "description": "migration notes"})

    assert issue.state == "opened"
    assert issue.labels == ["pdm", "gprd"]
    assert issue.web_url == f"{fake_gitlab.url}/{PROJECT}/-/issues/{issue.iid}"
    in_titles = project.issues.list(search="migration", **{"in": "title"})
    anywhere = project.issues.list(search="MIGRATION")
    labelled = project.issues.list(labels="pdm")
    assert [i.iid for i in in_titles] == [issue.iid]
    assert len(anywhere) == 2
    assert [i.iid for i in labelled] == [issue.iid]
    assert [i["title"] for i in fake_gitlab.issues(PROJECT)] == [
        "Post-deploy migration failed",
        "Something else",
    ]


def test_issue_without_title_is_400(fake_gitlab: FakeGitLab) -> None:
    response = requests.post(
        api(fake_gitlab, "issues"), json={"description": "x"}, headers=auth(fake_gitlab), timeout=5
    )

    assert response.status_code == 400
    assert response.json() == {"error": "title is missing"}


# -- GitLab: authentication, routing, recording -------------------------------------------


def test_wrong_token_is_401(fake_gitlab: FakeGitLab) -> None:
    with (
        gitlab.Gitlab(fake_gitlab.url, private_token="glpat-wrong", timeout=5) as client,
        pytest.raises(gitlab.GitlabAuthenticationError) as err,
    ):
        client.projects.get(PROJECT, lazy=True).deployments.list()

    assert err.value.response_code == 401
    assert err.value.error_message == "401 Unauthorized"
    missing = requests.get(api(fake_gitlab, "deployments"), timeout=5)
    assert (missing.status_code, missing.json()) == (401, {"message": "401 Unauthorized"})


def test_bearer_token_is_accepted(fake_gitlab: FakeGitLab) -> None:
    response = requests.get(
        api(fake_gitlab, "deployments"), headers=bearer(fake_gitlab.token), timeout=5
    )

    assert response.status_code == 200
    assert response.json() == []


def test_unknown_route_is_404(fake_gitlab: FakeGitLab) -> None:
    response = requests.get(api(fake_gitlab, "pipelines"), headers=auth(fake_gitlab), timeout=5)

    assert (response.status_code, response.json()) == (404, {"message": "404 Not Found"})


def test_requests_are_recorded_with_their_headers(fake_gitlab: FakeGitLab, project: Any) -> None:
    project.deployments.create(deployment_body())
    project.deployments.list()

    posts = fake_gitlab.requests_to(f"/api/v4/projects/{PROJECT}/deployments", method="POST")
    assert len(posts) == 1
    assert posts[0].headers["private-token"] == fake_gitlab.token
    assert posts[0].json()["environment"] == "gprd"
    assert (posts[0].status, posts[0].handled_status, posts[0].fault) == (201, 201, None)
    assert len(fake_gitlab.requests_to("/api/v4/projects/gitlab-org%2Fgitlab/")) == 2


# -- faults ---------------------------------------------------------------------------------


def test_error_once_then_success(fake_gitlab: FakeGitLab) -> None:
    fault = fake_gitlab.faults.error(503, times=1)
    url, headers = api(fake_gitlab, "deployments"), auth(fake_gitlab)

    first = requests.get(url, headers=headers, timeout=5)
    second = requests.get(url, headers=headers, timeout=5)

    assert (first.status_code, first.json()) == (503, {"message": "503 Service Unavailable"})
    assert second.status_code == 200
    assert fault.applied == 1
    assert [(r.fault, r.status, r.handled_status) for r in fake_gitlab.requests] == [
        ("error 503", 503, None),
        (None, 200, 200),
    ]


def test_python_gitlab_retries_a_transient_error(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.faults.error(502, times=1, method="POST")
    with gitlab.Gitlab(
        fake_gitlab.url, private_token=fake_gitlab.token, timeout=5, retry_transient_errors=True
    ) as client:
        client.projects.get(PROJECT, lazy=True).deployments.create(deployment_body())

    assert [r.status for r in fake_gitlab.requests] == [502, 201]
    assert len(fake_gitlab.deployments(PROJECT)) == 1


def test_rate_limit_answer_carries_retry_after(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.faults.error(429, times=1, headers={"Retry-After": "7"}, body="Retry later\n")

    response = requests.get(api(fake_gitlab, "deployments"), headers=auth(fake_gitlab), timeout=5)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.text == "Retry later\n"


def test_fault_applies_only_to_matching_method_and_path(
    fake_gitlab: FakeGitLab, project: Any
) -> None:
    fake_gitlab.faults.error(500, method="POST", path=r"/deployments$")

    assert project.deployments.list() == []
    project.issues.create({"title": "still fine"})
    with pytest.raises(gitlab.GitlabCreateError) as err:
        project.deployments.create(deployment_body())
    assert err.value.response_code == 500

    fake_gitlab.faults.clear()
    project.deployments.create(deployment_body())
    assert fake_gitlab.faults.active == []


def test_fault_for_a_number_of_times(fake_gitlab: FakeGitLab) -> None:
    fault = fake_gitlab.faults.error(500, times=2)
    url, headers = api(fake_gitlab, "deployments"), auth(fake_gitlab)

    statuses = [requests.get(url, headers=headers, timeout=5).status_code for _ in range(3)]

    assert statuses == [500, 500, 200]
    assert fault.applied == 2
    assert fake_gitlab.faults.active == []


def test_slow_answer_takes_at_least_the_delay(fake_gitlab: FakeGitLab, project: Any) -> None:
    fake_gitlab.faults.slow(0.5, times=1)

    started = time.monotonic()
    assert project.deployments.list() == []

    assert time.monotonic() - started >= 0.5
    assert fake_gitlab.requests[0].fault == "slow 0.5s"


def test_hang_times_out_the_client_and_clear_releases(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.faults.hang()
    with gitlab.Gitlab(fake_gitlab.url, private_token=fake_gitlab.token, timeout=0.5) as client:
        project = client.projects.get(PROJECT, lazy=True)
        with pytest.raises(requests.exceptions.Timeout):
            project.deployments.list()

        fake_gitlab.faults.clear()
        assert project.deployments.list() == []


def test_cleared_hang_answers_the_held_request(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.faults.hang(times=1)
    answers: list[int] = []
    url, headers = api(fake_gitlab, "deployments"), auth(fake_gitlab)
    client = threading.Thread(
        target=lambda: answers.append(requests.get(url, headers=headers, timeout=10).status_code)
    )
    client.start()
    wait_until(lambda: fake_gitlab.requests, timeout=5, what="the request to arrive", interval=0.01)

    assert fake_gitlab.requests[0].status is None
    fake_gitlab.faults.clear()
    client.join(timeout=5)

    assert answers == [200]
    assert fake_gitlab.requests[0].status == 200


def test_stop_drops_a_held_request(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.faults.hang()
    errors: list[BaseException] = []
    url, headers = api(fake_gitlab, "deployments"), auth(fake_gitlab)

    def call() -> None:
        try:
            requests.get(url, headers=headers, timeout=10)
        except requests.RequestException as e:
            errors.append(e)

    client = threading.Thread(target=call)
    client.start()
    wait_until(lambda: fake_gitlab.requests, timeout=5, what="the request to arrive", interval=0.01)
    fake_gitlab.stop()
    client.join(timeout=5)

    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)
    assert fake_gitlab.requests[0].handled_status is None


def test_reset_gives_a_connection_error(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.faults.reset(times=1)

    with pytest.raises(requests.ConnectionError) as err:
        requests.get(api(fake_gitlab, "deployments"), headers=auth(fake_gitlab), timeout=5)

    assert "reset" in str(err.value).lower() or "aborted" in str(err.value).lower()
    assert fake_gitlab.requests[0].handled_status is None
    assert requests.get(api(fake_gitlab, "deployments"), headers=auth(fake_gitlab), timeout=5).ok


def test_lost_response_still_commits_the_deployment(fake_gitlab: FakeGitLab, project: Any) -> None:
    fake_gitlab.faults.lose_response(times=1, method="POST", path="/deployments")

    with pytest.raises(requests.ConnectionError):
        project.deployments.create(deployment_body())

    [committed] = fake_gitlab.deployments(PROJECT)
    assert committed["status"] == "running"
    [post] = fake_gitlab.requests
    assert (post.fault, post.status, post.handled_status) == ("lose_response", None, 201)


def test_down_refuses_connections_and_up_restores_the_same_url(
    fake_gitlab: FakeGitLab, project: Any
) -> None:
    url = fake_gitlab.url
    project.deployments.create(deployment_body())  # leaves a keep-alive connection open

    fake_gitlab.down()
    with pytest.raises(requests.ConnectionError) as err:
        project.deployments.list()
    assert "refused" in str(err.value).lower()
    with pytest.raises(requests.ConnectionError) as err:
        requests.get(api(fake_gitlab, "deployments"), headers=auth(fake_gitlab), timeout=5)
    assert "refused" in str(err.value).lower()

    fake_gitlab.up()
    assert fake_gitlab.url == url
    assert len(project.deployments.list()) == 1


# -- Sentry ------------------------------------------------------------------------------------


def test_sentry_creates_and_lists_deploys(fake_sentry: FakeSentry) -> None:
    body = {
        "environment": "gprd",
        "name": "post-deploy migrations",
        "url": "https://ops.example.com/pdm/1",
        "dateStarted": "2024-05-01T10:00:00Z",
        "dateFinished": "2024-05-01T10:05:00Z",
    }

    created = requests.post(
        deploys_url(fake_sentry), json=body, headers=bearer(fake_sentry.token), timeout=5
    )
    listed = requests.get(deploys_url(fake_sentry), headers=bearer(fake_sentry.token), timeout=5)

    assert created.status_code == 201
    deploy = created.json()
    assert deploy == {
        "id": deploy["id"],
        "environment": "gprd",
        "name": "post-deploy migrations",
        "url": "https://ops.example.com/pdm/1",
        "dateStarted": "2024-05-01T10:00:00.000000Z",
        "dateFinished": "2024-05-01T10:05:00.000000Z",
    }
    assert isinstance(deploy["id"], str)
    assert listed.status_code == 200
    assert listed.json() == [deploy]
    assert fake_sentry.deploys(ORG, VERSION) == [deploy]


def test_sentry_lists_the_last_deploy_per_environment(fake_sentry: FakeSentry) -> None:
    def create(env: str) -> dict[str, Any]:
        response = requests.post(
            deploys_url(fake_sentry),
            json={"environment": env},
            headers=bearer(fake_sentry.token),
            timeout=5,
        )
        assert response.status_code == 201
        return dict(response.json())

    create("gstg")
    gprd = create("gprd")
    latest_gstg = create("gstg")

    listed = requests.get(deploys_url(fake_sentry), headers=bearer(fake_sentry.token), timeout=5)

    assert [d["id"] for d in listed.json()] == [latest_gstg["id"], gprd["id"]]
    assert len(fake_sentry.deploys(ORG, VERSION)) == 3


def test_sentry_requires_an_environment(fake_sentry: FakeSentry) -> None:
    response = requests.post(
        deploys_url(fake_sentry), json={"name": "x"}, headers=bearer(fake_sentry.token), timeout=5
    )

    assert response.status_code == 400
    assert response.json() == {"environment": ["This field is required."]}
    assert fake_sentry.deploys(ORG, VERSION) == []


def test_sentry_rejects_a_bad_date(fake_sentry: FakeSentry) -> None:
    response = requests.post(
        deploys_url(fake_sentry),
        json={"environment": "gprd", "dateFinished": "yesterday"},
        headers=bearer(fake_sentry.token),
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json() == {"dateFinished": [DATETIME_FORMAT_ERROR]}


def test_sentry_unknown_release_is_404(fake_sentry: FakeSentry) -> None:
    response = requests.post(
        deploys_url(fake_sentry, version="0.0.0"),
        json={"environment": "gprd"},
        headers=bearer(fake_sentry.token),
        timeout=5,
    )

    assert response.status_code == 404
    assert response.json() == {"detail": "The requested resource does not exist"}
    fake_sentry.add_release(ORG, "0.0.0")
    again = requests.post(
        deploys_url(fake_sentry, version="0.0.0"),
        json={"environment": "gprd"},
        headers=bearer(fake_sentry.token),
        timeout=5,
    )
    assert again.status_code == 201


def test_sentry_bad_or_missing_token_is_401(fake_sentry: FakeSentry) -> None:
    bad = requests.get(deploys_url(fake_sentry), headers=bearer("sntrys-wrong"), timeout=5)
    missing = requests.get(deploys_url(fake_sentry), timeout=5)

    assert (bad.status_code, bad.json()) == (401, {"detail": "Invalid token"})
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Authentication credentials were not provided."}


def test_sentry_projects_must_belong_to_the_release() -> None:
    with FakeSentry(
        releases=[(ORG, VERSION, ["gitlab", "gitlab-web"]), (ORG, "old", ["other"])]
    ) as fake:
        url, headers = deploys_url(fake), bearer(fake.token)

        ok = requests.post(
            url, json={"environment": "gprd", "projects": ["gitlab"]}, headers=headers, timeout=5
        )
        unknown = requests.post(
            url, json={"environment": "gprd", "projects": ["nope"]}, headers=headers, timeout=5
        )
        foreign = requests.post(
            url, json={"environment": "gprd", "projects": ["other"]}, headers=headers, timeout=5
        )

        assert ok.status_code == 201
        assert (unknown.status_code, unknown.json()) == (
            400,
            {"projects": {"0": ["Invalid project"]}},
        )
        assert foreign.status_code == 400
        assert foreign.json() == {"detail": f"Invalid projects (other) for release {VERSION}"}


def test_sentry_faults(fake_sentry: FakeSentry) -> None:
    fake_sentry.faults.error(502, times=1)
    fake_sentry.faults.lose_response(times=1, method="POST")
    url, headers = deploys_url(fake_sentry), bearer(fake_sentry.token)

    failed = requests.post(url, json={"environment": "gprd"}, headers=headers, timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json={"environment": "gprd"}, headers=headers, timeout=5)

    assert (failed.status_code, failed.json()) == (502, {"detail": "502 Bad Gateway"})
    assert len(fake_sentry.deploys(ORG, VERSION)) == 1
    assert [r.fault for r in fake_sentry.requests] == ["error 502", "lose_response"]
