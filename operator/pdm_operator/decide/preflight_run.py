"""The pre-flight: a read-only Job with the migration Job's own pod asks Rails
what is pending, under the environment's lock; its answer, the approval of
that plan, and what nothing pending means."""

from __future__ import annotations

from pdm_operator import (
    approval,
    failures,
    history,
    jobs,
    model,
    preflight,
    render,
    selection,
    templates,
    versionskip,
)
from pdm_operator.decide.after_job import (
    await_blocking_reports,
    failure_log,
    record_run,
    reports_now_pending,
    retry_by_policy,
)
from pdm_operator.decide.asks import (
    CreateJob,
    Decision,
    GetJob,
    JobEvents,
    JobPods,
    PodLog,
    SuspendJob,
    Warn,
)
from pdm_operator.decide.state import (
    NOTHING_PENDING,
    Pass,
    Step,
    fail,
    finish,
    nothing_pending_message,
    preflight_running,
    release,
    write,
)
from pdm_operator.errors import AlreadyExists, ApiError, Invalid
from pdm_operator.model import Body


def run_preflight(  # noqa: PLR0911
    p: Pass, job: Body, tenure: str | None, decide: bool = True
) -> Decision[Step | None]:
    """Ask Rails what ``job`` would apply; None once the answer says to go on.

    In Run mode this runs holding the environment's lock (``tenure``): the
    answer counts only for the Job it was asked for and the tenure it was
    asked under, so a list learnt before another migration of the environment
    ran is asked again. The pass that finds it running keeps the lock
    (``preflight_running``); every other way out gives it back. ``decide``:
    whether nothing pending ends the migration (not in DryRun).
    """
    cfg: Body = p.spec.get("preflight") or {}
    chosen = selected(p)
    job_hash = render.hash_of(job)
    pf: Body = p.status.get("preflight") or {}
    current = (
        pf.get("jobHash") == job_hash
        and pf.get("tenure") == tenure
        and (pf.get("selection") or {}) == chosen.as_status()
        # An answer to other args (an older operator's default) is asked again.
        and pf.get("args", preflight.given_args(p.spec)) == preflight.given_args(p.spec)
    )
    unfit = _unfit(chosen, cfg, job, p.name) if not current else None
    if unfit is not None:
        fail(p, unfit.reason, unfit.message)
        return (yield from finish(p))
    if cfg.get("enabled", True) is False:
        return None
    if current and pf.get("phase") == "Running":
        answered = yield from _follow_preflight(p, pf, job)
        if answered is not None:
            return answered
        pf = p.status["preflight"]
    elif not current or pf.get("phase") != "Succeeded":
        return (yield from _start_preflight(p, job, job_hash, tenure, cfg))
    if not decide:
        return None
    nothing = int(pf.get("pendingCount") or 0) == 0 and cfg.get("whenNonePending") != "Run"
    if chosen.active:
        narrowed = yield from _narrowed(p, chosen, job)
        if isinstance(narrowed, Step):
            return narrowed
        nothing = narrowed  # all held: a selection never runs db-migrate
    skipped = approval.unacknowledged_skip(p.spec, p.status["preflight"], p.name)
    if skipped is not None and not nothing:
        p.set(model.GATED, True, skipped.reason, skipped.message)
        return (yield from write(p, p.timing.queued_poll))
    # "Nothing pending" from args of the creator's own is a plan too: with
    # approval required it is approved like any other, or a pre-flight that
    # prints an empty table would end the migration unseen.
    custom = not preflight.default_args(preflight.given_args(p.spec))
    if not nothing or (custom and approval.required(p.spec)):
        held = yield from _unapproved(p, p.status["preflight"])
        if held is not None or not nothing:
            return held
    return (yield from _nothing_pending(p))


def _unfit(
    chosen: selection.Selection, cfg: Body, job: Body, name: str
) -> selection.Refusal | None:
    """Why a selection cannot narrow this Job, known before any pre-flight runs."""
    if not chosen.active:
        return None
    if cfg.get("enabled", True) is False:  # refused at admission; never run db-migrate instead
        return selection.Refusal(
            selection.NOT_NARROWABLE,
            "a selection (spec.migrations, the environment's holds) needs the pre-flight's list",
        )
    unfit = selection.job(job, name, selection.Plan((), (), ()), marking=bool(chosen.mark))
    return unfit if isinstance(unfit, selection.Refusal) else None


