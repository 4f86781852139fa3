"""The GitLab deployments gate's decisions: the whole environment runs the commit, none
being deployed; the commit a migration deploys; the token it may send."""

from __future__ import annotations

import pytest

from pdm_operator import deployments
from pdm_operator.deployments import Listing, Unreachable, Watch
from pdm_operator.gates import Hold
from pdm_operator.model import Body

URL = "https://gitlab.example.com"
PROJECT = "gitlab-org/gitlab"
#: One environment across clusters: canary, the regional cluster, two zonal ones.
FOUR = ("gprd-cny", "gprd-regional", "gprd-zone-b", "gprd-zone-c")
WATCH = Watch(URL, PROJECT, FOUR, None)
NEW = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
OLD = "0f1e2d3c4b5a69788796a5b4c3d2e1f001234567"
COMMIT = NEW[:11]
SECRET_REF = {"name": "gitlab-read", "key": "token"}


def dep(id_: int, sha: str = NEW, status: str = "success", ref: str = "master") -> Body:
    """A deployment as ``lib/api/entities/deployment.rb`` lists it (no finished_at)."""
    return {"id": id_, "iid": id_ - 1000, "ref": ref, "sha": sha, "status": status}


def runs(sha: str, id_: int = 1001, *newest: Body) -> Listing:
    success = dep(id_, sha)
    return Listing(success, [*newest, success])


def all_on(sha: str) -> dict[str, Listing | Unreachable]:
    return {env: runs(sha, 1001 + i) for i, env in enumerate(FOUR)}


def held(hold: Hold | None, reason: str) -> Hold:
    assert hold is not None, f"the gate opened; expected {reason}"
    assert hold.reason == reason, hold.message
    assert hold.costly is True
    assert hold.fatal is False
    return hold


# --- the whole environment ------------------------------------------------------------------


def test_gate_opens_only_when_the_last_gitlab_environment_runs_the_commit() -> None:
    found = all_on(OLD)
    for i, environment in enumerate(FOUR):
        hold = held(deployments.judge(WATCH, COMMIT, found), deployments.PENDING)
        assert repr(environment) in hold.message
        found[environment] = runs(NEW, 2001 + i)

    assert deployments.judge(WATCH, COMMIT, found) is None


def test_pending_names_the_environment_and_what_it_runs() -> None:
    found = all_on(NEW)
    found["gprd-zone-b"] = Listing(dep(1007, OLD, ref="17-11-auto-deploy"), [dep(1007, OLD)])

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.PENDING)

    assert "'gprd-zone-b'" in hold.message
    assert PROJECT in hold.message
    assert OLD[:11] in hold.message
    assert "17-11-auto-deploy" in hold.message
    assert "1007" in hold.message
    assert COMMIT in hold.message


def test_environment_without_any_success_holds() -> None:
    found = all_on(NEW)
    found["gprd-cny"] = Listing(None, [dep(3001, NEW, "running")])

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.PENDING)

    assert "no successful deployment yet" in hold.message
    assert "3001" in hold.message  # the one under way is named


def test_environments_are_judged_in_the_order_declared() -> None:
    found = all_on(NEW)
    found["gprd-zone-c"] = Unreachable("connection failed: ConnectionError")
    found["gprd-regional"] = Listing(dep(1002, OLD), [dep(1002, OLD)])

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.PENDING)

    assert "'gprd-regional'" in hold.message


@pytest.mark.parametrize("status", ["created", "running", "blocked"])
def test_newer_deployment_in_progress_shuts_the_gate(status: str) -> None:
    found = all_on(NEW)
    found["gprd-regional"] = runs(NEW, 1002, dep(1010, OLD, status))

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.IN_PROGRESS)

    assert "'gprd-regional'" in hold.message
    assert "1010" in hold.message
    assert status in hold.message
    assert OLD[:11] in hold.message


def test_newer_deployment_of_the_same_commit_in_progress_shuts_the_gate_too() -> None:
    found = all_on(NEW)
    found["gprd-cny"] = runs(NEW, 1001, dep(1010, NEW, "running"))

    held(deployments.judge(WATCH, COMMIT, found), deployments.IN_PROGRESS)


@pytest.mark.parametrize("status", ["failed", "canceled", "skipped"])
def test_newer_deployment_that_ended_without_success_does_not_shut_the_gate(status: str) -> None:
    found = all_on(NEW)
    found["gprd-zone-b"] = runs(NEW, 1003, dep(1011, OLD, status))

    assert deployments.judge(WATCH, COMMIT, found) is None


