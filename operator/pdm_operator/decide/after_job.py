"""Once the Job exists: follow it to its end, diagnose a pod that cannot start,
record the run in the environment's history, class a failure and make the
retry the environment's policy asks for, wait for blocking reports."""

from __future__ import annotations

from pdm_operator import (
    environments,
    failures,
    history,
    jobs,
    model,
    render,
    retries,
    selection,
    timestamps,
)
from pdm_operator.decide.asks import (
    CountHistoryFailure,
    CreateMigration,
    Decision,
    GetEnvironment,
    GetJob,
    GetMigration,
    JobEvents,
    JobPods,
    LogTail,
    LogWarning,
    MergeHistory,
    ReadHistory,
    ShowFloor,
    SuspendJob,
    Warn,
)
from pdm_operator.decide.progress_log import follow_log
from pdm_operator.decide.state import (
    HISTORY_UNWRITABLE,
    Pass,
    Step,
    fail,
    finish,
    nothing_pending,
    owned,
    release,
    write,
)
from pdm_operator.errors import AlreadyExists, ApiError, Forbidden, Invalid
from pdm_operator.model import Body
from pdm_operator.reporting import outbox


def failure_log(failed: jobs.PodFailure) -> Decision[str]:
    """A failed pod's log, far enough back to name the failing migration above
    Rake's backtrace, of the run that failed (the previous one when the container
    restarted since); the kubelet's termination message when it cannot be read
    or was cut (a cut log must not name the wrong migration)."""
    log: str = (
        yield LogTail(
            failed.pod,
            model.MIGRATION_CONTAINER,
            jobs.FAILURE_LOG_LINES,
            previous=failed.previous,
        )
    ) or ""
    return log or failed.message


def follow(p: Pass) -> Decision[Step]:
    if p.status.get("jobOutcome") == "Succeeded":
        # The Job is done (and may be gone by now); only blocking reports remain.
        yield from record_run(p)
        return (yield from await_blocking_reports(p))
    name = p.status["jobName"]
    job: Body | None = yield GetJob(name)
    if job is None or not owned(job, p.meta["uid"]):
        fail(
            p,
            "JobDeleted",
            f"Job {name!r} was deleted before it finished. Post-deployment migrations are "
            "never re-run automatically: find out what happened, then create a new "
            "PostDeployMigration to run them again",
        )
        # It may have applied some or all of them before it went (a TTL, a
        # delete, an operator down for longer): recorded as unknown progress,
        # so a rollback below its version is never called safe.
        p.status.setdefault("jobCompletionTime", p.now)
        yield from release(p)
        yield from record_run(p)
        return (yield from finish(p))
    outcome = jobs.outcome(job)
    if outcome is None:
        return (yield from _diagnose(p, job, (yield from follow_log(p, job))))
    yield from follow_log(p, job, final=True)  # the last announcements, once
    p.status["jobCompletionTime"] = outcome.time or p.now
    p.status["jobOutcome"] = "Succeeded" if outcome.succeeded else "Failed"
    reports_now_pending(p)
    if outcome.succeeded:
        p.status.pop("failure", None)
        # The migration itself is over: the next one of the environment may
        # start, whatever GitLab does with the reports.
        yield from release(p)
        yield from record_run(p)
        return (yield from await_blocking_reports(p, outcome.message))
    failure: Body = {"reason": outcome.reason, "message": outcome.message}
    pod = jobs.pod_failure((yield JobPods(name, job["metadata"].get("uid", ""))))
    tail = ""
    if pod is not None:
        failure["pod"] = pod.pod
        if pod.exit_code is not None:
            failure["exitCode"] = pod.exit_code
        tail = yield from failure_log(pod)
        if tail:
            failure["logTail"] = jobs.failure_excerpt(tail)
            failed = jobs.failed_migration(tail)
            if failed is not None:
                failure["migration"] = failed.as_status()
    failure["class"] = failures.classify(
        tail,
        pod_reason=pod.reason if pod is not None else "",
        job_reason=outcome.reason,
        exit_code=pod.exit_code if pod is not None else None,
    )
    p.status["failure"] = failure
    # Over, whatever the history write does: the next may start.
    yield from release(p)
    yield from record_run(p)
    message = outcome.message
    if "exitCode" in failure:
        message += f" (exit code {failure['exitCode']} in pod {failure['pod']})"
    if "migration" in failure:
        failed_one = failure["migration"]
        message += (
            ": "
            + jobs.FailedMigration(
                failed_one["version"],
                failed_one["name"],
                failed_one.get("error", ""),
                failed_one.get("database", ""),
            ).describe()
        )
    message += yield from retry_by_policy(p, p.status["jobCompletionTime"])
    p.set(model.SUCCEEDED, False, outcome.reason, message)
    p.set(model.FAILED, True, outcome.reason, message)
    p.status["completionTime"] = p.status["jobCompletionTime"]
    return (yield from finish(p))


