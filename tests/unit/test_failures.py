"""The class of a failure, read from Rails' own abort text (tests/unit/golden/rails/,
real Rails 6.1 output) and the pod's end: one table, and the cases that must
never be given a benign class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pdm_operator import failures

GOLDEN = Path(__file__).parent / "golden" / "rails"


def abort(*errors: str) -> str:
    """Rake's abort of a migration, as Rails 6.1 prints it, with ``errors`` chained."""
    chain = "\n\nCaused by:\n".join(errors)
    return (
        "main: == 20261115000002 RemoveArchivedFromProjects: migrating =====\n"
        "rake aborted!\n"
        "StandardError: An error has occurred, this and all later migrations canceled:\n\n"
        f"{chain}\n"
        "/srv/gitlab/vendor/bundle/ruby/lib/active_record/migration.rb:1:in `exec'\n"
        "Tasks: TOP => db:migrate:main\n"
        "(See full trace by running task with --trace)\n"
    )


@pytest.mark.parametrize(
    ("golden", "cls"),
    [
        ("migrate-lock-timeout.txt", failures.LOCK_CONTENTION),
        ("migrate-unique-violation.txt", failures.DATA_ERROR),
    ],
)
def test_real_rails_aborts_are_classed_by_their_errors(golden: str, cls: str) -> None:
    assert failures.classify((GOLDEN / golden).read_text(), exit_code=1) == cls


#: Errors the Rails 6.1 golden files do not hold, in Rails' and the pg gem's words.
CRAFTED = [
    (
        "Gitlab::Database::WithLockRetries::AttemptsExhaustedError: configured attempts to "
        "obtain locks are exhausted",
        failures.LOCK_CONTENTION,
    ),
    (
        "ActiveRecord::Deadlocked: PG::TRDeadlockDetected: ERROR:  deadlock detected",
        failures.LOCK_CONTENTION,
    ),
    (
        "ActiveRecord::QueryCanceled: PG::QueryCanceled: ERROR:  canceling statement due to "
        "statement timeout",
        failures.TIMEOUT,
    ),
    (
        "ActiveRecord::InvalidForeignKey: PG::ForeignKeyViolation: ERROR:  insert or update "
        'on table "issues" violates foreign key constraint',
        failures.DATA_ERROR,
    ),
    (
        'ActiveRecord::NotNullViolation: PG::NotNullViolation: ERROR:  column "path" of '
        'relation "projects" contains null values',
        failures.DATA_ERROR,
    ),
    (
        'PG::CheckViolation: ERROR:  check constraint "check_1" of relation "projects" is '
        "violated by some row",
        failures.DATA_ERROR,
    ),
    (
        "ActiveRecord::ConnectionNotEstablished: PG::ConnectionBad: could not connect to "
        "server: Connection refused",
        failures.INFRASTRUCTURE,
    ),
    # Alone, a transaction aborted earlier says nothing of why.
    (
        "ActiveRecord::StatementInvalid: PG::InFailedSqlTransaction: ERROR:  current "
        "transaction is aborted, commands ignored until end of transaction block",
        failures.UNKNOWN,
    ),
    ('PG::DuplicateTable: ERROR:  relation "index_x" already exists', failures.UNKNOWN),
    ("NoMethodError: undefined method `foo' for nil:NilClass", failures.UNKNOWN),
]


@pytest.mark.parametrize(("error", "cls"), CRAFTED, ids=[c for _, c in CRAFTED])
def test_rails_errors_the_golden_files_do_not_hold_are_classed_by_their_words(
    error: str, cls: str
) -> None:
    assert failures.classify(abort(error), exit_code=1) == cls


def test_a_transaction_aborted_by_a_lock_timeout_is_lock_contention() -> None:
    log = abort(
        "ActiveRecord::StatementInvalid: PG::InFailedSqlTransaction: ERROR:  current "
        "transaction is aborted",
        "ActiveRecord::LockWaitTimeout: PG::LockNotAvailable: ERROR:  canceling statement "
        "due to lock timeout",
    )
    assert failures.classify(log) == failures.LOCK_CONTENTION


def test_errors_of_two_classes_are_unknown_never_the_benign_one() -> None:
    log = abort(
        "PG::UniqueViolation: ERROR:  could not create unique index",
        "PG::LockNotAvailable: ERROR:  canceling statement due to lock timeout",
    )
    assert failures.classify(log) == failures.UNKNOWN


def test_words_in_a_backtrace_frame_or_an_earlier_abort_do_not_count() -> None:
    earlier = abort("PG::LockNotAvailable: ERROR:  canceling statement due to lock timeout")
    frame = "/srv/gitlab/lib/gitlab/database/with_lock_retries.rb:12:in `run'\n"
    last = abort("PG::UniqueViolation: ERROR:  could not create unique index").replace(
        "Tasks: TOP", frame + "Tasks: TOP"
    )
    assert failures.classify(earlier + last) == failures.DATA_ERROR


@pytest.mark.parametrize(
    ("kwargs", "cls"),
    [
        ({"pod_reason": "OOMKilled", "exit_code": 137}, failures.INFRASTRUCTURE),
        ({"exit_code": 137}, failures.INFRASTRUCTURE),
        ({"job_reason": "DeadlineExceeded"}, failures.INFRASTRUCTURE),
        ({"pod_reason": "ImagePullBackOff"}, failures.INFRASTRUCTURE),
        ({"pod_reason": "InvalidImageName"}, failures.UNKNOWN),
        ({"pod_reason": "PodCreateFailed"}, failures.UNKNOWN),
        ({"pod_reason": "Error", "exit_code": 1}, failures.UNKNOWN),
        ({"job_reason": "BackoffLimitExceeded"}, failures.UNKNOWN),
    ],
)
def test_without_rails_words_the_pods_end_decides(kwargs: dict[str, Any], cls: str) -> None:
    assert failures.classify("Running db:migrate:main rake task\n", **kwargs) == cls


def test_rails_words_go_before_the_pods_end() -> None:
    log = (GOLDEN / "migrate-lock-timeout.txt").read_text()
    assert failures.classify(log, job_reason="DeadlineExceeded") == failures.LOCK_CONTENTION
