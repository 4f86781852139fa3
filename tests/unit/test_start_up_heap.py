"""What the operator builds at start is frozen out of the garbage collector's walks.

Run in a child interpreter (a freeze is for the whole process): ``runner.run``
for real, against a kubeconfig whose server refuses connections, up to the
moment it hands over to Kopf, which is stood in for by a check of the heap.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import gc, json, sys
    import kopf
    from pdm_operator import runner

    async def operator(**_):
        from kubernetes.client.api import core_v1_api
        from kubernetes.client.models import v1_job
        tracked = {id(o) for o in gc.get_objects()}  # every generation but the frozen one
        print(json.dumps({
            "frozen": gc.get_freeze_count(),
            "api_tracked": id(core_v1_api.CoreV1Api) in tracked,
            "method_tracked": id(core_v1_api.CoreV1Api.create_namespaced_pod) in tracked,
            "model_tracked": id(v1_job.V1Job) in tracked,
            "collectable": len(tracked),
        }))

    kopf.operator = operator
    runner.run(runner.Options(kubeconfig=sys.argv[1], metrics_port=0, liveness_port=0))
    """
)

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_the_clients_lazily_imported_apis_are_frozen_with_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    heap = json.loads(done.stdout.strip().splitlines()[-1])
    # The official client imports its API classes (and the models they name)
    # when the operator first uses them, after the imports at the top.
    assert not heap["api_tracked"], "CoreV1Api is left to every full collection"
    assert not heap["method_tracked"], "the client's validated methods are left to collections"
    assert not heap["model_tracked"], "the client's models are left to collections"
    assert heap["frozen"] > 100_000
    assert heap["collectable"] < heap["frozen"] // 10