def _marked(p: Pass) -> Body | None:
    """What a mark-executed run recorded without running it, who asked, and why."""
    mark: Body = (p.spec.get("migrations") or {}).get("markExecuted") or {}
    if not mark or p.status.get("jobOutcome") != "Succeeded":
        return None
    out: Body = {"versions": sorted(str(v) for v in mark.get("versions") or [])}
    for key in ("reason", "by", "replacement"):
        if mark.get(key):
            out[key] = str(mark[key])
    return out


def retry_by_policy(p: Pass, failed_at: str) -> Decision[str]:
    """The failure's class, and the retry the environment's ``spec.retry`` makes of
    it (``retries``): created before the failure is stored, so that a crash in
    between makes the next pass meet it (409) rather than never make it. What
    the Failed condition's message (and so its Warning Event) adds: the class,
    and the retry or why none.

    ``failed_at`` (the Job's own end time) makes the retry's ``notBefore``, and
    so its spec, the same on every pass: a repeat finds its own retry, not one
    that differs. A create the API server refuses for good (the spec no longer
    admitted, RBAC) is said and not retried; anything else is raised, and the
    pass runs again.
    """
    failure: Body = p.status.setdefault("failure", {})
    cls = str(failure.setdefault("class", failures.UNKNOWN))
    words = f"; failure class {cls}"
    body: Body | None = yield GetEnvironment()
    policy = environments.Policy.of(body).retry if body is not None else None
    at = timestamps.parse_or_none(failed_at) or p.at
    plan = retries.planned(p.migration, p.environment, policy, cls, at)
    if plan is None:
        failure.pop("retry", None)
        return words
    if isinstance(plan, retries.NoRetry):
        failure["retry"] = {"message": plan.message}
        return f"{words}; {plan.message}"
    made = plan.migration
    said = (
        f"retry {plan.attempt} of {plan.attempts} by spec.retry of PostDeployEnvironment "
        f"{p.environment!r}: pdm/{plan.name}, not before {plan.not_before}"
    )
    try:
        yield CreateMigration(made)
    except AlreadyExists:
        found: Body | None = yield GetMigration(plan.name)
        stored: Body = yield CreateMigration(retries.for_comparison(made), dry_run=True)
        if not retries.is_its_retry(found, made, stored):
            said = (
                f"the retry's name pdm/{plan.name} is taken by a PostDeployMigration that is "
                "not this retry (its annotations, labels or spec differ): no retry is made"
            )
            yield Warn("RetryNameTaken", said)
            failure["retry"] = {"attempt": plan.attempt, "message": said}
            return f"{words}; {said}"
    except (Invalid, Forbidden) as e:
        said = f"the API server refuses the retry pdm/{plan.name}: {e.message}; no retry is made"
        yield Warn("RetryRefused", said)
        failure["retry"] = {"attempt": plan.attempt, "message": said}
        return f"{words}; {said}"
    failure["retry"] = {
        "name": plan.name,
        "attempt": plan.attempt,
        "notBefore": plan.not_before,
        "message": said,
    }
    return f"{words}; {said}"