def test_blocked_deployment_older_than_the_success_shuts_the_gate_until_someone_ends_it() -> None:
    # Approved, it deploys the old commit after the new one: left behind, someone cancels it.
    found = all_on(NEW)
    found["gprd-zone-c"] = Listing(dep(1050, NEW), [dep(1050, NEW), dep(1040, OLD, "blocked")])

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.IN_PROGRESS)

    assert "deployment 1040 of " + OLD[:11] + " is blocked" in hold.message
    assert "older than that success" in hold.message
    assert "cancelling it in GitLab" in hold.message


def test_deployment_still_running_older_than_the_success_shuts_the_gate() -> None:
    # Deployment 100 of the old commit is still running when 101 of the new one succeeds.
    found = all_on(NEW)
    found["gprd-regional"] = Listing(dep(101, NEW), [dep(101, NEW), dep(100, OLD, "running")])

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.IN_PROGRESS)

    assert "'gprd-regional'" in hold.message
    assert "deployment 100 of " + OLD[:11] + " is running" in hold.message


def test_created_deployment_older_than_the_success_does_not_shut_the_gate() -> None:
    # It never started: the newer success superseded it.
    found = all_on(NEW)
    found["gprd-zone-c"] = Listing(dep(1050, NEW), [dep(1050, NEW), dep(1040, OLD, "created")])

    assert deployments.judge(WATCH, COMMIT, found) is None


def test_newest_deployment_under_way_is_named_whatever_the_order_of_their_ids() -> None:
    found = all_on(NEW)
    newest = [dep(1060, OLD, "created"), dep(1050, NEW), dep(1040, OLD, "running")]
    found["gprd-cny"] = Listing(dep(1050, NEW), newest)

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.IN_PROGRESS)

    assert "deployment 1060 of" in hold.message
    assert "(and 1 more under way)" in hold.message
    assert "older than that success" not in hold.message


def test_deployment_whose_id_cannot_be_read_counts_as_newer() -> None:
    found = all_on(NEW)
    found["gprd-zone-c"] = runs(NEW, 1004, {"sha": OLD, "status": "running"})

    held(deployments.judge(WATCH, COMMIT, found), deployments.IN_PROGRESS)


def test_a_full_page_of_newer_deployments_holds_for_it_cannot_see_past_it() -> None:
    failed = [dep(2000 - i, OLD, "failed") for i in range(deployments.NEWEST)]
    found = all_on(NEW)
    found["gprd-cny"] = Listing(dep(1001, NEW), failed)

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.PENDING)

    assert f"the {deployments.NEWEST} newest deployments" in hold.message


def test_commit_matches_as_a_prefix_of_the_sha_whatever_its_case() -> None:
    found = all_on(NEW.upper())

    assert deployments.judge(WATCH, COMMIT.upper(), found) is None
    assert deployments.judge(WATCH, NEW, found) is None
    held(deployments.judge(WATCH, OLD[:11], found), deployments.PENDING)


# --- GitLab does not answer --------------------------------------------------------------------


def test_unreachable_gitlab_environment_shuts_the_gate_whatever_the_others_say() -> None:
    found = all_on(NEW)
    found["gprd-zone-b"] = Unreachable("GitLab answered 503: 503 Service Unavailable")

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.UNREACHABLE)

    assert "'gprd-zone-b'" in hold.message
    assert "GitLab answered 503" in hold.message
    assert "the gate stays shut until GitLab answers" in hold.message
    assert hold.reason not in deployments.NEEDS_ACTION


REJECTED = (
    "GitLab answered 401: the token is not accepted (expired, revoked, or the wrong Secret or key)"
)


def test_refused_gitlab_environment_holds_until_someone_mends_the_token() -> None:
    own = {"name": "gate-token", "key": "api"}
    found = all_on(NEW)
    found["gprd-regional"] = Unreachable(REJECTED, needs_action=True)

    hold = held(
        deployments.judge(Watch(URL, PROJECT, FOUR, own), COMMIT, found), deployments.REFUSED
    )

    assert hold.reason in deployments.NEEDS_ACTION
    assert "'gprd-regional'" in hold.message
    assert REJECTED in hold.message  # the reader's words
    assert "Secret 'gate-token', key 'api'" in hold.message
    assert "spec.gitlabDeployments.tokenSecretRef" in hold.message
    assert "read_api" in hold.message
    assert "until GitLab answers" not in hold.message


