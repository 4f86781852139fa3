"""Before a Job exists: the environment's policy, the image and pod template, the
checks that fail fast, and the gates in order (the lock last)."""

from __future__ import annotations

from pdm_operator import (
    approval,
    conditions,
    environments,
    gates,
    history,
    images,
    lines,
    model,
    preflight,
    render,
    security,
    templates,
)
from pdm_operator.decide.asks import (
    AcquireLock,
    Decision,
    DeploymentPods,
    FindTemplate,
    GetDeployment,
    GetEnvironment,
    GetMigration,
    LogTail,
    ResolveImage,
    ValidateJob,
)
from pdm_operator.decide.state import Pass, fail, invalid_job
from pdm_operator.decide.when_to_run import SLOW, environment_says_when, whole_environment_deployed
from pdm_operator.errors import AlreadyExists, ApiError, Invalid
from pdm_operator.model import Body

#: Migrations read at most when looking for a cycle in ``waitFor.migrations``.
MAX_DEPENDENCY_WALK = 64


def environment_policy(p: Pass) -> Decision[environments.Policy | gates.Hold]:
    """The declared environment's policy, or the hold that says it does not admit ``p``.

    Asked before anything else of a migration without a Job (it costs one
    read), so a migration of an undeclared environment, or of a namespace the
    environment does not list, never resolves, renders or queues for the
    lock. An environment that requires approval makes the spec require it.
    """
    body: Body | None = yield GetEnvironment()
    found = environments.admits(p.environment, body, p.namespace)
    if isinstance(found, gates.Hold):
        return found
    p.spec = environments.effective_spec(found, p.spec)
    p.environment_holds = found.holds
    return environments.approval_hold(found, p.spec) or found


def outside_policy(
    p: Pass, policy: environments.Policy, template: templates.Template | None, planned: Body
) -> gates.Hold | None:
    """The rendered Job (and the pre-flight's deadline) inside what the environment allows."""
    if template is not None:
        source: Body = p.spec["podTemplateFrom"].get("migrationsJob") or {}
        hold = environments.template_hold(
            policy,
            template.kind,
            template.name,
            template.metadata.get("labels") or {},
            source.get("release"),
        )
        if hold is not None:
            return hold
    hold = environments.job_hold(policy, planned)
    cfg: Body = p.spec.get("preflight") or {}
    if hold is None and p.spec.get("mode", "Run") == "Run" and cfg.get("enabled", True):
        deadline = int(cfg.get("activeDeadlineSeconds") or preflight.DEFAULT_DEADLINE)
        hold = environments.job_hold(
            policy, {"spec": {"activeDeadlineSeconds": deadline}}, "pre-flight Job"
        )
    return hold


def resolve(p: Pass) -> Decision[bool]:
    image_spec = p.spec["image"]
    result: images.Resolved | images.Unresolved = yield ResolveImage()
    if isinstance(result, images.Unresolved):
        p.set(model.IMAGE_RESOLVED, False, result.reason, result.message)
        return False
    p.status["image"], p.status["sourceImage"] = result.image, result.source
    if image_spec.get("reference"):
        p.set(model.IMAGE_RESOLVED, True, "FromReference", f"using {result.image}")
        return True
    source = image_spec["fromDeployment"]
    p.set(
        model.IMAGE_RESOLVED,
        True,
        "FromDeployment",
        f"Deployment {source['name']!r} container {source['container']!r} runs {result.image}",
    )
    return True


def resolve_template(p: Pass) -> Decision[templates.Template | templates.Missing | None]:
    """``spec.podTemplateFrom``, read again on every pass until the Job exists.

    The chart's *current* migrations Job is the one to copy: a ``helm
    upgrade`` while this migration waits replaces it, and the stale gate then
    decides whether the new one belongs to the deployed version.
    """
    if not p.spec.get("podTemplateFrom"):
        return None
    found: templates.Template | templates.Missing | None = yield FindTemplate()
    if found is None:
        return None
    if isinstance(found, templates.Missing):
        p.set(model.TEMPLATE_RESOLVED, False, found.reason, found.message)
        return found
    p.status["podTemplate"] = found.status()
    p.set(
        model.TEMPLATE_RESOLVED,
        True,
        f"From{found.kind}",
        f"pod template copied from {found.kind} {found.name!r} (uid {found.uid})",
    )
    return found


def insecure(p: Pass, job: Body) -> bool:
    """Refuse a Job below the restricted Pod Security level, whatever the namespace enforces.

    Checked on every pass before the Job exists (the template is re-read), in
    DryRun mode too, so the dry run says what the run would say.
    """
    found = security.violations(job)
    if not found:
        return False
    shown = "; ".join(found[:6]) + (f"; and {len(found) - 6} more" if len(found) > 6 else "")
    fail(
        p,
        "PodSecurityViolation",
        f"the migration Job would not meet the restricted Pod Security Standard: {shown}",
    )
    return True


