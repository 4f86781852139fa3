"""Running pods on a real node: on the local cluster, ``real-node-0`` (hack/realnode.py);
on a cluster named by KUBECONFIG (kind on a laptop), whatever node the scheduler picks."""

from __future__ import annotations

from typing import Any

#: The local real node's taint and label (hack/realnode.py).
TAINT_KEY = "pdm-operator.io/real-node"
NODE_LABEL = "pdm-operator.io/node"
BUSYBOX = "localhost/pdm/busybox:1"


def placement(local: bool) -> dict[str, Any]:
    """``spec.job`` fields that put a migration pod on the real node."""
    if not local:
        return {}
    return {
        "nodeSelector": {NODE_LABEL: "real"},
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    }
