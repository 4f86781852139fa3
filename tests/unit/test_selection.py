"""Holds, ``only`` and mark-executed: which pending migrations a run acts on.

The pure parts (:mod:`pdm_operator.selection`), Rails' own answer to the
scripts they write (the golden files were made by running those scripts
against real Rails 6.1 and PostgreSQL: ``hack/capture_rails_output.py``),
and the passes that use them (the same world as ``test_decide``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pdm_operator import approval, decide, history, model, preflight, render, selection, templates
from pdm_operator.model import Body
from tests.unit.test_decide import (
    NOW,
    SETUP,
    STATUS_TABLE,
    World,
    environment,
    migration,
    preflight_done,
    preflight_running,
)

GOLDEN = Path(__file__).parent / "golden" / "rails"
MAIN = "gitlabhq_production"
V1, V2, V3 = "20261115000001", "20261115000002", "20261115000003"
ROWS = "\n".join(
    f"  down    {v}  {name}"
    for v, name in ((V1, "Add unique index"), (V2, "Remove archived"), (V3, "Backfill"))
)
PENDING = tuple(preflight.Pending(MAIN, v, "x") for v in (V1, V2, V3))


def chart_job() -> Body:
    return {
        "metadata": {"name": "gstg-1200-abcdef12", "annotations": {}},
        "spec": {
            "template": {
                "metadata": {"labels": {}},
                "spec": {
                    "containers": [
                        {
                            "name": model.MIGRATION_CONTAINER,
                            "args": list(templates.CHART_MIGRATION_ARGS),
                        }
                    ]
                },
            }
        },
    }


def script_of(job: Body) -> str:
    """The migration container's args, and the selection's script it runs."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in container.get("env") or []}
    return "\n".join(container["args"]) + "\n" + env.get(selection.SCRIPT_ENV, "")


# --- the split ----------------------------------------------------------------


def test_a_hold_leaves_its_version_pending_and_applies_the_rest() -> None:
    plan = selection.split(selection.Selection(hold=(V2,)), PENDING, 3)
    assert isinstance(plan, selection.Plan)
    assert plan.versions == [V1, V3]
    assert [p.version for p in plan.held] == [V2]


def test_only_applies_just_the_versions_it_names() -> None:
    plan = selection.split(selection.Selection(only=(V3,)), PENDING, 3)
    assert isinstance(plan, selection.Plan)
    assert plan.versions == [V3]
    assert [p.version for p in plan.held] == [V1, V2]


def test_only_naming_a_version_that_is_not_pending_is_refused_not_skipped() -> None:
    refused = selection.split(selection.Selection(only=(V3, "20991231000000")), PENDING, 3)
    assert isinstance(refused, selection.Refusal)
    assert refused.reason == selection.NOT_PENDING
    assert "20991231000000" in refused.message


def test_a_selection_refuses_a_pending_list_the_status_had_to_cut() -> None:
    refused = selection.split(selection.Selection(hold=(V1,)), PENDING, 900)
    assert isinstance(refused, selection.Refusal)
    assert refused.reason == selection.LIST_CUT


def test_marking_executed_marks_its_versions_and_leaves_every_other_pending() -> None:
    plan = selection.split(selection.Selection(mark=(V2,)), PENDING, 3)
    assert isinstance(plan, selection.Plan)
    assert plan.versions == [V2]
    assert not plan.apply
    assert [p.version for p in plan.held] == [V1, V3]


def test_the_environments_holds_join_the_specs_with_their_reasons() -> None:
    chosen = selection.of(
        {"migrations": {"hold": [V1]}},
        [{"version": V2, "reason": "CR-1234: run by hand"}],
        "gprd",
    )
    assert chosen.hold == (V1, V2)
    assert chosen.reason_held(V1) == "spec.migrations.hold"
    assert chosen.reason_held(V2) == "held by environment gprd: CR-1234: run by hand"
    plan = selection.split(chosen, PENDING, 3)
    assert isinstance(plan, selection.Plan)
    held = {e["version"]: e for e in selection.annotate(chosen, plan, PENDING)}
    assert held[V2]["action"] == selection.HOLD
    assert held[V2]["heldBecause"] == "held by environment gprd: CR-1234: run by hand"
    assert held[V3]["action"] == selection.APPLY


