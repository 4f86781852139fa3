"""manifests/argocd/argocd-notifications-cm.yaml: the triggers fire on what the
shipped health check reports for an awaiting-approval and a failed migration,
in both expression engines Argo CD has shipped (hack/argo-notify), against
Applications whose resources carry the health that check gives real runs'
objects (tests/unit/golden/argocd/)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.support import argocd

TRIGGERS = {"on-pdm-awaiting-approval": ("awaiting-approval", "plan-changed"),
            "on-pdm-failed": ("ks-failed",)}  # fmt: skip
STAGES = ("ks-pending", "ks-gated", "ks-running", "ks-reporting", "ks-ok", "ks-failed",
          "awaiting-approval", "plan-changed")  # fmt: skip


def fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((argocd.FIXTURES / f"{name}.json").read_text())
    return found


def verdict(trigger: str, app: dict[str, Any]) -> dict[str, Any]:
    """The engines' common verdict; they must agree, and neither may fail."""
    found = argocd.fires(trigger, app)
    assert found["old"] == found["new"], found
    assert not found["new"].get("error"), found
    return found["new"]


@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
@pytest.mark.parametrize("stage", STAGES)
def test_each_trigger_fires_for_its_stages_only(trigger: str, stage: str) -> None:
    app = argocd.application(fixture(stage))
    assert verdict(trigger, app)["fired"] is (stage in TRIGGERS[trigger])


def test_a_running_migration_whose_pod_cannot_start_is_degraded_but_not_failed() -> None:
    stuck = fixture("ks-running")
    stuck["status"]["conditions"].append(
        {"type": "Stalled", "status": "True", "reason": "ImagePullBackOff",
         "message": "pod pdm-x: Back-off pulling image"}
    )  # fmt: skip
    app = argocd.application(stuck)
    assert app["status"]["resources"][1]["health"]["status"] == "Degraded"
    assert verdict("on-pdm-failed", app)["fired"] is False


def test_each_migration_notifies_once_per_plan_and_per_failure() -> None:
    waiting = fixture("awaiting-approval")
    other = copy.deepcopy(waiting)
    other["metadata"]["name"] = "pdm-other"
    one = verdict("on-pdm-awaiting-approval", argocd.application(waiting))["oncePer"]
    two = verdict("on-pdm-awaiting-approval", argocd.application(waiting, other))["oncePer"]
    assert f"gitlab/{waiting['metadata']['name']}: Gated (AwaitingApproval)" in one
    assert one != two  # a second migration waiting is news
    again = verdict("on-pdm-awaiting-approval", argocd.application(waiting))["oncePer"]
    assert again == one  # the same plan, refreshed, is not


def test_without_persisted_resource_health_nothing_fires() -> None:
    """Argo CD 3.x keeps resource health in Redis unless
    controller.resource.health.persist is true (the ConfigMap's comment says so)."""
    app = argocd.application(fixture("ks-failed"), fixture("awaiting-approval"), persisted=False)
    for trigger in TRIGGERS:
        assert verdict(trigger, app)["fired"] is False


def test_an_application_without_resources_yet_fires_nothing_and_raises_nothing() -> None:
    for app in ({"metadata": {"name": "a"}, "status": {}}, {"metadata": {"name": "a"}}):
        for trigger in TRIGGERS:
            assert verdict(trigger, app)["fired"] is False


def test_the_messages_name_each_migration_and_what_its_health_says() -> None:
    waiting, failed = fixture("awaiting-approval"), fixture("ks-failed")
    app = argocd.application(waiting, failed)
    text = argocd.render_message("pdm-awaiting-approval", app)
    assert f"- gitlab/{waiting['metadata']['name']}: Gated (AwaitingApproval): plan" in text
    assert failed["metadata"]["name"] not in text
    text = argocd.render_message("pdm-failed", app)
    assert f"- gitlab/{failed['metadata']['name']}: Failed (BackoffLimitExceeded)" in text
    assert waiting["metadata"]["name"] not in text
    assert "gitlab-gprd" in text


def test_every_trigger_sends_a_template_that_exists() -> None:
    data = argocd.notifications()
    for trigger in TRIGGERS:
        for condition in argocd.trigger(trigger):
            for template in condition["send"]:
                assert f"template.{template}" in data
