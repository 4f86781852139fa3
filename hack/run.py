#!/usr/bin/env python3
"""`make run`: the README's first command.

1. Picks the cluster: the one in ``KUBECONFIG``, or the local control plane
   (started, and built on first use, by ``hack/localcluster.py``).
2. Installs the CRD from ``crds/``.
3. Starts ``pdm-operator run`` (all namespaces).
4. On the local control plane (or with ``PDM_DEMO=1``), applies the example
   from ``examples/``: a chart-shaped GitLab release (migrations Job, toolbox,
   webservice) and a PostDeployMigration that copies the chart's pod wiring,
   in namespace ``pdm-demo``, and shows it reach Succeeded. On a real cluster
   the stand-ins' images cannot be pulled, so the demo is opt-in there.
5. Keeps the operator running in the foreground until Ctrl-C
   (``--once``: stop after the demo; used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
sys.path.insert(0, str(HACK))

import gitlab_release  # noqa: E402
from localcluster import ClusterError, LocalCluster, build_binaries  # noqa: E402
from postgres import Postgres  # noqa: E402

DEMO_NAMESPACE = "pdm-demo"
DEMO_PDM = "gstg-2026-11-22-1200"
DEMO_DATABASE = "gitlab_demo"


def log(msg: str) -> None:
    print(f"[run] {msg}", file=sys.stderr, flush=True)


def target_cluster() -> tuple[dict[str, str], LocalCluster | None]:
    """Environment aimed at the cluster to use, and the local cluster if it is one.

    Locally the real node runs too (a real migration against a real
    PostgreSQL); where it cannot (not root, a Debian package missing) the
    reason is printed and the demo runs on kwok alone.
    """
    env = dict(os.environ)
    if env.get("KUBECONFIG"):
        log(f"using the cluster in KUBECONFIG={env['KUBECONFIG']}")
        return env, None
    name = os.environ.get("PDM_CLUSTER_NAME", "pdm-dev")
    cluster = LocalCluster(name, real_node=os.environ.get("PDM_REAL_NODE", "1") == "1")
    try:
        env["KUBECONFIG"] = str(cluster.up())
    except ClusterError as e:
        if not cluster.real_node:
            raise
        log(f"{e}\n[run] continuing without the real node: migrations are simulated by kwok")
        cluster = LocalCluster(name)
        env["KUBECONFIG"] = str(cluster.up())
    env["PATH"] = f"{build_binaries()['kubectl'].parent}{os.pathsep}{env['PATH']}"
    return env, cluster


def kubectl(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["kubectl", *args], env=env, text=True, capture_output=True, check=False)
    if check and out.returncode != 0:
        raise SystemExit(f"[run] kubectl {' '.join(args)} failed:\n{out.stderr}")
    return out


def apply(env: dict[str, str], ns: str, manifests: str, what: str) -> None:
    out = subprocess.run(
        ["kubectl", "apply", "-n", ns, "-f", "-"],
        input=manifests, env=env, text=True, capture_output=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"[run] applying {what} failed:\n{out.stderr}")


def release(db: Postgres | None) -> str:
    """examples/gitlab-chart-release.yaml, made to really run when there is a real node:
    database.yml points at the stand-in GitLab's PostgreSQL (main and ci), the
    migrations Job, the toolbox, the webservice and Sidekiq run on the real node,
    and the webservice and Sidekiq carry the chart value a deploy that skips
    post-deployment migrations needs (``BYPASS_POST_DEPLOYMENT=true``)."""
    import yaml  # noqa: PLC0415 - make run runs in the virtualenv

    if db is None:
        return yaml.safe_dump_all(gitlab_release.release())
    docs = gitlab_release.release(
        gitlab_release.Database(db.host, db.port, DEMO_DATABASE),
        real_node=(gitlab_release.CHART_JOB, gitlab_release.TOOLBOX, *gitlab_release.RAILS),
        bypass=True,
        replicas=1,
    )
    return yaml.safe_dump_all(docs)


def example(db: Postgres | None) -> str:
    """examples/pdm.yaml; on kwok alone without its pre-flight (kwok's pods have no real log
    for the pre-flight to read)."""
    import yaml  # noqa: PLC0415 - make run runs in the virtualenv

    doc = yaml.safe_load((ROOT / "examples" / "pdm.yaml").read_text())
    if db is None:
        log("no real node: migrations are simulated, so the pre-flight is off for the demo")
        doc["spec"]["preflight"] = {"enabled": False}
    return str(yaml.safe_dump(doc))


def applied(db: Postgres) -> str:
    """Each database's ``schema_migrations``, as one line each."""
    out = []
    for name in (DEMO_DATABASE, f"{DEMO_DATABASE}_ci"):
        versions = db.psql("SELECT version FROM schema_migrations ORDER BY version", database=name)
        out.append(f"{name}: {' '.join(versions.split())}")
    return "; ".join(out)


