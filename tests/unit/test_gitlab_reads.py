"""The GitLab deployments gate's reader against the fake GitLab, a real HTTP server that
is as strict as GitLab's DeploymentsFinder: the queries it accepts, the failures that
keep the gate shut without a thread sleeping, one attempt per TTL, no token in a word."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import REGISTRY

from pdm_operator import deployments, gitlab_reads, when
from pdm_operator.deployments import Listing, Unreachable, Watch
from pdm_operator.errors import Transient
from pdm_operator.gitlab_reads import DeploymentsReader
from pdm_operator.when import Issues, LockSource
from tests.support.fake_gitlab import FakeGitLab, project_path
from tests.support.faults import FakeServer

PROJECT = "gitlab-org/gitlab"
FOUR = ("gprd-cny", "gprd-regional", "gprd-zone-b", "gprd-zone-c")
TTL = 15.0


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab() as server:
        yield server
        assert server.server_errors == []


@pytest.fixture
def shas(fake: FakeGitLab) -> list[str]:
    return fake.add_commits(PROJECT, count=2)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reader(clock: Clock) -> DeploymentsReader:
    return DeploymentsReader(timeout=2.0, ttl=TTL, clock=clock)


def watch(fake: FakeServer, environments: tuple[str, ...] = FOUR) -> Watch:
    return Watch(fake.url, PROJECT, environments, None)


def tick() -> None:
    """Let the fake's clock (milliseconds, as GitLab's JSON) move on, so that two
    deployments do not finish at one instant: their order by finish time would be
    the database's whim."""
    time.sleep(0.002)


def errors(environment: str, reason: str) -> float:
    labels = {"gitlab_environment": environment, "reason": reason}
    return REGISTRY.get_sample_value("pdm_operator_gitlab_gate_errors_total", labels) or 0.0


def listing(answer: Listing | Unreachable) -> Listing:
    assert isinstance(answer, Listing), answer
    return answer


def unreachable(answer: Listing | Unreachable, *, needs_action: bool = False) -> str:
    """The message of an Unreachable, which only a person ends when ``needs_action``."""
    assert isinstance(answer, Unreachable), answer
    assert answer.needs_action is needs_action, answer
    return answer.message


def read_all(
    reader: DeploymentsReader, w: Watch, fake: FakeGitLab
) -> dict[str, Listing | Unreachable]:
    return {env: reader.read(w, env, lambda: fake.token) for env in w.environments}


# --- the queries ---------------------------------------------------------------------------


def test_reads_the_latest_success_and_the_newest_with_queries_the_finder_accepts(
    fake: FakeGitLab, shas: list[str], reader: DeploymentsReader
) -> None:
    old, new = shas
    first = fake.add_ci_deployment(PROJECT, "gprd", "master", old, "success")
    tick()
    second = fake.add_ci_deployment(PROJECT, "gprd", "master", new, "success")
    running = fake.add_ci_deployment(PROJECT, "gprd", "master", old, "running")
    fake.add_ci_deployment(PROJECT, "gstg", "master", old, "running")  # another environment

    answer = listing(reader.read(watch(fake), "gprd", lambda: fake.token))

    assert answer.latest_success is not None
    assert answer.latest_success["id"] == second["id"]
    assert [d["id"] for d in answer.newest] == [running["id"], second["id"], first["id"]]
    sent = fake.requests_to(f"/api/v4/projects/{project_path(PROJECT)}/deployments")
    assert [r.status for r in sent] == [200, 200]
    assert sent[0].query["order_by"] == ["finished_at"]
    assert sent[0].query["finished_after"] == [deployments.EPOCH]
    assert sent[0].query["status"] == ["success"]
    assert sent[0].query["environment"] == ["gprd"]
    assert sent[1].query["order_by"] == ["id"]
    assert sent[1].query["sort"] == ["desc"]


def test_the_finder_refuses_the_finish_order_without_its_filter(fake: FakeGitLab) -> None:
    # Why the query carries finished_after=1970: DeploymentsFinder answers 400 otherwise.
    query = deployments.latest_success_query("gprd")
    del query["finished_after"]

    response = requests.get(
        f"{fake.url}/api/v4/projects/{project_path(PROJECT)}/deployments",
        params=query,
        headers={"PRIVATE-TOKEN": fake.token},
        timeout=5,
    )

    assert response.status_code == 400
    assert "must be paired" in response.json()["message"]


