"""The status of both resources, declared once in code: what the operator writes.

The API server prunes what a CRD's structural schema does not declare, and
does it silently: a field the code writes but ``crds/`` lacks is dropped on
every write, and the pass that reads it back sees it missing. So each field
written under ``status`` is declared twice, here and in the CRD (where its
description is the reference users read), and ``tests/unit/test_status_schema.py``
fails, naming the path, until the two agree in both directions: the same
fields, the same scalar types, the same enums, and every field the CRD
requires required here.

A new status field (as kubebuilder's ``INSERT ADDITIONAL STATUS FIELD``):
a key in the TypedDict below with a comment, a property with a description in
the CRD, then ``make crd-reference``; the test ties them.

Pure types: this module imports nothing from the operator, and nothing checks
at run time that a dict matches them (mypy does, where a signature uses them).
Times are RFC 3339 strings as the API writes them (``timestamps``).
"""

from __future__ import annotations

from typing import Literal, TypedDict

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(TypedDict):
    """A condition as the API conventions want it; ``conditions.apply`` writes every key."""

    #: The condition's type (``model.SUCCEEDED``, ``envstatus.READY``, ...).
    type: str
    #: True, False or Unknown.
    status: ConditionStatus
    #: A CamelCase word for why the condition last changed.
    reason: str
    #: What a person needs to know about it.
    message: str
    #: The metadata.generation the condition was set from.
    observedGeneration: int
    #: When its status last changed (kept when only the reason or message does).
    lastTransitionTime: str


# --- PostDeployMigration ---------------------------------------------------


class PodTemplateSource(TypedDict, total=False):
    """``status.podTemplate``: the object spec.podTemplateFrom was copied from."""

    #: Job or Deployment.
    kind: str
    #: Name of the source object.
    name: str
    #: UID of the source object.
    uid: str
    #: The source's migration container image (the TemplateStale check).
    image: str


class Diff(TypedDict, total=False):
    """``status.diff`` (DryRun): how the Job would differ from the last Run-mode one."""

    #: Whether anything meaningful changed (true when there is no previous run).
    changed: bool
    #: The changed fields, or why there is nothing to compare with.
    summary: str
    #: The Job compared against (namespace/name).
    base: str
    #: The unified diff (YAML), at most 8 KiB.
    text: str
    #: True when text was cut; the full diff is in configMap.
    truncated: bool
    #: The ConfigMap (key "diff") holding the full diff when it is long.
    configMap: str


class Preflight(TypedDict, total=False):
    """``status.preflight``: the last pre-flight Job and what it found."""

    #: How many pre-flights this migration has started (the Job's name carries it).
    run: int
    #: The pre-flight Job.
    jobName: str
    #: The uid of the Job this migration created: only that Job's answer is read.
    jobUid: str
    #: Running, Succeeded, Failed or Abandoned.
    phase: str
    #: When it was started.
    startTime: str
    #: When its answer was read.
    completionTime: str
    #: Inputs hash of the migration Job it was run for.
    jobHash: str
    #: The pre-flight container's args as given (part of the plan).
    args: list[str]
    #: The pre-flight container's image, the migration Job's (part of the plan).
    image: str
    #: The environment lock's tenure it ran under (Run mode).
    tenure: str
    #: The databases Rails listed.
    databases: list[str]
    #: How many migrations are pending (all of them; pendingMigrations keeps 500).
    pendingCount: int
    #: sha256 of the Job's inputs, the pending list, args, image and selection: what is approved.
    planHash: str
    #: The selection it was run with (spec.migrations and the environment's holds).
    selection: Selection
    #: The migration Job a selection makes.
    migrationJob: str
    #: The version-skip check's finding (``versionskip.Finding.as_status``).
    versionSkip: VersionSkip


class PendingMigration(TypedDict, total=False):
    """An item of ``status.pendingMigrations`` (``preflight.Pending.as_status``)."""

    #: The database Rails listed it under.
    database: str
    #: The migration's version (timestamp).
    version: str
    #: Its name as Rails prints it (the file name, humanized).
    name: str
    #: With a selection: Apply, Hold or MarkExecuted (``selection.annotate``).
    action: str
    #: Why a held migration is held.
    heldBecause: str


class SkippedMigration(TypedDict, total=False):
    """An item of ``status.preflight.versionSkip.migrations``."""

    #: The migration's version.
    version: str
    #: The milestone it names (- for none).
    milestone: str


class VersionSkip(TypedDict, total=False):
    """``status.preflight.versionSkip``: what the version-skip check found."""

    #: VersionSkipped or VersionSkipUnknown.
    reason: str
    #: What was found, naming the versions.
    message: str
    #: The pending post-deployment migrations it is about.
    migrations: list[SkippedMigration]


