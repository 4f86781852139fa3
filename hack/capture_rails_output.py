#!/usr/bin/env python3
"""Capture Rails' own output from the stand-in GitLab: the parsers' golden files.

``tests/unit/golden/rails/`` holds what Rails 6.1 prints for the pre-flight's
``db:migrate:status`` and for ``db:migrate`` applying, and failing on, the
stand-in's post-deployment migrations. This runs the stand-in's commands
(``hack/standin-toolbox/``: the files the image holds) with Debian's Ruby
packages (the image's packages) on this host, against a throwaway PostgreSQL
15 with two databases, main and ci, and writes what they print, stdout and
stderr together as a container's log has them. Run it again when the
stand-in changes, and read the diff.

Needs root and ``apt-get install ruby ruby-activerecord ruby-railties ruby-pg
rake postgresql`` (the first five are the image's, hack/standin.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from pdm_operator import preflight, selection  # noqa: E402

APP = ROOT / "hack" / "standin-toolbox"
OUT = ROOT / "tests" / "unit" / "golden" / "rails"
BIN = Path("/usr/lib/postgresql/15/bin")
PORT = 55432
PASSWORD = "capture"  # noqa: S105 - a throwaway database's, on loopback
MAIN, CI = "gitlabhq_production", "gitlabhq_production_ci"


class Capture:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sockets = tmp / "run"
        self.config = tmp / "config"
        self.bin = tmp / "bin"

    def psql_argv(self, database: str) -> list[str]:
        return ["psql", "-h", str(self.sockets), "-p", str(PORT), "-U", "postgres",
                "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt"]  # fmt: skip

    def psql(self, sql: str, database: str = "postgres") -> None:
        subprocess.run([*self.psql_argv(database), "-c", sql], check=True, capture_output=True)

    @contextlib.contextmanager
    def postgres(self) -> Iterator[None]:
        data = self.tmp / "data"
        self.sockets.mkdir(parents=True)
        subprocess.run(["chown", "-R", "postgres:postgres", str(self.tmp)], check=True)
        self.tmp.chmod(0o755)
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(BIN / "initdb"), "-D", str(data),
             "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"],
            check=True, capture_output=True,
        )  # fmt: skip
        server = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(BIN / "postgres"), "-D", str(data),
             "-c", "listen_addresses=127.0.0.1", "-c", f"port={PORT}",
             "-c", f"unix_socket_directories={self.sockets}", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while subprocess.run(
                [str(BIN / "pg_isready"), "-h", str(self.sockets), "-p", str(PORT)],
                capture_output=True, check=False,
            ).returncode:  # fmt: skip
                if time.monotonic() > deadline:
                    raise SystemExit("PostgreSQL did not start")
                time.sleep(0.2)
            yield
        finally:
            server.terminate()
            server.wait(timeout=30)

    def prepare(self) -> None:
        self.psql(f"CREATE ROLE gitlab LOGIN PASSWORD '{PASSWORD}'")
        for name in (MAIN, CI):
            self.psql(f"CREATE DATABASE {name} OWNER gitlab")
        self.config.mkdir()
        blocks = [
            f"  {key}:\n    adapter: postgresql\n    encoding: unicode\n    database: {name}\n"
            f"    username: gitlab\n    password: {PASSWORD}\n    host: 127.0.0.1\n"
            f"    port: {PORT}\n    database_tasks: true\n"
            for key, name in (("main", MAIN), ("ci", CI))
        ]
        (self.config / "database.yml").write_text("production:\n" + "".join(blocks))
        self.bin.mkdir()
        (self.bin / "gitlab-rake").symlink_to(APP / "scripts" / "gitlab-rake")

    def script(self, text: str) -> str:
        """A selection's script as the migration container runs it in db-migrate's place."""
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "RAILS_ROOT": str(APP),
            "CONFIG_DIRECTORY": str(self.config),
            "HOME": str(self.tmp),
            selection.SCRIPT_ENV: text,
        }
        out = subprocess.run(
            ["/bin/bash", "-c", f"set -e;\n{selection.COMMAND};\n"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
        )  # fmt: skip
        return out.stdout + f"[exit {out.returncode}]\n"

    def run(self, *argv: str, skip: bool = False) -> str:
        """A stand-in command; stdout and stderr in one stream, as the kubelet keeps them."""
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "RAILS_ROOT": str(APP),
            "CONFIG_DIRECTORY": str(self.config),
            "HOME": str(self.tmp),
        }
        if skip:
            env["SKIP_POST_DEPLOYMENT_MIGRATIONS"] = "true"
        out = subprocess.run(
            [str(APP / "scripts" / argv[0]), *argv[1:]],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
        )  # fmt: skip
        return out.stdout

    @contextlib.contextmanager
    def lock(self, table: str, mode: str) -> Iterator[None]:
        """Another session's lock on ``table``, in an open transaction."""
        proc = subprocess.Popen(
            self.psql_argv(MAIN), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(f"BEGIN;\nLOCK TABLE {table} IN {mode} MODE;\nSELECT 'locked';\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "locked":
            raise SystemExit(f"could not lock {table}")
        try:
            yield
        finally:
            proc.stdin.write("ROLLBACK;\n")
            proc.stdin.close()
            proc.wait(timeout=10)


def save(name: str, text: str) -> None:
    (OUT / f"{name}.txt").write_text(text)
    print(f"wrote {OUT / name}.txt ({len(text.splitlines())} lines)", file=sys.stderr)


def main() -> int:
    if os.geteuid() != 0 or shutil.which("ruby") is None or not (BIN / "initdb").exists():
        print(__doc__, file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rails-capture-") as tmp:
        c = Capture(Path(tmp))
        with c.postgres():
            c.prepare()
            c.run("db-migrate", skip=True)  # the regular deploy
            save("migrate-status-two-databases", c.run("gitlab-rake", "db:migrate:status"))
            # What a selection's Job runs in place of db-migrate (pdm_operator.selection).
            pending = preflight.parse_status(c.run("gitlab-rake", "db:migrate:status"))
            assert pending is not None
            last = pending.pending[-1].version
            only = selection.split(
                selection.Selection(only=(last,)), pending.pending, len(pending.pending)
            )
            assert isinstance(only, selection.Plan)
            save("migrate-selected-one", c.script(selection.script(only, marking=False)))
            save("migrate-status-one-applied", c.run("gitlab-rake", "db:migrate:status"))
            first = pending.pending[0].version
            mark = selection.split(
                selection.Selection(mark=(first,)), pending.pending, len(pending.pending)
            )
            assert isinstance(mark, selection.Plan)
            save("mark-executed", c.script(selection.script(mark, marking=True)))
            save("mark-executed-again", c.script(selection.script(mark, marking=True)))
            # Back to the regular deploy's state (versions are digits: parse_status).
            undo = f"DELETE FROM schema_migrations WHERE version IN ('{first}', '{last}')"  # noqa: S608
            c.psql(undo, MAIN)
            c.psql(undo, CI)
            c.psql("DROP INDEX IF EXISTS index_ci_builds_on_status", CI)
            duplicates = (
                "INSERT INTO projects (path) VALUES ('gitlab-org/gitlab'), ('gitlab-org/gitlab')"
            )
            c.psql(duplicates, MAIN)
            save("migrate-unique-violation", c.run("db-migrate"))
            c.psql("DELETE FROM projects", MAIN)
            # A long read on projects: the index is built beside it, the column
            # drop waits for it and gives up at its lock_timeout.
            with c.lock("projects", "ACCESS SHARE"):
                save("migrate-lock-timeout", c.run("db-migrate"))
            save("migrate-post-deployment", c.run("db-migrate"))
            save("migrate-status-all-up", c.run("gitlab-rake", "db:migrate:status"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
