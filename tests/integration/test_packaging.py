"""The image's install steps (hack/install.sh, run by the Dockerfile) give a
working pdm-operator in a fresh virtual environment. No Docker needed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.operator import repo_root

pytestmark = pytest.mark.integration


def test_install_script_produces_a_working_console_script(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    out = subprocess.run(
        ["sh", str(repo_root() / "hack" / "install.sh"), str(venv)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().startswith("pdm-operator ")
    # Only the pinned runtime set: no test or lint tools in the image.
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for dev_only in ("pytest", "ruff", "mypy", "hadolint"):
        assert dev_only not in installed
    rendered = subprocess.run(
        [
            str(venv / "bin" / "pdm-operator"),
            "render",
            "-f",
            str(repo_root() / "examples" / "pdm.yaml"),
            "--image",
            "registry.example.com/toolbox:v1",
            "--template",
            str(repo_root() / "examples" / "gitlab-chart-release.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "init-migrations-secrets" in rendered.stdout  # the chart's wiring, copied
    # No env var of that name; only the script that unsets it names it.
    assert "name: SKIP_POST_DEPLOYMENT_MIGRATIONS" not in rendered.stdout
    help_text = subprocess.run(
        [str(venv / "bin" / "pdm-operator"), "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--metrics-port" in help_text
