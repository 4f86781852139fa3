"""The GitLab deployments gate: does the whole environment run the deployed commit? (pure)

A PostDeployEnvironment's ``spec.gitlabDeployments`` names a GitLab, a
project and the GitLab environments that together are the environment
(``gprd-cny``, ``gprd``, one per cluster or stage, as release tooling records
them). A migration of it waits until, in each of them, the latest successful
deployment (by finish time) is of the deployed commit, no deployment is
``running`` or ``blocked``, and none newer than that success is ``created``.
Post-deployment migrations may drop what the previous version still reads:
while any cluster still runs it, or is being deployed, they wait.

GitLab's record is read, not the clusters: release tooling writes a deployment
for every cluster and stage, the clusters of other regions are not reachable
from here, and a cluster's own rollout says nothing of the others.

What GitLab answers, and how it is asked (``gitlab_reads`` asks; this module
says what to ask and judges the answers):

* ``GET /projects/:id/deployments`` is ``DeploymentsFinder``
  (gitlabhq ``app/finders/deployments_finder.rb``, reached from
  ``lib/api/deployments.rb``, which answers its ``InefficientQueryError`` with
  400). Sorting by ``finished_at`` must be paired with a ``finished_after`` or
  ``finished_before`` filter, and such a filter needs ``status=success``;
  anything else is 400. Sort values: id iid created_at updated_at ref
  finished_at. The ``finished_*`` filters came with gitlab-org/gitlab!105017
  (docs ``api/deployments.md`` says so too: with either filter, ``order_by``
  is ``finished_at`` and ``status`` is ``success``).
* A listed deployment (``lib/api/entities/deployment.rb``) has id, iid, ref,
  sha, created_at, updated_at, user, environment, deployable and status, and no
  finish time: "latest by finish time" is the finder's order, never a field
  read here.
* Statuses (``app/models/deployment.rb``): created running success failed
  canceled skipped blocked. ``created``, ``blocked`` and ``running`` are its
  ``UPCOMING_STATUSES``: a deploy job not started, waiting for approval (a
  manual job, ``sync_status_with``), or running. ``finished_at`` is set on
  every move to success, failed or canceled.

So, per GitLab environment, two reads: the latest success
(:func:`latest_success_query`), and the newest deployments by id
(:func:`newest_query`), of which those above that success's id are newer.

Which of the newest are under way, and what is not seen:

* ``running`` and ``blocked`` hold whatever their id. Ids are given when a
  deploy job is created, not when it ends: deployment 100 of one commit may
  still be running when 101 of another has succeeded, and a blocked one
  waits for an approval after which it deploys. One left behind holds until
  someone cancels it in GitLab; the message says it is older than the success.
* ``created`` holds only above the success's id: one below it never started,
  and the newer success superseded it.
* Only the :data:`NEWEST` newest deployments are seen. When all of them came
  after the success, the ids between them and it are not seen, and the gate
  holds (``GitLabDeploymentPending``) until a newer deployment succeeds. When
  the page reaches the success, what is above it is seen whole; a deployment
  below the page is not: one ``running`` or ``blocked`` while :data:`NEWEST`
  newer deployments of its GitLab environment were made does not hold.

The gate never opens on an error: a GitLab environment whose answer is
missing or failed holds with ``GitLabUnreachable``, whatever the others say,
or with ``GitLabRefused`` when no answer comes before someone acts (the token
could not be read, GitLab refused it or the project, or answered with a
redirect). A migration that names two different commits holds with
``DeployedCommitMismatch``: the gate judges one commit, and does not guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pdm_operator import gates, history
from pdm_operator.model import Body

# Hold reasons (Gated=True).
#: GitLab did not answer for one of the GitLab environments: the gate stays shut.
UNREACHABLE = "GitLabUnreachable"
#: GitLab will not answer until someone acts: the token could not be read, GitLab
#: refused it or the project (401, 403, 404), or answered with a redirect.
REFUSED = "GitLabRefused"
#: A GitLab environment has no successful deployment of the commit yet.
PENDING = "GitLabDeploymentPending"
#: A deployment is running or blocked, or one newer than the commit's success is created.
IN_PROGRESS = "GitLabDeployInProgress"
#: No token may be sent to the gate's GitLab (someone must add one).
TOKEN_MISSING = "GitLabTokenMissing"  # noqa: S105 - a reason, not a secret
#: The migration does not say which commit it deploys (someone must say).
COMMIT_UNKNOWN = "DeployedCommitUnknown"
#: The migration names two commits: spec.tracking's sha and its auto-deploy version's.
COMMIT_MISMATCH = "DeployedCommitMismatch"
#: The holds only a person ends: each needs a changed object, not time.
NEEDS_ACTION = frozenset({TOKEN_MISSING, COMMIT_UNKNOWN, COMMIT_MISMATCH, REFUSED})

#: Deploying, whatever their id (of ``Deployment::UPCOMING_STATUSES``): a deploy job
#: running, or one waiting for approval, which deploys once approved.
UNDER_WAY_STATUSES = ("running", "blocked")
#: A deploy job not started: under way only when newer than the latest success.
NOT_STARTED = "created"
#: The newest deployments read per GitLab environment, the API's default page.
NEWEST = 20
#: The ``finished_after`` that pairs with ``order_by=finished_at``: every success.
EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Watch:
    """``spec.gitlabDeployments`` of a PostDeployEnvironment."""

    url: str
    project: str
    #: The GitLab environments, in the order declared (the first that holds answers).
    environments: tuple[str, ...]
    #: ``tokenSecretRef`` ({name, key}, in the migration's namespace), if given.
    token_ref: Body | None

    @classmethod
    def of(cls, environment_spec: Body) -> Watch | None:
        """The gate of an environment's spec; None when it has none."""
        raw = environment_spec.get("gitlabDeployments")
        if not raw:
            return None
        ref = raw.get("tokenSecretRef")
        return cls(
            url=str(raw["url"]),
            project=str(raw["project"]),
            environments=tuple(str(e) for e in raw.get("environments") or ()),
            token_ref=dict(ref) if ref else None,
        )


