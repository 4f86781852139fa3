"""The CI commands: defaults as the CRD applies them, progress of `wait`,
and `render` run as the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdm_operator import cli

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
IMAGE = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.6.0"


def crd_schema() -> dict:
    crd = yaml.safe_load((ROOT / "crds" / "pdm-operator.io_postdeploymigrations.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_offline_defaults_are_the_crds_defaults() -> None:
    spec = crd_schema()["properties"]
    declared = {k: v["default"] for k, v in spec.items() if "default" in v and k != "job"}
    assert declared == cli.SPEC_DEFAULTS
    job = spec["job"]["properties"]
    assert {k: v["default"] for k, v in job.items() if "default" in v} == cli.JOB_DEFAULTS
    pre = spec["preflight"]["properties"]
    assert {k: v["default"] for k, v in pre.items() if "default" in v} == cli.PREFLIGHT_DEFAULTS


def script(name: str) -> str:
    found = shutil.which(
        name, path=os.pathsep.join([str(Path(os.sys.executable).parent), os.environ["PATH"]])
    )
    assert found, f"console script {name} is not installed"
    return found


EXAMPLE = [
    "render",
    "-f",
    str(ROOT / "examples" / "pdm.yaml"),
    "--image",
    IMAGE,
    "--template",
    str(ROOT / "examples" / "gitlab-chart-release.yaml"),
    "-n",
    "gitlab",
]


def test_render_prints_the_job_exactly_as_the_golden_file() -> None:
    out = subprocess.run(
        [script("pdm-operator"), *EXAMPLE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    golden = GOLDEN / "cli-render-example.yaml"
    if os.environ.get("PDM_UPDATE_GOLDEN") == "1":
        golden.write_text(out.stdout)
    assert out.stdout == golden.read_text(), (
        "render output changed; if intended, regenerate with PDM_UPDATE_GOLDEN=1"
    )
    # The chart's Job of a regular deploy carries the variable; the copy never does.
    assert (
        "SKIP_POST_DEPLOYMENT_MIGRATIONS"
        in (ROOT / "examples" / "gitlab-chart-release.yaml").read_text()
    )
    assert "SKIP_POST_DEPLOYMENT_MIGRATIONS" not in out.stdout
    job = yaml.safe_load(out.stdout)
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["certificates", "configure"]
    assert {v["name"] for v in pod["volumes"]} >= {"migrations-config", "init-migrations-secrets"}


def run_render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script("pdm-operator"), "render", *args], capture_output=True, text=True, check=False
    )


def test_render_of_a_chart_pdm_without_a_template_file_says_how_to_give_one() -> None:
    out = run_render("-f", str(ROOT / "examples" / "pdm.yaml"), "--image", IMAGE)
    assert out.returncode == cli.EXIT_ERROR
    assert "--template" in out.stderr
    assert "Traceback" not in out.stderr


def test_render_with_a_file_lacking_the_charts_job_names_what_it_looked_for(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    out = run_render(
        "-f", str(ROOT / "examples" / "pdm.yaml"), "--image", IMAGE, "--template", str(other)
    )
    assert out.returncode == cli.EXIT_ERROR
    assert "a Job labelled app=migrations,release=gitlab, found 0" in out.stderr


def test_render_refuses_a_run_pdm_that_sets_the_skip_variable(tmp_path: Path) -> None:
    manifest = tmp_path / "pdm.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "pdm-operator.io/v1alpha1",
                "kind": "PostDeployMigration",
                "metadata": {"name": "skips"},
                "spec": {
                    "environment": "gstg",
                    "image": {"reference": IMAGE},
                    "job": {"env": [{"name": "SKIP_POST_DEPLOYMENT_MIGRATIONS", "value": "false"}]},
                },
            }
        )
    )
    out = run_render("-f", str(manifest))
    assert out.returncode == cli.EXIT_ERROR
    assert "Rails skips every post-deployment migration" in out.stderr


def test_render_works_as_a_kubectl_plugin_with_the_same_output() -> None:
    args = EXAMPLE
    plugin = subprocess.run(
        [script("kubectl-pdm"), *args], capture_output=True, text=True, check=False
    )
    direct = subprocess.run(
        [script("pdm-operator"), *args], capture_output=True, text=True, check=False
    )
    assert plugin.returncode == 0
    assert plugin.stdout == direct.stdout


def test_render_without_an_image_for_from_deployment_is_a_usage_error() -> None:
    out = subprocess.run(
        [script("pdm-operator"), "render", "-f", str(ROOT / "examples" / "pdm.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "pass --image" in out.stderr
    assert "Traceback" not in out.stderr


def test_render_of_a_file_without_a_migration_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    out = subprocess.run(
        [script("pdm-operator"), "render", "-f", str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "expected exactly one PostDeployMigration, found 0" in out.stderr


@pytest.mark.parametrize(
    ("status", "code", "shown"),
    [
        (None, None, "NotFound"),
        (
            {
                "state": "Gated",
                "reason": "EnvironmentLocked",
                "conditions": [
                    {
                        "type": "Gated",
                        "status": "True",
                        "reason": "EnvironmentLocked",
                        "message": "x/y runs",
                    }
                ],
            },
            None,
            "Gated (EnvironmentLocked): x/y runs",
        ),
        (
            {
                "state": "Running",
                "reason": "Created",
                "conditions": [
                    {
                        "type": "JobCreated",
                        "status": "True",
                        "reason": "Created",
                        "message": "Job j",
                    }
                ],
            },
            None,
            "Running (Created)",
        ),
        (
            {
                "state": "Succeeded",
                "reason": "JobComplete",
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "JobComplete"}],
            },
            0,
            "Succeeded",
        ),
        (
            {
                "state": "Failed",
                "reason": "DeadlineExceeded",
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "DeadlineExceeded",
                        "message": "too slow",
                    }
                ],
                "failure": {"pod": "p-1", "logTail": "boom\n"},
            },
            1,
            "--- log tail of p-1 ---\nboom",
        ),
    ],
    ids=["not-found", "gated", "running", "succeeded", "failed"],
)
def test_wait_progress_line_and_exit_code(
    status: dict | None, code: int | None, shown: str
) -> None:
    obj = None if status is None else {"metadata": {"name": "m"}, "status": status}
    line, got = cli.progress("m", obj)
    assert got == code
    assert shown in line


def test_the_pending_list_is_shown_once_the_preflight_answered() -> None:
    running = {"status": {"preflight": {"phase": "Running", "jobName": "m-p1"}}}
    assert cli.pending_lines(running) is None
    assert cli.pending_lines(None) is None
    answered = {
        "status": {
            "preflight": {
                "phase": "Succeeded",
                "jobName": "m-p1",
                "completionTime": "2026-12-02T10:00:00Z",
                "pendingCount": 3,
            },
            "pendingMigrations": [
                {"database": "main", "version": "20261115000001", "name": "Add index"},
                {"database": "ci", "version": "20261115000001", "name": "Add index"},
            ],
        }
    }
    assert cli.pending_lines(answered) == [
        "pending migrations (3, pre-flight m-p1 at 2026-12-02T10:00:00Z):",
        "  20261115000001  Add index  (main)",
        "  20261115000001  Add index  (ci)",
        "  ... and 1 more",
    ]
    answered["status"]["pendingMigrations"] = []
    answered["status"]["preflight"]["pendingCount"] = 0
    assert cli.pending_lines(answered)[-1] == "  none: every migration is up"  # type: ignore[index]


def failed_pdm(name: str = "gstg-2026-11-22", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "gitlab", "uid": "u", "labels": {"team": "db"}},
        "spec": {"environment": "gstg", "image": {"reference": "r/t:1"}, "suspend": False},
        "status": {
            "state": "Failed",
            "reason": "BackoffLimitExceeded",
            "jobOutcome": "Failed",
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            **status,
        },
    }


def test_a_retry_copies_the_spec_under_a_derived_name_pointing_back() -> None:
    retry = cli.retry_of(failed_pdm(), {"gstg-2026-11-22", "gstg-2026-11-22-retry-1"})
    assert retry["metadata"]["name"] == "gstg-2026-11-22-retry-2"
    assert retry["metadata"]["annotations"] == {"pdm-operator.io/retry-of": "gstg-2026-11-22"}
    assert retry["metadata"]["labels"] == {"team": "db"}
    assert retry["spec"] == failed_pdm()["spec"]
    assert "status" not in retry
    assert "uid" not in retry["metadata"]


def test_a_retry_of_a_retry_counts_on_and_names_stay_within_the_limit() -> None:
    assert cli.retry_name("x-retry-1", {"x-retry-1"}) == "x-retry-2"
    long = cli.retry_name("m" * 54, set())
    assert long == "m" * 46 + "-retry-1"
    assert len(long) <= 54


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ({"state": "Running", "conditions": [], "jobOutcome": None}, "is Running, not Failed"),
        (
            {"reason": "BlockingReportFailed", "jobOutcome": "Succeeded"},
            "failed after its Job succeeded",
        ),
    ],
)
def test_only_a_failed_migration_is_retried(status: dict[str, Any], why: str) -> None:
    with pytest.raises(cli.RetryRefused, match=why):
        cli.retry_of(failed_pdm(**status), set())


def test_an_unreachable_api_server_is_an_error_exit_not_a_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rollback-check exits 1 only for "unsafe": an API failure is 2, with its message."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    code = cli.main(
        ["rollback-check", "gstg", "--to", "18.6.0", "--kubeconfig", str(kubeconfig), "-n", "x"]
    )
    assert code == cli.EXIT_ERROR
    assert "error: the API server:" in capsys.readouterr().err
