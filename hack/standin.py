"""The stand-in GitLab toolbox image (a test fixture: hack/standin-toolbox/README.md).

A Debian root filesystem made by ``mmdebstrap`` (python3, psycopg2: the
PostgreSQL driver the stand-in's db-migrate uses, ``sh`` and coreutils for
the chart's ``configure`` init script), cached by its package list, with the
stand-in's scripts and migrations on top. The chart's three images
(toolbox, certificates, gitlab-base) are all this image under their names, so
the chart-shaped release runs unchanged on the real node.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import oci

HERE = Path(__file__).resolve().parent / "standin-toolbox"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3-minimal", "python3-psycopg2")
#: The names the chart-shaped release (examples/gitlab-chart-release.yaml) uses.
CNG = "registry.example.com/gitlab-org/build/cng"
NAMES = (
    f"{CNG}/gitlab-toolbox-ee:v18.6.0",
    f"{CNG}/certificates:v18.6.0",
    f"{CNG}/gitlab-base:v18.6.0",
)
UID = "1000"  # the chart's runAsUser


class ImageError(RuntimeError):
    """The image cannot be built here; the message says why."""


def rootfs(cache: Path) -> Path:
    """The Debian root filesystem, built once per package list."""
    key = hashlib.sha256(" ".join((SUITE, MIRROR, *PACKAGES)).encode()).hexdigest()[:12]
    out = cache / f"rootfs-{SUITE}-{key}.tar"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.tar")  # mmdebstrap picks the format by suffix
    proc = subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=essential",
            f"--include={','.join(PACKAGES)}",
            "--dpkgopt=path-exclude=/usr/share/{doc,man,locale,info}/*",
            SUITE,
            str(tmp),
            MIRROR,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ImageError(
            f"mmdebstrap failed (Debian's mmdebstrap package, make tools): {proc.stderr[-2000:]}"
        )
    tmp.replace(out)
    return out


def image(cache: Path) -> oci.Image:
    script = (HERE / "scripts" / "standin.py").read_bytes()
    files = [
        oci.File("/usr/local/lib/standin.py", script, 0o755),
        oci.File("/entrypoint", link="/usr/local/lib/standin.py"),
        oci.File("/scripts/wait-for-deps", link="/usr/local/lib/standin.py"),
        oci.File("/scripts/db-migrate", link="/usr/local/lib/standin.py"),
        oci.File("/usr/bin/gitlab-rake", link="/usr/local/lib/standin.py"),
        # Rendered into by the ENTRYPOINT as the chart's runAsUser.
        oci.File("/srv/gitlab/config", directory=True, mode=0o1777),
        oci.File("/var/opt/gitlab/templates", directory=True, mode=0o755),
    ]
    for kind in ("migrate", "post_migrate"):
        for sql in sorted((HERE / "db" / kind).glob("*.sql")):
            files.append(oci.File(f"/srv/gitlab/db/{kind}/{sql.name}", sql.read_bytes(), 0o644))
    return oci.Image(
        NAMES[0],
        files,
        aliases=list(NAMES[1:]),
        entrypoint=["/entrypoint"],
        user=UID,
        env=["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1"],
        base=[rootfs(cache)],
    )
