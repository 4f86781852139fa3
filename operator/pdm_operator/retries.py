"""A retry of a failed migration: a new PostDeployMigration with its spec (pure).

Post-deployment migrations are never run again in place: a retry is a new
object, made by ``kubectl pdm retry`` (a person) or by the environment's
``spec.retry`` policy (the operator, when a failure's class is one the
platform admin listed). Both make it here, the same way:

- the failed one's spec, verbatim but for what belonged to the failed run
  alone: its approval (the plan approved was the failed Job's; the retry's Job
  has another name, so another plan, and an approval is a person's act the
  operator must not copy) and its ``notBefore``;
- its labels; annotations that link it to the failed one (``retry-of``), to
  the first of the chain (``retry-first``) and count the attempt
  (``retry-attempt``: 1 for a retry of the first);
- in the failed one's namespace, so it grants nothing its creator did not
  have: the spec was admitted for them, and the retry waits on every gate
  (the environment's windows and change locks, the lock, approval) as any
  migration does.

The policy's retry has a deterministic name (``<first>-retry-<attempt>``),
so a second create after a restart or a leader hand-over meets the first
(409) and counts as done only if what it found is that retry
(:func:`is_its_retry`: its annotations, labels, and spec as the API server
stores it), never another object someone created under the name. The count is
the chain's: annotations a creator writes can only lower what their own
migration gets (an attempt number at or past the policy's ends the chain; one
that cannot be read does too), and the first of any chain is a migration its
creator made with their own rights.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from pdm_operator import conditions, failures, model, timestamps
from pdm_operator.model import Body

#: The first PostDeployMigration of a chain of retries.
ANNOTATION_FIRST: Final = f"{model.GROUP}/retry-first"
#: Which retry of the first this is (1, 2, ...).
ANNOTATION_ATTEMPT: Final = f"{model.GROUP}/retry-attempt"
#: metadata.name is limited to 54 characters by the CRD (the Job name adds 9).
MAX_NAME: Final = 54
#: The most retries a policy may ask for (the CRD's maximum).
MAX_ATTEMPTS: Final = 5
#: Classes a policy may list: the ones where waiting can help. A data error
#: fails again on the same data; an unknown failure is not called benign.
RETRYABLE: Final = (failures.LOCK_CONTENTION, failures.TIMEOUT, failures.INFRASTRUCTURE)
_DURATION: Final = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class RetryRefused(ValueError):
    """The migration is not one that may be retried."""


def retry_name(name: str, taken: set[str]) -> str:
    """``NAME-retry-N`` with the first free N (a retry of a retry counts on): the CLI's."""
    return free_name(name, "retry", taken)


def free_name(name: str, kind: str, taken: set[str]) -> str:
    """``NAME-<kind>-N`` with the first free N, from NAME without such a suffix of its own
    (``kind``: ``retry``, or ``mark`` for ``kubectl pdm mark-executed``)."""
    base = re.sub(r"-(retry|mark)-[0-9]+$", "", name)
    n = 1
    while True:
        candidate = numbered(base, n, kind)
        if candidate not in taken:
            return candidate
        n += 1


def numbered(base: str, attempt: int, kind: str = "retry") -> str:
    suffix = f"-{kind}-{attempt}"
    return base[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def chain(failed: Body) -> tuple[str, int | None]:
    """The first migration of ``failed``'s chain, and which attempt ``failed`` is
    (0: the first itself; None: a retry whose count cannot be read)."""
    meta = failed["metadata"]
    annotations = meta.get("annotations") or {}
    if ANNOTATION_ATTEMPT not in annotations:
        if model.ANNOTATION_RETRY_OF in annotations:
            # Made by an older retry command: a retry, of an unknown count.
            return str(annotations[model.ANNOTATION_RETRY_OF]), None
        return str(meta["name"]), 0
    raw = str(annotations[ANNOTATION_ATTEMPT])
    attempt = int(raw) if raw.isdigit() else None
    return str(annotations.get(ANNOTATION_FIRST) or meta["name"]), attempt


def refused(failed: Body) -> str | None:
    """Why ``failed`` may not be retried, or None.

    Only a migration whose Job failed (or never started) is retried: a running
    one would run twice, a succeeded one has nothing left to run, and one that
    failed after its Job succeeded (BlockingReportFailed) ran every migration
    already. Rails skips the migrations the failed run applied
    (``schema_migrations``), so the retry runs the remaining ones, once.
    """
    status = failed.get("status") or {}
    name = failed["metadata"]["name"]
    if not conditions.is_true(status.get("conditions"), model.FAILED):
        return (
            f"pdm/{name} is {status.get('state') or 'Pending'}, not Failed: only a failed "
            "PostDeployMigration is retried (post-deployment migrations never run twice)"
        )
    if status.get("jobOutcome") == "Succeeded":
        return (
            f"pdm/{name} failed after its Job succeeded ({status.get('reason')}): every "
            "migration ran; deliver the report instead of running them again"
        )
    return None


def retry_of(
    failed: Body, name: str, *, not_before: datetime | None = None, check: bool = True
) -> Body:
    """The retry of ``failed`` under ``name``; RetryRefused if it is not retryable
    (``check``: the caller has looked already)."""
    why = refused(failed) if check else None
    if why is not None:
        raise RetryRefused(why)
    meta = failed["metadata"]
    first, attempt = chain(failed)
    spec = copy.deepcopy(failed["spec"])
    spec.pop("notBefore", None)
    _only_what_remains(spec, failed.get("status") or {})
    approval = spec.get("approval")
    if isinstance(approval, dict):
        approval.pop("approved", None)
        if not approval:
            spec.pop("approval")
    if not_before is not None:
        spec["notBefore"] = timestamps.rfc3339(not_before)
    annotations = {model.ANNOTATION_RETRY_OF: str(meta["name"]), ANNOTATION_FIRST: first}
    if attempt is not None:
        annotations[ANNOTATION_ATTEMPT] = str(attempt + 1)
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": annotations,
        },
        "spec": spec,
    }


