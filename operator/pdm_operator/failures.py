"""What kind of failure a failed migration (or pre-flight) had, from Rails' own
abort text and the pod's end (pure).

``status.failure.class`` is one of :data:`CLASSES`. It is what a release
manager reads first ("lock contention again: retry"), what the metric counts,
and what an environment's retry policy (``retries``) acts on, so a class is
only given when the evidence says it: text this module does not know is
``Unknown``, never a benign guess.

Where the words come from (checked at the source):

- Rails 6.1's PostgreSQL adapter turns SQLSTATEs into its own errors
  (activerecord ``connection_adapters/postgresql_adapter.rb``,
  ``translate_exception``): 55P03 ``LockWaitTimeout``, 57014
  ``QueryCanceled``, 40P01 ``Deadlocked``, 23505 ``RecordNotUnique``, 23503
  ``InvalidForeignKey``, 23502 ``NotNullViolation``, 22001 ``ValueTooLong``,
  22003 ``RangeError``; ``errors.rb`` declares them. Rake prints the error as
  ``Class: message`` and each cause after ``Caused by:``, so the pg gem's own
  class (``PG::LockNotAvailable``, ``PG::QueryCanceled``,
  ``PG::TRDeadlockDetected``, ``PG::InFailedSqlTransaction``,
  ``PG::UniqueViolation``, ``PG::CheckViolation``…, the names the pg gem
  generates from PostgreSQL's ``errcodes.txt``; pg 1.4.5 here) shows too
  (tests/unit/golden/rails/migrate-lock-timeout.txt, real Rails 6.1 output).
- PostgreSQL's messages: "canceling statement due to lock timeout" (55P03)
  and "canceling statement due to statement timeout" (57014).
- GitLab's ``Gitlab::Database::WithLockRetries`` (gitlabhq
  ``lib/gitlab/database/with_lock_retries.rb``) retries a block on
  ``ActiveRecord::LockWaitTimeout`` with growing ``lock_timeout``\\ s and, with
  ``raise_on_exhaustion``, raises ``AttemptsExhaustedError`` ("configured
  attempts to obtain locks are exhausted").
- ``PG::InFailedSqlTransaction`` (25P02, "current transaction is aborted") is
  a consequence: an earlier statement of the transaction failed. GitLab.com's
  incidents list it with lock contention because that earlier failure was a
  lock timeout; alone it says nothing of the cause, so alone it is ``Unknown``.

The pod's end: ``OOMKilled`` (the container's terminated reason), an
``Evicted`` or node-lost pod, a Job past ``activeDeadlineSeconds``
(``DeadlineExceeded``), a pod that could not start (an image, admission), and
a database that could not be reached are ``Infrastructure``. Rails' error
text, when there is one, goes first: it says what the migration met.
"""

from __future__ import annotations

import re
from typing import Final

LOCK_CONTENTION: Final = "LockContention"
TIMEOUT: Final = "Timeout"
DATA_ERROR: Final = "DataError"
INFRASTRUCTURE: Final = "Infrastructure"
UNKNOWN: Final = "Unknown"
#: Every class, in the order the CRD's enum lists them (bounded: a metric label).
CLASSES: Final = (LOCK_CONTENTION, TIMEOUT, DATA_ERROR, INFRASTRUCTURE, UNKNOWN)

