"""Reading Rails' ``db:migrate:status`` and building the pre-flight Job."""

from __future__ import annotations

import pytest

from pdm_operator import model, preflight, render, templates
from pdm_operator.model import Body
from pdm_operator.preflight import Pending

#: What ``gitlab-rake db:migrate:status`` prints for GitLab's two databases
#: (Rails' ``migrate_status``: center(8), ljust(14), humanized file names),
#: after the ENTRYPOINT's and wait-for-deps' own lines.
TWO_DATABASES = """\
Rendered /srv/gitlab/config/database.yml
Database is up

database: gitlabhq_production

 Status   Migration ID    Migration Name
--------------------------------------------------
   up     20261101000001  Create projects
   up     20261101000002  ********** NO FILE **********
  down    20261115000001  Add unique index on project path
  down    20261115000002  Remove archived from projects


database: gitlabhq_production_ci

 Status   Migration ID    Migration Name
--------------------------------------------------
   up     20261101000001  Create projects
  down    20261115000002  Remove archived from projects

"""


def test_the_down_rows_of_every_database_are_pending_in_order() -> None:
    answer = preflight.parse_status(TWO_DATABASES)
    assert answer is not None
    assert answer.databases == ("gitlabhq_production", "gitlabhq_production_ci")
    assert answer.pending == (
        Pending("gitlabhq_production", "20261115000001", "Add unique index on project path"),
        Pending("gitlabhq_production", "20261115000002", "Remove archived from projects"),
        Pending("gitlabhq_production_ci", "20261115000002", "Remove archived from projects"),
    )


def test_everything_up_is_an_answer_with_nothing_pending() -> None:
    log = TWO_DATABASES.replace("  down  ", "   up   ")
    answer = preflight.parse_status(log)
    assert answer is not None
    assert answer.pending == ()
    assert len(answer.databases) == 2


def test_no_status_table_is_no_answer() -> None:
    assert preflight.parse_status("Rendered x\nDatabase is up\n") is None
    # Rails aborts before printing anything when schema_migrations is missing.
    assert preflight.parse_status("Schema migrations table does not exist yet.\n") is None


def cut_after(text: str, nth: int = 1) -> str:
    """TWO_DATABASES up to the end of the ``nth`` occurrence of ``text``."""
    at = -1
    for _ in range(nth):
        at = TWO_DATABASES.index(text, at + 1)
    return TWO_DATABASES[: at + len(text)]


DASHES = "-" * 50


def test_a_block_cut_before_its_rows_is_no_answer() -> None:
    assert preflight.parse_status("\ndatabase: main\n\n Status   Migration ID") is None
    assert preflight.parse_status(cut_after("database: gitlabhq_production\n")) is None
    assert preflight.parse_status(cut_after("Migration Name\n")) is None


@pytest.mark.parametrize(
    "log",
    [
        cut_after(DASHES),
        cut_after(DASHES + "\n"),
        cut_after(DASHES + "\n "),
        cut_after("Create projects\n"),
        cut_after("  down    20261115000001  Add uni"),
        cut_after("Remove archived from projects"),
        cut_after("Remove archived from projects\n"),
        cut_after(DASHES + "\n", nth=2),
        cut_after("Remove archived from projects", nth=2),
        cut_after("Remove archived from projects\n", nth=2),
    ],
    ids=[
        "in-the-dashes-line",
        "after-the-dashes",
        "a-row-cut-after-its-first-space",
        "after-an-up-row",
        "mid-row-in-the-name",
        "final-row-without-its-newline",
        "final-row-without-the-blank-line",
        "second-database-after-the-dashes",
        "second-database-final-row-without-its-newline",
        "second-database-final-row-without-the-blank-line",
    ],
)
def test_a_log_that_ends_inside_a_block_is_unreadable_never_nothing_pending(log: str) -> None:
    """Rails ends every block with a blank line (``migrate_status``'s last ``puts``):
    a log cut before it is a pod killed or a log limit hit, not an answer."""
    assert preflight.parse_status(log) is None


def test_every_prefix_of_a_log_is_unreadable_or_whole_blocks_of_the_full_answer() -> None:
    full = preflight.parse_status(TWO_DATABASES)
    assert full is not None
    main_rows = tuple(p for p in full.pending if p.database == "gitlabhq_production")
    seen = set()
    for end in range(len(TWO_DATABASES) + 1):
        answer = preflight.parse_status(TWO_DATABASES[:end])
        if answer is None:
            continue
        # Never a shorter list of a database: all of its rows, or the database unlisted.
        assert (answer.databases, answer.pending) in (
            (("gitlabhq_production",), main_rows),
            (full.databases, full.pending),
        ), repr(TWO_DATABASES[:end])
        seen.add(answer.databases)
    assert seen == {("gitlabhq_production",), full.databases}


