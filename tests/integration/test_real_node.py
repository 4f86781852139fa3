"""Migration Jobs in real containers on a real node: real exit codes, real logs,
Pod Security as the kubelet enforces it, no service-account token."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, migration
from tests.support.realnode import BUSYBOX

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def shell(placement: dict[str, Any], script: str, **job: Any) -> dict[str, Any]:
    """``spec.job`` running ``script`` in the busybox image on the real node."""
    return {**placement, "command": ["/bin/sh", "-c"], "args": [script], **job}


def test_a_failing_migration_fails_with_the_containers_exit_code_and_log(
    api: Api, operator: OperatorProcess, real_node: dict[str, Any]
) -> None:
    script = (
        "echo '== 20261201000001 AddIndexToCiBuilds: migrating'; "
        "echo 'PG::DuplicateTable: relation already exists' >&2; exit 7"
    )
    api.create(
        migration("pdm-real-fail", image={"reference": BUSYBOX}, job=shell(real_node, script))
    )
    failed = api.wait_condition("pdm-real-fail", "Failed", timeout=120)
    assert failed["reason"] == "BackoffLimitExceeded"
    failure = api.get("pdm-real-fail")["status"]["failure"]  # type: ignore[index]
    assert failure["exitCode"] == 7
    assert "20261201000001 AddIndexToCiBuilds" in failure["logTail"]
    assert "PG::DuplicateTable" in failure["logTail"]


def test_the_migration_pod_really_has_no_service_account_token(
    api: Api, operator: OperatorProcess, real_node: dict[str, Any]
) -> None:
    script = f"if [ -e {TOKEN} ]; then echo 'a token is mounted'; exit 1; fi; echo no token"
    api.create(
        migration("pdm-no-token", image={"reference": BUSYBOX}, job=shell(real_node, script))
    )
    api.wait_condition("pdm-no-token", "Succeeded", timeout=120)


def test_the_kubelet_refuses_a_pod_that_would_run_as_root(
    api: Api, operator: OperatorProcess, real_node: dict[str, Any]
) -> None:
    # runAsNonRoot without a user: the operator's own check passes, and the
    # kubelet, seeing the image's user is root, refuses to start the container.
    security = {
        "podSecurityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    api.create(
        migration(
            "pdm-as-root",
            image={"reference": "localhost/pdm/pause:1"},
            job=shell(real_node, "id", **security),
        )
    )
    stalled = api.wait_condition("pdm-as-root", "Stalled", timeout=90)
    assert stalled["reason"] == "CreateContainerConfigError"
    assert "runAsNonRoot and image will run as root" in stalled["message"]
    assert api.get("pdm-as-root")["status"]["state"] == "Running"  # type: ignore[index]