# --- the Job ------------------------------------------------------------------


def test_a_selection_replaces_db_migrate_and_keeps_the_rest_of_the_charts_script() -> None:
    plan = selection.split(selection.Selection(only=(V3,)), PENDING, 3)
    assert isinstance(plan, selection.Plan)
    narrowed = selection.job(chart_job(), "gstg-1200", plan, marking=False)
    assert isinstance(narrowed, dict)
    script = script_of(narrowed)
    assert "/scripts/db-migrate" not in script
    assert "/scripts/wait-for-deps;" in script
    assert script.startswith("/bin/bash\n-c\nset -e;")
    assert f"for pdm_version in {V3}; do" in script
    assert 'gitlab-rake VERSION="$pdm_version" $pdm_up' in script
    # Named for what it runs: never the chart-script Job's name, the same every time.
    assert narrowed["metadata"]["name"] != "gstg-1200-abcdef12"
    again = selection.job(chart_job(), "gstg-1200", plan, marking=False)
    assert isinstance(again, dict)
    assert again["metadata"]["name"] == narrowed["metadata"]["name"]
    other = selection.split(selection.Selection(only=(V2,)), PENDING, 3)
    assert isinstance(other, selection.Plan)
    third = selection.job(chart_job(), "gstg-1200", other, marking=False)
    assert isinstance(third, dict)
    assert third["metadata"]["name"] != narrowed["metadata"]["name"]


def test_marking_runs_gitlabs_own_mark_migration_complete_and_no_migration() -> None:
    plan = selection.split(selection.Selection(mark=(V2,)), PENDING, 3)
    assert isinstance(plan, selection.Plan)
    narrowed = selection.job(chart_job(), "gstg-1200", plan, marking=True)
    assert isinstance(narrowed, dict)
    script = script_of(narrowed)
    assert 'gitlab-rake "gitlab:db:mark_migration_complete[$pdm_version]"' in script
    assert "db:migrate" not in script


@pytest.mark.parametrize(
    "args",
    [
        ["/bin/bash", "-c", "set -e;\n/scripts/wait-for-deps;\n/scripts/geo-db-migrate;\n"],
        ["/bin/bash", "-c", "/scripts/db-migrate; /scripts/db-migrate"],
    ],
    ids=["a Geo secondary's script", "a script running it twice"],
)
def test_a_script_without_exactly_one_db_migrate_cannot_be_narrowed(args: list[str]) -> None:
    job = chart_job()
    job["spec"]["template"]["spec"]["containers"][0]["args"] = args
    plan = selection.split(selection.Selection(hold=(V1,)), PENDING, 3)
    assert isinstance(plan, selection.Plan)
    refused = selection.job(job, "gstg-1200", plan, marking=False)
    assert isinstance(refused, selection.Refusal)
    assert refused.reason == selection.NOT_NARROWABLE


# --- what Rails did with those scripts ------------------------------------------


def test_rails_applied_only_the_selected_version_on_every_database() -> None:
    """Rails' own output for the script of ``only: [20261115000004]`` after a regular deploy."""
    log = (GOLDEN / "migrate-selected-one.txt").read_text()
    status = preflight.parse_status((GOLDEN / "migrate-status-two-databases.txt").read_text())
    assert status is not None
    plan = selection.split(selection.Selection(only=("20261115000004",)), status.pending, 8)
    assert isinstance(plan, selection.Plan)
    # The golden was made by this very script (its first line is the script's echo).
    assert log.splitlines()[0] in selection.script(plan, marking=False)
    migrating = {
        line.split(" == ")[1].split(" ")[0] for line in log.splitlines() if ": == " in line
    }
    assert migrating == {"20261115000004"}
    assert {line.split(":")[0] for line in log.splitlines() if ": == " in line} == {"main", "ci"}
    assert log.rstrip().endswith("[exit 0]")
    after = preflight.parse_status((GOLDEN / "migrate-status-one-applied.txt").read_text())
    assert after is not None
    assert sorted({p.version for p in after.pending}) == [V1, V2, V3]


