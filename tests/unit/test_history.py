"""The rollback floor: which runs make a rollback to a version unsafe."""

from __future__ import annotations

import pytest

from pdm_operator import history
from pdm_operator.history import Run, Version


def run(version: str, migrations: list[str] | None, name: str = "", when: str = "") -> Run:
    return Run(
        namespace="gitlab",
        name=name or f"gprd-{version}",
        uid=f"uid-{version}-{name}",
        version=version,
        image=f"toolbox:v{version}",
        completed=when or f"2026-12-0{len(version) % 9 + 1}T00:00:00Z",
        outcome="Succeeded",
        migrations=migrations,
    )


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("18.5.3", "18.6.0"),
        ("18.6.0-rc2", "18.6.0"),
        ("18.6.0-rc2", "18.6.0-rc10"),
        ("v18.6.0-ee", "18.6.1"),
        ("18.6", "18.6.1"),
        ("18.7.202612011206-a5c4a2e2b29.f8e5a8b3c2d", "18.7.202612021206-0b1c2d3e4f5.a6b7c8d9e0f"),
        ("18.6.9", "18.7.202612011206-a5c4a2e2b29.f8e5a8b3c2d"),
    ],
)
def test_versions_order_as_gitlab_ships_them(lower: str, higher: str) -> None:
    a, b = Version.parse(lower), Version.parse(higher)
    assert a is not None
    assert b is not None
    assert a < b


def test_suffixes_that_are_not_release_candidates_do_not_count() -> None:
    assert Version.parse("v18.6.0-ee") == Version.parse("18.6.0")
    assert Version.parse("latest") is None


def test_a_rollback_below_a_run_that_applied_migrations_is_unsafe() -> None:
    records = [run("18.5.0", ["1"]), run("18.6.0", ["2", "3"]), run("18.7.0", [])]
    assert [r.version for r in history.unsafe(records, "18.5.0")] == ["18.6.0"]
    # At or after it: safe. A run that applied nothing never counts.
    assert history.unsafe(records, "18.6.0") == []
    assert history.unsafe(records, "18.6.1") == []
    assert history.floor(records).version == "18.6.0"  # type: ignore[union-attr]


def test_unknown_migrations_or_versions_are_taken_as_unsafe() -> None:
    unknown = run("18.6.0", None)
    assert history.unsafe([unknown], "18.5.0") == [unknown]
    odd = run("nightly", ["9"])
    assert history.unsafe([odd], "18.9.0") == [odd]
    assert history.unsafe([run("18.5.0", ["1"])], "not-a-version")  # cannot compare


def test_records_round_trip_and_bad_ones_are_skipped() -> None:
    r = run("18.6.0", ["20261115000001"])
    cm = history.configmap("gprd", "pdm-operator")
    cm["data"] = {r.key: r.encode(), "junk": "{not json"}
    assert history.runs(cm) == [r]
    assert r.key == f"gitlab.gprd-18.6.0.{r.uid[:8]}"
    assert "20261115000001" in r.describe()


def test_the_oldest_records_beyond_the_limit_are_pruned() -> None:
    records = [run(f"18.{i}.0", ["1"], when=f"2026-12-{i + 1:02d}T00:00:00Z") for i in range(5)]
    cm = {"data": {r.key: r.encode() for r in records}}
    assert history.to_prune(cm, keep=3) == sorted(r.key for r in records[:2])
    assert history.to_prune(cm, keep=10) == []


def pre(pending: list[str], count: int | None = None, job_hash: str = "h") -> dict:
    return {
        "preflight": {
            "phase": "Succeeded",
            "jobHash": job_hash,
            "pendingCount": len(pending) if count is None else count,
        },
        "pendingMigrations": [{"version": v} for v in pending],
    }


def test_what_a_run_applied_comes_from_its_preflight_list() -> None:
    ok = {**pre(["1", "2", "3"]), "jobOutcome": "Succeeded"}
    assert history.applied(ok, "h") == ["1", "2", "3"]
    assert history.applied(ok, "other") is None  # the list was for another Job
    failed = {
        **pre(["1", "2", "3"]),
        "jobOutcome": "Failed",
        "failure": {"migration": {"version": "2"}},
    }
    assert history.applied(failed, "h") == ["1"]
    first = {**failed, "failure": {"migration": {"version": "1"}}}
    assert history.applied(first, "h") == []
    assert history.applied({**failed, "failure": {}}, "h") is None  # where it stopped: unknown
    assert history.applied({**ok, **pre(["1"], count=600)}, "h") is None  # list was cut
    assert history.applied({"jobOutcome": "Succeeded"}, "h") is None  # no pre-flight


def test_the_deployed_version_is_given_or_the_images_tag() -> None:
    assert history.deployed_version({"spec": {"gitlabVersion": "18.6.1"}}, "t:v9") == "18.6.1"
    assert history.deployed_version({"spec": {}}, "reg:5000/cng/toolbox:v18.6.0@sha256:ab") == (
        "v18.6.0"
    )
