"""A real PostgreSQL for the stand-in GitLab (Debian's server), one per local cluster.

It listens on the real node's address only, so migration pods reach it the
way they reach a GitLab database: over the network, with the password the
chart's projected secret carries. The harness itself talks to it over a unix
socket as the superuser (``psql``), to set up and to check
``schema_migrations``.

PostgreSQL refuses to run as root, so it runs as Debian's ``postgres`` user,
with its data in /var/lib/pdm-operator/ (root's home, where the rest of the
cluster's state lives, is closed to that user).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "gitlabhq_production"
USER = "gitlab"
#: The example release's Secret gitlab-postgresql-password holds the same.
PASSWORD = "stand-in-password"  # noqa: S105 - a test database's, on a private address


class PostgresError(RuntimeError):
    """PostgreSQL cannot run here; the message says why."""


@dataclass
class Postgres:
    cluster: str
    host: str
    port: int

    @property
    def root(self) -> Path:
        return Path("/var/lib/pdm-operator") / f"postgres-{self.cluster}"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def argv(self) -> list[str]:
        return [
            "runuser", "-u", "postgres", "--", str(BIN / "postgres"), "-D", str(self.root / "data"),
            "-c", f"listen_addresses={self.host}", "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]  # fmt: skip

    def prepare(self) -> None:
        """initdb and access rules; the server is started by the caller (``argv``)."""
        if not (BIN / "initdb").exists() or shutil.which("runuser") is None:
            raise PostgresError(
                f"PostgreSQL's server is missing ({BIN}): install Debian's postgresql (make tools)"
            )
        shutil.rmtree(self.root, ignore_errors=True)
        self.socket_dir.mkdir(parents=True)
        self.root.parent.chmod(0o755)
        subprocess.run(["chown", "-R", "postgres:postgres", str(self.root)], check=True)
        out = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(BIN / "initdb"), "-D", str(self.root / "data"),
             "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise PostgresError(f"initdb failed: {out.stderr.strip()}")
        hba = self.root / "data" / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\n")

    def ready(self) -> bool:
        return (
            subprocess.run(
                [str(BIN / "pg_isready"), "-h", str(self.socket_dir), "-p", str(self.port)],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def bootstrap(self) -> None:
        """The GitLab role and database, once the server answers."""
        self.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'", database="postgres")
        self.psql(f"CREATE DATABASE {DATABASE} OWNER {USER}", database="postgres")

    def psql(self, sql: str, database: str = DATABASE) -> str:
        """Run ``sql`` as the superuser; returns the unaligned, tuples-only output."""
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(
                ["psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres",
                 "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode == 0:
                return out.stdout
            if time.monotonic() > deadline:
                raise PostgresError(f"psql failed: {out.stderr.strip()}")
            time.sleep(0.2)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
