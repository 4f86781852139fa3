"""Dry-run diffs show meaningful changes only."""

from __future__ import annotations

import copy

from pdm_operator import diffing, render
from pdm_operator.model import Body


def migration(name: str, uid: str) -> Body:
    return {
        "metadata": {"name": name, "namespace": "gitlab", "uid": uid},
        "spec": {
            "environment": "gstg",
            "image": {"reference": "unused"},
            "job": {"activeDeadlineSeconds": 3600, "backoffLimit": 0},
        },
    }


def as_server_returns(job: Body, uid: str) -> Body:
    """What the API server adds to a created Job."""
    out = copy.deepcopy(job)
    out["metadata"].update(
        uid=uid,
        resourceVersion="123",
        creationTimestamp="2026-11-22T12:00:00Z",
        generation=1,
        managedFields=[{"manager": "pdm-operator"}],
    )
    for labels in (out["metadata"]["labels"], out["spec"]["template"]["metadata"]["labels"]):
        labels.update({"controller-uid": uid, "batch.kubernetes.io/controller-uid": uid})
        labels.update({"job-name": out["metadata"]["name"], "batch.kubernetes.io/job-name": "x"})
    out["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    out["status"] = {"succeeded": 1}
    return out


def jobs(old_image: str, new_image: str) -> tuple[Body, Body]:
    old = as_server_returns(render.render_job(migration("gstg-a", "u1"), old_image), "j1")
    new = as_server_returns(render.render_job(migration("gstg-b", "u2"), new_image), "j2")
    return old, new


def test_same_inputs_under_another_migration_name_diff_empty() -> None:
    old, new = jobs("toolbox:v1", "toolbox:v1")
    d = diffing.diff_jobs(old, "gstg-a", new, "gstg-b", base="gitlab/gstg-a-x")
    assert d.changed is False
    assert d.text == ""
    assert "no change" in d.summary


def test_changed_image_shows_only_the_image_and_the_name_hash() -> None:
    old, new = jobs("toolbox:v1", "toolbox:v2")
    d = diffing.diff_jobs(old, "gstg-a", new, "gstg-b", base="gitlab/gstg-a-x")
    assert d.changed is True
    assert diffing.changed_paths(
        diffing.normalize(old, "gstg-a"), diffing.normalize(new, "gstg-b")
    ) == [
        "metadata.name",
        "spec.template.spec.containers[migrations].image",
    ]
    changed_lines = [
        line
        for line in d.text.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert len(changed_lines) == 4
    assert all(("image:" in line) or ("name: <migration>-" in line) for line in changed_lines)
    assert "spec.template.spec.containers[migrations].image" in d.summary


def test_server_generated_fields_are_stripped() -> None:
    old, _ = jobs("toolbox:v1", "toolbox:v1")
    normalized = diffing.normalize(old, "gstg-a")
    text = diffing.to_yaml(normalized)
    for generated in (
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "controller-uid",
        "status:",
    ):
        assert generated not in text
    assert "selector" not in normalized["spec"]
    assert "uid" not in normalized["metadata"]
    assert normalized["metadata"]["name"].startswith("<migration>-")


def test_no_previous_run_is_a_change_showing_the_whole_job() -> None:
    _, new = jobs("toolbox:v1", "toolbox:v1")
    d = diffing.diff_jobs(None, None, new, "gstg-b")
    assert d.changed is True
    assert d.base is None
    assert "no previous successful run" in d.summary
    assert "+  name: <migration>-" in d.text
    assert not [
        line for line in d.text.splitlines() if line.startswith("-") and line != "--- /dev/null"
    ]


def test_normalize_does_not_modify_its_input() -> None:
    old, _ = jobs("toolbox:v1", "toolbox:v1")
    before = copy.deepcopy(old)
    diffing.normalize(old, "gstg-a")
    assert old == before


def test_bounded_cuts_at_a_line_end_and_says_so() -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    cut, truncated = diffing.bounded(text, limit=50)
    assert truncated is True
    assert cut.endswith("\n")
    assert len(cut) <= 50
    assert text.startswith(cut)
    assert diffing.bounded("short\n", limit=50) == ("short\n", False)