def test_refused_with_the_migrations_token_names_that_token() -> None:
    found = all_on(NEW)
    found["gprd-cny"] = Unreachable("the token could not be read (LookupError: no key)", True)

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.REFUSED)

    assert "the token could not be read (LookupError: no key)" in hold.message
    assert "spec.tracking.gitlab.tokenSecretRef" in hold.message
    assert "spec.gitlabDeployments (url, project)" in hold.message


def test_environment_not_read_counts_as_unreachable() -> None:
    found = all_on(NEW)
    del found["gprd-zone-c"]

    hold = held(deployments.judge(WATCH, COMMIT, found), deployments.UNREACHABLE)

    assert "'gprd-zone-c'" in hold.message


# --- the commit a migration deploys ------------------------------------------------------------


def migration(**spec: object) -> Body:
    return {
        "metadata": {"name": "pdm", "namespace": "gprd"},
        "spec": {"environment": "gprd", **spec},
    }


TOOLBOX = "registry.gitlab.com/gitlab-org/build/cng/gitlab-toolbox-ee"


def test_commit_is_the_tracked_version() -> None:
    tracked = migration(tracking={"sinks": [], "version": {"ref": "master", "sha": NEW.upper()}})

    assert deployments.commit(tracked, f"{TOOLBOX}:v18.6.0", PROJECT) == NEW


def test_commit_is_the_target_version_of_the_gates_project_before_the_shared_one() -> None:
    sink = {
        "type": "GitLabDeployment",
        "targets": [
            {"project": "gitlab-org/gitaly", "version": {"ref": "master", "sha": OLD}},
            {"project": PROJECT, "version": {"ref": "master", "sha": NEW}},
        ],
    }
    tracked = migration(tracking={"sinks": [sink], "version": {"ref": "x", "sha": OLD}})

    assert deployments.commit(tracked, f"{TOOLBOX}:v18.6.0", PROJECT) == NEW


def test_commit_of_another_projects_target_is_not_taken() -> None:
    sink = {
        "type": "GitLabDeployment",
        "targets": [{"project": "gitlab-org/gitaly", "version": {"ref": "master", "sha": OLD}}],
    }
    tracked = migration(tracking={"sinks": [sink], "version": {"ref": "master", "sha": NEW}})

    assert deployments.commit(tracked, f"{TOOLBOX}:v18.6.0", PROJECT) == NEW


@pytest.mark.parametrize(
    ("spec", "image"),
    [
        ({"gitlabVersion": "18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d"}, f"{TOOLBOX}:v18.6.0"),
        ({}, f"{TOOLBOX}:18-7-202611221200-a1b2c3d4e5f"),
        ({}, f"{TOOLBOX}:18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d-0"),
    ],
)
def test_commit_is_the_one_an_auto_deploy_version_carries(spec: Body, image: str) -> None:
    assert deployments.commit(migration(**spec), image, PROJECT) == "a1b2c3d4e5f"


AUTO_DEPLOY = "18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d"  # carries NEW[:11]


@pytest.mark.parametrize("sha", [NEW, NEW.upper(), NEW[:11]])
def test_tracked_sha_that_agrees_with_the_auto_deploy_version_is_the_commit(sha: str) -> None:
    tracked = migration(
        gitlabVersion=AUTO_DEPLOY, tracking={"version": {"ref": "master", "sha": sha}}
    )

    assert deployments.commit(tracked, f"{TOOLBOX}:v18.6.0", PROJECT) == sha.lower()


def test_the_longer_of_two_agreeing_commits_is_taken() -> None:
    tracked = migration(
        gitlabVersion=AUTO_DEPLOY, tracking={"version": {"ref": "master", "sha": NEW[:7]}}
    )

    assert deployments.commit(tracked, f"{TOOLBOX}:v18.6.0", PROJECT) == NEW[:11]


