"""Gates that hold a migration before its Job exists (pure decisions).

Each function answers with ``None`` when its gate is open, or a ``Hold``
naming the gate and why. A dependency that failed is not a hold but the end:
``DependencyFailed``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pdm_operator import conditions, images, model, timestamps
from pdm_operator.model import Body


@dataclass(frozen=True)
class Hold:
    reason: str
    message: str
    fatal: bool = False  # the migration cannot proceed, ever
    #: Each look costs more than a read (pods listed, a log read): look less often.
    costly: bool = False
    #: When the hold lifts by itself (a window opens, a change lock lapses): look then.
    opens: datetime | None = None


def suspended(spec: Body) -> Hold | None:
    if spec.get("suspend"):
        return Hold("Suspended", "spec.suspend is true: set it to false to approve the run")
    return None


#: ``spec.notBefore`` is still ahead: a retry scheduled for later (``kubectl pdm
#: retry --at``, an environment's retry policy), or a run set for a quieter hour.
NOT_BEFORE = "NotBefore"


def not_before(spec: Body, now: datetime) -> Hold | None:
    """``spec.notBefore``: no start before that time; the hold lifts by itself then.

    The CRD admits only an RFC 3339 date-time; one that cannot be read anyway
    holds (fail closed: a run set for later never starts early), with a fatal
    hold, as the field cannot be changed to mend it.
    """
    raw = spec.get("notBefore")
    if not raw:
        return None
    at = timestamps.parse_or_none(str(raw))
    if at is None or at.tzinfo is None:
        return Hold(
            NOT_BEFORE,
            f"spec.notBefore {raw!r} is not an RFC 3339 time with a zone: it never starts; "
            "create it again with a readable time",
            fatal=True,
        )
    if now >= at:
        return None
    return Hold(
        NOT_BEFORE,
        f"spec.notBefore is {timestamps.rfc3339(at)}: it does not start before then",
        opens=at,
    )


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


# --- a rollout that waits for the migrations that wait for it ----------------------------
#: The init container of the chart's webservice and Sidekiq pods that runs CNG's
#: ``/scripts/wait-for-deps`` (chart ``charts/gitlab/charts/webservice/templates/
#: deployment.yaml``, ``…/sidekiq/templates/deployment.yaml``).
DEPENDENCIES = "dependencies"
#: The variable that lets that check pass with only post-deployment migrations
#: pending, as the chart documents it (``doc/charts/gitlab/webservice/_index.md``,
#: ``…/sidekiq/_index.md``: "``BYPASS_POST_DEPLOYMENT=true``"). CNG's code that
#: reads it could not be read here, so only the documented value counts as set.
BYPASS = "BYPASS_POST_DEPLOYMENT"
BYPASS_VALUE = "true"
SCHEMA_BYPASS = "BYPASS_SCHEMA_VERSION"
#: CNG's check gives up after ``WAIT_FOR_TIMEOUT`` (30) tries a second apart and
#: exits 1 (``gitlab-rails/scripts/wait-for-deps``, ``scripts/lib/checks/
#: postgresql.rb``): a pod still in it after this long, or after one failure,
#: is held, not starting.
HELD_AFTER = 30.0
ROLLOUT_WAITS_FOR_MIGRATIONS = "RolloutWaitsForMigrations"
#: The Warning of a dry run (and ``pdm-operator diff``) that sees the deadlock coming.
BYPASS_MISSING = "BypassPostDeploymentMissing"
#: What the check prints per database (``Checks::PostgreSQL#check_schema_version``):
#: ``Database Schema - main (gitlabhq_production) - current: 20261101000002,
#: codebase: 20261115000003``.
#: Bounded: what a pod prints reaches the migration's status only as a database
#: name (as Rails allows one) and two versions.
_SCHEMA_LINE = re.compile(
    r"^Database Schema - ([A-Za-z0-9_]{1,63}) \(([^)\n]{0,255})\) - "
    r"current: (\d{0,20}), codebase: (\d{1,20})\s*$",
    re.MULTILINE,
)


def _pod_spec(obj: Body) -> Body:
    """The pod spec of a Deployment (its template) or of a pod."""
    spec = obj.get("spec") or {}
    return (spec.get("template") or {}).get("spec") or spec


def _dependencies_container(obj: Body) -> Body | None:
    return next(
        (c for c in _pod_spec(obj).get("initContainers") or [] if c.get("name") == DEPENDENCIES),
        None,
    )


def _env(container: Body, name: str) -> Body | None:
    """The entry of ``name`` in ``container``'s env: the last one, as Kubernetes takes it."""
    found = [e for e in container.get("env") or [] if e.get("name") == name]
    return found[-1] if found else None