def test_rails_marked_the_version_on_every_database_and_a_second_mark_changes_nothing() -> None:
    first = (GOLDEN / "mark-executed.txt").read_text()
    again = (GOLDEN / "mark-executed-again.txt").read_text()
    assert "Successfully marked '20261115000001' as complete on database main" in first
    assert "Successfully marked '20261115000001' as complete on database ci" in first
    assert "already marked complete on database main" in again
    assert "== " not in first  # nothing migrated
    assert first.rstrip().endswith("[exit 0]")
    assert again.rstrip().endswith("[exit 0]")


# --- the plan, the approval, the history ---------------------------------------


def test_a_plan_with_a_hold_is_not_the_plan_without_it() -> None:
    base = preflight.plan_hash("h", PENDING, args=["a"], image="i")
    held = preflight.plan_hash("h", PENDING, args=["a"], image="i", selection={"hold": [V1]})
    assert base != held
    assert base == preflight.plan_hash("h", PENDING, args=["a"], image="i", selection={})


def test_the_approver_sees_which_migrations_are_held() -> None:
    shown = approval.shown(
        [
            {"database": "main", "version": V1, "action": "Hold"},
            {"database": "main", "version": V2, "action": "Apply"},
            {"database": "main", "version": V3},
        ]
    )
    assert shown == [f"{V1} (main) [Hold]", f"{V2} (main)", f"{V3} (main)"]


def test_a_history_record_from_before_holds_still_reads_and_a_mangled_one_does_not() -> None:
    old = {
        "namespace": "gitlab",
        "name": "gprd-1",
        "uid": "u",
        "version": "17.5.0",
        "image": "i",
        "completed": "2026-12-01T00:00:00Z",
        "outcome": "Succeeded",
        "migrations": [V1],
    }
    run = history.decode(json.dumps(old))
    assert run is not None
    assert run.held == []
    assert run.marked is None
    assert history.decode(json.dumps({**old, "held": "20261115000002"})) is None
    assert history.decode(json.dumps({**old, "marked": {"versions": [1]}})) is None
    marked = history.decode(
        json.dumps({**old, "marked": {"versions": [V1], "reason": "INC-1", "by": "alice"}})
    )
    assert marked is not None
    assert "marked executed without running: 20261115000001 by alice (INC-1)" in marked.describe()


def test_a_selected_run_applied_its_versions_and_not_the_held_ones() -> None:
    status = {
        "preflight": {"phase": "Succeeded", "jobHash": "h", "pendingCount": 3},
        "pendingMigrations": [
            {"database": MAIN, "version": V1, "action": "Apply"},
            {"database": MAIN, "version": V2, "action": "Hold"},
            {"database": MAIN, "version": V3, "action": "Apply"},
        ],
        "jobOutcome": "Succeeded",
    }
    assert history.applied(status, "h") == [V1, V3]
    failed = {**status, "jobOutcome": "Failed", "failure": {"migration": {"version": V1}}}
    assert history.applied(failed, "h") == [V1]


# --- the passes -----------------------------------------------------------------


def held_migration(**migrations: object) -> Body:
    return migration(preflight={"enabled": True}, migrations=migrations)


def created_jobs(world: World) -> list[Body]:
    return [j for j in world.created if j.get("kind") == "Job"]


