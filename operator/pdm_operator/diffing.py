"""Diff two migration Jobs so that only meaningful changes show (pure).

Both sides are Jobs as the API server returns them (a dry-run create, or the
live Job of an earlier run), so defaulting is the same on both. What the
server generates (uid, resourceVersion, timestamps, managedFields, the
controller-uid selector and labels, status) is stripped, and what only names
the migration (its name inside the Job name and labels, its uid) is replaced
by a placeholder: two runs of the same inputs then diff empty, and a new
image shows as the image and the name's hash.

Nothing here reads Secrets: a value from ``secretKeyRef`` is a reference in
the Job and stays one in the diff.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any

import yaml

from pdm_operator import model
from pdm_operator.model import Body

PLACEHOLDER = "<migration>"
#: Size of the unified diff kept in status.diff.text; the full text goes to a
#: ConfigMap when it is longer.
TEXT_LIMIT = 8 * 1024

SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
)
GENERATED_LABELS = (
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
    model.LABEL_MIGRATION_UID,
)


def normalize(job: Body, migration_name: str) -> Body:
    """The Job with server-generated and migration-identity fields removed."""
    out = copy.deepcopy(job)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    meta.pop("namespace", None)
    (meta.get("annotations") or {}).pop(model.ANNOTATION_INPUTS_HASH, None)
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    if meta.get("name", "").startswith(migration_name + "-"):
        meta["name"] = PLACEHOLDER + meta["name"][len(migration_name) :]
    # Always the migration itself, and unknown to an offline render: not a change.
    meta.pop("ownerReferences", None)
    spec = out.get("spec") or {}
    spec.pop("selector", None)  # generated from the controller uid
    for labels in (
        meta.get("labels"),
        ((spec.get("template") or {}).get("metadata") or {}).get("labels"),
    ):
        if not labels:
            continue
        for key in GENERATED_LABELS:
            labels.pop(key, None)
        if labels.get(model.LABEL_MIGRATION) == migration_name:
            labels[model.LABEL_MIGRATION] = PLACEHOLDER
    return out


def changed_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where ``old`` and ``new`` differ; list items by name when they have one."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_paths(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(old, list) and isinstance(new, list):
        if _named(old) and _named(new):
            olds = {item["name"]: item for item in old}
            news = {item["name"]: item for item in new}
            out = []
            for name in sorted(set(olds) | set(news)):
                out += changed_paths(olds.get(name), news.get(name), f"{path}[{name}]")
            return out
        if len(old) == len(new):
            out = []
            for i, (a, b) in enumerate(zip(old, new, strict=True)):
                out += changed_paths(a, b, f"{path}[{i}]")
            return out
    return [] if old == new else [path]


def _named(items: list[Any]) -> bool:
    return all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def to_yaml(obj: Body) -> str:
    return str(yaml.safe_dump(obj, sort_keys=True, default_flow_style=False))


@dataclass(frozen=True)
class Diff:
    changed: bool
    summary: str
    text: str  # the full unified diff ("" when unchanged or nothing to compare)
    base: str | None  # "namespace/job" compared against, None when there is none


def diff_jobs(
    previous: Body | None,
    previous_migration: str | None,
    proposed: Body,
    migration_name: str,
    base: str | None = None,
) -> Diff:
    """Compare the proposed Job with the previous run's (None: there was none)."""
    new = normalize(proposed, migration_name)
    if previous is None or previous_migration is None:
        text = "".join(
            difflib.unified_diff(
                [], to_yaml(new).splitlines(keepends=True), fromfile="/dev/null", tofile="proposed"
            )
        )
        return Diff(
            changed=True,
            summary="no previous successful run in this environment to compare with",
            text=text,
            base=None,
        )
    old = normalize(previous, previous_migration)
    paths = changed_paths(old, new)
    if not paths:
        return Diff(
            changed=False,
            summary=f"no change from {base or 'the previous run'}",
            text="",
            base=base,
        )
    text = "".join(
        difflib.unified_diff(
            to_yaml(old).splitlines(keepends=True),
            to_yaml(new).splitlines(keepends=True),
            fromfile=f"previous/{base or 'job'}",
            tofile="proposed",
        )
    )
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    summary = f"{len(paths)} field(s) changed from {base or 'the previous run'}: {shown}"
    return Diff(changed=True, summary=summary, text=text, base=base)


def bounded(text: str, limit: int = TEXT_LIMIT) -> tuple[str, bool]:
    """The text cut to ``limit`` characters at a line end, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    cut = text[:limit]
    return cut[: cut.rfind("\n") + 1] or cut, True
