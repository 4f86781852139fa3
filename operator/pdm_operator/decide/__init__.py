"""What one reconcile pass decides: the new status, and what to read and write for it.

A package whose modules are the stages of a migration's life, each asking
(never calling the API) and answered by ``reconcile.py`` or the unit tests:

================= ===========================================================
``asks``          the vocabulary: every ask, ``AnyAsk``, ``Decision``, ``drive``
``state``         one pass's state (``Pass``) and how a pass ends
``before_job``    policy, image, pod template, fail-fast checks, the gates
``when_to_run``   the environment's say on when: locks, windows, deploys
``preflight_run`` the pre-flight Job, its answer, its approval
``create``        the lock and the create (or a dry run)
``after_job``     following the Job, history, a failure's class and retry,
                  blocking reports
``progress_log``  while the Job runs: Rails' announcements in its log, read at a bounded rate
``ladder``        the order of it all: ``reconcile``, and the invariants
================= ===========================================================

Imports go down that table only (``lint-imports``: ladder > create >
preflight_run > after_job | before_job > when_to_run | progress_log > state >
asks). What ``reconcile`` and the tests use is re-exported here.
"""

from pdm_operator.decide.asks import (
    AcquireLock,
    Answerer,
    AnyAsk,
    Ask,
    CountHistoryFailure,
    CreateDisruptionBudget,
    CreateJob,
    CreateMigration,
    Decision,
    DefaultedJob,
    DeploymentPods,
    EnvironmentJobs,
    FindTemplate,
    GetDeployment,
    GetEnvironment,
    GetJob,
    GetMigration,
    JobEvents,
    JobPods,
    LogSince,
    LogTail,
    LogWarning,
    MergeHistory,
    ObserveSteps,
    PlanDryRun,
    PodLog,
    ProgressReadAt,
    PutConfigMap,
    ReadGitLabDeployments,
    ReadGitLabIssues,
    ReadHistory,
    ReleaseLock,
    ResolveImage,
    ShowFloor,
    SuspendJob,
    ValidateJob,
    Warn,
    WriteStatus,
    drive,
)
from pdm_operator.decide.ladder import CREATE_GRACE, holder_active, reconcile, record_error
from pdm_operator.decide.state import (
    HISTORY_UNWRITABLE,
    NOTHING_PENDING,
    Pass,
    Setup,
    Step,
    Timing,
    preflight_running,
)

__all__ = [
    "CREATE_GRACE",
    "HISTORY_UNWRITABLE",
    "NOTHING_PENDING",
    "AcquireLock",
    "Answerer",
    "AnyAsk",
    "Ask",
    "CountHistoryFailure",
    "CreateDisruptionBudget",
    "CreateJob",
    "CreateMigration",
    "Decision",
    "DefaultedJob",
    "DeploymentPods",
    "EnvironmentJobs",
    "FindTemplate",
    "GetDeployment",
    "GetEnvironment",
    "GetJob",
    "GetMigration",
    "JobEvents",
    "JobPods",
    "LogSince",
    "LogTail",
    "LogWarning",
    "MergeHistory",
    "ObserveSteps",
    "Pass",
    "PlanDryRun",
    "PodLog",
    "ProgressReadAt",
    "PutConfigMap",
    "ReadGitLabDeployments",
    "ReadGitLabIssues",
    "ReadHistory",
    "ReleaseLock",
    "ResolveImage",
    "Setup",
    "ShowFloor",
    "Step",
    "SuspendJob",
    "Timing",
    "ValidateJob",
    "Warn",
    "WriteStatus",
    "drive",
    "holder_active",
    "preflight_running",
    "reconcile",
    "record_error",
]