class Selection(TypedDict, total=False):
    """``status.preflight.selection``: what the pre-flight ran with (``selection.Selection``)."""

    #: Versions held (the spec's and the environment's).
    hold: list[str]
    #: The only versions to run.
    only: list[str]
    #: The versions to mark as executed.
    markExecuted: list[str]


class Approval(TypedDict, total=False):
    """``status.approval``: the approval the migration Job ran with."""

    #: The plan approved and run.
    planHash: str
    #: Who approved it.
    by: str
    #: When.
    at: str


class Rollback(TypedDict, total=False):
    """``status.rollback``: rollback safety after this run, from the environment's history."""

    #: Whether this run is in the history.
    recorded: bool
    #: The GitLab version recorded for this run.
    version: str
    #: The lowest version the environment can be rolled back to, or "unknown".
    floor: str
    #: The history ConfigMap (namespace/name).
    history: str
    #: Why the run is not recorded (HistoryUnwritable).
    reason: str
    #: What refused the write, and how to add the record by hand.
    message: str
    #: The run's record (JSON) that could not be written.
    record: str


class Report(TypedDict, total=False):
    """An item of ``status.reports``: a call to GitLab or Sentry (``reporting.outbox``)."""

    #: The sink type.
    sink: str
    #: Project, label or org/release the call is for.
    target: str
    #: What should be there (running, success, failed, created, labelled).
    desired: str
    #: Pending, Skipped, Delivered, Failed, GaveUp, Waiting or NoMergeRequests.
    state: str
    #: When the first record of this sink and target was written.
    plannedTime: str
    #: A deployment with the same environment, ref and sha that someone else made.
    conflict: str
    #: What a waiting record waits for.
    note: str
    #: Whether the migration waits for it.
    blocking: bool
    #: Attempts made for the current desired state.
    attempts: int
    #: The last error, if any (never contains tokens).
    lastError: str
    #: When it was last attempted.
    lastAttemptTime: str
    #: When it is tried next.
    nextAttemptTime: str
    #: When the current desired state was first attempted (for the give-up age).
    firstAttemptTime: str
    #: When it was delivered.
    deliveredTime: str
    #: The id GitLab or Sentry gave it (deployment id, issue iid, deploy id).
    remoteId: str


class FailedMigration(TypedDict, total=False):
    """``status.failure.migration``: where db:migrate stopped (``jobs.FailedMigration``)."""

    #: The migration's version (timestamp).
    version: str
    #: The migration's class name.
    name: str
    #: The database it failed on (main, ci, ...), when the log names it.
    database: str
    #: The error's first line.
    error: str


#: ``status.failure.class`` (``failures.CLASSES``).
FailureClass = Literal["LockContention", "Timeout", "DataError", "Infrastructure", "Unknown"]


class FailureRetry(TypedDict, total=False):
    """``status.failure.retry``: what the environment's retry policy made of the failure."""

    #: The retry PostDeployMigration, when one was made.
    name: str
    #: Which retry of the first migration it is.
    attempt: int
    #: The retry's spec.notBefore.
    notBefore: str
    #: What was done, or why no retry was made.
    message: str


#: ``class`` is a Python keyword: the one key declared the functional way.
_FailureClassKey = TypedDict("_FailureClassKey", {"class": FailureClass}, total=False)


class Failure(_FailureClassKey, total=False):
    """``status.failure``: why the migration failed, when it did."""

    #: What the environment's retry policy made of it.
    retry: FailureRetry

    #: Machine-readable reason (BackoffLimitExceeded, DeadlineExceeded, JobDeleted, ...).
    reason: str
    #: Human-readable explanation.
    message: str
    #: Exit code of the failed migration container, when known.
    exitCode: int
    #: Name of the failed pod, when known.
    pod: str
    #: From the failed container's log, at most 2 KiB.
    logTail: str
    #: The migration db:migrate stopped at, read from the log.
    migration: FailedMigration


class ProgressCurrent(TypedDict, total=False):
    """``status.progress.current``: the migration running now (``progress.advance``)."""

    #: The database Rails runs it on (GitLab's main, ci, ...), when the log names it.
    database: str
    #: The migration's version (timestamp).
    version: str
    #: The migration's class name.
    name: str
    #: When Rails announced it as migrating.
    since: str


class ProgressStep(TypedDict, total=False):
    """An item of ``status.progress.completed``, as Rails announced it."""

    #: The database Rails ran it on, when the log names it.
    database: str
    #: The migration's version (timestamp).
    version: str
    #: The migration's class name.
    name: str
    #: Its run time in seconds as Rails printed it ("0.0087").
    seconds: str


