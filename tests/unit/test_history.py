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


#: Every form GitLab gives a version (see history.py for where each comes from),
#: as (major, minor, patch or timestamp, release candidate, auto-deploy commit).
FORMS = [
    ("18.6.0", (18, 6, 0, None, None)),
    ("v18.6.0", (18, 6, 0, None, None)),
    ("18.6.0-ee", (18, 6, 0, None, None)),
    ("v18.6.0-ee", (18, 6, 0, None, None)),
    ("18.6.0-ce", (18, 6, 0, None, None)),
    ("18.6.0-rc1", (18, 6, 0, 1, None)),
    ("18.6.0-RC1", (18, 6, 0, 1, None)),
    ("v18.6.0-rc42-ee", (18, 6, 0, 42, None)),
    ("18.6.0-Rc2-CE", (18, 6, 0, 2, None)),
    ("18.6.0+ee.0", (18, 6, 0, None, None)),
    ("18.6.0-ee.0", (18, 6, 0, None, None)),
    ("18.6.0+rc42.ce.0", (18, 6, 0, 42, None)),
    ("18.6.0-rc42.ee.0", (18, 6, 0, 42, None)),
    (" 18.6.1 ", (18, 6, 1, None, None)),
    ("18.7.202611221200+a1b2c3d4e5f.f8e5a8b3c2d", (18, 7, 202611221200, None, "a1b2c3d4e5f")),
    ("18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d", (18, 7, 202611221200, None, "a1b2c3d4e5f")),
    ("18.7.202611221200+a1b2c3d4e5f.f8e5a8b3c2d-0", (18, 7, 202611221200, None, "a1b2c3d4e5f")),
    ("18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d-0", (18, 7, 202611221200, None, "a1b2c3d4e5f")),
    ("18.7.202611221200+a1b2c3d4e5f", (18, 7, 202611221200, None, "a1b2c3d4e5f")),
    ("18-7-202611221200-a1b2c3d4e5f", (18, 7, 202611221200, None, "a1b2c3d4e5f")),
    ("18-7-202611221200-A1B2C3D4E5F", (18, 7, 202611221200, None, "a1b2c3d4e5f")),
]


@pytest.mark.parametrize(("text", "parts"), FORMS, ids=[f[0] for f in FORMS])
def test_every_version_form_gitlab_uses_is_read(
    text: str, parts: tuple[int, int, int, int | None, str | None]
) -> None:
    v = Version.parse(text)
    assert v is not None
    assert (v.major, v.minor, v.patch, v.rc, v.commit) == parts


NOT_VERSIONS = [
    "18-6-stable-ee",  # a branch
    "18-6-stable",
    "latest",
    "master",
    "nightly",
    "a1b2c3d4e5f",  # a commit
    "sha256:" + "ab" * 32,
    "18.6",  # a milestone
    "18",
    "18.6.0.1",
    "18.6.0-beta",
    "18.6.0-ee-rc1",
    "13.1.1+rnightly.159756.b2b5f05e-0",  # omnibus nightly: master under the last tag
    "13.1.1+rfbranch.159743.eb538eaf-0",  # omnibus feature branch
    "18.7.202611221200",  # an auto-deploy timestamp without its commit
    "18-7-202611221200",
    "18-7-202611221200-a1b2c3d4e5f-ee",
    "v18-6-0-ee",
    "",
]


def test_anything_else_is_not_a_version() -> None:
    read = {text: Version.parse(text) for text in NOT_VERSIONS}
    assert {text: v for text, v in read.items() if v is not None} == {}


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("18.5.3", "18.6.0"),
        ("18.6.0-rc2", "18.6.0"),
        ("18.6.0-RC2", "18.6.0-ee"),
        ("18.6.0-rc2", "18.6.0-rc10"),
        ("v18.6.0-rc1-ee", "18.6.0-ee.0"),
        ("18.6.0-rc42.ee.0", "v18.6.0"),
        ("v18.6.0-ee", "18.6.1"),
        ("18.7.202612011206-a5c4a2e2b29.f8e5a8b3c2d", "18.7.202612021206-0b1c2d3e4f5.a6b7c8d9e0f"),
        ("18-7-202612011206-a5c4a2e2b29", "18.7.202612021206+0b1c2d3e4f5"),
        ("18.6.9", "18.7.202612011206-a5c4a2e2b29.f8e5a8b3c2d"),
        ("18-7-202612011206-a5c4a2e2b29", "18.8.0-rc1"),
    ],
)
def test_versions_order_as_gitlab_ships_them(lower: str, higher: str) -> None:
    a, b = Version.parse(lower), Version.parse(higher)
    assert a is not None
    assert b is not None
    assert (a.compare(b), b.compare(a)) == (-1, 1)