def follow(env: dict[str, str], ns: str, name: str, timeout: float) -> bool:
    """Print each change of the migration's state and reason, with the message of the
    condition that gave it, until it ends."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = kubectl(env, "get", "pdm", "-n", ns, name, "-o", "json", check=False).stdout
        status = json.loads(out).get("status") or {} if out else {}
        state, reason = status.get("state", ""), status.get("reason", "")
        said = next(
            (
                c.get("message", "")
                for c in status.get("conditions") or []
                if c.get("reason") == reason and c.get("type") in ("Gated", "Preflight")
            ),
            "",
        )
        now = f"{state} ({reason})" + (f": {said}" if said else "")
        if state and now != seen:
            log(f"pdm/{name}: {now}")
            seen = now
        if state in ("Succeeded", "Failed"):
            return state == "Succeeded"
        time.sleep(1)
    return False


def demo(env: dict[str, str], db: Postgres | None) -> bool:
    ns = DEMO_NAMESPACE
    if kubectl(env, "get", "namespace", ns, check=False).returncode != 0:
        kubectl(env, "create", "namespace", ns)
    kubectl(env, "delete", "-n", ns, "pdm", DEMO_PDM, "--ignore-not-found", "--wait=true")
    kubectl(env, "delete", "-n", ns, "jobs,deployments", "--all", "--wait=true")
    if db is not None:
        for name in (DEMO_DATABASE, f"{DEMO_DATABASE}_ci"):
            db.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", database="postgres")
            db.psql(f"CREATE DATABASE {name} OWNER gitlab", database="postgres")
    apply(env, ns, release(db), "the release")
    log("regular deploy: the chart's migrations Job runs with SKIP_POST_DEPLOYMENT_MIGRATIONS=true")
    kubectl(env, "apply", "-f", str(ROOT / "examples" / "environment.yaml"))
    apply(env, ns, example(db), "examples/pdm.yaml")
    log(
        f"applied examples/pdm.yaml in namespace {ns}: pdm/{DEMO_PDM} waits for the rollout of "
        "the webservice, Sidekiq and the toolbox, whose new pods wait in their dependencies "
        "check until only post-deployment migrations are pending (BYPASS_POST_DEPLOYMENT=true)"
    )
    kubectl(
        env,
        "wait",
        "-n",
        ns,
        "--for=condition=Complete",
        "job/gitlab-migrations-3b1f2c7",
        "--timeout=180s",
    )
    if db is not None:
        log(f"after the regular deploy, schema_migrations holds: {applied(db)}")
    succeeded = follow(env, ns, DEMO_PDM, timeout=300)
    print(kubectl(env, "get", "pdm", "-n", ns, "-o", "wide").stdout, flush=True)
    print(kubectl(env, "get", "jobs", "-n", ns).stdout, flush=True)
    if not succeeded:
        log(f"pdm/{DEMO_PDM} did not succeed")
        print(kubectl(env, "describe", "pdm", "-n", ns, DEMO_PDM, check=False).stdout)
        return False
    source = kubectl(
        env, "get", "pdm", "-n", ns, DEMO_PDM, "-o", "jsonpath={.status.podTemplate}"
    ).stdout
    log(f"pod template copied from {source}; the Job carries no SKIP_POST_DEPLOYMENT_MIGRATIONS")
    if db is not None:
        pending = kubectl(
            env,
            "get",
            "pdm",
            "-n",
            ns,
            DEMO_PDM,
            "-o",
            "jsonpath={range .status.pendingMigrations[*]}"
            '{.database}: {.version} {.name}{"\\n"}{end}',
        ).stdout.strip()
        log("the pre-flight found pending (gitlab-rake db:migrate:status):\n" + pending)
        job = kubectl(
            env, "get", "pdm", "-n", ns, DEMO_PDM, "-o", "jsonpath={.status.jobName}"
        ).stdout
        migrated = [
            line
            for line in kubectl(
                env, "logs", "-n", ns, f"job/{job}", "-c", "migrations"
            ).stdout.splitlines()
            if "== " in line  # GitLab's: "main: == VERSION Name: migrating"
        ]
        print("\n".join(migrated), flush=True)
        log(f"after the post-deployment migrations, schema_migrations holds: {applied(db)}")
        ready = kubectl(env, "get", "pods", "-n", ns, "-l", "app=webservice").stdout.strip()
        log(f"webservice (its /-/readiness checks the schema this version needs):\n{ready}")
    log(f"pdm/{DEMO_PDM} Succeeded. Try: kubectl describe pdm -n {ns} {DEMO_PDM}")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description="Run pdm-operator (and its demo on a local cluster).")
    ap.add_argument(
        "--once", action="store_true", help="stop after the demo (exit code = its outcome)"
    )
    args = ap.parse_args()
    try:
        env, cluster = target_cluster()
        local = cluster is not None
    except ClusterError as e:
        log(f"error: {e}")
        return 1
    kubectl(env, "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    deadline = time.monotonic() + 60
    while True:
        # kubectl wait errs, rather than waits, on a CRD with no conditions yet.
        waited = kubectl(
            env,
            "wait",
            "--for=condition=Established",
            "crd/postdeploymigrations.pdm-operator.io",
            "crd/postdeployenvironments.pdm-operator.io",
            check=time.monotonic() > deadline,
        )
        if waited.returncode == 0:
            break
        time.sleep(0.5)
    log("CRDs installed; starting the operator")
    operator = subprocess.Popen(
        [sys.executable, "-m", "pdm_operator.cli", "run", "--all-namespaces"],
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    ok = True
    try:
        if local or os.environ.get("PDM_DEMO") == "1":
            ok = demo(env, cluster.database() if cluster is not None else None)
        if local:
            print(
                "\nThe local control plane keeps running. To reach it from another shell:\n"
                f"  export KUBECONFIG={env['KUBECONFIG']}\n"
                f"  export PATH={env['PATH'].split(os.pathsep)[0]}:$PATH\n"
                "  kubectl get pdm -A\n"
                "Stop it with: make cluster-down\n",
                flush=True,
            )
        if args.once:
            return 0 if ok else 1
        log("the operator runs; Ctrl-C stops it")
        return operator.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()


if __name__ == "__main__":
    sys.exit(main())