def unrecordable(p: Pass) -> bool:
    """Refuse a run that would be recorded at no GitLab version (``history.unreadable_version``).

    Its record would make every rollback answer of the environment unknown
    until mended by hand; ``spec.gitlabVersion`` is immutable, so it fails.
    """
    why = history.unreadable_version(
        p.migration, str(p.status.get("sourceImage") or p.status["image"])
    )
    if why is None:
        return False
    fail(p, "UnknownVersion", why)
    return True


def rejected(p: Pass, job: Body) -> Decision[bool]:
    """Fail fast: while a gate holds, check the Job with a server-side dry-run create.

    A spec the API server would refuse then fails in seconds with its reason,
    not after the rollout wait; a migration whose gates are all open skips
    this, its real create is the same check. Only a refusal of the Job itself
    (400, 422) is final; anything else (quota, throttling, an API server
    hiccup) is left for the real create to meet. The answerer may answer
    from a dry run of an identical Job moments ago (the waiters of one
    deployment render the same Job but for its name), or from the real create
    of such a Job: the check is a head start, the real create still decides.
    """
    if conditions.is_true(p.conditions, model.JOB_VALIDATED):
        return False
    name = job["metadata"]["name"]
    try:
        same_as: str | None = yield ValidateJob(job)
    except Invalid as e:
        fail(p, "JobInvalid", invalid_job(e, "rejects the Job (server-side dry run)"))
        return True
    except AlreadyExists:
        # A Job exists under the name: a dry run cannot tell (the real create
        # meets it, and adopts it only if it is this migration's own).
        same_as = None
    except ApiError as e:
        p.set(
            model.JOB_VALIDATED,
            False,
            "ValidationPending",
            f"could not check Job {name!r} yet: {e.message}",
        )
        return False
    if same_as is None:
        reason, how = "DryRunAccepted", "server-side dry run"
    else:
        reason, how = "IdenticalJobAccepted", f"it accepted identical Job {same_as} moments ago"
    p.set(
        model.JOB_VALIDATED,
        True,
        reason,
        f"the API server accepts the Job ({how}); it is created when every gate is open",
    )
    return False


def first_hold(
    p: Pass, policy: environments.Policy, template: templates.Template | None, planned: Body
) -> Decision[gates.Hold | None]:
    """The gates in order; the first that holds is the answer. The last is the lock."""
    hold = (
        gates.suspended(p.spec)
        or gates.not_before(p.spec, p.at)
        or (yield from _dependencies(p))
        or (yield from environment_says_when(p, policy))
        or (yield from _rolled_out(p))
        or (yield from whole_environment_deployed(p, policy))
    )
    if hold:
        return hold
    if template is not None:
        stale = templates.stale(template, p.status["sourceImage"], p.status["image"])
        if stale:
            return gates.Hold("TemplateStale", stale)
    hold = approval.unapproved_shown_plan(p.spec, p.status, render.hash_of(planned), p.name)
    if hold is not None:
        # The plan shown is not approved yet: no lock, no new pre-flight.
        return hold
    tenure: str | None = yield AcquireLock()
    if tenure is None:
        # The same message whoever holds the lock: a waiter's status is not
        # rewritten each time the lock changes hands in a long line.
        return gates.Hold(
            lines.LOCKED,
            f"another PostDeployMigration holds environment {p.environment!r} "
            f"(Lease {p.lease}); one migration at a time",
        )
    p.tenure = tenure
    return None


def _rolled_out(p: Pass) -> Decision[gates.Hold | None]:
    """``waitFor.rolledOut``: each Deployment rolled out (and still running the
    image resolved from it); a rollout held in the chart's dependencies check says so."""
    wait_for = p.spec.get("waitFor") or {}
    source = (p.spec["image"].get("fromDeployment") or {}).get("name")
    for name in list(wait_for.get("rolledOut") or []):
        expect = None
        if name == source:
            expect = (p.spec["image"]["fromDeployment"]["container"], p.status["sourceImage"])
        deployment: Body | None = yield GetDeployment(name)
        hold = gates.rollout(name, deployment, expect)
        if hold and hold.reason == "ImageChanged" and expect and _follows(p):
            return _follow(p, name, images.template_image(deployment or {}, expect[0]))
        if hold and hold.reason in ("RolloutPending", "RolloutStuck") and deployment:
            held = yield from _held_in_dependencies(p, name, deployment)
            if held is not None and (
                hold.reason == "RolloutPending" or held.reason == gates.ROLLOUT_WAITS_FOR_MIGRATIONS
            ):
                hold = held
            elif held is not None:
                # Stuck stays stuck (a Warning, the deadline's words); the pods say why.
                hold = gates.Hold(hold.reason, f"{hold.message}; {held.message}", costly=True)
        if hold:
            return hold
    return None