#: Error words (exception classes, PostgreSQL's messages) and the class each means.
_ERRORS: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern), cls)
    for pattern, cls in (
        (r"WithLockRetries::AttemptsExhaustedError", LOCK_CONTENTION),
        (r"\bPG::LockNotAvailable\b", LOCK_CONTENTION),
        (r"\bActiveRecord::LockWaitTimeout\b", LOCK_CONTENTION),
        (r"canceling statement due to lock timeout", LOCK_CONTENTION),
        (r"\bPG::TRDeadlockDetected\b", LOCK_CONTENTION),
        (r"\bActiveRecord::Deadlocked\b", LOCK_CONTENTION),
        (r"\bdeadlock detected\b", LOCK_CONTENTION),
        (r"canceling statement due to statement timeout", TIMEOUT),
        (r"\bPG::QueryCanceled\b", TIMEOUT),
        (r"\bActiveRecord::QueryCanceled\b", TIMEOUT),
        (r"\bActiveRecord::StatementTimeout\b", TIMEOUT),
        (r"\bPG::UniqueViolation\b", DATA_ERROR),
        (r"\bActiveRecord::RecordNotUnique\b", DATA_ERROR),
        (r"\bPG::ForeignKeyViolation\b", DATA_ERROR),
        (r"\bActiveRecord::InvalidForeignKey\b", DATA_ERROR),
        (r"\bPG::NotNullViolation\b", DATA_ERROR),
        (r"\bActiveRecord::NotNullViolation\b", DATA_ERROR),
        (r"\bPG::CheckViolation\b", DATA_ERROR),
        (r"\bPG::ExclusionViolation\b", DATA_ERROR),
        (r"\bPG::StringDataRightTruncation\b", DATA_ERROR),
        (r"\bActiveRecord::ValueTooLong\b", DATA_ERROR),
        (r"\bPG::NumericValueOutOfRange\b", DATA_ERROR),
        (r"\bActiveRecord::RangeError\b", DATA_ERROR),
        (r"\bPG::ConnectionBad\b", INFRASTRUCTURE),
        (r"\bPG::UnableToSend\b", INFRASTRUCTURE),
        (r"\bPG::AdminShutdown\b", INFRASTRUCTURE),
        (r"\bActiveRecord::ConnectionNotEstablished\b", INFRASTRUCTURE),
        (r"server closed the connection unexpectedly", INFRASTRUCTURE),
    )
)
#: A consequence of an earlier failure in the transaction, never a class by itself.
_IN_FAILED_TRANSACTION: Final = re.compile(r"\bPG::InFailedSqlTransaction\b")
#: The pod's or Job's end that is the cluster's doing, not the migration's.
POD_REASONS: Final = frozenset({"OOMKilled", "Evicted", "NodeLost", "Preempted"})
JOB_REASONS: Final = frozenset({"DeadlineExceeded"})
#: Reasons the operator gives a pod that could not start (``jobs.stuck``).
#: Not ``InvalidImageName`` nor ``PodCreateFailed`` (admission refused the pod):
#: the same spec fails the same way, so they are ``Unknown``, never retried by policy.
START_REASONS: Final = frozenset({"ErrImagePull", "ImagePullBackOff", "Unschedulable"})
#: A backtrace frame ("/path/file.rb:12:in `method'"): never an error's words.
_FRAME: Final = re.compile(r"^\s*\S+:\d+:in ")
#: The lines read when Rake printed no abort: the end of the log.
_TAIL_LINES: Final = 80


def error_text(log: str) -> str:
    """The part of ``log`` that says what failed: Rake's last abort (from
    "rake aborted!" to its summary), else the last lines; frames left out."""
    lines = log.split("\n")
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith("rake aborted!")]
    if starts:
        block: list[str] = []
        for line in lines[starts[-1] :]:
            if line.startswith("Tasks: TOP =>"):
                break
            block.append(line)
    else:
        block = lines[-_TAIL_LINES:]
    return "\n".join(line for line in block if not _FRAME.match(line))


def from_text(log: str) -> str | None:
    """The class Rails' error text says, or None when it says none this module knows.

    Every error of the abort counts (the error and each ``Caused by:``): one
    class among them is that class; errors of two classes (a unique violation
    and a lock timeout) say no one cause, so ``Unknown``. A transaction
    aborted earlier (``InFailedSqlTransaction``) alone is ``Unknown``.
    """
    text = error_text(log)
    found = {cls for pattern, cls in _ERRORS if pattern.search(text)}
    if len(found) == 1:
        return next(iter(found))
    if found or _IN_FAILED_TRANSACTION.search(text):
        return UNKNOWN
    return None


def classify(
    log: str = "",
    *,
    pod_reason: str = "",
    job_reason: str = "",
    exit_code: int | None = None,
) -> str:
    """The class of a failure: Rails' words first, then the pod's and the Job's end.

    ``pod_reason``: the container's terminated reason (``OOMKilled``) or the
    pod's own (``Evicted``), or the operator's reason for a pod that could not
    start; ``job_reason``: the Job's ``Failed`` condition's reason; an exit code
    137 (SIGKILL) with no Rails error is the kernel's or the kubelet's kill.
    """
    said = from_text(log)
    if said is not None:
        return said
    if pod_reason in POD_REASONS or pod_reason in START_REASONS or job_reason in JOB_REASONS:
        return INFRASTRUCTURE
    if exit_code == 128 + 9:  # SIGKILL
        return INFRASTRUCTURE
    return UNKNOWN
