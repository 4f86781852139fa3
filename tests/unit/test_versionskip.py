"""The version-skip check: post-deployment migrations of an older minor still pending."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pdm_operator import approval, decide, model, preflight, versionskip
from tests.unit.test_decide import (
    NOW,
    SETUP,
    STATUS_TABLE,
    migration,
    preflight_done,
    preflight_running,
)

V1, V2 = "20261115000001", "20261115000002"
STANDIN = Path(__file__).resolve().parents[2] / "hack" / "standin-toolbox" / "db" / "post_migrate"


def listing(*lines: str) -> str:
    return "\n".join([versionskip.BEGIN, *lines, versionskip.END]) + "\n"


def test_the_preflights_listing_reads_the_milestones_the_migration_files_declare(
    tmp_path: Path,
) -> None:
    """The shell the pre-flight runs, on files as GitLab writes them (and one without)."""
    (tmp_path / f"{V1}_add_index.rb").write_text("class AddIndex < M[2.2]\n  milestone '17.10'\n")
    (tmp_path / f"{V2}_backfill.rb").write_text('class B < M[2.2]\n  milestone("18.1")\n')
    (tmp_path / "20261115000003_old.rb").write_text("class Old < M[2.1]\nend\n")
    script = versionskip.LISTING.replace(versionskip.POST_MIGRATE, str(tmp_path))
    out = subprocess.run(
        ["bash", "-c", "set -e;\n" + script], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert versionskip.milestones(out.stdout) == {V1: "17.10", V2: "18.1", "20261115000003": "-"}


def test_the_listing_of_an_image_with_no_post_deployment_migrations_is_empty_not_an_error(
    tmp_path: Path,
) -> None:
    script = versionskip.LISTING.replace(versionskip.POST_MIGRATE, str(tmp_path / "none"))
    out = subprocess.run(
        ["bash", "-c", "set -e;\n" + script], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert versionskip.milestones(out.stdout) == {}


def test_the_standins_migrations_name_the_milestone_of_the_version_the_tests_deploy() -> None:
    script = versionskip.LISTING.replace(versionskip.POST_MIGRATE, str(STANDIN))
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    found = versionskip.milestones(out.stdout)
    assert found is not None
    assert set(found.values()) == {"18.6"}


def test_a_cut_listing_is_unknown_not_empty() -> None:
    assert versionskip.milestones(versionskip.BEGIN + "\n/x/20261115000001_a.rb 18.6\n") is None
    assert versionskip.milestones("database: main\n") is None
    assert versionskip.milestones(listing("something else")) is None


def test_a_pending_post_deployment_migration_of_an_older_minor_is_a_skip() -> None:
    found = versionskip.find("v18.8.0", [V1, V2], {V1: "18.6", V2: "18.8"})
    assert found is not None
    assert found.reason == versionskip.SKIPPED
    assert found.versions == ((V1, "18.6"),)
    assert f"{V1} (18.6)" in found.message
    assert "18.8" in found.message


def test_post_deployment_migrations_of_the_deployed_minor_are_no_skip() -> None:
    assert versionskip.find("18.6.2", [V1, V2], {V1: "18.6", V2: "18.6"}) is None
    assert versionskip.find("18.6.2", [], None) is None


def test_a_pending_migration_the_listing_does_not_have_is_unknown() -> None:
    """A regular migration still pending, or a Rails root the listing did not look in."""
    found = versionskip.find("18.6.2", ["20261101000003"], {V1: "18.5"})
    assert found is not None
    assert (found.reason, found.versions) == (versionskip.UNKNOWN, (("20261101000003", "-"),))
    empty = versionskip.find("18.6.2", [V1], {})
    assert empty is not None
    assert empty.reason == versionskip.UNKNOWN


def test_what_cannot_be_told_is_unknown_never_fine() -> None:
    digest = versionskip.find("sha256:abc", [V1], {V1: "18.6"})
    assert digest is not None
    assert (digest.reason, "spec.gitlabVersion" in digest.message) == (versionskip.UNKNOWN, True)
    unlisted = versionskip.find("18.6.0", [V1], None)
    assert unlisted is not None
    assert unlisted.reason == versionskip.UNKNOWN
    nameless = versionskip.find("18.6.0", [V1], {V1: "-"})
    assert nameless is not None
    assert (nameless.reason, nameless.versions) == (versionskip.UNKNOWN, ((V1, "-"),))


def test_an_auto_deploy_build_is_compared_by_its_minor() -> None:
    found = versionskip.find("18.7.202612011206-0123456789a.0123456789a", [V1], {V1: "18.6"})
    assert found is not None
    assert found.reason == versionskip.SKIPPED


def test_the_skip_is_part_of_the_plan_an_approval_approves() -> None:
    pending = [preflight.Pending("main", V1, "x")]
    skip = {"reason": versionskip.SKIPPED, "message": "m", "migrations": []}
    assert preflight.plan_hash("h", pending, args=[], image="i") != preflight.plan_hash(
        "h", pending, args=[], image="i", version_skip=skip
    )


OLD_TABLE = STATUS_TABLE.replace(" 17.5\n", " 17.3\n")


def test_a_skip_stops_the_run_before_the_job_until_an_approval_of_its_plan() -> None:
    m = migration(preflight={"enabled": True})  # the image is 17.5.0; the migrations name 17.3
    running = preflight_running(m)
    row = "  down    20261115000001  Add unique index on project path"
    world = preflight_done(running, "", OLD_TABLE.format(row=row))()
    step = decide.drive(decide.reconcile(running, NOW, SETUP), world)
    assert [j for j in world.created if j.get("kind") == "Job"] == []
    gated = next(c for c in step.status["conditions"] if c["type"] == model.GATED)
    assert gated["reason"] == versionskip.SKIPPED
    assert "20261115000001 (17.3)" in gated["message"]
    assert "kubectl pdm approve gstg-1200" in gated["message"]
    assert step.status["preflight"]["versionSkip"]["reason"] == versionskip.SKIPPED
    assert any(type(a).__name__ == "ReleaseLock" for a in world.asked)

    # An approval of exactly that plan acknowledges it; the next run goes on.
    shown = running | {"status": step.status}
    given = approval.approval_for(shown, by="alice", at="2026-12-02T12:00:30Z", expected=None)
    acknowledged = shown | {"spec": {**shown["spec"], "approval": {"approved": given}}}
    assert (
        approval.unapproved_shown_plan(
            acknowledged["spec"],
            acknowledged["status"],
            step.status["preflight"]["jobHash"],
            "gstg-1200",
        )
        is None
    )
    assert (
        approval.unapproved_shown_plan(
            shown["spec"], shown["status"], step.status["preflight"]["jobHash"], "gstg-1200"
        )
        is not None
    )