def test_a_held_migration_stays_out_of_the_job_and_is_shown_held() -> None:
    m = held_migration(hold=[V2])
    running = preflight_running(m)
    world = preflight_done(running, "", STATUS_TABLE.format(row=ROWS))()
    step = decide.drive(decide.reconcile(running, NOW, SETUP), world)
    jobs = created_jobs(world)
    assert len(jobs) == 1
    script = script_of(jobs[0])
    assert f"for pdm_version in {V1} {V3}; do" in script
    assert "/scripts/db-migrate" not in script
    actions = {e["version"]: e["action"] for e in step.status["pendingMigrations"]}
    assert actions == {V1: "Apply", V2: "Hold", V3: "Apply"}
    assert step.status["jobName"] == jobs[0]["metadata"]["name"]
    assert step.status["preflight"]["migrationJob"] == jobs[0]["metadata"]["name"]
    assert step.status["preflight"]["selection"] == {"hold": [V2]}
    said = next(c for c in step.status["conditions"] if c["type"] == model.PREFLIGHT)["message"]
    assert f"holds 1: {V2} (spec.migrations.hold)" in said


def test_only_naming_a_version_that_is_not_pending_fails_without_a_job() -> None:
    m = held_migration(only=["20991231000000"])
    running = preflight_running(m)
    world = preflight_done(running, "", STATUS_TABLE.format(row=ROWS))()
    step = decide.drive(decide.reconcile(running, NOW, SETUP), world)
    assert created_jobs(world) == []
    assert step.status["state"] == "Failed"
    assert step.status["failure"]["reason"] == selection.NOT_PENDING


def test_every_pending_migration_held_ends_the_run_without_a_job() -> None:
    m = held_migration(hold=[V1, V2, V3])
    running = preflight_running(m)
    world = preflight_done(running, "", STATUS_TABLE.format(row=ROWS))()
    step = decide.drive(decide.reconcile(running, NOW, SETUP), world)
    assert created_jobs(world) == []
    assert step.status["state"] == "Succeeded"
    job_created = next(c for c in step.status["conditions"] if c["type"] == model.JOB_CREATED)
    assert job_created["reason"] == decide.NOTHING_PENDING
    assert "every pending migration is held" in job_created["message"]


def test_an_environments_hold_without_the_preflight_waits_rather_than_run_db_migrate() -> None:
    m = migration()  # pre-flight off
    world = World(environment=environment(holds=[{"version": V2, "reason": "CR-1"}]))
    step = decide.drive(decide.reconcile(m, NOW, SETUP), world)
    assert created_jobs(world) == []
    gated = next(c for c in step.status["conditions"] if c["type"] == model.GATED)
    assert gated["reason"] == "HoldsNeedPreflight"


def test_an_environments_standing_hold_is_held_with_its_reason() -> None:
    m = migration(preflight={"enabled": True})
    env = environment(holds=[{"version": V1, "reason": "CR-1: by hand"}])
    first = decide.drive(decide.reconcile(m, NOW, SETUP), World(environment=env))
    started = m | {"status": first.status}
    done = preflight_done(started, "", STATUS_TABLE.format(row=ROWS))()
    done.environment = env
    step = decide.drive(decide.reconcile(started, NOW, SETUP), done)
    held = [e for e in step.status["pendingMigrations"] if e["action"] == "Hold"]
    assert [e["version"] for e in held] == [V1]
    assert held[0]["heldBecause"] == "held by environment gstg: CR-1: by hand"
    assert f"for pdm_version in {V2} {V3}; do" in script_of(created_jobs(done)[0])


def test_a_restart_after_the_create_adopts_the_narrowed_job() -> None:
    m = held_migration(hold=[V2])
    running = preflight_running(m)
    world = preflight_done(running, "", STATUS_TABLE.format(row=ROWS))()
    step = decide.drive(decide.reconcile(running, NOW, SETUP), world)
    job = created_jobs(world)[0]
    job["metadata"].update(uid="job-uid", creationTimestamp="2026-12-02T12:00:00Z")
    # The status write of that pass was lost: the next pass finds the Job by its labels.
    lost = dict(step.status)
    lost.pop("jobName")
    again = World(
        jobs=dict(world.jobs), pods=dict(world.pods), logs=dict(world.logs), environment_jobs=[job]
    )
    after = decide.drive(decide.reconcile(running | {"status": lost}, NOW, SETUP), again)
    assert after.status.get("jobName") == job["metadata"]["name"]
    assert after.status["state"] != "Failed"


