"""The Dockerfile is clean under hadolint and keeps the image's promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_is_clean_under_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    out = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_runs_the_operator_as_non_root_from_the_shared_install_script() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = text.split("\nFROM ")
    assert len(stages) == 3, "a build stage and a final stage"
    final = stages[-1]
    assert "USER 65532:65532" in final
    assert 'ENTRYPOINT ["pdm-operator", "run"]' in final
    assert "RUN " not in final  # no build tools or installs in the final image
    assert "RUN sh hack/install.sh /opt/pdm-operator deps" in stages[1]
    assert "RUN sh hack/install.sh /opt/pdm-operator package" in stages[1]
    # The dependencies' layer comes before the code is copied: a code change reuses it.
    assert stages[1].index("deps") < stages[1].index("COPY operator/")
