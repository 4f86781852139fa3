"""The Argo CD customizations shipped in manifests/argocd/argocd-cm.yaml, run
the way Argo CD runs them: in gopher-lua, set up as Argo CD sets it up
(hack/argo-lua, built from Go modules and cached like the control plane).

The scripts are read from the shipped snippet itself, so what is tested is
what a platform engineer pastes into argocd-cm.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from localcluster import build_tool
from tests.support.operator import repo_root

KEY = "pdm-operator.io_PostDeployMigration"
SNIPPET = repo_root() / "manifests" / "argocd" / "argocd-cm.yaml"


@functools.cache
def interpreter() -> Path:
    return build_tool("argo-lua")


@functools.cache
def snippet() -> dict[str, str]:
    data: dict[str, str] = yaml.safe_load(SNIPPET.read_text())["data"]
    return data


def health_script() -> str:
    return snippet()[f"resource.customizations.health.{KEY}"]


def actions_config() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(snippet()[f"resource.customizations.actions.{KEY}"])
    return found


def ignored_pointers() -> list[str]:
    found = yaml.safe_load(snippet()[f"resource.customizations.ignoreDifferences.{KEY}"])
    return list(found["jsonPointers"])


def _run(mode: str, script: str, obj: dict[str, Any]) -> Any:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(script)
        f.flush()
        proc = subprocess.run(
            [str(interpreter()), mode, f.name],
            input=json.dumps(obj),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if proc.returncode != 0:
        raise LuaError(proc.stderr.strip())
    return json.loads(proc.stdout)


class LuaError(RuntimeError):
    """The script raised an error (Argo CD shows it and changes nothing)."""


def health(obj: dict[str, Any]) -> dict[str, str]:
    """``{"status": ..., "message": ...}`` as Argo CD would show it."""
    found: dict[str, str] = _run("health", health_script(), obj)
    return found


def actions(obj: dict[str, Any]) -> dict[str, bool]:
    """Action name → enabled, from the discovery script."""
    found = _run("discovery", actions_config()["discovery.lua"], obj)
    return {name: not (spec or {}).get("disabled", False) for name, spec in dict(found).items()}


def run_action(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object the action returns (Argo CD patches the live one towards it)."""
    (definition,) = [d for d in actions_config()["definitions"] if d["name"] == name]
    found: dict[str, Any] = _run("action", definition["action.lua"], obj)
    return found


def merge_patch(live: Any, wanted: Any) -> Any:
    """The JSON merge patch (RFC 7386) from ``live`` to ``wanted``: what Argo CD
    sends for an action's result (server/application/application.go,
    RunResourceAction → a merge patch of the live object)."""
    if not isinstance(live, dict) or not isinstance(wanted, dict):
        return wanted
    patch: dict[str, Any] = {}
    for key in live.keys() - wanted.keys():
        patch[key] = None
    for key, value in wanted.items():
        if key not in live:
            patch[key] = value
        elif live[key] != value:
            patch[key] = merge_patch(live[key], value)
    return patch


FIXTURES = repo_root() / "tests" / "unit" / "golden" / "argocd"


def save_fixture(name: str, obj: dict[str, Any]) -> None:
    """With PDM_UPDATE_GOLDEN=1, keep a live object for the unit tests
    (tests/unit/test_argocd.py), minus what only clutters it."""
    if os.environ.get("PDM_UPDATE_GOLDEN") != "1":
        return
    kept = copy.deepcopy(obj)
    for noise in ("managedFields", "uid", "resourceVersion"):
        kept["metadata"].pop(noise, None)
    kept["metadata"]["namespace"] = "gitlab"
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / f"{name}.json").write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")


# --- notifications (manifests/argocd/argocd-notifications-cm.yaml) ---------------

NOTIFICATIONS = repo_root() / "manifests" / "argocd" / "argocd-notifications-cm.yaml"


@functools.cache
def notify_evaluator() -> Path:
    return build_tool("argo-notify")


@functools.cache
def notifications() -> dict[str, str]:
    data: dict[str, str] = yaml.safe_load(NOTIFICATIONS.read_text())["data"]
    return data


def trigger(name: str) -> list[dict[str, Any]]:
    """The conditions of ``trigger.NAME``, as the notifications controller parses them."""
    found: list[dict[str, Any]] = yaml.safe_load(notifications()[f"trigger.{name}"])
    return found


def fires(name: str, app: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each expression engine's verdict on the trigger's (single) condition:
    ``{"old": {"fired": bool, "oncePer": str, "error": str}, "new": {...}}``."""
    (condition,) = trigger(name)
    args = [str(notify_evaluator()), "when", condition["when"], condition.get("oncePer", "")]
    proc = subprocess.run(
        args, input=json.dumps(app), capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    found: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    return found


def render_message(template: str, app: dict[str, Any]) -> str:
    """The ``message`` of ``template.NAME`` for ``app`` (Go text/template)."""
    text = yaml.safe_load(notifications()[f"template.{template}"])["message"]
    proc = subprocess.run(
        [str(notify_evaluator()), "template", text],
        input=json.dumps(app),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    return proc.stdout


def application(*migrations: dict[str, Any], persisted: bool = True) -> dict[str, Any]:
    """An Argo CD Application deploying ``migrations`` (and a ConfigMap), each
    with the health the shipped health check gives it, as the application
    controller records it in status.resources (``persisted``: Argo CD 2.x, or
    3.x with controller.resource.health.persist; otherwise the health lives in
    Redis and the Application says so, status.resourceHealthSource: appTree)."""
    resources: list[dict[str, Any]] = [
        {"version": "v1", "kind": "ConfigMap", "namespace": "gitlab", "name": "settings",
         "status": "Synced"}
    ]  # fmt: skip
    for obj in migrations:
        entry: dict[str, Any] = {
            "group": "pdm-operator.io",
            "version": "v1alpha1",
            "kind": "PostDeployMigration",
            "namespace": obj["metadata"]["namespace"],
            "name": obj["metadata"]["name"],
            "status": "Synced",
        }
        if persisted:
            entry["health"] = health(obj)
        resources.append(entry)
    status: dict[str, Any] = {"resources": resources, "sync": {"status": "Synced"}}
    if not persisted:
        status["resourceHealthSource"] = "appTree"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "gitlab-gprd", "namespace": "argocd"},
        "status": status,
    }