def _base(url: object) -> str:
    return str(url or "").rstrip("/")


def token_ref(watch: Watch, migration_spec: Body) -> Body | gates.Hold:
    """The Secret and key of the token the gate sends to ``watch.url`` (:func:`token_for`)."""
    return token_for(
        watch.url,
        watch.project,
        watch.token_ref,
        migration_spec,
        "the GitLab deployments gate",
        "spec.gitlabDeployments",
    )


def token_for(  # noqa: PLR0917 - one rule, said for the field that asks
    url: str, project: str, own: Body | None, migration_spec: Body, what: str, field: str
) -> Body | gates.Hold:
    """The Secret and key of the token ``what`` (named by the environment's
    ``field``) sends to ``url``.

    The environment's own ``tokenSecretRef`` (``own``), else the migration's
    ``spec.tracking.gitlab.tokenSecretRef`` when its ``spec.tracking.gitlab.url``
    is ``url`` (compared as written, but for a trailing slash). Never a token
    named for another URL: whoever wrote a token's reference chose where it
    goes, and a read of another GitLab must not receive it.
    """
    if own is not None:
        return dict(own)
    tracked = (migration_spec.get("tracking") or {}).get("gitlab") or {}
    ref = tracked.get("tokenSecretRef")
    if ref and _base(tracked.get("url")) == _base(url):
        return dict(ref)
    why = (
        f"spec.tracking.gitlab.url is {tracked.get('url')!r}, and its token is sent only there"
        if ref
        else "the PostDeployMigration has no spec.tracking.gitlab token"
    )
    return gates.Hold(
        TOKEN_MISSING,
        f"{what} reads {url} ({project}) and has no token for it: {why}. Set "
        f"{field}.tokenSecretRef on the PostDeployEnvironment (a Secret in the migration's "
        "namespace with a read_api token), or create the PostDeployMigration again with "
        f"spec.tracking.gitlab.url {url!r} and its tokenSecretRef",
    )


def _tracked_sha(spec: Body, project: str) -> tuple[str, str] | None:
    """The sha ``spec.tracking`` records for ``project``, and the field it is read from:
    a GitLabDeployment target's own version for it, else the shared
    ``spec.tracking.version`` (the order of ``reporting.sinks.common.version``,
    which this layer may not import)."""
    tracking = spec.get("tracking") or {}
    for sink in tracking.get("sinks") or []:
        if sink.get("type") != "GitLabDeployment":
            continue
        for target in sink.get("targets") or []:
            if target.get("project") == project and (target.get("version") or {}).get("sha"):
                field = (
                    "spec.tracking.sinks[].targets[].version.sha (the GitLabDeployment target "
                    f"for {project})"
                )
                return str(target["version"]["sha"]), field
    shared = (tracking.get("version") or {}).get("sha")
    return (str(shared), "spec.tracking.version.sha") if shared else None


