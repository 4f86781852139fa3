"""Approval of a plan, not a flag (pure).

With ``spec.approval.required``, a migration runs only the plan someone
approved: the migration Job's inputs, the pending list the pre-flight found,
and the pre-flight's own args and image (the list is whatever they printed),
hashed together (``preflight.plan_hash``). Pre-flight args that are not the
operator's status task are called out first wherever the plan is shown.
``kubectl pdm approve`` writes ``spec.approval.approved`` with that hash, the
Job and migrations it showed, who approved (the API server's own answer to
"who am I", SelfSubjectReview) and when. The operator compares it with what the
pre-flight finds right before the Job would be created, holding the
environment's lock: if anything differs, no Job; the migration waits, naming
the difference, for a new approval.

Who may approve is the cluster's decision: the ValidatingAdmissionPolicy in
``manifests/approval/`` allows a change of ``spec.approval.approved`` only to
users granted the ``approve`` verb on postdeploymigrations, and only with
their own name in ``by``.
"""

from __future__ import annotations

from typing import Any

from pdm_operator import conditions, gates, model, preflight, render, versionskip
from pdm_operator.model import Body

#: The RBAC verb the shipped admission policy checks (a verb of our own, as
#: Kubernetes has ``approve`` on certificatesigningrequests/approval).
VERB = "approve"
#: The Gated reasons of a migration that waits for an approval: a first one, or a new one.
AWAITING = "AwaitingApproval"
PLAN_CHANGED = "PlanChanged"
#: Gated reasons under which a plan can be approved: it waits for one.
WAITS = (AWAITING, PLAN_CHANGED, *versionskip.REASONS)


def required(spec: Body) -> bool:
    return bool((spec.get("approval") or {}).get("required"))


def approved(spec: Body) -> Body | None:
    found = (spec.get("approval") or {}).get("approved")
    return dict(found) if found else None


def shown(entries: list[Body] | None) -> list[str]:
    """The pending list as an approval records it: ``VERSION (database)``."""
    return [
        f"{e.get('version', '')} ({e.get('database', '')})"
        + (f" [{e['action']}]" if e.get("action") not in (None, "Apply") else "")
        for e in entries or []
    ]


def check(spec: Body, pf: Body, pending: list[Body] | None, name: str) -> gates.Hold | None:
    """None when no approval is needed or the plan ``pf`` found is the one approved."""
    if not required(spec):
        return None
    given = approved(spec)
    if given and given.get("planHash") == pf.get("planHash"):
        return None
    how = f"approve it with `kubectl pdm approve {name}`"
    summary = preflight.summary(preflight.from_status(pending))
    if not given:
        return gates.Hold(
            AWAITING,
            f"{warning(pf)}plan {str(pf.get('planHash', ''))[:19]} needs an approval "
            f"(spec.approval.required): {summary}, found by the pre-flight "
            f"{preflight_shown(pf)}; {how}",
        )
    return gates.Hold(
        PLAN_CHANGED,
        f"what would run is not what {given.get('by', '?')} approved at {given.get('at', '?')}: "
        f"{difference(given, pf, pending)}; no Job was created; {how} for the new plan",
    )


def unapproved_shown_plan(spec: Body, status: Body, job_hash: str, name: str) -> gates.Hold | None:
    """Before the lock: the plan already shown for this Job is not approved yet.

    No new pre-flight is run for it (nothing has been approved that it could
    confirm); a new approval, or a changed Job, lets the migration ask again.
    The same for a plan with a version skip that no approval acknowledged.
    """
    pf = status.get("preflight") or {}
    if pf.get("phase") != "Succeeded" or pf.get("jobHash") != job_hash:
        return None
    if not required(spec):
        return unacknowledged_skip(spec, pf, name)
    return check(spec, pf, status.get("pendingMigrations"), name)


def unacknowledged_skip(spec: Body, pf: Body, name: str) -> gates.Hold | None:
    """The plan's version skip (``versionskip``), unless an approval of this very plan
    acknowledges it; whether or not the spec requires approval otherwise."""
    skip: Body = pf.get("versionSkip") or {}
    if not skip:
        return None
    given = approved(spec)
    if given and given.get("planHash") == pf.get("planHash"):
        return None
    return gates.Hold(
        str(skip.get("reason") or versionskip.UNKNOWN),
        f"{skip.get('message', '')}; no Job was created: approve plan "
        f"{str(pf.get('planHash', ''))[:19]} with `kubectl pdm approve {name}` to run it "
        "anyway (the approval acknowledges the skip)",
    )


