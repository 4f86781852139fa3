"""The CI commands: defaults as the CRD applies them, progress of `wait`,
and `render` run as the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

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


def script(name: str) -> str:
    found = shutil.which(
        name, path=os.pathsep.join([str(Path(os.sys.executable).parent), os.environ["PATH"]])
    )
    assert found, f"console script {name} is not installed"
    return found


def test_render_prints_the_job_exactly_as_the_golden_file() -> None:
    out = subprocess.run(
        [
            script("pdm-operator"),
            "render",
            "-f",
            str(ROOT / "examples" / "pdm.yaml"),
            "--image",
            IMAGE,
            "-n",
            "gitlab",
        ],
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
    job = yaml.safe_load(out.stdout)
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SKIP_POST_DEPLOYMENT_MIGRATIONS", "value": "false"} in env


def test_render_works_as_a_kubectl_plugin_with_the_same_output() -> None:
    args = ["render", "-f", str(ROOT / "examples" / "pdm.yaml"), "--image", IMAGE, "-n", "gitlab"]
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