def chart_value(deployment: Body) -> str:
    """The chart value that sets the bypass for this Deployment's component.

    Each GitLab subchart takes ``gitlab.<name>.extraEnv`` and labels its
    objects ``app: <name>`` (``webservice``, ``sidekiq``).
    """
    template = (deployment.get("spec") or {}).get("template") or {}
    app = next(
        (
            str(labels["app"])
            for labels in (
                (deployment.get("metadata") or {}).get("labels") or {},
                (template.get("metadata") or {}).get("labels") or {},
            )
            if labels.get("app")
        ),
        None,
    )
    if app is None:
        return f"{BYPASS} in the extraEnv of its chart component"
    return f"gitlab.{app}.extraEnv.{BYPASS}"


def bypass_missing(name: str, deployment: Body, pod: Body | None = None) -> str | None:
    """Why the pods of ``deployment`` (or ``pod``, one of them, as it runs) would wait
    for post-deployment migrations, or None.

    Only pods with the chart's ``dependencies`` init container can wait for
    migrations. That check passes with only post-deployment migrations pending
    when its env has ``BYPASS_POST_DEPLOYMENT=true`` (the documented value),
    and whatever is pending when it has ``BYPASS_SCHEMA_VERSION`` (CNG reads
    that one for presence, ``scripts/lib/checks/postgresql.rb``; the chart's
    zero-downtime procedure sets it in ``global.extraEnv``, not recommended
    otherwise). A value from ``envFrom`` or ``valueFrom`` cannot be read here,
    so it does not count: the answer says where to look.
    """
    init = (pod is not None and _dependencies_container(pod)) or _dependencies_container(deployment)
    if not init or _env(init, SCHEMA_BYPASS) is not None:
        return None
    entry = _env(init, BYPASS)
    value = None if entry is None else entry.get("value")
    if value is not None and str(value).strip().lower() == BYPASS_VALUE:
        return None
    if entry is None:
        has = "has no BYPASS_POST_DEPLOYMENT"
        if init.get("envFrom"):
            has += " in its env (one from envFrom is not read)"
    elif value is None:
        has = f"sets {BYPASS} from valueFrom, which is not read"
    else:
        has = f"has {BYPASS}={value!r}"
    return (
        f"Deployment {name!r}: its {DEPENDENCIES!r} init container {has}, so its new pods wait "
        "until every migration is applied, post-deployment ones included; a deploy that skips "
        "them (SKIP_POST_DEPLOYMENT_MIGRATIONS) never rolls out while this migration waits for "
        f"it. Set {chart_value(deployment)}={BYPASS_VALUE!r} in the chart values "
        "(docs/usage.md, Chart values)"
    )


def bypass_warnings(names: list[str], deployments: dict[str, Body | None]) -> list[str]:
    """Before a deploy: each of the ``waitFor.rolledOut`` Deployments ``names`` that
    would wait for this migration, and each that could not be checked (not found)."""
    warnings = []
    for name in names:
        deployment = deployments.get(name)
        if deployment is None:
            warnings.append(
                f"Deployment {name!r} (spec.waitFor.rolledOut) was not found: whether its pods "
                "would wait for this migration cannot be checked"
            )
            continue
        missing = bypass_missing(name, deployment)
        if missing is not None:
            warnings.append(missing)
    return warnings


