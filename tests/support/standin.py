"""The stand-in GitLab on the real node, for tests: its migrations, its databases,
and reading what a migration did (hack/standin-toolbox/, a real PostgreSQL).

GitLab records every version in every database (main and ci share db/migrate
and db/post_migrate); a migration for the other database's tables is a no-op
there, still recorded.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from postgres import Postgres
from tests.support import chart
from tests.support.operator import pythonpath_env
from tests.support.pdm import Api
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.integration.conftest import Cluster

REGULAR = ["20261101000001", "20261101000002", "20261101000003"]  # db/migrate
POST = ["20261115000001", "20261115000002", "20261115000003", "20261115000004"]  # db/post_migrate
#: Their names as Rails' db:migrate:status prints them (the file names, humanized).
POST_NAMES = [
    "Add unique index on project path",
    "Remove archived from projects",
    "Backfill project statistics",
    "Add index on ci builds status",
]
CHART = {"migrationsJob": {"release": "gitlab"}}
MIGRATION_COMPONENT = "post-deploy-migration"
PREFLIGHT_COMPONENT = "post-deploy-migration-preflight"


def ci(name: str) -> str:
    """The test's ci database beside its main database ``name``."""
    return f"{name}_ci"


def versions(db: Postgres, name: str) -> list[str]:
    """The versions recorded in database ``name``'s schema_migrations."""
    out = db.psql("SELECT version FROM schema_migrations ORDER BY version", database=name)
    return out.split()


def both(db: Postgres, name: str) -> tuple[list[str], list[str]]:
    """The versions recorded in main and in ci (GitLab records every version in both)."""
    return versions(db, name), versions(db, ci(name))


def pending_rows(name: str, post: list[str] = POST) -> list[tuple[str, str]]:
    """The rows the pre-flight records for ``post`` pending in both databases, main first."""
    return [(db, v) for db in (name, ci(name)) for v in post]


def rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["database"], m["version"]) for m in status["pendingMigrations"]]


def regular_deploy(api: Api, db: Postgres, name: str, placement: dict[str, Any]) -> None:
    """`helm upgrade ... --set gitlab.migrations.extraEnv.SKIP_POST_DEPLOYMENT_MIGRATIONS=true`."""
    chart.install(api, database=chart.Database(db.host, db.port, name), placement=placement)
    job = job_end(api, chart.CHART_JOB)
    assert job.status.succeeded == 1, job.status


def job_end(api: Api, name: str) -> Any:
    """The Job ``name`` once it has ended (its status)."""

    def done() -> Any:
        job = api.batch.read_namespaced_job(name, api.ns)
        return job if job.status.succeeded or job.status.failed else None

    return wait_until(done, timeout=180, what=f"Job {name} to end")


def jobs_of(api: Api, name: str, component: str) -> list[Any]:
    """The Jobs a PostDeployMigration made: its migration Job or its pre-flights."""
    return [
        j
        for j in api.jobs()
        if (j.metadata.labels or {}).get("pdm-operator.io/migration") == name
        and (j.metadata.labels or {}).get("app.kubernetes.io/component") == component
    ]


def pdm_log(cluster: Cluster, api: Api, name: str) -> str:
    job = api.get(name)["status"]["jobName"]  # type: ignore[index]
    out = cluster.run_kubectl("logs", "-n", api.ns, f"job/{job}", "-c", "migrations")
    return out.stdout + out.stderr


def gated(api: Api, name: str, reason: str, timeout: float = 180) -> dict[str, Any]:
    """The Gated condition once it holds for ``reason``."""

    def probe() -> dict[str, Any] | None:
        cond = api.condition(name, "Gated")
        return cond if cond and cond["status"] == "True" and cond["reason"] == reason else None

    return wait_until(probe, timeout=timeout, what=f"pdm/{name} Gated ({reason})")


@contextlib.contextmanager
def lock_held(db: Postgres, database: str, table: str, mode: str) -> Iterator[None]:
    """``LOCK TABLE table IN mode MODE`` held by another session, in an open
    transaction, until the block ends (a long query's lock, as migrations meet them)."""
    proc = subprocess.Popen(
        ["psql", "-h", str(db.socket_dir), "-p", str(db.port), "-U", "postgres",
         "-d", database, "-q", "-At", "-v", "ON_ERROR_STOP=1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        proc.stdin.write(f"BEGIN;\nLOCK TABLE {table} IN {mode} MODE;\nSELECT 'locked';\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, f"psql did not take the lock on {table} within 30 s"
        line = proc.stdout.readline().strip()
        assert line == "locked", line
        yield
    finally:
        if proc.poll() is None:
            proc.stdin.write("ROLLBACK;\n")
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def kubectl_pdm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl pdm ARGS``, the CLI's kubectl plugin entry point."""
    return subprocess.run(
        ["kubectl-pdm", *args],
        env=pythonpath_env(cluster.env())
        | {"PATH": cluster.env()["PATH"] + ":" + str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
