"""kstatus' generic rules, as Flux, kpt and cli-utils compute a custom resource's status.

A port of cli-utils ``pkg/kstatus/status/generic.go`` (``checkGenericProperties``
and ``checkGeneration``) for objects with no type-specific rules, which is
what a PostDeployMigration is to kstatus: scheduled for deletion →
Terminating; ``status.observedGeneration`` set and not ``metadata.generation``
→ InProgress; a ``Reconciling`` condition True → InProgress; a ``Stalled``
condition True → Failed; otherwise Current.
"""

from __future__ import annotations

from typing import Any


def status(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    st = obj.get("status") or {}
    generation = meta.get("generation")
    observed = st.get("observedGeneration", generation)
    if observed != generation:
        return "InProgress"
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Reconciling" and cond.get("status") == "True":
            return "InProgress"
        if cond.get("type") == "Stalled" and cond.get("status") == "True":
            return "Failed"
    return "Current"