def selected(p: Pass) -> selection.Selection:
    """What this run applies, by version: its spec and its environment's holds."""
    return selection.of(p.spec, p.environment_holds, p.environment)


def _narrow(
    p: Pass, chosen: selection.Selection, job: Body
) -> tuple[selection.Plan, Body] | selection.Refusal:
    """The recorded answer split by ``chosen``, and ``job`` narrowed to it (or why not)."""
    pf: Body = p.status.get("preflight") or {}
    plan = selection.split(
        chosen,
        preflight.from_status(p.status.get("pendingMigrations")),
        int(pf.get("pendingCount") or 0),
    )
    if isinstance(plan, selection.Refusal):
        return plan
    narrowed = selection.job(job, p.name, plan, marking=bool(chosen.mark))
    return narrowed if isinstance(narrowed, selection.Refusal) else (plan, narrowed)


def final_job(p: Pass, job: Body) -> Body | selection.Refusal:
    """The migration Job to create (or adopt): ``job``, narrowed to the plan's selection.

    The selection is the one the pre-flight's answer was recorded with, for
    this very Job; without one (or before that answer) ``job`` is the Job. A
    selection that cannot narrow it is a Refusal, never the un-narrowed Job
    (which would run every pending migration, held ones included).
    """
    pf: Body = p.status.get("preflight") or {}
    chosen = selected(p)
    if (
        not chosen.active
        or pf.get("phase") != "Succeeded"
        or pf.get("jobHash") != render.hash_of(job)
        or (pf.get("selection") or {}) != chosen.as_status()
    ):
        return job
    made = _narrow(p, chosen, job)
    return made if isinstance(made, selection.Refusal) else made[1]


def _narrowed(p: Pass, chosen: selection.Selection, job: Body) -> Decision[Step | bool]:
    """The answer split by the selection: whether nothing is left to run, or the failure.

    Fails closed (the migration fails, nothing runs) when the split cannot be
    made: a version of ``only``/``markExecuted`` that is not pending, a list
    cut in the status, a script without ``/scripts/db-migrate``.
    """
    pf: Body = p.status["preflight"]
    made = _narrow(p, chosen, job)
    if isinstance(made, selection.Refusal):
        pf["phase"] = "Failed"
        fail(p, made.reason, made.message)
        return (yield from finish(p))
    plan, narrowed = made
    pf["migrationJob"] = narrowed["metadata"]["name"]
    return not plan.versions


def _unapproved(p: Pass, pf: Body) -> Decision[Step | None]:
    """With ``spec.approval.required``: the answer just asked must be the plan approved.

    Otherwise the migration waits (the lock is given back by the caller): for
    a first approval, or for a new one naming what changed.
    """
    hold = approval.check(p.spec, pf, p.status.get("pendingMigrations"), p.name)
    if hold is None:
        # An approval counts (and is shown) only where one is required.
        approved = approval.approved(p.spec) if approval.required(p.spec) else None
        pending = preflight.from_status(p.status.get("pendingMigrations"))
        if approved:
            p.status["approval"] = {k: approved[k] for k in ("planHash", "by", "at")}
            p.set(
                model.APPROVED,
                True,
                "PlanApproved",
                f"plan {approved['planHash'][:19]} approved by {approved['by']} at "
                f"{approved['at']}: {preflight.summary(pending)}",
            )
        return None
    p.set(model.GATED, True, hold.reason, hold.message)
    return (yield from write(p, p.timing.queued_poll))


def abandon_preflight(p: Pass, why: str) -> Decision[None]:
    """A pass that stops short of the pre-flight while one runs under the lock.

    A gate closed, or the pod template went away: the answer would be stale
    when the pass comes back, and a running pre-flight makes its holder look
    active, so the lock would stay held while nothing can progress. The lock
    is given back; the next pass asks again.
    """
    if not preflight_running(p.status):
        return
    p.status["preflight"]["phase"] = "Abandoned"
    p.set(model.PREFLIGHT, False, "PreflightAbandoned", why)
    yield from release(p)