class ProgressRead(TypedDict, total=False):
    """``status.progress.read``: where the reading of the Job's log stands."""

    #: The pod whose log is read.
    pod: str
    #: Its migration container's restartCount when read (a restart starts a new log).
    restarts: int
    #: The kubelet timestamp of the last line counted (RFC3339 with nanoseconds).
    time: str
    #: How many lines with exactly that timestamp were counted.
    seen: int


class Progress(TypedDict, total=False):
    """``status.progress``: the run so far, from Rails' announcements in the Job's log."""

    #: done/total for kubectl get ("2/3"; "?" for what is not known).
    summary: str
    #: Steps Rails announced as migrated.
    done: int
    #: Steps of the plan (the pre-flight's pending pairs); absent when unknown.
    total: int
    #: The migration running now.
    current: ProgressCurrent
    #: The last 20 steps done, oldest first.
    completed: list[ProgressStep]
    #: Why progress is not known now (the log could not be read).
    unknown: str
    #: Where the reading of the log stands.
    read: ProgressRead


class PostDeployMigrationStatus(TypedDict, total=False):
    """A PostDeployMigration's ``status``: written by the pass (``decide``) and the reporter."""

    #: The metadata.generation this status was computed from.
    observedGeneration: int
    #: One word for the conditions (``model.STATE_*``).
    state: str
    #: Reason of the condition that decided the state.
    reason: str
    #: The resolved image the Job runs (by digest when the running pods report one).
    image: str
    #: The image as written in the source when it was resolved (the rolledOut gate).
    sourceImage: str
    #: The object the pod template was copied from, as last read.
    podTemplate: PodTemplateSource
    #: While held outside the environment's windows: when the next one opens.
    windowOpens: str
    #: Name of the migration Job (for a DryRun, the name it would have).
    jobName: str
    #: When the Job was created.
    startTime: str
    #: When the migration ended (Succeeded or Failed).
    completionTime: str
    #: DryRun only: the Job's difference from the last Run-mode one.
    diff: Diff
    #: The last pre-flight: its Job and what it found.
    preflight: Preflight
    #: The migrations the pre-flight found down, in Rails' order (at most 500).
    pendingMigrations: list[PendingMigration]
    #: The approval the migration Job ran with.
    approval: Approval
    #: Rollback safety after this run.
    rollback: Rollback
    #: How the Job itself ended (Succeeded or Failed).
    jobOutcome: str
    #: When the Job ended.
    jobCompletionTime: str
    #: While the Job runs and after: what Rails announced, done of total.
    progress: Progress
    #: The reporting outbox: every call to GitLab or Sentry intended, and its state.
    reports: list[Report]
    #: Why the migration failed, when it did.
    failure: Failure
    #: The conditions (``model``'s condition types), Reconciling first.
    conditions: list[Condition]


# --- PostDeployEnvironment -------------------------------------------------


class Run(TypedDict, total=False):
    """An item of ``status.runs``: a recorded run as ``envstatus.compute`` shows it."""

    #: namespace/name of the PostDeployMigration.
    migration: str
    #: The GitLab version deployed when it ran.
    version: str
    #: Succeeded or Failed.
    outcome: str
    #: When it ended.
    completed: str
    #: How many migrations it applied (absent when unknown).
    migrations: int


class Scheduled(TypedDict):
    """The last run an environment's schedule started."""

    #: The window opening it was started for (RFC 3339).
    opening: str
    #: namespace/name of the PostDeployMigration it created.
    migration: str


class PostDeployEnvironmentStatus(TypedDict, total=False):
    """A PostDeployEnvironment's ``status``: written by ``envstatus`` as a merge patch.

    None (holder, floor, lastRun) only ever appears in that patch, where it
    removes the field: the stored status never holds a null.
    """

    #: The generation of the spec this status was written for.
    observedGeneration: int
    #: Where the record of runs lives (namespace/name of a ConfigMap).
    history: str
    #: The PostDeployMigration (namespace/name) that holds the lock now.
    holder: str | None
    #: How many PostDeployMigrations wait for the lock.
    queued: int
    #: The first PostDeployMigrations in line (namespace/name), oldest first.
    queue: list[str]
    #: The rollback floor: a version, or "unknown".
    floor: str | None
    #: The last recorded run, as namespace/name (outcome).
    lastRun: str | None
    #: The last recorded runs, newest first.
    runs: list[Run]
    #: Whether a window is open now (None: no windows declared).
    windowOpen: bool | None
    #: When the next window opens, while none is open.
    nextOpening: str | None
    #: The last run the schedule started.
    scheduled: Scheduled
    #: Ready, and why not; Scheduled, with a schedule.
    conditions: list[Condition]
