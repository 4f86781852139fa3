"""A retry by policy (pure): which failures it covers, how it counts, what it copies,
and what it takes for its own when its name is taken."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from pdm_operator import failures, model, retries
from pdm_operator.model import Body

FAILED_AT = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
POLICY = {"classes": ["LockContention"], "attempts": 2, "after": "10m"}


def failed(name: str = "gprd-1300", attempt: int | None = None, **spec: Any) -> Body:
    meta: Body = {"name": name, "namespace": "gitlab", "uid": "u", "labels": {"team": "db"}}
    if attempt is not None:
        meta["annotations"] = {
            retries.ANNOTATION_FIRST: "gprd-1300",
            retries.ANNOTATION_ATTEMPT: str(attempt),
        }
    return {
        "metadata": meta,
        "spec": {"environment": "gprd", "mode": "Run", "image": {"reference": "r/t:1"}, **spec},
        "status": {"conditions": [{"type": model.FAILED, "status": "True"}]},
    }


def plan(m: Body, policy: Body | None = None, cls: str = failures.LOCK_CONTENTION) -> Any:
    return retries.planned(m, "gprd", POLICY if policy is None else policy, cls, FAILED_AT)


def test_a_first_failure_of_a_class_listed_is_retried_after_the_delay() -> None:
    made = plan(failed())
    assert isinstance(made, retries.Planned)
    assert (made.name, made.attempt, made.not_before) == (
        "gprd-1300-retry-1",
        1,
        "2026-12-06T13:10:00Z",
    )
    assert made.migration["spec"]["notBefore"] == "2026-12-06T13:10:00Z"
    assert made.migration["metadata"]["namespace"] == "gitlab"


@pytest.mark.parametrize(
    "cls", [failures.TIMEOUT, failures.DATA_ERROR, failures.INFRASTRUCTURE, failures.UNKNOWN]
)
def test_a_class_the_policy_does_not_list_is_not_its_business(cls: str) -> None:
    assert plan(failed(), cls=cls) is None


def test_no_policy_and_a_dry_run_make_no_retry() -> None:
    assert plan(failed(), policy={}) is None
    assert plan(failed(mode="DryRun")) is None


def test_the_chain_counts_to_the_policys_attempts_and_stops() -> None:
    second = plan(failed("gprd-1300-retry-1", attempt=1))
    assert isinstance(second, retries.Planned)
    assert second.name == "gprd-1300-retry-2"
    assert second.migration["metadata"]["annotations"] == {
        model.ANNOTATION_RETRY_OF: "gprd-1300-retry-1",
        retries.ANNOTATION_FIRST: "gprd-1300",
        retries.ANNOTATION_ATTEMPT: "2",
    }
    done = plan(failed("gprd-1300-retry-2", attempt=2))
    assert isinstance(done, retries.NoRetry)
    assert "retried 2 time(s)" in done.message


def test_an_attempt_count_that_cannot_be_read_ends_the_chain() -> None:
    m = failed("gprd-1300-retry-1", attempt=1)
    m["metadata"]["annotations"][retries.ANNOTATION_ATTEMPT] = "-1"
    assert isinstance(plan(m), retries.NoRetry)
    old_style = failed("gprd-1300-retry-1")
    old_style["metadata"]["annotations"] = {model.ANNOTATION_RETRY_OF: "gprd-1300"}
    assert isinstance(plan(old_style), retries.NoRetry)


def test_a_policy_cannot_ask_for_more_than_the_crds_most() -> None:
    made = plan(failed("x", attempt=5), policy={**POLICY, "attempts": 50})
    assert isinstance(made, retries.NoRetry)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("1h30m", 5400), ("45s", 45), ("1h", 3600), ("", None), ("10", None)],
)
def test_a_delay_reads_as_the_crds_pattern(text: str, seconds: int | None) -> None:
    found = retries.duration(text)
    assert (found.total_seconds() if found is not None else None) == seconds


def its_retry() -> tuple[Body, Body]:
    made = plan(failed())
    assert isinstance(made, retries.Planned)
    stored = copy.deepcopy(made.migration)
    stored["spec"]["pipeline"] = "Regular"  # a CRD default the API server fills in
    return made.migration, stored


def test_the_retry_found_under_its_name_is_its_own_when_all_agree() -> None:
    made, stored = its_retry()
    found = {**copy.deepcopy(stored), "status": {"state": "Pending"}}
    found["metadata"]["uid"] = "other"
    assert retries.is_its_retry(found, made, stored)


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f["spec"].update(image={"reference": "evil/image:1"}),
        lambda f: f["spec"].update(notBefore="2026-12-06T13:00:01Z"),
        lambda f: f["metadata"]["labels"].update(extra="x"),
        lambda f: f["metadata"]["annotations"].update({retries.ANNOTATION_ATTEMPT: "2"}),
        lambda f: f["metadata"]["annotations"].pop(retries.ANNOTATION_FIRST),
    ],
)
def test_anything_else_under_the_retrys_name_is_not_taken_for_it(change: Any) -> None:
    made, stored = its_retry()
    found = copy.deepcopy(stored)
    change(found)
    assert not retries.is_its_retry(found, made, stored)
    assert not retries.is_its_retry(None, made, stored)


def test_the_dry_run_asks_under_a_generated_name() -> None:
    made, _ = its_retry()
    probe = retries.for_comparison(made)
    assert "name" not in probe["metadata"]
    assert probe["metadata"]["generateName"] == "pdm-retry-check-"


def test_a_retry_of_an_only_run_names_what_it_did_not_apply() -> None:
    failed = {
        "metadata": {"name": "gprd-1", "namespace": "gitlab"},
        "spec": {"environment": "gprd", "migrations": {"only": ["3", "1", "2"]}},
        "status": {
            "pendingMigrations": [
                {"database": "main", "version": v, "action": "Apply"} for v in ("1", "2", "3")
            ],
            "failure": {"migration": {"version": "2"}},
        },
    }
    made = retries.retry_of(failed, "gprd-1-retry-1", check=False)
    assert made["spec"]["migrations"]["only"] == ["3", "2"]
    # Where it stopped is not known: only stays, the retry's pre-flight decides.
    failed["status"]["failure"] = {}
    made = retries.retry_of(failed, "gprd-1-retry-1", check=False)
    assert made["spec"]["migrations"]["only"] == ["3", "1", "2"]