def test_latest_success_is_the_one_that_finished_last_not_the_one_created_last(
    fake: FakeGitLab, shas: list[str], reader: DeploymentsReader
) -> None:
    # A slow cluster's deploy of the old commit ends after the new one's.
    old, new = shas
    slow = fake.add_ci_deployment(PROJECT, "gprd", "master", old, "running")
    fake.add_ci_deployment(PROJECT, "gprd", "master", new, "success")
    tick()
    fake.move_deployment(PROJECT, slow["id"], "success")
    w = watch(fake, ("gprd",))

    answer = listing(reader.read(w, "gprd", lambda: fake.token))

    assert answer.latest_success is not None
    assert answer.latest_success["id"] == slow["id"]
    hold = deployments.judge(w, new, {"gprd": answer})
    assert hold is not None
    assert hold.reason == deployments.PENDING


def test_environment_without_deployments_has_no_success(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    answer = listing(reader.read(watch(fake), "gprd-zone-c", lambda: fake.token))

    assert answer == Listing(None, [])


def test_gate_opens_when_the_last_environment_finishes_its_deploy(
    fake: FakeGitLab, shas: list[str], reader: DeploymentsReader, clock: Clock
) -> None:
    old, new = shas
    w = watch(fake)
    for env in FOUR:
        fake.add_ci_deployment(PROJECT, env, "master", old, "success")
    tick()
    for env in FOUR[:3]:
        fake.add_ci_deployment(PROJECT, env, "master", new, "success")
    # The last cluster waits for approval, then deploys.
    moving = fake.add_ci_deployment(PROJECT, FOUR[3], "master", new, "blocked")

    hold = deployments.judge(w, new[:11], read_all(reader, w, fake))
    assert hold is not None
    assert hold.reason == deployments.PENDING
    assert "'gprd-zone-c'" in hold.message

    fake.move_deployment(PROJECT, moving["id"], "running")
    clock.advance(TTL)
    hold = deployments.judge(w, new[:11], read_all(reader, w, fake))
    assert hold is not None
    assert "running" in hold.message

    fake.move_deployment(PROJECT, moving["id"], "success")
    clock.advance(TTL)
    assert deployments.judge(w, new[:11], read_all(reader, w, fake)) is None


def test_newer_blocked_deploy_shuts_an_open_gate(
    fake: FakeGitLab, shas: list[str], reader: DeploymentsReader, clock: Clock
) -> None:
    old, new = shas
    w = watch(fake, ("gprd",))
    fake.add_ci_deployment(PROJECT, "gprd", "master", new, "success")
    assert deployments.judge(w, new, read_all(reader, w, fake)) is None

    blocked = fake.add_ci_deployment(PROJECT, "gprd", "master", old, "blocked")
    clock.advance(TTL)
    hold = deployments.judge(w, new, read_all(reader, w, fake))

    assert hold is not None
    assert hold.reason == deployments.IN_PROGRESS
    assert str(blocked["id"]) in hold.message

    fake.move_deployment(PROJECT, blocked["id"], "canceled")
    clock.advance(TTL)
    assert deployments.judge(w, new, read_all(reader, w, fake)) is None


# --- failures: the gate stays shut, no thread sleeps -------------------------------------------


def test_server_error_is_unreachable_and_counted(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    fake.faults.error(500)
    before = errors("gprd-regional", "http_500")

    message = unreachable(reader.read(watch(fake), "gprd-regional", lambda: fake.token))

    assert "GitLab answered 500" in message
    assert errors("gprd-regional", "http_500") == before + 1


def test_rate_limit_with_retry_after_never_blocks_and_is_kept_until_then(
    fake: FakeGitLab, reader: DeploymentsReader, clock: Clock
) -> None:
    fake.faults.error(429, headers={"Retry-After": "3600"})
    w = watch(fake)

    started = time.monotonic()
    message = unreachable(reader.read(w, "gprd-cny", lambda: fake.token))
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert "429" in message
    assert "Retry-After 3600s" in message
    assert len(fake.requests) == 1
    clock.advance(TTL + 1)  # past the TTL, within Retry-After (capped): still no attempt
    unreachable(reader.read(w, "gprd-cny", lambda: fake.token))
    assert len(fake.requests) == 1
    clock.advance(gitlab_reads.MAX_BACKOFF)
    unreachable(reader.read(w, "gprd-cny", lambda: fake.token))
    assert len(fake.requests) == 2


def test_slow_gitlab_times_out_within_the_timeout(fake: FakeGitLab, clock: Clock) -> None:
    fake.faults.slow(3.0, times=1)
    reader = DeploymentsReader(timeout=0.3, ttl=TTL, clock=clock)
    before = errors("gprd-zone-b", "timeout")

    started = time.monotonic()
    message = unreachable(reader.read(watch(fake), "gprd-zone-b", lambda: fake.token))

    assert time.monotonic() - started < 2.0
    assert message == "no answer within 0.3s"
    assert errors("gprd-zone-b", "timeout") == before + 1


def test_dropped_connection_is_unreachable(fake: FakeGitLab, reader: DeploymentsReader) -> None:
    fake.faults.reset(times=1)
    before = errors("gprd-zone-c", "connection")

    message = unreachable(reader.read(watch(fake), "gprd-zone-c", lambda: fake.token))

    assert message.startswith("connection failed")
    assert errors("gprd-zone-c", "connection") == before + 1


def test_gitlab_down_is_unreachable(fake: FakeGitLab, reader: DeploymentsReader) -> None:
    w = watch(fake)
    fake.down()

    message = unreachable(reader.read(w, "gprd-cny", lambda: fake.token))

    assert message.startswith("connection failed")


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (403, "may not read the deployments of gitlab-org/gitlab"),
        (404, "does not exist, or the token's user cannot see it"),
    ],
)
def test_refusal_waits_for_a_person_in_words_they_can_act_on(
    fake: FakeGitLab, reader: DeploymentsReader, status: int, words: str
) -> None:
    fake.faults.error(status)

    answer = reader.read(watch(fake), "gprd", lambda: fake.token)

    assert words in unreachable(answer, needs_action=True)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_failure_may_pass_by_itself(
    fake: FakeGitLab, reader: DeploymentsReader, status: int
) -> None:
    fake.faults.error(status)

    answer = reader.read(watch(fake), "gprd", lambda: fake.token)

    assert f"GitLab answered {status}" in unreachable(answer, needs_action=False)


