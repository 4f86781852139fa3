"""What SREs see: metrics that move, JSON logs that name the migration,
health, and a real Prometheus scraping the operator."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdm_operator.kube import Kube
from tests.integration.conftest import Cluster
from tests.support.operator import OperatorProcess, free_port, pythonpath_env
from tests.support.pdm import Api, migration
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

IMAGE = {"reference": "registry.example.com/gitlab-toolbox-ee:v18.6.0"}


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (None if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def json_operator(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        pythonpath_env(cluster.env()), namespace, tmp_path / "operator.log", "--log-format", "json"
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop_later()
        print(f"----- operator log -----\n{proc.log()[-20000:]}")


def test_metrics_move_with_migrations_and_labels_stay_bounded(
    api: Api, json_operator: OperatorProcess
) -> None:
    before = json_operator.metrics()
    assert sample(before, "pdm_operator_build_info") == 1.0
    api.create(
        migration(
            "obs-run",
            env="gstg",
            image=IMAGE,
            job={"podAnnotations": {"sim.pdm-operator.io/duration": "3s"}},
        )
    )
    wait_until(
        lambda: (
            sample(json_operator.metrics(), "pdm_migrations_running", environment="gstg") == 1.0
        ),
        timeout=60,
        what="pdm_migrations_running{environment=gstg} to be 1",
    )
    api.create(migration("obs-held", env="gstg", image=IMAGE))
    wait_until(
        lambda: (
            sample(
                json_operator.metrics(),
                "pdm_migrations_gated",
                environment="gstg",
                reason="EnvironmentLocked",
            )
            == 1.0
        ),
        timeout=60,
        what="one migration gated on the environment lock",
    )
    api.wait_condition("obs-run", "Succeeded", timeout=60)
    api.wait_condition("obs-held", "Succeeded", timeout=60)
    api.create(
        migration(
            "obs-bad",
            env="gprd",
            image=IMAGE,
            job={"podAnnotations": {"sim.pdm-operator.io/outcome": "fail"}},
        )
    )
    api.wait_condition("obs-bad", "Failed", timeout=60)

    def settled() -> str | None:
        text = json_operator.metrics()
        ok = sample(
            text,
            "pdm_migrations_total",
            environment="gstg",
            outcome="succeeded",
            reason="JobComplete",
        )
        bad = sample(
            text,
            "pdm_migrations_total",
            environment="gprd",
            outcome="failed",
            reason="BackoffLimitExceeded",
        )
        # A pass counts as reconciled once it returns, just after it counted
        # its migration: wait for both.
        passes = sample(
            text,
            "controller_runtime_reconcile_total",
            controller="postdeploymigration",
            result="success",
        )
        timed = sample(
            text,
            "controller_runtime_reconcile_time_seconds_count",
            controller="postdeploymigration",
        )
        done = ok == 2.0 and bad == 1.0 and (passes or 0) >= 3 and (timed or 0) >= 3
        return text if done else None

    after = wait_until(settled, timeout=30, what="the migration and reconcile counters")
    assert (
        sample(after, "pdm_migration_duration_seconds_count", environment="gstg", mode="Run") == 2.0
    )
    assert (
        sample(after, "pdm_migration_duration_seconds_sum", environment="gstg", mode="Run") or 0
    ) >= 3.0
    assert sample(after, "pdm_gate_wait_seconds_count", environment="gstg") == 2.0
    assert (sample(after, "pdm_last_success_timestamp_seconds", environment="gstg") or 0) > 0
    assert sample(after, "pdm_migrations_running", environment="gstg") is None  # nothing runs now
    # The failure by its class, as its status says it (a bounded label).
    failed_class = api.get("obs-bad")["status"]["failure"]["class"]  # type: ignore[index]
    by_class = {"class": failed_class}
    assert sample(after, "pdm_migration_failures_total", environment="gprd", **by_class) == 1.0
    # What the operator's client sent, by method and resource: three Jobs
    # created, their statuses patched, and nothing named by an object.
    assert (
        sample(after, "pdm_api_requests_total", method="POST", resource="jobs", dry_run="false")
        == 3.0
    )
    assert (
        sample(
            after,
            "pdm_api_requests_total",
            method="PATCH",
            resource="postdeploymigrations/status",
            dry_run="false",
        )
        or 0
    ) >= 6.0
    # Every status patch sent is counted once by what it changed: the sum of
    # pdm_status_writes_total is the client's PATCH count.
    patches = sample(
        after,
        "pdm_api_requests_total",
        method="PATCH",
        resource="postdeploymigrations/status",
        dry_run="false",
    )
    by_change = {
        change: sample(after, "pdm_status_writes_total", change=change) or 0.0
        for change in ("state", "progress", "reports")
    }
    assert sum(by_change.values()) == patches
    assert by_change["state"] >= 6.0
    # No unbounded label values: no migration name, Job name or hash anywhere.
    for name in ("obs-run", "obs-held", "obs-bad"):
        assert name not in after
    assert not re.search(r'="[0-9a-f]{8,}"', after)


def test_json_logs_name_the_migration_on_every_line_about_it(
    api: Api, json_operator: OperatorProcess
) -> None:
    api.create(migration("obs-json", env="gstg", image=IMAGE))
    api.wait_condition("obs-json", "Succeeded", timeout=60)
    wait_until(
        lambda: "JobComplete" in json_operator.log(), timeout=30, what="the JobComplete log line"
    )
    lines = [json.loads(line) for line in json_operator.log().splitlines() if line.startswith("{")]
    assert lines, "no JSON log lines"
    about = [entry for entry in lines if "obs-json" in entry.get("message", "")]
    assert len(about) >= 4  # locked, JobCreated, unlocked, Succeeded
    for entry in about:
        assert (entry["namespace"], entry["migration"], entry["environment"]) == (
            api.ns,
            "obs-json",
            "gstg",
        )


def test_healthz_reports_the_watches(json_operator: OperatorProcess) -> None:
    status, body = json_operator.health()
    assert status == 200
    assert json.loads(body)["watches"] == {"postdeploymigrations": "ok", "jobs": "ok"}


def test_the_watch_audit_lists_metadata_only_page_by_page(cluster: Cluster, api: Api) -> None:
    for i in range(5):
        api.create(migration(f"audit-{i}", suspend=True))
    kube = Kube(cluster.api)

    def versions(items: list[dict[str, Any]]) -> dict[str, str]:
        return {m["metadata"]["name"]: m["metadata"]["resourceVersion"] for m in items}

    listed = kube.migration_versions(api.ns, page=2)  # three pages
    assert versions(listed) == versions(kube.list_migrations(api.ns))
    assert len(listed) == 5
    assert all(set(m["metadata"]) == {"namespace", "name", "resourceVersion"} for m in listed)
    assert len(kube.migration_versions(None, page=2)) >= 5  # all namespaces
    assert kube.job_versions(api.ns, "pdm-operator.io/migration-uid", page=2) == []


def test_a_real_prometheus_scrapes_the_operator(
    api: Api, json_operator: OperatorProcess, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: install Debian's 'prometheus' package (make tools)"
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "- job_name: pdm-operator\n"
        f"  static_configs: [{{targets: ['127.0.0.1:{json_operator.metrics_port}']}}]\n"
    )
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(tmp_path / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        api.create(migration("obs-prom", env="gstg", image=IMAGE))
        api.wait_condition("obs-prom", "Succeeded", timeout=60)

        def query() -> float | None:
            q = urllib.parse.quote(
                'sum(pdm_migrations_total{job="pdm-operator",outcome="succeeded"})'
            )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/query?query={q}", timeout=5
                ) as r:
                    result = json.load(r)["data"]["result"]
            except OSError:
                return None
            return float(result[0]["value"][1]) if result else None

        assert wait_until(query, timeout=60, what="Prometheus to have scraped a success") == 1.0

        def up() -> bool:
            q = urllib.parse.quote('up{job="pdm-operator"}')
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/v1/query?query={q}", timeout=5
            ) as r:
                result = json.load(r)["data"]["result"]
            return bool(result) and result[0]["value"][1] == "1"

        assert wait_until(up, timeout=30, what="up == 1")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