def _dependencies_status(pod: Body) -> Body | None:
    return next(
        (
            s
            for s in (pod.get("status") or {}).get("initContainerStatuses") or []
            if s.get("name") == DEPENDENCIES
        ),
        None,
    )


def just_restarted(pod: Body, now: datetime) -> bool:
    """Whether the pod's ``dependencies`` container has run before and its current run
    has not printed a whole check yet (waiting to restart, or started moments ago):
    its last run's log says more."""
    status = _dependencies_status(pod) or {}
    if int(status.get("restartCount") or 0) == 0:
        return False
    state = status.get("state") or {}
    started = timestamps.parse_or_none((state.get("running") or {}).get("startedAt"))
    return started is None or (now - started).total_seconds() < HELD_AFTER


def held_in_dependencies(pods: list[Body], now: datetime) -> list[Body]:
    """Pods kept in their ``dependencies`` init container: failed once, or in it too long.

    Not a pod being deleted, nor one that has ended (an evicted pod keeps its
    statuses until it is collected).
    """
    held = []
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            continue
        status = _dependencies_status(pod)
        if status is None:
            continue
        state = status.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode") == 0:
            continue
        failed = int(status.get("restartCount") or 0) > 0 or "terminated" in state
        started = timestamps.parse_or_none((state.get("running") or {}).get("startedAt"))
        if failed or (started is not None and (now - started).total_seconds() >= HELD_AFTER):
            held.append(pod)
    return held


def schema_behind(log: str) -> list[str]:
    """The databases the check said are behind the code, from its own lines (newest last)."""
    latest: dict[str, str] = {}
    for m in _SCHEMA_LINE.finditer(log):
        database, current, codebase = m.group(1), m.group(3), m.group(4)
        if int(current or 0) < int(codebase):
            latest[database] = f"{database}: current {current or 0}, codebase {codebase}"
        else:
            latest.pop(database, None)
    return list(latest.values())


def rollout_waits(name: str, deployment: Body, held: list[Body], logs: dict[str, str]) -> Hold:
    """The hold for a rollout whose new pods are ``held`` in ``dependencies``.

    ``logs``: each held pod's ``dependencies`` log tail, where it could be read.
    Without the bypass the check waits for every pending migration, so held
    pods are the deadlock whatever else they wait for: the rollout waits for
    this migration, which waits for the rollout. The check's own "Database
    Schema" lines, where the log has them, are quoted as the evidence; the
    decision does not rest on them (newer CNG prints other lines, CNG MR
    !1548). With the bypass the pods wait for something else (the database, a
    regular migration), and the message says where to look.
    """
    pod = held[0]["metadata"]["name"]
    behind = [line for p in held for line in schema_behind(logs.get(p["metadata"]["name"], ""))]
    seen = f" ({'; '.join(dict.fromkeys(behind))})" if behind else ""
    waiting = f"{len(held)} pod(s) of Deployment {name!r}, {pod!r} first"
    # Judged by the held pods as they run, not the template: during a fix an
    # older ReplicaSet's pods still run without the value the new one has.
    missing = next(
        (m for p in held if (m := bypass_missing(name, deployment, p)) is not None), None
    )
    if missing is not None:
        return Hold(
            ROLLOUT_WAITS_FOR_MIGRATIONS,
            f"{waiting}, wait in their {DEPENDENCIES!r} init container for pending migrations"
            f"{seen}, and this migration waits for that rollout (spec.waitFor.rolledOut): "
            f"neither can finish. {missing}. Nothing runs while the old code still serves",
            costly=True,
        )
    return Hold(
        "RolloutPending",
        f"{waiting}, wait in their {DEPENDENCIES!r} init container{seen} "
        f"(kubectl logs -c {DEPENDENCIES} {pod})",
        costly=True,
    )