#: A following migration's Deployment rolled out another image: resolved again.
IMAGE_FOLLOWED = "ImageFollowed"


def _follows(p: Pass) -> bool:
    return bool((p.spec["image"].get("fromDeployment") or {}).get("follow"))


def _follow(p: Pass, name: str, now: str | None) -> gates.Hold:
    """``image.fromDeployment.follow``: the Deployment now runs another image and no
    Job exists yet, so the image is resolved again on the next pass (a new Job
    name, a new pre-flight and plan) instead of waiting for a new migration."""
    for field in ("image", "sourceImage"):
        p.status.pop(field, None)
    return gates.Hold(
        IMAGE_FOLLOWED,
        f"Deployment {name!r} now runs {now!r}; this migration follows it "
        "(spec.image.fromDeployment.follow): the image is resolved again",
    )


def gate_poll(p: Pass, hold: gates.Hold) -> float:
    """When a held migration looks again: the lock's poll for the lock; a costly hold
    (a rollout held in the chart's dependencies check: pods listed, a log read
    each look; it only ends with a chart upgrade) and the environment's windows
    and change lock the environment's slower poll, but never past the moment
    the hold lifts by itself."""
    if hold.reason == lines.LOCKED:
        poll = p.timing.lock_poll
    elif hold.costly or hold.reason in SLOW:
        poll = p.timing.policy_poll
    else:
        poll = p.timing.gate_poll
    if hold.opens is not None:
        # Look again the moment it lifts by itself (a window opening), not a poll later.
        poll = min(poll, max(0.0, (hold.opens - p.at).total_seconds()))
    return poll


def _held_in_dependencies(p: Pass, name: str, deployment: Body) -> Decision[gates.Hold | None]:
    """A rollout whose new pods wait in the chart's ``dependencies`` init container:
    why, from the pods' state and the check's own lines (the first held pod's
    log: one read per pass while a rollout is held, none otherwise)."""
    held = gates.held_in_dependencies((yield DeploymentPods(name)), p.at)
    if not held:
        return None
    first = held[0]["metadata"]["name"]
    just_restarted = gates.just_restarted(held[0], p.at)
    # Just restarted, its current run has printed no whole check yet: its last run's lines.
    log_tail = (yield LogTail(first, gates.DEPENDENCIES, previous=just_restarted)) or ""
    return gates.rollout_waits(name, deployment, held, {first: log_tail})


def _dependencies(p: Pass) -> Decision[gates.Hold | None]:
    """``waitFor.migrations``: all Succeeded, none Failed, and no cycle through this one."""
    names = list((p.spec.get("waitFor") or {}).get("migrations") or [])
    if not names:
        return None
    found: dict[str, Body | None] = {}
    for n in names:
        found[n] = yield GetMigration(n)
    hold = gates.dependencies(names, found)
    if hold is None:
        return hold
    # A dependency that failed because of a cycle through this migration still
    # counts as waiting: whichever of the cycle is looked at first, each of
    # them names the cycle.
    loop = gates.cycle(p.name, (yield from _waits_for(p, found)))
    if loop is None and hold.fatal:
        return hold
    if loop:
        return gates.Hold(
            "DependencyCycle",
            "spec.waitFor.migrations forms a cycle: "
            + " -> ".join(loop)
            + "; none of them can ever run. Create them again without the cycle",
            fatal=True,
        )
    return hold


def _waits_for(p: Pass, found: dict[str, Body | None]) -> Decision[dict[str, list[str]]]:
    """The waits-for graph of the unfinished migrations reachable from ``p`` (bounded)."""
    graph: dict[str, list[str]] = {p.name: list(p.spec["waitFor"]["migrations"])}
    known: dict[str, Body | None] = dict(found)
    frontier = [n for n in graph[p.name] if n != p.name]
    while frontier and len(known) < MAX_DEPENDENCY_WALK:
        name = frontier.pop()
        if name in graph:
            continue
        other = known[name] if name in known else (yield GetMigration(name))
        known[name] = other
        status = (other or {}).get("status") or {}
        if other is None or (model.is_finished(status) and not _in_a_cycle(status)):
            continue
        graph[name] = list(((other.get("spec") or {}).get("waitFor") or {}).get("migrations") or [])
        frontier += [n for n in graph[name] if n not in graph]
    return graph


def _in_a_cycle(status: Body) -> bool:
    """A migration that failed because its dependencies form a cycle."""
    return (status.get("failure") or {}).get("reason") == "DependencyCycle"
