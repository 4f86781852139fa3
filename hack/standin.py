"""The stand-in GitLab images (a test fixture: hack/standin-toolbox/README.md).

A Debian bookworm root filesystem made by ``mmdebstrap``, cached by its
package list and options, with the stand-in's Rails application under
/srv/gitlab and its commands (/entrypoint, /scripts/*, /usr/bin/gitlab-rake)
on top. Migrations run in real Rails 6.1: ``ruby``, ``ruby-activerecord``
(2:6.1.7.10), ``ruby-railties`` (the application, its rake tasks:
db:migrate, db:migrate:status per database), ``ruby-pg`` (the driver) and
``rake``. Not the ``rails`` metapackage: it would add Action Mailer, Action
Cable, Active Storage, Active Job, Action Text and Sprockets, none of which a
migration loads; railties still brings Action Pack (a Debian dependency,
unused). ``sh``, bash and coreutils (essential) serve the chart's ``configure``
init script and the migration Job's ``/bin/bash -c``. No Python.

The chart's images (toolbox, certificates, gitlab-base, webservice, sidekiq)
are all this image under their names, so the chart-shaped release runs
unchanged on the real node.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import oci

HERE = Path(__file__).resolve().parent / "standin-toolbox"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("ruby", "ruby-activerecord", "ruby-railties", "ruby-pg", "rake")
#: The names the chart-shaped release (examples/gitlab-chart-release.yaml) uses.
CNG = "registry.example.com/gitlab-org/build/cng"
NAMES = (
    f"{CNG}/gitlab-toolbox-ee:v18.6.0",
    f"{CNG}/certificates:v18.6.0",
    f"{CNG}/gitlab-base:v18.6.0",
    f"{CNG}/gitlab-webservice-ee:v18.6.0",
    f"{CNG}/gitlab-sidekiq-ee:v18.6.0",
)
UID = "1000"  # the chart's runAsUser
#: dpkg's path-exclude takes one fnmatch pattern each (no braces); the
#: copyright files stay. merged-usr: the hook gives bookworm its merged /usr
#: with ``usr-is-merged``, where apt would otherwise pick ``usrmerge`` and
#: with it Perl (some 50 MB).
OPTIONS = (
    "--variant=essential",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")),
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
)


class ImageError(RuntimeError):
    """The image cannot be built here; the message says why."""


def rootfs(cache: Path) -> Path:
    """The Debian root filesystem, built once per package list."""
    key = hashlib.sha256(" ".join((SUITE, MIRROR, *PACKAGES, *OPTIONS)).encode()).hexdigest()[:12]
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
            *OPTIONS,
            f"--include={','.join(PACKAGES)}",
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


#: The stand-in's commands, where the chart's pods (and CNG's images) have them.
SCRIPTS = {
    "entrypoint": "/entrypoint",
    "wait-for-deps": "/scripts/wait-for-deps",
    "db-migrate": "/scripts/db-migrate",
    "webservice": "/scripts/webservice",
    "sidekiq": "/scripts/sidekiq",
    "gitlab-rake": "/usr/bin/gitlab-rake",
}
APP = "/srv/gitlab"


def app_files() -> list[oci.File]:
    """The Rails application (everything beside this README but the scripts), under /srv/gitlab."""
    files = []
    for path in sorted(HERE.rglob("*")):
        rel = path.relative_to(HERE)
        if path.is_file() and rel.parts[0] != "scripts" and rel != Path("README.md"):
            files.append(oci.File(f"{APP}/{rel.as_posix()}", path.read_bytes(), 0o644))
    return files


def image(cache: Path) -> oci.Image:
    files = [
        *(
            oci.File(target, (HERE / "scripts" / name).read_bytes(), 0o755)
            for name, target in SCRIPTS.items()
        ),
        *app_files(),
        # Rendered into by the ENTRYPOINT as the chart's runAsUser (CNG's
        # config directory is the git user's; here any uid may write, none may
        # delete another's files).
        oci.File(f"{APP}/config", directory=True, mode=0o1777),
        oci.File("/var/opt/gitlab/templates", directory=True, mode=0o755),
    ]
    return oci.Image(
        NAMES[0],
        files,
        aliases=list(NAMES[1:]),
        entrypoint=["/entrypoint"],
        user=UID,
        env=["PATH=/usr/local/bin:/usr/bin:/bin", "RAILS_ENV=production"],
        base=[rootfs(cache)],
    )
