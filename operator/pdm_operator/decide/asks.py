"""What a decision asks: the vocabulary between ``decide`` and ``reconcile``.

Each ask is inert data: something to read, or an effect. ``reconcile.py``
answers each (``_Answers``), the unit tests answer from a table
(tests/unit/test_decide.py), and :func:`drive` runs a decision against
either. An answer that is an error is raised at the ``yield``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from pdm_operator import (
    deployments,
    model,
    templates,
    when,
)
from pdm_operator.model import Body

T = TypeVar("T")


# Everything is in the migration's namespace unless it says otherwise; the
# answer's type is in each docstring. An ApiError is raised at the yield.


class Ask:
    """Something a decision needs from the cluster: a fact to read, or an effect."""


@dataclass(frozen=True)
class ResolveImage(Ask):
    """``spec.image`` → ``images.Resolved | images.Unresolved``."""


@dataclass(frozen=True)
class FindTemplate(Ask):
    """``spec.podTemplateFrom`` → ``templates.Template | templates.Missing | None``."""


@dataclass(frozen=True)
class GetDeployment(Ask):
    """→ the Deployment, or None."""

    name: str


@dataclass(frozen=True)
class DeploymentPods(Ask):
    """The pods of a Deployment (by its selector), for digest pinning → ``list[Body]``."""

    name: str


@dataclass(frozen=True)
class GetMigration(Ask):
    """Another PostDeployMigration → the object, or None."""

    name: str


@dataclass(frozen=True)
class GetEnvironment(Ask):
    """The migration's PostDeployEnvironment (cluster-scoped) → ``Body | None``."""


@dataclass(frozen=True)
class ReadGitLabDeployments(Ask):
    """What GitLab's Deployments API says of each GitLab environment of ``watch``,
    read with the token of ``token`` (a Secret and key in the migration's
    namespace) → ``dict[str, deployments.Listing | deployments.Unreachable]``;
    never raises (an error is an ``Unreachable``)."""

    watch: deployments.Watch
    token: Body = field(compare=False)


@dataclass(frozen=True)
class ReadGitLabIssues(Ask):
    """The open issues of ``source``'s project with all its labels, read with the
    token of ``token`` (a Secret and key in the migration's namespace) →
    ``when.Issues | deployments.Unreachable``; never raises."""

    source: when.LockSource
    token: Body = field(compare=False)


@dataclass(frozen=True)
class GetJob(Ask):
    """→ the Job, or None."""

    name: str


@dataclass(frozen=True)
class EnvironmentJobs(Ask):
    """The Jobs the operator made for the migration's environment → ``list[Body]``."""


@dataclass(frozen=True)
class JobPods(Ask):
    """The pods of Job ``job`` whose controller is the Job of ``uid`` → ``list[Body]``.

    Never by name alone: anyone who may create Jobs in the namespace can make
    pods that carry a Job's name label (a manual selector), and a pass reads
    answers (the pre-flight's table, a failure's log) from these pods.
    """

    job: str
    uid: str


@dataclass(frozen=True)
class JobEvents(Ask):
    """The Events of a Job (why its pods are not created) → ``list[Body]``."""

    job: str
    uid: str


@dataclass(frozen=True)
class LogTail(Ask):
    """The last ``lines`` of a pod's container log (the migration container
    unless named) → ``str`` ("" if unreadable)."""

    pod: str
    container: str = model.MIGRATION_CONTAINER
    lines: int = 20
    #: The container's previous run (``kubectl logs --previous``).
    previous: bool = False


@dataclass(frozen=True)
class PodLog(Ask):
    """A pod's whole migration container log → ``str``; ``ValueError`` past ``limit`` bytes."""

    pod: str
    limit: int


@dataclass(frozen=True)
class ProgressReadAt(Ask):
    """When this operator last read the migration's log for its progress
    (``LogSince``) → ``datetime | None`` (never, since it started)."""


@dataclass(frozen=True)
class LogSince(Ask):
    """The migration container's log of ``pod`` with the kubelet's timestamps, from
    ``since`` (RFC 3339, to the second; None: from the start), at most ``limit``
    bytes → ``str``, or None when it cannot be read. Remembered as the
    migration's last progress read (``ProgressReadAt``), read or not."""

    pod: str
    since: str | None
    limit: int


@dataclass(frozen=True)
class ObserveSteps(Ask):
    """Rails' durations of steps just completed, (database, seconds), the last of
    which is step ``done`` of the run, for the metric; each step is observed once
    per operator process → None."""

    done: int
    steps: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ReadHistory(Ask):
    """The environment's history ConfigMap (in the lock namespace) → the object, or None."""

    name: str


