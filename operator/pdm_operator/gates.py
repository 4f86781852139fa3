"""Gates that hold a migration before its Job exists (pure decisions).

Each function answers with ``None`` when its gate is open, or a ``Hold``
naming the gate and why. A dependency that failed is not a hold but the end:
``DependencyFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdm_operator import conditions, images, model
from pdm_operator.model import Body


@dataclass(frozen=True)
class Hold:
    reason: str
    message: str
    fatal: bool = False  # the migration cannot proceed, ever


def suspended(spec: Body) -> Hold | None:
    if spec.get("suspend"):
        return Hold("Suspended", "spec.suspend is true: set it to false to approve the run")
    return None


def dependencies(names: list[str], found: dict[str, Body | None]) -> Hold | None:
    """``waitFor.migrations``: every named migration must have Succeeded."""
    waiting = []
    for name in names:
        other = found.get(name)
        if other is None:
            waiting.append(f"{name} (not found)")
            continue
        conds = (other.get("status") or {}).get("conditions")
        if conditions.is_true(conds, model.FAILED):
            return Hold(
                "DependencyFailed",
                f"PostDeployMigration {name!r} (spec.waitFor.migrations) failed",
                fatal=True,
            )
        if not conditions.is_true(conds, model.SUCCEEDED):
            state = (other.get("status") or {}).get("state") or model.STATE_PENDING
            waiting.append(f"{name} ({state})")
    if waiting:
        return Hold("WaitingForMigrations", "waiting for " + ", ".join(waiting) + " to succeed")
    return None


def cycle(start: str, waits_for: dict[str, list[str]]) -> list[str] | None:
    """A cycle through ``start`` in the waits-for graph, as ``[start, ..., start]``.

    ``waits_for`` maps each unfinished migration to the migrations it waits
    for; a migration that has ended is not in it (its end opens or fails the
    gate, so no cycle runs through it).
    """
    path: list[str] = [start]
    seen: set[str] = set()

    def walk(node: str) -> bool:
        for nxt in waits_for.get(node, []):
            if nxt == start:
                path.append(nxt)
                return True
            if nxt in seen or nxt not in waits_for:
                continue
            seen.add(nxt)
            path.append(nxt)
            if walk(nxt):
                return True
            path.pop()
        return False

    return path if walk(start) else None


def rollout(
    name: str, deployment: Body | None, expect: tuple[str, str] | None = None
) -> Hold | None:
    """Whether a Deployment is fully rolled out.

    Rolled out means: the controller has observed the current generation, and
    every desired replica is updated and available, with no old replica left.
    ``expect`` is ``(container, image)``: the Deployment must also still run
    the image the migration resolved from it.
    """
    if deployment is None:
        return Hold("RolloutPending", f"Deployment {name!r} (spec.waitFor.rolledOut) was not found")
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    if expect is not None:
        container, image = expect
        now = images.template_image(deployment, container)
        if now != image:
            return Hold(
                "ImageChanged",
                f"Deployment {name!r} now runs {now!r} in container {container!r}, "
                f"but this migration resolved {image!r}; create a new PostDeployMigration "
                "for the new version",
            )
    generation = deployment.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return Hold(
            "RolloutPending", f"Deployment {name!r}: rollout not yet observed by its controller"
        )
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Hold(
                "RolloutStuck",
                f"Deployment {name!r} exceeded its progress deadline: {cond.get('message', '')}",
            )
    desired = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    if updated < desired or available < desired or total > updated:
        return Hold(
            "RolloutPending",
            f"Deployment {name!r}: {updated}/{desired} replicas updated, "
            f"{available}/{desired} available, {total - updated} old",
        )
    return None