def test_tracked_sha_other_than_the_auto_deploy_versions_holds_naming_both() -> None:
    # A CI template's stale sha: the gate would answer for a version the Job does not run.
    tracked = migration(
        gitlabVersion=AUTO_DEPLOY, tracking={"version": {"ref": "master", "sha": OLD}}
    )

    hold = deployments.commit(tracked, f"{TOOLBOX}:v18.6.0", PROJECT)

    assert isinstance(hold, Hold)
    assert hold.reason == deployments.COMMIT_MISMATCH
    assert hold.reason in deployments.NEEDS_ACTION
    assert OLD in hold.message
    assert NEW[:11] in hold.message
    assert "spec.tracking.version.sha" in hold.message
    assert f"{AUTO_DEPLOY!r} (spec.gitlabVersion)" in hold.message
    assert "Create the PostDeployMigration again" in hold.message


def test_targets_sha_other_than_the_image_tags_commit_holds_naming_both_fields() -> None:
    sink = {
        "type": "GitLabDeployment",
        "targets": [{"project": PROJECT, "version": {"ref": "master", "sha": OLD}}],
    }
    image = f"{TOOLBOX}:18-7-202611221200-a1b2c3d4e5f"

    hold = deployments.commit(migration(tracking={"sinks": [sink]}), image, PROJECT)

    assert isinstance(hold, Hold)
    assert hold.reason == deployments.COMMIT_MISMATCH
    assert f"the GitLabDeployment target for {PROJECT}" in hold.message
    assert f"the tag of image {image}" in hold.message


def test_release_without_tracked_version_holds_naming_the_fix() -> None:
    hold = deployments.commit(migration(gitlabVersion="18.6.1"), f"{TOOLBOX}:v18.6.1", PROJECT)

    assert isinstance(hold, Hold)
    assert hold.reason == deployments.COMMIT_UNKNOWN
    assert "spec.tracking.version" in hold.message
    assert "'18.6.1'" in hold.message
    assert hold.reason in deployments.NEEDS_ACTION


# --- the token ---------------------------------------------------------------------------------


def tracking_gitlab(url: str) -> Body:
    return {"tracking": {"sinks": [], "gitlab": {"url": url, "tokenSecretRef": SECRET_REF}}}


def test_environments_own_token_comes_first() -> None:
    own = {"name": "gate-token", "key": "api"}
    watch = Watch(URL, PROJECT, FOUR, own)

    assert deployments.token_ref(watch, tracking_gitlab(URL)) == own


@pytest.mark.parametrize("url", [URL, URL + "/"])
def test_migrations_token_is_used_for_the_same_gitlab(url: str) -> None:
    assert deployments.token_ref(Watch(url, PROJECT, FOUR, None), tracking_gitlab(URL + "/")) == (
        SECRET_REF
    )


def test_migrations_token_for_another_gitlab_is_never_sent_to_the_gates() -> None:
    hold = deployments.token_ref(WATCH, tracking_gitlab("https://ops.gitlab.net"))

    assert isinstance(hold, Hold)
    assert hold.reason == deployments.TOKEN_MISSING
    assert "https://ops.gitlab.net" in hold.message
    assert "spec.gitlabDeployments.tokenSecretRef" in hold.message
    assert "spec.tracking.gitlab" in hold.message


def test_no_token_anywhere_holds_naming_both_fixes() -> None:
    hold = deployments.token_ref(WATCH, {"environment": "gprd"})

    assert isinstance(hold, Hold)
    assert hold.reason == deployments.TOKEN_MISSING
    assert "spec.gitlabDeployments.tokenSecretRef" in hold.message
    assert "spec.tracking.gitlab.url" in hold.message


# --- the environment's spec and the queries ----------------------------------------------------


def test_watch_is_read_from_the_environments_spec() -> None:
    spec = {
        "namespaces": ["gprd"],
        "gitlabDeployments": {
            "url": URL,
            "project": PROJECT,
            "environments": list(FOUR),
            "tokenSecretRef": SECRET_REF,
        },
    }

    assert Watch.of(spec) == Watch(URL, PROJECT, FOUR, SECRET_REF)
    assert Watch.of({"namespaces": ["gprd"]}) is None


def test_latest_success_is_asked_as_the_finder_allows() -> None:
    query = deployments.latest_success_query("gprd")

    # app/finders/deployments_finder.rb: finished_at order needs a finished_* filter,
    # which needs status=success.
    assert query["order_by"] == "finished_at"
    assert query["finished_after"] == deployments.EPOCH
    assert query["status"] == "success"
    assert query["per_page"] == 1
    assert deployments.newest_query("gprd") == {
        "environment": "gprd",
        "order_by": "id",
        "sort": "desc",
        "per_page": deployments.NEWEST,
    }
