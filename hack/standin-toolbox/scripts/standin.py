#!/usr/bin/python3
"""The stand-in toolbox's commands (a test fixture; see README.md beside it).

entrypoint, wait-for-deps, db-migrate and gitlab-rake are links to this file:
it acts by the name it was called with.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path("/srv/gitlab")
MIGRATION = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")
ERB = re.compile(r"<%=\s*(.*?)\s*%>")


def render(template: str) -> str:
    """The ERB forms GitLab's chart templates use; anything else is an error, as in Ruby."""

    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        m = re.fullmatch(r"File\.read\('([^']+)'\)\.strip\.to_json", expr)
        if m:
            return json.dumps(Path(m.group(1)).read_text().strip())
        m = re.fullmatch(r"ENV\['([A-Z0-9_]+)'\]", expr)
        if m:
            return os.environ.get(m.group(1), "")
        raise SystemExit(f"entrypoint: unsupported ERB expression: {expr}")

    return ERB.sub(value, template)


def entrypoint(args: list[str]) -> int:
    src = Path(os.environ.get("CONFIG_TEMPLATE_DIRECTORY", "/var/opt/gitlab/templates"))
    dst = Path(os.environ.get("CONFIG_DIRECTORY", "/srv/gitlab/config"))
    dst.mkdir(parents=True, exist_ok=True)
    for template in sorted(src.glob("*.erb")):
        (dst / template.name.removesuffix(".erb")).write_text(render(template.read_text()))
        print(f"Rendered {dst / template.name.removesuffix('.erb')}", flush=True)
    if not args:
        return 0
    os.execvp(args[0], args)  # noqa: S606 - runs its arguments, as the real entrypoint does
    return 127


def settings() -> dict[str, str]:
    """``production.main`` of the rendered database.yml (the flat YAML the chart writes)."""
    path = Path(os.environ.get("CONFIG_DIRECTORY", "/srv/gitlab/config")) / "database.yml"
    if not path.exists():
        raise SystemExit(
            f"{path} is missing: the configuration was never rendered "
            "(was the image ENTRYPOINT bypassed by a command?)"
        )
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s{4}([a-z_]+):\s*(.*)$", line)
        if m:
            raw = m.group(2).strip()
            out[m.group(1)] = json.loads(raw) if raw.startswith('"') else raw
    return out


def connect():  # type: ignore[no-untyped-def]
    import psycopg2  # noqa: PLC0415 - only in the image

    s = settings()
    return psycopg2.connect(
        host=s["host"],
        port=int(s.get("port") or 5432),
        dbname=s["database"],
        user=s["username"],
        password=s["password"],
        connect_timeout=int(s.get("connect_timeout") or 10),
    )


def migrations() -> list[tuple[str, str, Path]]:
    """The migrations Rails would load: post-deployment ones only without the skip variable."""
    dirs = [ROOT / "db" / "migrate"]
    if not os.environ.get("SKIP_POST_DEPLOYMENT_MIGRATIONS"):  # presence, not value
        dirs.append(ROOT / "db" / "post_migrate")
    found = []
    for d in dirs:
        for f in d.glob("*.sql"):
            m = MIGRATION.match(f.name)
            if m:
                name = "".join(part.capitalize() for part in m.group(2).split("_"))
                found.append((m.group(1), name, f))
    return sorted(found)


def applied(conn) -> set[str]:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version varchar PRIMARY KEY)")
        cur.execute("SELECT version FROM schema_migrations")
        rows = {r[0] for r in cur.fetchall()}
    conn.commit()
    return rows


def wait_for_deps(_: list[str]) -> int:
    deadline = time.monotonic() + float(os.environ.get("WAIT_FOR_TIMEOUT", "60"))
    while True:
        try:
            conn = connect()
            pending = [v for v, _, _ in migrations() if v not in applied(conn)]
            conn.close()
            if not pending or os.environ.get("BYPASS_SCHEMA_VERSION"):
                print("Database is up", flush=True)
                return 0
            print(f"Waiting for {len(pending)} pending migration(s) to be applied", flush=True)
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            print(f"Waiting for the database: {e}".strip(), flush=True)
        if time.monotonic() > deadline:
            print("Timed out waiting for dependencies", flush=True)
            return 1
        time.sleep(1)


def db_migrate(_: list[str]) -> int:
    conn = connect()
    done = applied(conn)
    for version, name, path in migrations():
        if version in done:
            continue
        print(f"== {version} {name}: migrating ======", flush=True)
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute(path.read_text())
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            conn.commit()
        except Exception as e:  # noqa: BLE001 - reported as Rails does, then the exit code
            conn.rollback()
            print("rake aborted!", file=sys.stderr, flush=True)
            print(
                "StandardError: An error has occurred, this and all later migrations canceled:",
                file=sys.stderr,
            )
            # The pg gem names its errors after the same SQLSTATE classes.
            print(f"\nPG::{type(e).__name__}: ERROR:  {e}".rstrip(), file=sys.stderr, flush=True)
            return 1
        print(f"== {version} {name}: migrated ({time.monotonic() - started:.4f}s) ==", flush=True)
    return 0


def rake(args: list[str]) -> int:
    """``db:migrate:status`` as Rails prints it, and as read-only as Rails' is.

    ``DatabaseTasks.migrate_status`` (rails ``activerecord/lib/active_record/
    tasks/database_tasks.rb``) aborts when there is no ``schema_migrations``
    table, else prints the ``database:`` line, the header, 50 dashes and one
    row per migration file: ``status.center(8)``, ``version.ljust(14)`` and
    the file name humanized (``MigrationContext#migrations_status``), then
    versions recorded without a file as ``********** NO FILE **********``.
    The session is read-only, so a status that tried to write would fail here.
    """
    if args != ["db:migrate:status"]:
        print(f"gitlab-rake: only db:migrate:status is implemented, not {args}", file=sys.stderr)
        return 1
    conn = connect()
    conn.set_session(readonly=True)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            print("Schema migrations table does not exist yet.", file=sys.stderr)
            return 1
        cur.execute("SELECT version FROM schema_migrations")
        done = {r[0] for r in cur.fetchall()}
    rows = []
    for version, _, path in migrations():
        words = MIGRATION.match(path.name).group(2).replace("_", " ")  # type: ignore[union-attr]
        rows.append(("up" if version in done else "down", version, words.capitalize()))
        done.discard(version)
    rows += [("up", v, "********** NO FILE **********") for v in done]
    print(f"\ndatabase: {settings()['database']}\n")
    print(f"{'Status'.center(8)}  {'Migration ID'.ljust(14)}  Migration Name")
    print("-" * 50)
    for status, version, name in sorted(rows, key=lambda r: int(r[1])):
        print(f"{status.center(8)}  {version.ljust(14)}  {name}")
    print(flush=True)
    return 0


COMMANDS = {
    "entrypoint": entrypoint,
    "wait-for-deps": wait_for_deps,
    "db-migrate": db_migrate,
    "gitlab-rake": rake,
}

if __name__ == "__main__":
    sys.exit(COMMANDS[Path(sys.argv[0]).name](sys.argv[1:]))