def warning(pf: Body) -> str:
    """``WARNING: ...; `` when the pre-flight ran args of the creator's, else ``""``.

    The pending list is what the pre-flight printed: args other than the
    status task can print any table, so the approver is told first.
    """
    skip = (pf.get("versionSkip") or {}).get("message")
    said = f"WARNING: {skip}; " if skip else ""
    args = pf.get("args")
    if args is None or preflight.default_args(args):
        return said
    return said + (
        "WARNING: non-default pre-flight args (spec.preflight.args "
        f"{preflight.describe_args(args)}): the pending list is what they printed, "
        "not necessarily what db:migrate:status says; "
    )


def preflight_shown(pf: Body) -> str:
    """``(image X, args [...])``: the pre-flight pod an approval approves with its list."""
    args = pf.get("args")
    if args is None:
        shown_args = "args not recorded"
    elif preflight.default_args(args):
        shown_args = "the default args (db:migrate:status)"
    else:
        shown_args = f"args {preflight.describe_args(args)}"
    return f"(image {pf.get('image') or 'not recorded'}, {shown_args})"


def difference(given: Body, pf: Body, pending: list[Body] | None) -> str:
    """What differs between the approved plan and the one found now, in words."""
    now = shown(pending)
    was = [str(m) for m in given.get("migrations") or []]
    parts = []
    added = [m for m in now if m not in was]
    gone = [m for m in was if m not in now]
    if added:
        parts.append("now pending as well: " + ", ".join(added[:10]))
    if gone:
        parts.append("no longer pending: " + ", ".join(gone[:10]))
    if given.get("jobHash") and given.get("jobHash") != pf.get("jobHash"):
        parts.append(
            f"the Job changed (approved {given.get('jobName', '?')}; the inputs hash is now "
            f"{str(pf.get('jobHash', ''))[: render.HASH_LENGTH]})"
        )
    if not parts:
        parts.append(
            f"plan {str(given.get('planHash', ''))[:19]} was approved, "
            f"{str(pf.get('planHash', ''))[:19]} is found now by the pre-flight "
            f"{preflight_shown(pf)}"
        )
    return "; ".join(parts)


class Refused(Exception):
    """There is no plan to approve, or not the one the approver reviewed."""


def approval_for(migration: Body, by: str, at: str, expected: str | None) -> dict[str, Any]:
    """``spec.approval.approved`` for the plan the migration shows now."""
    meta, spec = migration["metadata"], migration.get("spec") or {}
    status = migration.get("status") or {}
    name = meta["name"]
    # Required by the spec, or by its environment (PostDeployEnvironment
    # approval.required), which the operator shows as a wait for an approval.
    gated = conditions.find(status.get("conditions"), model.GATED) or {}
    asked = gated.get("status") == "True" and gated.get("reason") in WAITS
    if not required(spec) and not asked:
        raise Refused(
            f"pdm/{name} does not ask for an approval (neither its spec.approval.required "
            "nor its environment's)"
        )
    pf = status.get("preflight") or {}
    if pf.get("phase") != "Succeeded" or not pf.get("planHash"):
        raise Refused(
            f"pdm/{name} shows no plan yet: its pre-flight has not answered "
            f"(state {status.get('state', 'Pending')}); wait for the Gated/AwaitingApproval state"
        )
    if status.get("jobName"):
        raise Refused(f"pdm/{name} already runs Job {status['jobName']}: nothing left to approve")
    if expected and expected != pf["planHash"]:
        raise Refused(
            f"pdm/{name} now shows plan {pf['planHash']}, not {expected}: review it again"
        )
    return {
        "planHash": pf["planHash"],
        "jobHash": pf.get("jobHash", ""),
        "jobName": pf.get("migrationJob") or render.job_name(name, str(pf.get("jobHash", ""))),
        "migrations": shown(status.get("pendingMigrations")),
        "by": by,
        "at": at,
    }