def commit(migration: Body, image: str, project: str) -> str | gates.Hold:
    """The commit the migration deploys in ``project``, lower-case (a prefix of a full sha).

    The one ``spec.tracking`` records for the project, and the GitLab commit
    an auto-deploy version carries (11 hex digits, ``history.Version``) of
    ``spec.gitlabVersion`` or the image's tag. When both are known they must
    agree (one a prefix of the other): a sha a CI template left stale would
    otherwise make the gate answer for a version other than the one the Job
    runs, and whichever is wrong, only a person can tell. A release (18.6.1)
    names no commit: such a migration must say it in ``spec.tracking``.
    """
    tracked = _tracked_sha(migration.get("spec") or {}, project)
    version = history.deployed_version(migration, image)
    parsed = history.Version.parse(version)
    carried = parsed.commit if parsed is not None else None
    if tracked is None:
        if carried:
            return carried
        return gates.Hold(
            COMMIT_UNKNOWN,
            f"the GitLab deployments gate needs the commit this migration deploys in "
            f"{project}, and none is known: no spec.tracking.version.sha (nor a "
            f"GitLabDeployment target's version for {project}), and its GitLab version "
            f"{version!r} (spec.gitlabVersion, else the image's tag) is not an auto-deploy "
            "version, which carries one. Create the PostDeployMigration again with "
            "spec.tracking.version (ref and sha) set",
        )
    sha, field = tracked[0].lower(), tracked[1]
    if not carried or sha.startswith(carried) or carried.startswith(sha):
        return max(sha, carried or "", key=len)
    given = str((migration.get("spec") or {}).get("gitlabVersion") or "")
    source = "spec.gitlabVersion" if given and version == given else f"the tag of image {image}"
    return gates.Hold(
        COMMIT_MISMATCH,
        f"this migration names two commits for {project}: {sha} in {field}, and {carried} "
        f"in its auto-deploy version {version!r} ({source}). The GitLab deployments gate "
        "judges one commit and does not guess which is stale (often a sha a CI template "
        f"copied). Create the PostDeployMigration again with {field} set to the commit of "
        "the version the Job runs, or with the version (spec.gitlabVersion, the image) of "
        "the tracked commit",
    )


def latest_success_query(environment: str) -> dict[str, Any]:
    """The latest successful deployment by finish time, as the finder allows it asked."""
    return {
        "environment": environment,
        "status": "success",
        "order_by": "finished_at",
        "sort": "desc",
        "finished_after": EPOCH,
        "per_page": 1,
    }


def newest_query(environment: str) -> dict[str, Any]:
    """The newest deployments by id, whatever their status."""
    return {"environment": environment, "order_by": "id", "sort": "desc", "per_page": NEWEST}


@dataclass(frozen=True)
class Listing:
    """What GitLab answered for one GitLab environment."""

    #: The latest successful deployment by finish time; None when none succeeded.
    latest_success: Body | None
    #: The newest deployments (:data:`NEWEST`), newest first.
    newest: list[Body]


@dataclass(frozen=True)
class Unreachable:
    """GitLab's deployments of one GitLab environment could not be read; ``message``
    says what failed (never with the token in it)."""

    message: str
    #: No read will succeed until someone acts: the token could not be read, GitLab
    #: refused it or the project (401, 403, 404), or answered with a redirect. False:
    #: GitLab may answer by itself (a timeout, no connection, 5xx, 429).
    needs_action: bool = False


def _id(deployment: Body) -> int | None:
    try:
        return int(deployment["id"])
    except (KeyError, TypeError, ValueError):
        return None


def _newer(deployment: Body, success: Body | None) -> bool:
    """Whether ``deployment`` came after ``success``; one whose id cannot be read
    did: the gate never opens on doubt."""
    mine, theirs = _id(deployment), None if success is None else _id(success)
    return mine is None or theirs is None or mine > theirs