def _only_what_remains(spec: Body, status: Body) -> None:
    """``spec.migrations.only`` less the versions the failed run applied before it stopped.

    A selection's Job applies its versions one at a time, oldest first
    (``pdm_operator.selection``), so those before the one Rails stopped at
    (``status.failure.migration``) are applied, and a retry naming them would
    fail on them (``SelectedNotPending``). When that cannot be told, ``only``
    stays as it was: the retry's pre-flight then refuses what is no longer
    pending, rather than guess. Never dropped whole: that would run everything.
    """
    only = (spec.get("migrations") or {}).get("only")
    if not only:
        return
    entries = status.get("pendingMigrations") or []
    order = sorted({str(e.get("version")) for e in entries if e.get("action") == "Apply"})
    stopped = str(((status.get("failure") or {}).get("migration") or {}).get("version") or "")
    if stopped not in order:
        return
    done = set(order[: order.index(stopped)])
    rest = [v for v in only if v not in done]
    if not rest:  # cannot be: the stopped one is in only
        raise RetryRefused("every version of spec.migrations.only was applied")
    spec["migrations"]["only"] = rest


def duration(text: str) -> timedelta | None:
    """``1h30m``, ``10m``, ``45s`` (the CRD's pattern), or None."""
    found = _DURATION.match(text or "")
    if not text or found is None:
        return None
    h, m, s = (int(g or 0) for g in found.groups())
    return timedelta(hours=h, minutes=m, seconds=s)


@dataclass(frozen=True)
class Planned:
    """The policy's retry of a failure: create ``migration``."""

    migration: Body
    attempt: int
    attempts: int
    not_before: str

    @property
    def name(self) -> str:
        return str(self.migration["metadata"]["name"])


@dataclass(frozen=True)
class NoRetry:
    """The policy covers the failure's class, and makes no retry: ``message`` says why."""

    message: str


def planned(
    failed: Body, environment: str, policy: Body | None, failure_class: str, failed_at: datetime
) -> Planned | NoRetry | None:
    """What ``environment``'s ``spec.retry`` (``policy``) makes of a failure of
    ``failure_class`` at ``failed_at``; None when it does not cover it."""
    if not policy or failure_class not in (policy.get("classes") or ()):
        return None
    if (failed.get("spec") or {}).get("mode", "Run") != "Run":
        return None
    where = f"spec.retry of PostDeployEnvironment {environment!r}"
    attempts = min(int(policy.get("attempts") or 1), MAX_ATTEMPTS)
    after = duration(str(policy.get("after") or "0s"))
    first, attempt = chain(failed)
    if after is None or attempt is None:
        return NoRetry(
            f"{failure_class} is retried by {where}, but "
            + ("its delay is unreadable" if after is None else "the attempt count is unreadable")
            + f": no retry is made; `kubectl pdm retry {failed['metadata']['name']}` makes one"
        )
    if attempt >= attempts:
        return NoRetry(
            f"{failure_class}: pdm/{first} was retried {attempt} time(s), as many as {where} "
            "allows (attempts); no more retries are made"
        )
    not_before = failed_at + after
    made = retry_of(failed, numbered(first, attempt + 1), not_before=not_before, check=False)
    return Planned(made, attempt + 1, attempts, timestamps.rfc3339(not_before))


def for_comparison(made: Body) -> Body:
    """``made`` under a generated name, for a server-side dry run that says what the
    API server stores for it (the CRD's defaults filled in) while the name is taken."""
    meta = {k: v for k, v in made["metadata"].items() if k != "name"}
    return {**made, "metadata": {**meta, "generateName": "pdm-retry-check-"}}


def is_its_retry(found: Body | None, made: Body, stored: Body) -> bool:
    """Whether ``found``, under the name of the retry the policy would make
    (``made``), is that retry: made before a restart, or by the leader before.

    Its chain annotations, its labels, and its spec field for field what the
    API server stores for ``made`` (``stored``: a dry run of it). The name alone
    is not enough: whoever may create PostDeployMigrations in the namespace
    could take it first, with another spec, to have the policy count their run
    as its retry (or to stop the chain: then no retry, and a Warning says so).
    """
    if found is None:
        return False
    meta = found.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    wanted = made["metadata"]["annotations"]
    return (
        all(annotations.get(k) == v for k, v in wanted.items())
        and (meta.get("labels") or {}) == made["metadata"]["labels"]
        and found.get("spec") == stored.get("spec")
    )