def _preflight_job(p: Pass, job: Body, run: int) -> Body:
    cfg: Body = p.spec.get("preflight") or {}
    return preflight.job(
        job,
        preflight.given_args(p.spec),
        run,
        int(cfg.get("activeDeadlineSeconds") or preflight.DEFAULT_DEADLINE),
    )


def _start_preflight(
    p: Pass, job: Body, job_hash: str, tenure: str | None, cfg: Body
) -> Decision[Step]:
    run = int((p.status.get("preflight") or {}).get("run") or 0) + 1
    pjob = _preflight_job(p, job, run)
    name = pjob["metadata"]["name"]
    # Recorded with its uid once created, in one write: only the Job this
    # pass created is trusted. A restart between the create and the write
    # finds the name taken, and asks again under the next run's name (the
    # orphan only reads, and goes with this migration). Its args and image
    # are part of the plan an approval approves.
    p.status["preflight"] = {
        "run": run,
        "jobName": name,
        "phase": "Running",
        "startTime": p.now,
        "jobHash": job_hash,
        "args": preflight.given_args(p.spec),
        "image": str(preflight.migration_container(pjob).get("image") or ""),
        **({"tenure": tenure} if tenure else {}),
        **({"selection": chosen} if (chosen := selected(p).as_status()) else {}),
    }
    p.set(model.GATED, False, "GatesOpen", "all gates are open")
    p.set_unknown(
        model.PREFLIGHT,
        "PreflightRunning",
        f"Job {name} asks Rails which migrations are pending (db:migrate:status); "
        "it reads, never writes",
    )
    return (yield from _create_preflight_job(p, pjob))


def _create_preflight_job(p: Pass, pjob: Body) -> Decision[Step]:
    """Create the pre-flight Job and record it with its uid: only that Job's answer counts.

    Its name is deterministic (the run's number), so anyone who may create
    Jobs in the namespace could create it first, with a pod that prints a
    short table. A Job under the name that this create did not make
    (AlreadyExists: an earlier pass's, whose record was never written, or
    someone else's) is not trusted: the pre-flight runs again under a new name.
    """
    name = pjob["metadata"]["name"]
    try:
        created: Body = yield CreateJob(pjob)
    except Invalid as e:
        why = f"the API server rejects Job {name}"
        if not e.status:
            why = "the pre-flight Job cannot be sent"
        return (yield from _preflight_failed(p, "PreflightInvalid", f"{why}: {e.message}"))
    except AlreadyExists:
        return (
            yield from _preflight_again(p, f"Job {name} exists, but this pass did not create it")
        )
    except ApiError as e:
        # Retried by a later pass, which starts a new run (and takes the lock
        # again): the environment is not held meanwhile.
        p.status.pop("preflight", None)
        p.set_unknown(model.PREFLIGHT, "PreflightCreateFailed", f"creating Job {name}: {e.message}")
        return (yield from write(p, p.timing.create_retry))
    p.status["preflight"]["jobUid"] = str(((created or {}).get("metadata") or {}).get("uid") or "")
    return (yield from write(p, p.timing.gate_poll))


def _preflight_again(p: Pass, why: str) -> Decision[Step]:
    """The pre-flight Job found is not the one recorded: ask again under a new name.

    Its answer cannot be trusted (see :func:`_create_preflight_job`); the
    next pass takes the lock again and starts the next run, whose name
    differs. Nothing runs meanwhile, so the lock is given back.
    """
    p.status["preflight"]["phase"] = "Abandoned"
    p.set_unknown(
        model.PREFLIGHT,
        "PreflightRestarted",
        f"{why}: its answer is not trusted, the pre-flight runs again under a new name",
    )
    return (yield from write(p, p.timing.gate_poll))