def test_the_image_tag_of_an_auto_deploy_build_is_the_same_version_as_its_tag() -> None:
    tag = Version.parse("18-7-202611221200-a1b2c3d4e5f")
    package = Version.parse("18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d-0")
    assert tag is not None
    assert package is not None
    assert tag.compare(package) == 0


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # Auto-deploys of 18.7 are built from master before and after 18-7-stable is cut.
        ("18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d", "18.7.0"),
        ("18-7-202611221200-a1b2c3d4e5f", "18.7.3-ee"),
        ("18.7.202611221200+a1b2c3d4e5f", "18.7.0-rc1"),
        # One timestamp, two commits.
        ("18.7.202611221200+a1b2c3d4e5f", "18-7-202611221200-0b1c2d3e4f5"),
    ],
)
def test_versions_that_cannot_be_ordered_are_not(one: str, other: str) -> None:
    a, b = Version.parse(one), Version.parse(other)
    assert a is not None
    assert b is not None
    assert (a.compare(b), b.compare(a)) == (None, None)


def test_suffixes_that_are_not_release_candidates_do_not_count() -> None:
    assert Version.parse("v18.6.0-ee") == Version.parse("18.6.0")
    assert Version.parse("18.6.0-ce.0") == Version.parse("18.6.0")
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


@pytest.mark.parametrize(
    "version",
    ["18-6-stable-ee", "latest", "a1b2c3d4e5f", "18.6", "13.1.1+rnightly.159756.b2b5f05e-0"],
)
def test_a_recorded_version_that_cannot_be_read_makes_the_answer_and_the_floor_unknown(
    version: str,
) -> None:
    odd = run(version, ["20261115000001"])
    records = [run("18.5.0", ["1"]), odd, run("18.6.0", ["2"])]
    target = Version.parse("18.9.0")
    assert target is not None
    answer = history.judge(records, target)
    assert (answer.above, answer.unknown, answer.safe) == ([], [odd], False)
    top = history.floor(records)
    assert isinstance(top, history.Unknown)
    assert top.version == "unknown"
    assert repr(version) in top.describe()


def test_an_auto_deploy_run_and_a_release_of_one_minor_leave_the_floor_unknown() -> None:
    records = [run("18.7.0", ["1"]), run("18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d", ["2"])]
    target = Version.parse("18.7.1")
    assert target is not None
    answer = history.judge(records, target)
    assert [r.version for r in answer.unknown] == [records[1].version]
    assert history.floor_version(records) == "unknown"
    # A later minor version answers for both.
    later = [*records, run("18.8.0", ["3"])]
    assert history.floor_version(later) == "18.8.0"


UNDECODABLE = [
    pytest.param(
        {"data": {"cut": '{"namespace":"gitlab","name":"gprd-1","uid":"u","ver'}}, id="cut"
    ),
    pytest.param({"data": {"junk": "{not json"}}, id="garbage"),
    pytest.param({"data": {"list": "[1, 2]"}}, id="not-an-object"),
    pytest.param(
        {"data": {"no-version": '{"namespace":"gitlab","name":"gprd-1","uid":"u"}'}},
        id="missing-field",
    ),
    pytest.param(
        {
            "data": {
                "bad": '{"namespace":"gitlab","name":"gprd-1","uid":"u","version":{"v":1},'
                '"image":"","completed":"","outcome":"Succeeded","migrations":[]}'
            }
        },
        id="wrong-type",
    ),
    pytest.param(
        {
            "data": {
                "bad": '{"namespace":"gitlab","name":"gprd-1","uid":"u","version":"18.9.0",'
                '"image":"","completed":"","outcome":"Succeeded","migrations":"123"}'
            }
        },
        id="migrations-not-a-list",
    ),
    pytest.param({"binaryData": {"gitlab.gprd-1.u": "eyJ9"}}, id="binary-data"),
]