def _under_way(deployment: Body, success: Body | None) -> bool:
    """Whether ``deployment`` is deploying: running or blocked whatever its id,
    created only when newer than ``success`` (an older one never started)."""
    status = deployment.get("status")
    if status in UNDER_WAY_STATUSES:
        return True
    return status == NOT_STARTED and _newer(deployment, success)


def _mend(watch: Watch) -> str:
    """What a person mends when GitLab refuses the gate's reads."""
    if watch.token_ref is not None:
        which = (
            f"the token in Secret {watch.token_ref.get('name')!r}, key "
            f"{watch.token_ref.get('key')!r} (spec.gitlabDeployments.tokenSecretRef, in the "
            "migration's namespace)"
        )
    else:
        which = "the token of the migration's spec.tracking.gitlab.tokenSecretRef"
    return (
        f"mend {which}, which must be a read_api token whose user can read the deployments "
        f"of {watch.project}, or the PostDeployEnvironment's spec.gitlabDeployments (url, "
        "project)"
    )


def _short(deployment: Body) -> str:
    return str(deployment.get("sha") or "")[:11]


def _describe(deployment: Body) -> str:
    return (
        f"deployment {deployment.get('id')} ({deployment.get('status')}, "
        f"{_short(deployment)}, ref {deployment.get('ref')})"
    )


def _one(
    watch: Watch, commit: str, environment: str, answer: Listing | Unreachable | None
) -> gates.Hold | None:
    where = f"GitLab environment {environment!r} of {watch.project}"
    if isinstance(answer, Unreachable) and answer.needs_action:
        return gates.Hold(
            REFUSED,
            f"{where} ({watch.url}) cannot be read: {answer.message}. Asking again will not "
            f"help: {_mend(watch)}; the gate stays shut until then",
            costly=True,
        )
    if not isinstance(answer, Listing):
        failed = answer.message if answer is not None else "it was not read"
        return gates.Hold(
            UNREACHABLE,
            f"{where} ({watch.url}) could not be read: {failed}; the gate stays shut until "
            "GitLab answers",
            costly=True,
        )
    success = answer.latest_success
    newer = [d for d in answer.newest if _newer(d, success)]
    going = [d for d in answer.newest if _under_way(d, success)]
    wanted = commit.lower()
    if success is None or not str(success.get("sha") or "").lower().startswith(wanted):
        also = f"; {_describe(going[0])} is under way" if going else ""
        if success is None:
            now = f"has no successful deployment yet{also}"
        else:
            now = (
                f"last succeeded with {_short(success)} (ref {success.get('ref')}, deployment "
                f"{success.get('id')}), not the deployed commit{also}"
            )
        return gates.Hold(
            PENDING, f"{where} {now}: waiting until it runs {wanted[:11]}", costly=True
        )
    if going:
        newest = going[0]
        more = f" (and {len(going) - 1} more under way)" if len(going) > 1 else ""
        older = (
            ""
            if _newer(newest, success)
            else "; it is older than that success, and if it was left behind, cancelling it "
            "in GitLab ends the wait"
        )
        return gates.Hold(
            IN_PROGRESS,
            f"{where} runs {wanted[:11]} (deployment {success.get('id')}), but deployment "
            f"{newest.get('id')} of {_short(newest)} is {newest.get('status')}{more}: waiting "
            f"until it ends{older}",
            costly=True,
        )
    if len(answer.newest) >= NEWEST and len(newer) == len(answer.newest):
        return gates.Hold(
            PENDING,
            f"{where} runs {wanted[:11]} (deployment {success.get('id')}), but the {NEWEST} "
            "newest deployments all came after it, so whether one between them and it is "
            "still created, running or blocked cannot be read: waiting until a newer one "
            "succeeds",
            costly=True,
        )
    return None


def judge(
    watch: Watch, commit: str, found: Mapping[str, Listing | Unreachable]
) -> gates.Hold | None:
    """Whether every GitLab environment of ``watch`` runs ``commit``, none being deployed.

    ``found``: each GitLab environment's answer. The environments are judged in
    the order declared and the first that holds answers; one missing from
    ``found`` holds as unreachable, one refused (``Unreachable.needs_action``)
    as ``GitLabRefused``.
    """
    for environment in watch.environments:
        hold = _one(watch, commit, environment, found.get(environment))
        if hold is not None:
            return hold
    return None