def _follow_preflight(p: Pass, pf: Body, job: Body) -> Decision[Step | None]:
    """The running pre-flight: its answer recorded (None), or how long to wait."""
    name = pf["jobName"]
    pjob: Body | None = yield GetJob(name)
    if pjob is None:
        # Lost between the record and the create, or deleted: ask again.
        return (yield from _create_preflight_job(p, _preflight_job(p, job, int(pf["run"]))))
    uid = str(pjob["metadata"].get("uid") or "")
    if not pf.get("jobUid") or uid != pf["jobUid"]:
        # Not the Job this migration created (another under its name, or one
        # whose create was never recorded): its pods' answer is not Rails'.
        return (yield from _preflight_again(p, f"Job {name} (uid {uid}) is not the one recorded"))
    outcome = jobs.outcome(pjob)
    pods: list[Body] = yield JobPods(name, pjob["metadata"].get("uid", ""))
    # The pod's end, not its Job's Complete: the Job controller records that
    # at most once a second after its pods change (SyncJobBatchPeriod,
    # kubernetes pkg/controller/job/job_controller.go), and nothing more can
    # be learnt from it. The log is whole once the pod has Succeeded (every
    # container terminated), and the pod is the Job's own (JobPods: the
    # controller-uid label and owner reference).
    if outcome is None and not _succeeded(pods):
        return (yield from _await_preflight(p, name, pjob, pods))
    if outcome is not None and not outcome.succeeded:
        return (yield from _failed_preflight(p, name, outcome, pods))
    return (yield from _read_answer(p, pf, name, pods))


def _await_preflight(p: Pass, name: str, pjob: Body, pods: list[Body]) -> Decision[Step]:
    """The pre-flight still runs: why its pod cannot start, if it cannot, or when to look."""
    uid = pjob["metadata"].get("uid", "")
    found = jobs.stuck(pods, [] if pods else (yield JobEvents(name, uid)))
    if found is not None and found.permanent:
        yield SuspendJob(name)
        return (
            yield from _preflight_failed(
                p,
                found.reason,
                f"pre-flight Job {name}: {found.message}",
                failures.classify(pod_reason=found.reason),
                pjob["metadata"].get("creationTimestamp"),
            )
        )
    if found is not None:
        p.set(model.STALLED, True, found.reason, f"pre-flight Job {name}: {found.message}")
    return (yield from write(p, jobs.next_look(pjob, p.at, p.timing.running_resync)))


def _failed_preflight(
    p: Pass, name: str, outcome: jobs.Outcome, pods: list[Body]
) -> Decision[Step]:
    """The pre-flight Job failed: its pod's exit code and log tail, classed for retries."""
    detail = outcome.message
    failed = jobs.pod_failure(pods)
    tail = ""
    if failed is not None:
        detail += f" (exit code {failed.exit_code} in pod {failed.pod})"
        tail = yield from failure_log(failed)
        if tail:
            p.status.setdefault("failure", {})["logTail"] = jobs.failure_excerpt(tail)
            p.status["failure"]["pod"] = failed.pod
            if failed.exit_code is not None:
                p.status["failure"]["exitCode"] = failed.exit_code
    cls = failures.classify(
        tail,
        pod_reason=failed.reason if failed is not None else "",
        job_reason=outcome.reason,
        exit_code=failed.exit_code if failed is not None else None,
    )
    return (
        yield from _preflight_failed(
            p, "PreflightFailed", f"pre-flight Job {name} failed: {detail}", cls, outcome.time
        )
    )