def test_a_block_that_another_begins_inside_is_unreadable() -> None:
    first_rows = cut_after("Remove archived from projects\n")
    assert preflight.parse_status(first_rows + "\ndatabase: gitlabhq_production_ci\n") is None
    spliced = first_rows + TWO_DATABASES[TWO_DATABASES.index("database: gitlabhq_production_ci") :]
    assert preflight.parse_status(spliced) is None


def test_a_complete_block_of_each_database_is_an_answer_even_with_no_rows() -> None:
    log = (
        "\ndatabase: main\n\n Status   Migration ID    Migration Name\n"
        + DASHES
        + "\n  down    20261115000001  Add index\n\n"
        + "\ndatabase: ci\n\n Status   Migration ID    Migration Name\n"
        + DASHES
        + "\n\n"
    )
    answer = preflight.parse_status(log)
    assert answer == preflight.Answer(
        ("main", "ci"), (Pending("main", "20261115000001", "Add index"),)
    )
    assert preflight.parse_status(log.removesuffix("\n")) is None


def test_a_garbled_row_makes_the_answer_unreadable_not_shorter() -> None:
    log = TWO_DATABASES.replace("  down    20261115000001", "  ????    20261115000001")
    assert preflight.parse_status(log) is None
    # A row cut in its version is no row either.
    assert preflight.parse_status(cut_after("  down    2026111500")) is None


def migration_job() -> Body:
    migration: Body = {
        "metadata": {"name": "gstg-1", "namespace": "gitlab", "uid": "u-1"},
        "spec": {"environment": "gstg", "job": {}},
    }
    return render.render_job(migration, "toolbox:v1")


