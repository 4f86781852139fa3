"""GitOps tools read a migration's state at each stage: kstatus (Flux `wait`,
kpt, cli-utils) and Argo CD's health check from manifests/argocd, run in
Argo CD's own Lua interpreter against the live objects."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import argocd, kstatus
from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, migration, toolbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def reads(api: Api, name: str, expected: str, argo: str, state: str) -> dict[str, Any]:
    """The migration once its state is ``state``: kstatus must read ``expected``
    and Argo CD's health check ``argo``."""
    obj = api.wait_state(name, state, timeout=60)
    assert kstatus.status(obj) == expected, (name, obj["status"])
    health = argocd.health(obj)
    assert health["status"] == argo, (name, health, obj["status"])
    assert health["message"].startswith(state), health
    argocd.save_fixture(name, obj)
    return obj


def test_kstatus_reads_every_stage_and_a_finished_edit_is_observed(
    api: Api, operator: OperatorProcess
) -> None:
    api.deploy(toolbox())
    api.core.create_namespaced_secret(
        api.ns, {"metadata": {"name": "gitlab-api"}, "stringData": {"token": "glpat-kstatus"}}
    )
    down = {
        # Nothing listens there: a blocking sink keeps the migration Reporting.
        "gitlab": {
            "url": "http://127.0.0.1:9",
            "tokenSecretRef": {"name": "gitlab-api", "key": "token"},
        },
        "version": {"ref": "master", "sha": "0a1b2c3d"},
        "sinks": [{"type": "ReleaseMetadata", "project": "gitlab-org/release/metadata"}],
    }
    hang = {"podAnnotations": {"sim.pdm-operator.io/outcome": "hang"}}
    fail = {"podAnnotations": {"sim.pdm-operator.io/outcome": "fail"}}
    api.create(
        migration("ks-pending", image={"fromDeployment": {"name": "nope", "container": "x"}})
    )
    api.create(migration("ks-gated", env="g-gated", suspend=True))
    api.create(migration("ks-running", env="g-running", job=hang))
    api.create(migration("ks-reporting", env="g-reporting", tracking=down))
    api.create(migration("ks-ok", env="g-ok"))
    api.create(migration("ks-failed", env="g-failed", job=fail))

    reads(api, "ks-pending", "InProgress", "Progressing", "Pending")
    reads(api, "ks-gated", "InProgress", "Suspended", "Gated")
    reads(api, "ks-running", "InProgress", "Progressing", "Running")
    reads(api, "ks-reporting", "InProgress", "Progressing", "Reporting")
    ok = reads(api, "ks-ok", "Current", "Healthy", "Succeeded")
    failed = reads(api, "ks-failed", "Failed", "Degraded", "Failed")
    assert failed["status"]["reason"] in argocd.health(failed)["message"]
    stalled = next(c for c in failed["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == failed["status"]["reason"]
    # kstatus takes the first of Reconciling/Stalled it meets: Reconciling is first.
    assert all(
        obj["status"]["conditions"][0]["type"] == "Reconciling"
        for obj in (ok, failed, api.get("ks-running"))
    )
    reconciling = next(c for c in ok["status"]["conditions"] if c["type"] == "Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("False", "Succeeded")

    # Editing spec.suspend of a finished migration bumps its generation; the
    # operator observes it, or kstatus would read it InProgress for good.
    edited = api.patch("ks-ok", {"spec": {"suspend": True}})
    assert edited["metadata"]["generation"] == ok["metadata"]["generation"] + 1
    if edited["status"]["observedGeneration"] < edited["metadata"]["generation"]:
        assert argocd.health(edited)["status"] == "Progressing"
    wait_until(
        lambda: (
            kstatus.status(api.get("ks-ok") or {}) == "Current"
            and argocd.health(api.get("ks-ok") or {})["status"] == "Healthy"
            and (api.get("ks-ok") or {})["status"]["observedGeneration"]
            == edited["metadata"]["generation"]
        ),
        timeout=30,
        what="observedGeneration of the finished ks-ok to catch up",
    )
    # The edit changed nothing else: still Succeeded, no Job started again.
    assert api.get("ks-ok")["status"]["state"] == "Succeeded"  # type: ignore[index]
    assert len([j for j in api.jobs() if j.metadata.name.startswith("ks-ok-")]) == 1