def _succeeded(pods: list[Body]) -> list[Body]:
    """The pods that ended with every container's exit code 0."""
    return [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Succeeded"]


def _read_answer(p: Pass, pf: Body, name: str, pods: list[Body]) -> Decision[Step | None]:
    """The succeeded pre-flight's log, read as Rails' status table (None: recorded)."""
    done = _succeeded(pods)
    if not done:
        return (
            yield from _preflight_failed(
                p, "PreflightUnreadable", f"pre-flight Job {name} succeeded, but its pod is gone"
            )
        )
    pod = done[0]["metadata"]["name"]
    try:
        log_text: str = yield PodLog(pod, preflight.LOG_LIMIT)
    except (ApiError, ValueError) as e:
        return (
            yield from _preflight_failed(
                p,
                "PreflightUnreadable",
                f"cannot read the log of pre-flight pod {pod}: {e}; the pending list is "
                "read from it (a node that serves no logs cannot run the pre-flight: set "
                "spec.preflight.enabled to false there)",
            )
        )
    if templates.SKIP_MARKER in log_text:
        sources = templates.skip_sources(preflight.migration_container(done[0]))
        yield Warn(
            "SkipVariableUnset",
            f"{model.SKIP_PDM_ENV} was set in pre-flight pod {pod}; the pod unset it before "
            "the status task, as the migration Job does before the migrations. It comes from "
            f"one of: {', '.join(sources)}; remove it there",
        )
    answer = preflight.parse_status(log_text)
    if answer is None:
        p.status["failure"] = {"pod": pod, "logTail": jobs.tail(log_text)}
        return (
            yield from _preflight_failed(
                p,
                "PreflightUnreadable",
                f"pre-flight pod {pod} printed no complete db:migrate:status table",
            )
        )
    _record_answer(p, pf, answer, versionskip.milestones(log_text))
    return None


def _record_answer(
    p: Pass, pf: Body, answer: preflight.Answer, listed: dict[str, str] | None
) -> None:
    pending = list(answer.pending)
    # A pre-flight started before its args and image were recorded ran the
    # spec's args (immutable) in the migration Job's image.
    args = list(pf.get("args") or preflight.given_args(p.spec))
    image = str(pf.get("image") or p.status.get("image") or "")
    kept = pending[: preflight.STATUS_LIMIT]
    p.status["pendingMigrations"] = [m.as_status() for m in kept]
    chosen = selected(p)
    plan = selection.split(chosen, kept, len(pending)) if chosen.active else None
    if isinstance(plan, selection.Plan):
        p.status["pendingMigrations"] = selection.annotate(chosen, plan, kept)
    # What the run applies: a marking applies nothing, a hold leaves its own out.
    applies = (
        [m.version for m in plan.apply]
        if isinstance(plan, selection.Plan)
        else [m.version for m in pending]
    )
    deployed = history.deployed_version(
        p.migration, str(p.status.get("sourceImage") or p.status.get("image") or "")
    )
    skip = versionskip.find(deployed, applies, listed)
    p.status["preflight"] = {
        **pf,
        "phase": "Succeeded",
        "completionTime": p.now,
        "args": args,
        "image": image,
        "databases": list(answer.databases),
        "pendingCount": len(pending),
        "planHash": preflight.plan_hash(
            str(pf["jobHash"]),
            pending,
            args=args,
            image=image,
            selection=chosen.as_status(),
            version_skip=skip.as_status() if skip else None,
        ),
    }
    p.status["preflight"].pop("versionSkip", None)
    if skip is not None:
        p.status["preflight"]["versionSkip"] = skip.as_status()
    said = preflight.summary(pending) + f" (databases: {', '.join(answer.databases)})"
    if isinstance(plan, selection.Plan):
        said += "; " + selection.summary(chosen, plan)
    p.set(model.PREFLIGHT, True, "MigrationsPending" if pending else "NothingPending", said)


def _preflight_failed(
    p: Pass,
    reason: str,
    message: str,
    failure_class: str = failures.UNKNOWN,
    failed_at: str | None = None,
) -> Decision[Step]:
    """Nothing ran and nothing was written: the migration fails, and may be retried.

    The environment's retry policy covers it as it covers a failed migration
    Job (``after_job.retry_by_policy``), by the same class: a pre-flight that
    failed ran no migration, so its retry is never riskier than the retry of
    a Job that failed half-way, and a lock held or a database away fails the
    pre-flight's ``db:migrate:status`` as it would the migrations. What cannot
    be read (a pod gone, a log cut) is ``Unknown``, which no policy retries.
    """
    if "preflight" in p.status:
        p.status["preflight"]["phase"] = "Failed"
    message += f"; no migration ran. Fix the cause, then `kubectl pdm retry` {p.name} runs it again"
    p.set(model.PREFLIGHT, False, reason, message)
    failure = p.status.setdefault("failure", {})
    failure.update(reason=reason, message=message)
    failure["class"] = failure_class
    message += yield from retry_by_policy(p, failed_at or p.now)
    fail(p, reason, message)
    return (yield from finish(p))


def _nothing_pending(p: Pass) -> Decision[Step]:
    """Nothing to apply: the migration ends without a Job; the lock is given back."""
    message = nothing_pending_message(p)
    p.set(model.GATED, False, "GatesOpen", "all gates are open")
    p.set(model.JOB_CREATED, False, NOTHING_PENDING, message)
    yield from release(p)
    yield from record_run(p)  # records nothing; shows the environment's floor
    reports_now_pending(p)
    return (yield from await_blocking_reports(p, message, reason=NOTHING_PENDING))