@pytest.mark.parametrize("cm", UNDECODABLE)
def test_a_record_that_cannot_be_decoded_is_an_unknown_run_never_no_run(cm: dict) -> None:
    good = run("18.6.0", ["20261115000001"])
    cm = {**cm, "data": {good.key: good.encode(), **(cm.get("data") or {})}}
    records = history.runs(cm)
    assert len(records) == 2
    bad = records[0]
    assert isinstance(bad, history.Unreadable)
    assert bad.migrations is None
    assert "cannot be read" in bad.describe()
    target = Version.parse("18.9.0")  # above every readable run: safe, were it not for it
    assert target is not None
    answer = history.judge(records, target)
    assert (answer.above, answer.unknown, answer.safe) == ([], [bad], False)
    assert history.unsafe(records, "18.9.0") == [bad]
    assert history.floor_version(records) == "unknown"


def test_records_round_trip() -> None:
    r = run("18.6.0", ["20261115000001"])
    cm = history.configmap("gprd", "pdm-operator")
    cm["data"] = {r.key: r.encode()}
    assert history.runs(cm) == [r]
    assert history.decode(r.encode()) == r
    assert r.key == f"gitlab.gprd-18.6.0.{r.uid[:8]}"
    assert "20261115000001" in r.describe()


@pytest.mark.parametrize("cm", [None, {}, {"data": {}}, {"data": None, "binaryData": {}}])
def test_no_history_is_an_unknown_answer_and_floor_not_a_safe_one(cm: dict | None) -> None:
    records = history.runs(cm)
    target = Version.parse("18.0.0")
    assert target is not None
    answer = history.judge(records, target)
    assert (answer.empty, answer.safe) == (True, False)
    assert history.floor_version(records) == "unknown"


def test_the_floor_agrees_with_the_answer_for_every_target() -> None:
    """A rollback is safe exactly when its target is at or above the floor."""
    records = [
        run("18.5.0", ["1"], when="2026-11-01T00:00:00Z"),
        run("18.6.0-rc1", None, when="2026-11-02T00:00:00Z"),
        run("18.6.0", ["2"], when="2026-11-03T00:00:00Z"),
        run("18.7.0", [], when="2026-11-04T00:00:00Z"),
    ]
    top = history.floor(records)
    assert isinstance(top, Run)
    assert top.version == "18.6.0"
    floor = Version.parse(top.version)
    assert floor is not None
    for text in ["18.4.0", "18.5.0", "18.6.0-rc1", "18.6.0-rc2", "18.6.0", "18.6.1", "18.8.0"]:
        target = Version.parse(text)
        assert target is not None
        at_or_above = (target.compare(floor) or 0) >= 0
        assert history.judge(records, target).safe is at_or_above, text


def runs_of(namespace: str, count: int, start: int = 0) -> list[Run]:
    """``count`` runs of ``namespace``, each a day after the last, versions rising."""
    return [
        Run(
            namespace=namespace,
            name=f"m{i}",
            uid=f"{namespace}-{i:04d}",
            version=f"18.{i}.0",
            image="",
            completed=f"2026-01-01T00:00:00Z+{i:04d}",
            outcome="Succeeded",
            migrations=["1"],
        )
        for i in range(start, start + count)
    ]


def keyed(records: list[Run]) -> dict[str, str]:
    return {r.key: r.encode() for r in records}


def test_the_oldest_records_beyond_the_limit_are_pruned() -> None:
    records = [run(f"18.{i}.0", ["1"], when=f"2026-12-{i + 1:02d}T00:00:00Z") for i in range(5)]
    cm = {"data": {r.key: r.encode() for r in records}}
    assert history.to_prune(cm, keep=3) == sorted(r.key for r in records[:2])
    assert history.to_prune(cm, keep=10) == []


def test_pruning_never_drops_the_record_that_sets_the_floor() -> None:
    # The floor (18.9.0) was set by the oldest run; later runs were rollbacks.
    floor = run("18.9.0", ["9"], name="floor", when="2026-01-01T00:00:00Z")
    later = [run(f"18.{i}.0", ["1"], when=f"2026-02-{i + 1:02d}T00:00:00Z") for i in range(5)]
    cm = {"data": keyed([floor, *later])}
    dropped = history.to_prune(cm, keep=3)
    assert floor.key not in dropped
    assert dropped == sorted(r.key for r in later[:3])
    kept = {k: v for k, v in cm["data"].items() if k not in dropped}
    assert history.floor(history.runs({"data": kept})) == floor


