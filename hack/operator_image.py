#!/usr/bin/env python3
"""The operator's image, built from the project's Dockerfile without Docker or a registry.

The Dockerfile's base (``python:3.11-slim-bookworm``) cannot be pulled here,
so an equivalent base is made locally: a Debian bookworm root filesystem from
``mmdebstrap`` with python3 and venv, plus this machine's CA bundle (the
Dockerfile's ``RUN pip install`` reaches PyPI as the host's pip does). Then
Debian's ``buildah`` builds the Dockerfile as it is (``--isolation chroot
--pull=never``, the base passed as ``PYTHON_IMAGE``) and writes an OCI
archive that the real node imports. Cached by the hash of everything the
image is built from.

    hack/operator_image.py            # prints the archive's path
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
sys.path.insert(0, str(HACK))

import oci  # noqa: E402
from localcluster import CACHE  # noqa: E402

BASE = "localhost/pdm/python:3.11-bookworm"
IMAGE = "localhost/pdm/pdm-operator:dev"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: What the image is made of (the Dockerfile's COPY sources and itself).
INPUTS = (
    "Dockerfile",
    "requirements/runtime.lock",
    "pyproject.toml",
    "README.md",
    "hack/install.sh",
)


class ImageError(RuntimeError):
    pass


def _run(*argv: str) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ImageError(f"{' '.join(argv[:3])} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    return out.stdout


def key() -> str:
    h = hashlib.sha256(" ".join(PACKAGES).encode())
    for rel in INPUTS:
        h.update((ROOT / rel).read_bytes())
    for f in sorted((ROOT / "operator").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    if HOST_CA.exists():
        h.update(HOST_CA.read_bytes())
    return h.hexdigest()[:16]


def base(cache: Path) -> Path:
    rootfs = cache / "rootfs-python-bookworm.tar"
    if not rootfs.exists():
        partial = cache / "rootfs-python-bookworm.partial.tar"
        _run(
            "mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            "--dpkgopt=path-exclude=/usr/share/{doc,man,locale,info}/*",
            "bookworm", str(partial), "http://deb.debian.org/debian",
        )  # fmt: skip
        partial.replace(rootfs)
    files = [oci.File(str(HOST_CA), HOST_CA.read_bytes(), 0o644)] if HOST_CA.exists() else []
    image = oci.Image(BASE, files, cmd=["python3"], base=[rootfs])
    return oci.cached_archive(image, cache)


def build(cache: Path = CACHE / "images") -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"pdm-operator-{key()}.tar"
    if out.exists():
        return out
    archive = base(cache)
    _run("buildah", "pull", "--quiet", f"oci-archive:{archive}")
    _run(
        # --layers: the dependencies' layer is reused when only the code changed.
        "buildah", "bud", "--quiet", "--layers", "--isolation", "chroot", "--pull=never",
        "--build-arg", f"PYTHON_IMAGE={BASE}", "-t", IMAGE,
        "-f", str(ROOT / "Dockerfile"), str(ROOT),
    )  # fmt: skip
    partial = out.with_name(out.stem + ".partial.tar")
    partial.unlink(missing_ok=True)
    _run("buildah", "push", "--quiet", IMAGE, f"oci-archive:{partial}:{IMAGE}")
    partial.replace(out)
    return out


if __name__ == "__main__":
    try:
        print(build())
    except ImageError as e:
        print(f"[operator-image] error: {e}", file=sys.stderr)
        sys.exit(1)