@pytest.mark.parametrize(
    "script",
    [
        "set -e;\n/scripts/wait-for-deps;\n/scripts/db-migrate;\n",
        "/scripts/wait-for-deps /scripts/db-migrate",
    ],
    ids=["the chart's script", "an older chart's (wait-for-deps runs db-migrate)"],
)
def test_the_narrowed_script_is_one_bash_accepts(script: str) -> None:
    job = chart_job()
    _, args = templates.unset_skip(None, ["/bin/bash", "-c", script])
    job["spec"]["template"]["spec"]["containers"][0]["args"] = args
    plan = selection.split(selection.Selection(hold=(V1,)), PENDING, 3)
    assert isinstance(plan, selection.Plan)
    narrowed = selection.job(job, "gstg-1200", plan, marking=False)
    assert isinstance(narrowed, dict)
    container = narrowed["spec"]["template"]["spec"]["containers"][0]
    outer = container["args"][2]
    inner = next(e["value"] for e in container["env"] if e["name"] == selection.SCRIPT_ENV)
    assert selection.COMMAND in outer
    for text in (outer, inner):
        checked = subprocess.run(["bash", "-n", "-c", text], capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr


def test_a_held_runs_progress_counts_only_the_steps_it_applies() -> None:
    m = held_migration(hold=[V2])
    running = preflight_running(m)
    world = preflight_done(running, "", STATUS_TABLE.format(row=ROWS))()
    step = decide.drive(decide.reconcile(running, NOW, SETUP), world)
    assert step.status["progress"]["summary"] == "0/2"


def test_the_answer_is_stored_before_the_narrowed_job_so_a_crash_after_the_create_adopts_it() -> (
    None
):
    m = held_migration(hold=[V2])
    running = preflight_running(m)
    world = preflight_done(running, "", STATUS_TABLE.format(row=ROWS))()
    decide.drive(decide.reconcile(running, NOW, SETUP), world)
    job = created_jobs(world)[0]
    asked = [type(a).__name__ for a in world.asked]
    # The status write that stores the answer comes before the create of the narrowed Job.
    assert asked.index("WriteStatus") < asked.index("CreateJob")
    before_create = world.written[0]
    assert before_create["preflight"]["migrationJob"] == job["metadata"]["name"]
    assert "jobName" not in before_create
    # The operator died right after the create: the next pass starts from that write.
    job["metadata"].update(uid="job-uid", creationTimestamp="2026-12-02T12:00:00Z")
    again = World(environment_jobs=[job])
    after = decide.drive(decide.reconcile(running | {"status": before_create}, NOW, SETUP), again)
    assert after.status.get("jobName") == job["metadata"]["name"]
    assert after.status["state"] != "Failed"


def test_a_recorded_plan_that_cannot_narrow_the_job_never_yields_the_unnarrowed_one() -> None:
    from pdm_operator.decide.preflight_run import final_job  # noqa: PLC0415

    m = held_migration(hold=[V2])
    running = preflight_running(m)
    world = preflight_done(running, "", STATUS_TABLE.format(row=ROWS))()
    step = decide.drive(decide.reconcile(running, NOW, SETUP), world)
    status = dict(step.status)
    status["preflight"] = {**status["preflight"], "pendingCount": 900}  # the list was cut
    p = decide.Pass(running | {"status": status}, NOW, SETUP)
    job = render.render_job(running, status["image"], None)
    made = final_job(p, job)
    assert isinstance(made, selection.Refusal)
    assert made.reason == selection.LIST_CUT
