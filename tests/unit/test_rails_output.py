"""The operator's readers against Rails' own output, captured from the stand-in
toolbox running Debian's Rails 6.1 (hack/standin-toolbox/): the pre-flight's
``db:migrate:status`` table and the failing migration of ``db:migrate``.

Captured, not written: a reader that only matches output made to look like
Rails' would not see what Rails really prints after an error (Rake's whole
backtrace and each "Caused by:" error).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pdm_operator import jobs, preflight

RAILS = Path(__file__).parent / "golden" / "rails"
MAIN, CI = "gitlabhq_production", "gitlabhq_production_ci"
POST = [
    ("20261115000001", "Add unique index on project path"),
    ("20261115000002", "Remove archived from projects"),
    ("20261115000003", "Backfill project statistics"),
    ("20261115000004", "Add index on ci builds status"),
]


def output(name: str) -> str:
    return (RAILS / f"{name}.txt").read_text()


def test_the_status_table_of_two_databases_lists_each_databases_down_rows() -> None:
    answer = preflight.parse_status(output("migrate-status-two-databases"))
    assert answer is not None
    assert answer.databases == (MAIN, CI)
    assert [(p.database, p.version, p.name) for p in answer.pending] == [
        (db, version, name) for db in (MAIN, CI) for version, name in POST
    ]


def test_the_status_table_with_everything_applied_is_nothing_pending() -> None:
    answer = preflight.parse_status(output("migrate-status-all-up"))
    assert answer is not None
    assert answer.databases == (MAIN, CI)
    assert answer.pending == ()


@pytest.mark.parametrize("cut", [200, 400, 600])
def test_a_status_table_cut_anywhere_is_unreadable_not_nothing_pending(cut: int) -> None:
    assert preflight.parse_status(output("migrate-status-two-databases")[:cut]) is None


@pytest.mark.parametrize(
    ("name", "version", "migration", "error"),
    [
        (
            "migrate-lock-timeout",
            "20261115000002",
            "RemoveArchivedFromProjects",
            "PG::LockNotAvailable: ERROR:  canceling statement due to lock timeout",
        ),
        (
            "migrate-unique-violation",
            "20261115000001",
            "AddUniqueIndexOnProjectPath",
            'PG::UniqueViolation: ERROR:  could not create unique index "index_projects_on_path"',
        ),
    ],
)
def test_the_failing_migration_is_named_from_rails_abort(
    name: str, version: str, migration: str, error: str
) -> None:
    log = output(name)
    failed = jobs.failed_migration(log)
    # GitLab's migrations announce themselves with their database's name first.
    assert f"main: == {version} {migration}: migrating" in log
    assert failed == jobs.FailedMigration(version, migration, error, "main")
    # The last 2 KiB (the kubelet's termination message) hold only Rake's backtrace:
    # the failing migration is read from further up the log.
    assert jobs.failed_migration(jobs.tail(log)) is None
    lines = log.splitlines()
    assert jobs.failed_migration("\n".join(lines[-20:])) is None  # nor do the last 20 lines
    assert jobs.failed_migration("\n".join(lines[-jobs.FAILURE_LOG_LINES :])) == failed


@pytest.mark.parametrize("name", ["migrate-lock-timeout", "migrate-unique-violation"])
def test_the_status_keeps_the_failing_migration_and_the_error_not_the_backtrace(
    name: str,
) -> None:
    excerpt = jobs.failure_excerpt(output(name))
    failed = jobs.failed_migration(output(name))
    assert failed is not None
    assert excerpt.startswith(f"main: == {failed.version} {failed.name}: migrating")
    assert failed.error in excerpt
    assert "rake aborted!" in excerpt
    assert ":in `" not in excerpt  # no frame of the backtrace
    assert "Caused by:" not in excerpt
    assert len(excerpt) <= jobs.LOG_TAIL_LIMIT


def test_a_successful_run_names_no_failing_migration() -> None:
    log = output("migrate-post-deployment")
    assert jobs.failed_migration(log) is None
    assert jobs.failure_excerpt(log) == jobs.tail(log)


def stderr_first(log: str) -> str:
    """``log`` as a container records it when Ruby buffers its stdout (a pipe):
    Rake's abort (stderr) first, Rails' announcements (stdout) at exit."""
    lines = log.splitlines(keepends=True)
    abort = lines.index("rake aborted!\n")
    return "".join(lines[abort:] + lines[:abort])


@pytest.mark.parametrize("name", ["migrate-lock-timeout", "migrate-unique-violation"])
def test_the_abort_before_the_announcements_still_names_migration_and_error(name: str) -> None:
    log = output(name)
    reordered = stderr_first(log)
    assert jobs.failed_migration(reordered) == jobs.failed_migration(log)
    excerpt = jobs.failure_excerpt(reordered)
    failed = jobs.failed_migration(log)
    assert failed is not None
    assert excerpt.startswith("rake aborted!")
    assert failed.error in excerpt
    assert f"== {failed.version} {failed.name}: migrating" in excerpt
    assert ":in `" not in excerpt


@pytest.mark.parametrize("stderr_first", [True, False])
def test_an_error_that_is_not_rails_abort_is_kept_whichever_pipe_came_first(
    stderr_first: bool,
) -> None:
    announce = "== 20261201000001 AddIndexToCiBuilds: migrating\n"
    error = "PG::DuplicateTable: relation already exists\n"
    log = error + announce if stderr_first else announce + error
    excerpt = jobs.failure_excerpt(log)
    assert "PG::DuplicateTable" in excerpt
    assert "AddIndexToCiBuilds: migrating" in excerpt