def test_pruning_keeps_unknown_records_for_a_person_to_look_at() -> None:
    odd = run("latest", ["9"], name="odd", when="2026-01-01T00:00:00Z")
    later = [run(f"18.{i}.0", ["1"], when=f"2026-02-{i + 1:02d}T00:00:00Z") for i in range(4)]
    cm = {"data": {**keyed([odd, *later]), "cut": '{"namespace":'}}
    dropped = history.to_prune(cm, keep=2)
    # Five runs of one namespace, two of them needed (odd, and 18.3.0, the
    # highest): the three others go.
    assert "cut" not in dropped
    assert odd.key not in dropped
    assert dropped == sorted(r.key for r in later[:3])


def test_one_namespace_does_not_push_out_another_namespaces_records() -> None:
    busy = runs_of("busy", 8, start=10)  # newer and higher than quiet's
    quiet = runs_of("quiet", 2)
    cm = {"data": keyed([*quiet, *busy])}
    dropped = history.to_prune(cm, keep=3)
    # Only busy's oldest go; quiet's two stay although busy's runs dominate them.
    assert dropped == sorted(r.key for r in busy[:5])
    assert history.to_prune({"data": keyed(quiet)}, keep=3) == []


def test_pruning_changes_no_answer() -> None:
    records = [
        *runs_of("a", 6),
        *runs_of("b", 4, start=3),
        run("18.2.0", None, name="unknown-progress", when="2026-01-01T00:00:00Z+0099"),
    ]
    cm = {"data": keyed(records)}
    dropped = set(history.to_prune(cm, keep=2))
    assert dropped
    kept = history.runs({"data": {k: v for k, v in cm["data"].items() if k not in dropped}})
    for i in range(12):
        target = Version.parse(f"18.{i}.0")
        assert target is not None
        before = history.judge(history.runs(cm), target)
        after = history.judge(kept, target)
        assert (before.safe, bool(before.above), bool(before.unknown)) == (
            after.safe,
            bool(after.above),
            bool(after.unknown),
        )
    assert history.floor_version(kept) == history.floor_version(history.runs(cm))


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
    # The one it stopped at may be half applied (no DDL transaction): it counts.
    assert history.applied(failed, "h") == ["1", "2"]
    first = {**failed, "failure": {"migration": {"version": "1"}}}
    assert history.applied(first, "h") == ["1"]  # never "applied nothing"
    assert history.applied({**failed, "failure": {}}, "h") is None  # where it stopped: unknown
    assert history.applied({**ok, **pre(["1"], count=600)}, "h") is None  # list was cut
    assert history.applied({"jobOutcome": "Succeeded"}, "h") is None  # no pre-flight


def test_the_deployed_version_is_given_or_the_images_tag() -> None:
    assert history.deployed_version({"spec": {"gitlabVersion": "18.6.1"}}, "t:v9") == "18.6.1"
    assert history.deployed_version({"spec": {}}, "reg:5000/cng/toolbox:v18.6.0@sha256:ab") == (
        "v18.6.0"
    )


def test_a_run_is_recorded_at_the_higher_of_its_given_version_and_its_images_tag() -> None:
    # A gitlabVersion below the image that ran would lower the floor.
    low = {"spec": {"gitlabVersion": "18.5.0"}}
    assert history.deployed_version(low, "r/toolbox-ee:v18.6.1") == "v18.6.1"
    high = {"spec": {"gitlabVersion": "18.7.0"}}
    assert history.deployed_version(high, "r/toolbox-ee:v18.6.1") == "18.7.0"
    assert history.deployed_version({"spec": {}}, "r/toolbox-ee:v18.6.1") == "v18.6.1"
    assert history.deployed_version(low, "r/toolbox-ee:latest") == "18.5.0"


def test_a_run_whose_version_cannot_be_read_is_told_before_it_starts() -> None:
    assert history.unreadable_version({"spec": {}}, "r/toolbox-ee:v18.6.1") is None
    why = history.unreadable_version({"spec": {}}, "r/toolbox-ee:latest")
    assert why is not None
    assert "'latest'" in why
    assert "spec.gitlabVersion" in why