@dataclass(frozen=True)
class ValidateJob(Ask):
    """A server-side dry-run create of ``job`` → None when accepted just now, or
    the name of a Job of identical spec the API server accepted a moment ago
    (in its dry run or its real create)."""

    job: Body = field(compare=False)


@dataclass(frozen=True)
class DefaultedJob(Ask):
    """``job`` as the API server would store it (a server-side dry-run create
    under another name, so the existing one does not answer 409) → ``Body``."""

    job: Body = field(compare=False)


@dataclass(frozen=True)
class PlanDryRun(Ask):
    """Render, check and diff for DryRun mode → ``dryrun.Plan``."""

    image: str
    template: templates.Template | None = field(compare=False)


@dataclass(frozen=True)
class AcquireLock(Ask):
    """Take the environment's Lease → its tenure (``str``), or None: another holds it."""


@dataclass(frozen=True)
class ReleaseLock(Ask):
    """Give the environment's Lease back if this migration holds it → whether it did."""


@dataclass(frozen=True)
class WriteStatus(Ask):
    """Merge-patch the status, guarded by the resourceVersion the pass read → the
    migration as written, or None if it is gone. ``status`` is the whole new one,
    ``before`` the conditions stored (for the transitions' log lines and Events).
    """

    patch: Body = field(compare=False)
    status: Body = field(compare=False)
    before: list[Body] = field(compare=False)


@dataclass(frozen=True)
class CreateJob(Ask):
    """→ the Job as created."""

    job: Body = field(compare=False)


@dataclass(frozen=True)
class CreateMigration(Ask):
    """Create a PostDeployMigration in the migration's namespace (a retry the
    environment's policy makes; ``dry_run``: what the API server would store)
    → the object as created."""

    migration: Body = field(compare=False)
    dry_run: bool = False


@dataclass(frozen=True)
class SuspendJob(Ask):
    """Suspend a Job so that no pod of it starts again → None."""

    name: str


@dataclass(frozen=True)
class CreateDisruptionBudget(Ask):
    """→ None."""

    budget: Body = field(compare=False)


@dataclass(frozen=True)
class Warn(Ask):
    """A Warning Event on the migration, and a log line → None."""

    reason: str
    message: str


@dataclass(frozen=True)
class LogWarning(Ask):
    """A log line only → None."""

    message: str


@dataclass(frozen=True)
class MergeHistory(Ask):
    """Merge ``data`` into the environment's history ConfigMap (``base`` if it is
    new; a None value deletes a key) → the ConfigMap as written."""

    base: Body = field(compare=False)
    data: dict[str, str | None] = field(compare=False)


@dataclass(frozen=True)
class ShowFloor(Ask):
    """The environment's rollback floor for the metric → None."""

    version: str | None


@dataclass(frozen=True)
class CountHistoryFailure(Ask):
    """The API server refused a history write for good: count it for the metric → None."""


@dataclass(frozen=True)
class PutConfigMap(Ask):
    """Create or replace a ConfigMap → None."""

    configmap: Body = field(compare=False)


#: The closed vocabulary: every ask there is. Each answerer (``reconcile``'s,
#: the unit tests' world) matches on it and ends with ``assert_never``, so
#: ``mypy --strict`` fails wherever a new ask is not answered.
AnyAsk: TypeAlias = (
    ResolveImage
    | FindTemplate
    | GetDeployment
    | DeploymentPods
    | GetMigration
    | GetEnvironment
    | ReadGitLabDeployments
    | ReadGitLabIssues
    | GetJob
    | EnvironmentJobs
    | JobPods
    | JobEvents
    | LogTail
    | PodLog
    | ProgressReadAt
    | LogSince
    | ObserveSteps
    | ReadHistory
    | ValidateJob
    | DefaultedJob
    | PlanDryRun
    | AcquireLock
    | ReleaseLock
    | WriteStatus
    | CreateJob
    | CreateMigration
    | SuspendJob
    | CreateDisruptionBudget
    | Warn
    | LogWarning
    | MergeHistory
    | ShowFloor
    | CountHistoryFailure
    | PutConfigMap
)

Decision = Generator[AnyAsk, Any, T]

Answerer = Callable[[AnyAsk], Any]


def drive(decision: Decision[T], answer: Answerer) -> T:
    """Run ``decision`` to its end, answering each ask with ``answer``.

    What ``answer`` raises is raised inside the decision, at its ask; what the
    decision does not catch comes out of here.
    """
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            ask = decision.send(reply) if error is None else decision.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            reply, error = answer(ask), None
        except Exception as e:  # noqa: BLE001 - handed to the decision, which decides
            reply, error = None, e