def record_run(p: Pass) -> Decision[None]:
    """The run in the environment's history, and the rollback floor in the status.

    Written before the outcome is stored (a key per run, so a repeat after a
    crash writes the same record again), once: ``status.rollback`` says it is
    done. A run that applied nothing is not recorded; one whose progress is
    unknown is, as unsafe. A write the API server refuses for good (an
    immutable or oversized ConfigMap, RBAC) ends the step all the same
    (:func:`_history_unwritable`): the migration reaches its outcome, and the
    floor is unknown. A transient failure is raised, so the pass retries.
    """
    if "rollback" in p.status:
        return
    pf: Body = p.status.get("preflight") or {}
    job_hash = str(pf.get("jobHash") or "")
    for_this_job = bool(job_hash) and p.status.get("jobName") in (
        render.job_name(p.name, job_hash),
        pf.get("migrationJob"),  # the Job a selection narrowed (spec.migrations, holds)
    )
    if nothing_pending(p.status):
        migrations: list[str] | None = []
    else:  # the pre-flight's list says what ran only if it was made for this Job
        migrations = history.applied(p.status, job_hash) if for_this_job else None
    version = history.deployed_version(
        p.migration, str(p.status.get("sourceImage") or p.status.get("image") or "")
    )
    namespace, name = p.setup.lock_namespace, history.configmap_name(p.environment)
    where = f"{namespace}/{name}"
    current: Body | None
    if migrations == []:
        try:
            current = yield ReadHistory(name)
        except ApiError as e:  # only shown (the floor): never worth a new pre-flight
            yield LogWarning(f"history {name} unread: {e}")
            current = None
    else:
        run = history.Run(
            namespace=p.namespace,
            name=p.name,
            uid=str(p.meta["uid"]),
            version=version,
            image=str(p.status.get("image") or ""),
            completed=str(p.status.get("jobCompletionTime") or p.now),
            outcome=str(p.status.get("jobOutcome") or "Failed"),
            migrations=migrations,
            held=selection.held(p.status),
            marked=_marked(p),
        )
        if history.Version.parse(version) is None:
            yield Warn(
                "UnknownVersion",
                f"the run is recorded at {version!r}, which is not a GitLab version: "
                "rollback-check answers unknown for every target until the record is "
                "corrected (set spec.gitlabVersion on the next migrations)",
            )
        base = history.configmap(p.environment, namespace)
        try:
            current = yield MergeHistory(base, {run.key: run.encode()})
        except (Invalid, Forbidden) as e:
            yield from _history_unwritable(p, run, where, e)
            return
        old = history.to_prune(current)
        if old:
            try:
                current = yield MergeHistory(base, dict.fromkeys(old))
            except (Invalid, Forbidden) as e:  # recorded; pruning waits for the next run
                yield LogWarning(f"history {where} not pruned: {e}")
    top = history.floor(history.runs(current))
    p.status["rollback"] = {
        "recorded": migrations != [],
        "version": version,
        "history": where,
        **({"floor": top.version} if top else {}),
    }
    yield ShowFloor(top.version if top else None)


def _history_unwritable(p: Pass, run: history.Run, where: str, error: ApiError) -> Decision[None]:
    """The run cannot be recorded: say so (status, a Warning, the metric), floor unknown.

    The record stays in ``status.rollback.record`` so that it can be added by
    hand; until then rollback-check cannot know of this run.
    """
    message = (
        f"the run is not recorded in the history {where}: the API server refused the write "
        f"({error.reason or type(error).__name__}: {error}). Until it is recorded, "
        f"rollback-check does not know that migrations ran at GitLab {run.version}: make the "
        "ConfigMap writable (an immutable one must be deleted and created again with its "
        f"data), then add key {run.key} with the value of status.rollback.record"
    )
    p.status["rollback"] = {
        "recorded": False,
        "version": run.version,
        "history": where,
        "floor": history.UNKNOWN,
        "reason": HISTORY_UNWRITABLE,
        "message": message,
        "record": run.encode(),
    }
    yield Warn(HISTORY_UNWRITABLE, message)
    yield CountHistoryFailure()
    yield ShowFloor(history.UNKNOWN)


