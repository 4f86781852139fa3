#!/usr/bin/env python3
"""`make run`: the README's first command.

With ``KUBECONFIG`` set, it uses that cluster; without it, it starts the local
control plane (``hack/localcluster.py``, building the binaries on first use)
and prints how to reach it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HACK = Path(__file__).resolve().parent
sys.path.insert(0, str(HACK))

from localcluster import ClusterError, LocalCluster, build_binaries  # noqa: E402


def log(msg: str) -> None:
    print(f"[run] {msg}", file=sys.stderr, flush=True)


def target_cluster() -> tuple[dict[str, str], bool]:
    """Environment aimed at the cluster to use, and whether it is the local one."""
    env = dict(os.environ)
    if env.get("KUBECONFIG"):
        log(f"using the cluster in KUBECONFIG={env['KUBECONFIG']}")
        return env, False
    cluster = LocalCluster(os.environ.get("PDM_CLUSTER_NAME", "pdm-dev"))
    kubeconfig = cluster.up()
    env["KUBECONFIG"] = str(kubeconfig)
    env["PATH"] = f"{build_binaries()['kubectl'].parent}{os.pathsep}{env['PATH']}"
    return env, True


def main() -> int:
    try:
        env, local = target_cluster()
    except ClusterError as e:
        log(f"error: {e}")
        return 1
    subprocess.run(["kubectl", "get", "nodes", "-o", "wide"], env=env, check=False)
    if local:
        kubectl_dir = env["PATH"].split(os.pathsep)[0]
        print(
            "\nThe local control plane is running. To reach it:\n"
            f"  export KUBECONFIG={env['KUBECONFIG']}\n"
            f"  export PATH={kubectl_dir}:$PATH\n"
            "  kubectl get nodes\n"
            "Stop it with: make cluster-down"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
