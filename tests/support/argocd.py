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
