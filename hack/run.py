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
import os
import signal
import subprocess
import sys
from pathlib import Path

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
sys.path.insert(0, str(HACK))

from localcluster import ClusterError, LocalCluster, build_binaries  # noqa: E402

DEMO_NAMESPACE = "pdm-demo"
DEMO_PDM = "gstg-2026-11-22-1200"


def log(msg: str) -> None:
    print(f"[run] {msg}", file=sys.stderr, flush=True)


def target_cluster() -> tuple[dict[str, str], bool]:
    """Environment aimed at the cluster to use, and whether it is the local one."""
    env = dict(os.environ)
    if env.get("KUBECONFIG"):
        log(f"using the cluster in KUBECONFIG={env['KUBECONFIG']}")
        return env, False
    cluster = LocalCluster(os.environ.get("PDM_CLUSTER_NAME", "pdm-dev"))
    env["KUBECONFIG"] = str(cluster.up())
    env["PATH"] = f"{build_binaries()['kubectl'].parent}{os.pathsep}{env['PATH']}"
    return env, True


def kubectl(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["kubectl", *args], env=env, text=True, capture_output=True, check=False)
    if check and out.returncode != 0:
        raise SystemExit(f"[run] kubectl {' '.join(args)} failed:\n{out.stderr}")
    return out


def demo(env: dict[str, str]) -> bool:
    ns = DEMO_NAMESPACE
    if kubectl(env, "get", "namespace", ns, check=False).returncode != 0:
        kubectl(env, "create", "namespace", ns)
    kubectl(env, "apply", "-n", ns, "-f", str(ROOT / "examples" / "gitlab-chart-release.yaml"))
    kubectl(env, "apply", "-n", ns, "-f", str(ROOT / "examples" / "pdm.yaml"))
    log(f"applied examples/ in namespace {ns}; waiting for pdm/{DEMO_PDM} to succeed")
    waited = kubectl(
        env,
        "wait",
        "-n",
        ns,
        "--for=condition=Succeeded",
        f"pdm/{DEMO_PDM}",
        "--timeout=120s",
        check=False,
    )
    print(kubectl(env, "get", "pdm", "-n", ns, "-o", "wide").stdout, flush=True)
    print(kubectl(env, "get", "jobs", "-n", ns).stdout, flush=True)
    if waited.returncode != 0:
        log(f"pdm/{DEMO_PDM} did not succeed: {waited.stderr.strip()}")
        print(kubectl(env, "describe", "pdm", "-n", ns, DEMO_PDM, check=False).stdout)
        return False
    source = kubectl(
        env, "get", "pdm", "-n", ns, DEMO_PDM, "-o", "jsonpath={.status.podTemplate}"
    ).stdout
    log(f"pod template copied from {source}; the Job carries no SKIP_POST_DEPLOYMENT_MIGRATIONS")
    log(f"pdm/{DEMO_PDM} Succeeded. Try: kubectl describe pdm -n {ns} {DEMO_PDM}")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description="Run pdm-operator (and its demo on a local cluster).")
    ap.add_argument(
        "--once", action="store_true", help="stop after the demo (exit code = its outcome)"
    )
    args = ap.parse_args()
    try:
        env, local = target_cluster()
    except ClusterError as e:
        log(f"error: {e}")
        return 1
    kubectl(env, "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    kubectl(env, "wait", "--for=condition=Established", "crd/postdeploymigrations.pdm-operator.io")
    log("CRD installed; starting the operator")
    operator = subprocess.Popen(
        [sys.executable, "-m", "pdm_operator.cli", "run", "--all-namespaces"],
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    ok = True
    try:
        if local or os.environ.get("PDM_DEMO") == "1":
            ok = demo(env)
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