def test_the_preflight_job_is_the_migration_pod_running_the_status_task() -> None:
    mjob = migration_job()
    pjob = preflight.job(mjob, list(preflight.DEFAULT_ARGS), run=1, deadline=600)
    container = pjob["spec"]["template"]["spec"]["containers"][0]
    shell, dash_c, script = preflight.DEFAULT_ARGS
    assert container["args"] == [shell, dash_c, templates.UNSET_SKIP + "\n" + script]
    assert "gitlab-rake db:migrate:status" in container["args"][-1]
    # Everything else that reaches the database is the migration Job's.
    mine = mjob["spec"]["template"]["spec"]["containers"][0]
    assert {k: v for k, v in container.items() if k != "args"} == {
        k: v for k, v in mine.items() if k != "args"
    }
    assert (
        pjob["spec"]["template"]["spec"]["securityContext"]
        == (mjob["spec"]["template"]["spec"]["securityContext"])
    )
    labels = pjob["metadata"]["labels"]
    # Its end wakes the migration; its component keeps it from being adopted.
    assert labels[model.LABEL_MIGRATION_UID] == "u-1"
    assert labels[model.LABEL_COMPONENT] == preflight.COMPONENT
    assert mjob["metadata"]["labels"][model.LABEL_COMPONENT] == render.COMPONENT
    # Its pod's end wakes the migration too: the pod watch selects these labels
    # (runner.PREFLIGHT_PODS), and the pod names its migration.
    pod_labels = pjob["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[model.LABEL_COMPONENT] == preflight.COMPONENT
    assert pod_labels[model.LABEL_MANAGED_BY] == render.MANAGED_BY
    assert pod_labels[model.LABEL_MIGRATION] == "gstg-1"
    assert pjob["spec"]["activeDeadlineSeconds"] == 600
    assert pjob["metadata"]["ownerReferences"] == mjob["metadata"]["ownerReferences"]
    assert render.SAFE_TO_EVICT not in pjob["spec"]["template"]["metadata"]["annotations"]


def test_each_run_has_its_own_name_of_the_migration_jobs_length() -> None:
    mjob = migration_job()
    first = preflight.job(mjob, list(preflight.DEFAULT_ARGS), run=1, deadline=600)
    again = preflight.job(mjob, list(preflight.DEFAULT_ARGS), run=1, deadline=600)
    second = preflight.job(mjob, list(preflight.DEFAULT_ARGS), run=2, deadline=600)
    assert first["metadata"]["name"] == again["metadata"]["name"]
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["metadata"]["name"].startswith("gstg-1-p")
    assert len(first["metadata"]["name"]) == len(mjob["metadata"]["name"])


@pytest.mark.parametrize(
    "args",
    [["gitlab-rake", "db:migrate:status"], ["/bin/sh", "-c", "printf '%s' \"$TABLE\""]],
    ids=["plain", "shell"],
)
def test_the_preflights_own_args_unset_the_skip_variable_first_and_add_no_command(
    args: list[str],
) -> None:
    container = preflight.job(migration_job(), args, run=1, deadline=600)["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert "command" not in container  # the image ENTRYPOINT still runs first
    assert container["args"] == templates.unset_skip(None, args)[1]
    assert templates.UNSET_SKIP in container["args"][2]


def test_a_migration_command_that_runs_its_own_script_never_runs_in_the_preflight() -> None:
    # With the command kept, bash -c would ignore the status task's args and
    # the read-only pre-flight would apply the migrations.
    migration: Body = {
        "metadata": {"name": "gstg-1", "namespace": "gitlab", "uid": "u-1"},
        "spec": {
            "environment": "gstg",
            "job": {"command": ["/bin/sh", "-c", "/scripts/db-migrate"]},
        },
    }
    mjob = render.render_job(migration, "toolbox:v1")
    assert "command" in mjob["spec"]["template"]["spec"]["containers"][0]
    pjob = preflight.job(mjob, list(preflight.DEFAULT_ARGS), run=1, deadline=600)
    container = pjob["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image ENTRYPOINT runs the status task
    assert container["args"] == templates.unset_skip(None, list(preflight.DEFAULT_ARGS))[1]
    assert "db-migrate" not in " ".join(container["args"])


PLAN_ARGS = list(preflight.DEFAULT_ARGS)


def test_the_plan_hash_changes_with_the_job_or_the_pending_list() -> None:
    a = [Pending("main", "1", "A")]

    def plan(job_hash: str, pending: list[Pending] | tuple[Pending, ...]) -> str:
        return preflight.plan_hash(job_hash, pending, args=PLAN_ARGS, image="t:1")

    assert plan("h1", a) == plan("h1", tuple(a))
    assert plan("h1", a) != plan("h2", a)
    assert plan("h1", a) != plan("h1", [*a, Pending("main", "2", "B")])
    assert plan("h1", a).startswith("sha256:")


def test_the_plan_hash_covers_the_preflights_args_and_image() -> None:
    """A one-row table printed by other args is another plan than the status task's."""
    a = [Pending("main", "1", "A")]
    base = preflight.plan_hash("h1", a, args=PLAN_ARGS, image="t:1")
    one_row = ["/bin/sh", "-c", "printf 'database: main ...'"]
    assert preflight.plan_hash("h1", a, args=one_row, image="t:1") != base
    assert preflight.plan_hash("h1", a, args=PLAN_ARGS, image="other:1") != base
    assert preflight.plan_hash("h1", a, args=tuple(PLAN_ARGS), image="t:1") == base


def test_summary_names_the_first_few_and_counts_the_rest() -> None:
    many = [Pending("main", str(v), f"M{v}") for v in range(7)]
    text = preflight.summary(many)
    assert text.startswith("7 migrations pending: 0 M0 (main), 1 M1 (main)")
    assert text.endswith("and 2 more")
    assert preflight.summary([]) == "no migration is pending"


@pytest.mark.parametrize(
    "command",
    [["/bin/sh", "-c"], ["/scripts/run"]],
    ids=["shell-script-in-args", "wrapper"],
)
def test_a_migration_command_that_runs_its_args_stays_for_the_preflight(
    command: list[str],
) -> None:
    # An image whose ENTRYPOINT is not an `exec "$@"` needs it (busybox: /bin/sh).
    migration: Body = {
        "metadata": {"name": "gstg-1", "namespace": "gitlab", "uid": "u-1"},
        "spec": {"environment": "gstg", "job": {"command": command, "args": ["x"]}},
    }
    mjob = render.render_job(migration, "toolbox:v1")
    pjob = preflight.job(mjob, ["echo table"], run=1, deadline=600)
    container = pjob["spec"]["template"]["spec"]["containers"][0]
    argv = [*container["command"], *container["args"]]  # the command is kept
    assert argv[-1].endswith("echo table")
