"""The alert rules in manifests/monitoring are valid and fire when they should.

Uses Debian's promtool (package ``prometheus``; ``make test`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: install Debian's 'prometheus' package (make tools)")
    rule = yaml.safe_load((ROOT / "manifests" / "monitoring" / "prometheusrule.yaml").read_text())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(ROOT / "tests" / "monitoring" / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    return tmp_path


def test_rules_pass_promtool_check(rules_dir: Path) -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(rules_dir / "rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 10 rules found" in out.stdout


def test_every_alert_fires_when_it_should_and_only_then(rules_dir: Path) -> None:
    out = subprocess.run(
        ["promtool", "test", "rules", "alerts-test.yaml"],
        cwd=rules_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_runbook_entry() -> None:
    rule = yaml.safe_load((ROOT / "manifests" / "monitoring" / "prometheusrule.yaml").read_text())
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            anchor = r["annotations"]["runbook"].split("#", 1)[1]
            assert anchor == r["alert"].lower()
            assert f"### {r['alert']}" in runbook, f"no runbook section for {r['alert']}"


def test_every_alert_is_tested() -> None:
    rule = yaml.safe_load((ROOT / "manifests" / "monitoring" / "prometheusrule.yaml").read_text())
    tests = yaml.safe_load((ROOT / "tests" / "monitoring" / "alerts-test.yaml").read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert alerts == tested


def test_dashboard_uses_only_metrics_the_operator_exposes() -> None:
    import json  # noqa: PLC0415
    import re  # noqa: PLC0415

    dashboard = json.loads(
        (ROOT / "manifests" / "monitoring" / "grafana-dashboard.json").read_text()
    )
    documented = set(
        re.findall(
            r"`((?:pdm|controller_runtime)_\w+)`", (ROOT / "docs" / "operations.md").read_text()
        )
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    used = {m for e in exprs for m in re.findall(r"\b((?:pdm|controller_runtime)_[a-z_]+)", e)}
    base = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert base <= documented, base - documented
    for p in dashboard["panels"]:
        if p.get("type") != "row":
            assert p.get("description"), p.get("title")