def test_redirect_is_not_followed_so_the_token_stays_where_it_was_sent(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    with FakeGitLab() as elsewhere:
        fake.faults.error(302, headers={"Location": f"{elsewhere.url}/api/v4/projects/1"})

        answer = reader.read(watch(fake), "gprd", lambda: fake.token)

        assert elsewhere.requests == []
    message = unreachable(answer, needs_action=True)
    assert "redirect" in message
    assert elsewhere.url in message


# --- the token ----------------------------------------------------------------------------------


def test_rejected_token_is_unreachable_without_the_token_in_it(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    wrong = "glpat-not-the-right-one"

    message = unreachable(reader.read(watch(fake), "gprd", lambda: wrong), needs_action=True)

    assert "401" in message
    assert "not accepted" in message
    assert wrong not in message


def test_token_echoed_by_gitlab_is_scrubbed(fake: FakeGitLab, reader: DeploymentsReader) -> None:
    fake.faults.error(502, body={"message": f"upstream rejected {fake.token} at the proxy"})

    message = unreachable(reader.read(watch(fake), "gprd", lambda: fake.token))

    assert fake.token not in message
    assert "[REDACTED]" in message


def test_token_that_cannot_be_read_sends_nothing(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    def missing() -> str:
        raise KeyError("Secret gprd/gitlab-read has no key 'token'")

    message = unreachable(reader.read(watch(fake), "gprd", missing), needs_action=True)

    assert "the token could not be read" in message
    assert fake.requests == []


def test_token_the_api_server_failed_to_read_may_pass_by_itself(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    def api_server_down() -> str:
        raise Transient("the API server did not answer", 503)

    message = unreachable(reader.read(watch(fake), "gprd", api_server_down), needs_action=False)

    assert "the token could not be read (Transient" in message
    assert fake.requests == []


def test_rejected_token_shuts_the_gate_until_someone_mends_it(
    fake: FakeGitLab, shas: list[str], reader: DeploymentsReader
) -> None:
    fake.add_ci_deployment(PROJECT, "gprd", "master", shas[0], "success")
    w = watch(fake, ("gprd",))

    hold = deployments.judge(w, shas[0], {"gprd": reader.read(w, "gprd", lambda: "glpat-revoked")})

    assert hold is not None
    assert hold.reason == deployments.REFUSED
    assert "GitLab answered 401: the token is not accepted" in hold.message
    assert "glpat-revoked" not in hold.message


# --- the cache -----------------------------------------------------------------------------------


def test_answers_are_reused_for_the_ttl(
    fake: FakeGitLab, shas: list[str], reader: DeploymentsReader, clock: Clock
) -> None:
    fake.add_ci_deployment(PROJECT, "gprd", "master", shas[0], "success")
    w = watch(fake)

    first = reader.read(w, "gprd", lambda: fake.token)
    clock.advance(TTL - 1)
    assert reader.read(w, "gprd", lambda: fake.token) == first
    assert len(fake.requests) == 2  # one attempt: two reads

    clock.advance(1)
    reader.read(w, "gprd", lambda: fake.token)
    assert len(fake.requests) == 4


def test_a_down_gitlab_costs_one_attempt_per_environment_per_ttl_whatever_the_migrations(
    fake: FakeGitLab, reader: DeploymentsReader, clock: Clock
) -> None:
    fake.faults.error(500)
    w = watch(fake)
    before = errors("gprd-cny", "http_500")

    for _ in range(10):  # ten migrations of the environment look
        for env in FOUR:
            unreachable(reader.read(w, env, lambda: fake.token))

    assert len(fake.requests) == len(FOUR)
    assert errors("gprd-cny", "http_500") == before + 1
    clock.advance(TTL)
    reader.read(w, "gprd-cny", lambda: fake.token)
    assert len(fake.requests) == len(FOUR) + 1


def test_another_token_is_another_question(fake: FakeGitLab, reader: DeploymentsReader) -> None:
    w = watch(fake)

    listing(reader.read(w, "gprd", lambda: fake.token))
    unreachable(reader.read(w, "gprd", lambda: "glpat-revoked"), needs_action=True)

    assert len(fake.requests) == 3


def test_concurrent_readers_share_one_attempt(fake: FakeGitLab, reader: DeploymentsReader) -> None:
    fake.faults.slow(0.3, times=1)
    w = watch(fake)
    answers: list[Listing | Unreachable] = []
    lock = threading.Lock()

    def look() -> None:
        answer = reader.read(w, "gprd", lambda: fake.token)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=look) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(answers) == 8
    assert all(isinstance(a, Listing) for a in answers)
    assert len(fake.requests) == 2


# --- a change lock read from GitLab's issues ---------------------------------------------------

LOCKS = "gitlab-com/gl-infra/production"
LABELS = ("change::in-progress", "blocks deployments")


def source(fake: FakeServer) -> LockSource:
    return LockSource(fake.url, LOCKS, LABELS, None)


def test_only_open_issues_with_every_label_lock(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    fake.add_issue(LOCKS, "Half-labelled", labels=["change::in-progress"])
    done = fake.add_issue(LOCKS, "Over", labels=list(LABELS))
    fake.close_issue(LOCKS, done["iid"])
    assert reader.read_issues(source(fake), lambda: fake.token) == Issues([])

    fake.add_issue(LOCKS, "Database maintenance", labels=[*LABELS, "C1"])
    again = reader.read_issues(source(fake), lambda: fake.token)
    assert again == Issues([]), "an answer is kept for the TTL"


def test_an_open_change_request_locks_naming_it(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    live = fake.add_issue(LOCKS, "Database maintenance", labels=[*LABELS, "C1"])
    found = reader.read_issues(source(fake), lambda: fake.token)
    assert isinstance(found, Issues)
    assert [i["iid"] for i in found.found] == [live["iid"]]
    hold = when.locked_by_issues("gprd", source(fake), found)
    assert hold is not None
    assert hold.reason == when.CHANGE_LOCKED
    assert "Database maintenance" in hold.message


def test_an_unreadable_lock_source_is_not_taken_to_be_unlocked(
    fake: FakeGitLab, reader: DeploymentsReader
) -> None:
    fake.faults.error(503)
    found = reader.read_issues(source(fake), lambda: fake.token)
    assert isinstance(found, Unreachable)
    hold = when.locked_by_issues("gprd", source(fake), found)
    assert hold is not None
    assert hold.reason == when.CHANGE_LOCK_UNKNOWN
    assert "503" in hold.message