def _diagnose(p: Pass, job: Body, next_read: float | None = None) -> Decision[Step]:
    """A running Job whose pod has not started: say why, within a resync.

    Transient causes (unschedulable, a failing image pull, a missing Secret
    key, a quota) show as ``Stalled`` with the cluster's message; the Job
    keeps the environment, as its pod may start any moment. Permanent ones
    (an invalid image name, a pod that admission refuses) fail the migration
    now, not at ``activeDeadlineSeconds``: the Job is suspended so no pod can
    start after the failure, and the environment is free. ``next_read``: when
    its log is due to be read for progress again (None: not followed).
    """
    resync = (
        p.timing.running_resync
        if next_read is None
        else min(p.timing.running_resync, max(1.0, next_read))
    )
    if (job.get("status") or {}).get("ready"):
        return (yield from write(p, resync))
    name, uid = job["metadata"]["name"], job["metadata"].get("uid", "")
    pods: list[Body] = yield JobPods(name, uid)
    found = jobs.stuck(pods, [] if pods else (yield JobEvents(name, uid)))
    # Pod changes do not reach the Job until the pod is ready, so a young Job
    # is looked at again sooner: its container's failure to start (an image
    # pull, a kubelet refusal) shows within seconds, not a resync.
    again = jobs.next_look(job, p.at, resync)
    if found is None:
        return (yield from write(p, again))
    if not found.permanent:
        p.set(model.STALLED, True, found.reason, found.message)
        return (yield from write(p, again))
    yield SuspendJob(name)
    message = f"{found.message}; Job {name} is suspended so that its pod never starts"
    p.status["failure"] = {"reason": found.reason, "message": message}
    p.status["failure"]["class"] = failures.classify(pod_reason=found.reason)
    # Its pod never started: the Job's creation is the failure's time, the same
    # on every pass (a repeat after a crash finds the same retry).
    message += yield from retry_by_policy(p, job["metadata"].get("creationTimestamp") or p.now)
    fail(p, found.reason, message)
    return (yield from finish(p))


def reports_now_pending(p: Pass) -> None:
    """The Job's end makes new reports due: Reported must not stay True from before.

    The reporter owns the records; this only derives the condition the
    reporter would, from the records and the new intents, in the same write
    that records the outcome.
    """
    wanted = outbox.intents({**p.migration, "status": p.status})
    cond = outbox.reported_condition(outbox.merge(p.status.get("reports"), wanted, p.at))
    if cond is not None:
        p.apply_condition(cond)


def await_blocking_reports(
    p: Pass, job_message: str = "the migration Job completed", reason: str = "JobComplete"
) -> Decision[Step]:
    """Succeeded once every blocking report of the outcome is delivered."""
    blocking = outbox.blocking_state({**p.migration, "status": p.status}, p.at)
    if blocking.failed:
        message = f"the migration Job succeeded, but a blocking report failed: {blocking.message}"
        p.set(model.SUCCEEDED, False, "BlockingReportFailed", message)
        p.set(model.FAILED, True, "BlockingReportFailed", message)
        p.status["failure"] = {"reason": "BlockingReportFailed", "message": message}
        p.status["completionTime"] = p.now
        return (yield from finish(p))
    if not blocking.done:
        p.set_unknown(model.SUCCEEDED, "BlockingReportsPending", blocking.message)
        return (yield from write(p, p.timing.gate_poll))
    p.set(model.SUCCEEDED, True, reason, job_message)
    p.set(model.FAILED, False, reason, job_message)
    p.status["completionTime"] = p.status.get("jobCompletionTime") or p.now
    return (yield from finish(p))
