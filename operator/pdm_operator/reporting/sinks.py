"""Deliver one outbox record to GitLab (python-gitlab) or Sentry (requests).

Each function blocks for at most a few calls of ``timeout`` seconds and
returns an ``outbox.Result``; nothing here retries or sleeps: scheduling is
the outbox's. python-gitlab is told not to obey 429s by itself (it would
sleep in this thread); the answer's ``Retry-After`` is read from the session
and handed back instead.

Exactly once toward GitLab, and only on what the operator made: before a
deployment is created, the environment's deployments are looked up for one
this record made whose answer was lost (same ref and sha, made through the
API by the token's own user, after the record was planned). One that someone
else made is never updated or counted as delivered: it is named in the
record's ``conflict``. The QA issue and the Sentry deploy carry a marker with
the migration's uid and are looked up the same way.

GitLab's rules this follows (gitlabhq, ``lib/api/deployments.rb``,
``app/models/deployment.rb``, ``app/services/deployments/create_service.rb``,
``app/services/deployments/link_merge_requests_service.rb``):

* ref and sha must exist in the project (400 ``{"ref": ["The branch or tag
  does not exist"]}`` / ``{"sha": ["The commit does not exist"]}``);
* creating a deployment needs ``create_deployment`` and ``create_environment``
  on the project (the environment is created on first use), else 403;
* a create equal (ref, tag, sha, status) to the environment's last successful
  deployment returns that one, whoever made it;
* merge requests are linked to a deployment asynchronously after it succeeds.

Tokens are read from their Secrets for each delivery and never leave this
module: error texts are scrubbed of them.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import gitlab
import requests
from gitlab import exceptions as glexc

from pdm_operator.model import Body
from pdm_operator.reporting import outbox, policy

#: Answers that retrying cannot change. 429 and 5xx are retried; so are
#: timeouts, dropped connections and 401 (a rotated token heals it).
PERMANENT_STATUSES = (400, 403, 404, 405, 409, 410, 422)


@dataclass(frozen=True)
class Context:
    """What a delivery needs besides the record."""

    migration: Body
    records: list[Body]
    gitlab_token: Callable[[], str]
    sentry_token: Callable[[Body], str]
    timeout: float
    now: datetime

    @property
    def spec(self) -> Body:
        return dict(self.migration["spec"])

    @property
    def environment(self) -> str:
        return str(self.spec["environment"])

    @property
    def gitlab_environment(self) -> str:
        return policy.gitlab_environment(self.spec)

    def version(self, kind: str, project: str) -> Body:
        """The ref and sha recorded in ``project`` (admission makes sure there is one)."""
        found = policy.version(self.spec, self.sink(kind), project)
        if found is None:
            raise Refusal(f"no version (ref, sha) for {kind} {project}", permanent=True)
        return found

    @property
    def marker(self) -> str:
        meta = self.migration["metadata"]
        return f"[pdm {meta['namespace']}/{meta['name']} {str(meta.get('uid', ''))[:8]}]"

    def sink(self, kind: str, target: str | None = None) -> Body:
        for sink in self.spec["tracking"]["sinks"]:
            if sink["type"] != kind:
                continue
            if (
                target is None
                or kind != policy.SENTRY_DEPLOY
                or f"{sink['org']}/{sink['release']}" == target
            ):
                return dict(sink)
        raise KeyError(kind)


class Captured:
    """The headers of the last HTTP answer a session received (for Retry-After)."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.headers = dict(response.headers)


def retry_after(headers: dict[str, str], now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def scrub(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text


def deliver(record: Body, ctx: Context) -> outbox.Result:  # noqa: PLR0911 - one per failure kind
    """One attempt at ``record``; never raises."""
    kind = record["sink"]
    token = ""
    try:
        if kind == policy.SENTRY_DEPLOY:
            sink = ctx.sink(kind, record["target"])
            token = ctx.sentry_token(sink)
            return sentry_deploy(record, ctx, sink, token)
        token = ctx.gitlab_token()
        captured = Captured()
        session = requests.Session()
        session.hooks["response"].append(captured.hook)
        gl = gitlab.Gitlab(
            ctx.spec["tracking"]["gitlab"]["url"],
            private_token=token,
            timeout=ctx.timeout,
            session=session,
            retry_transient_errors=False,
            keep_base_url=True,
        )
        try:
            # Calls without an explanation of their own still get the project named.
            with explained(kind, record["target"], captured):
                return GITLAB_SINKS[kind](gl, record, ctx, captured)
        finally:
            session.close()
    except Refusal as e:
        message = scrub(str(e), token)
        if e.code == 429 or (e.code is not None and e.code >= 500):
            return outbox.Result(error=message, retry_after=retry_after(e.headers))
        return outbox.Result(error=message, permanent=e.permanent or e.code in PERMANENT_STATUSES)
    except TokenError as e:
        return outbox.Result(error=str(e))
    except requests.Timeout:
        return outbox.Result(error=f"no answer within {ctx.timeout:.0f}s")
    except requests.ConnectionError as e:
        return outbox.Result(error=scrub(f"connection failed: {type(e).__name__}", token))
    except Exception as e:  # noqa: BLE001 - a delivery never takes the reporter down
        return outbox.Result(error=scrub(f"{type(e).__name__}: {e}", token))


class TokenError(Exception):
    """A token could not be read (its Secret or key is missing); retried."""


class Refusal(Exception):
    """GitLab refused a call; the message says what to do about it."""

    def __init__(
        self,
        message: str,
        code: int | None = None,
        *,
        permanent: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent
        self.headers = headers or {}


#: What each refused operation needs, in GitLab's words (ProjectPolicy abilities).
NEEDS = {
    "create a deployment": (
        "the abilities create_deployment and create_environment (the Developer role): "
        "GitLab creates the environment {environment!r} on first use; a protected "
        "environment also needs deploy access"
    ),
    "update deployment": (
        "the ability update_deployment (the Developer role); a protected environment "
        "also needs deploy access"
    ),
    "label merge request": "the ability update_merge_request on the merge request",
    "create the QA issue": "the ability create_issue",
}


@contextmanager
def explained(action: str, project: str, captured: Captured, **facts: str) -> Iterator[None]:
    """Turn a GitLab error of ``action`` into a ``Refusal`` a person can act on."""
    try:
        yield
    except glexc.GitlabError as e:
        code = e.response_code
        raw = e.error_message
        message = f"{action} in {project}: GitLab answered {code}: {raw}"
        fields: dict[str, Any] = raw if isinstance(raw, dict) else {}
        unknown = next((k for k in ("ref", "sha") if k in fields), None)
        if code == 400 and unknown is not None:
            message = (
                f"{action} in {project}: {unknown} {facts.get(unknown)!r} does not exist in "
                f"that project (GitLab: {'; '.join(map(str, fields[unknown]))}); give this "
                "target the project's own version"
            )
        elif code == 403:
            need = next(
                (v for k, v in NEEDS.items() if action.startswith(k)),
                "read access to the project's deployments, merge requests and issues",
            )
            message = (
                f"{action} in {project}: 403 Forbidden: the token's user lacks "
                + need.format(**facts)
            )
        elif code == 404:
            message = (
                f"{action} in {project}: 404: the project (or the object) does not exist, "
                "or the token's user cannot see it"
            )
        raise Refusal(message, code, headers=captured.headers) from e


OPTS: dict[str, Any] = {"obey_rate_limit": False, "max_retries": 0}

#: How far GitLab's clock may be behind ours when a deployment made by a lost
#: create is matched against the time its record was planned.
CLOCK_ALLOWANCE = timedelta(seconds=30)


@dataclass(frozen=True)
class Found:
    """The lookup: our deployment, and any look-alike made by someone else."""

    ours: Any | None
    conflict: str | None


def _find_deployment(
    gl: gitlab.Gitlab, project: Any, record: Body, ctx: Context, version: Body
) -> Found:
    """Our deployment for this record, made by a create whose answer was lost.

    Ours means: the environment, ref and sha of this record, made through the
    API (``deployable`` is null: GitLab CI's are never ours, and GitLab refuses
    to update them), by the token's own user, and created after the record was
    planned (GitLab's clock may be ``CLOCK_ALLOWANCE`` behind). Anything else
    with the same environment, ref and sha is someone else's and is left alone.
    """
    me = _me(gl)
    planned = record.get("plannedTime") or record.get("firstAttemptTime")
    since = outbox.parse_time(planned) - CLOCK_ALLOWANCE if planned else None
    query: dict[str, Any] = {"environment": ctx.gitlab_environment}
    if since is not None:
        # DeploymentsFinder: an updated_* filter needs order_by=updated_at.
        query.update(updated_after=outbox.fmt(since), order_by="updated_at")
    else:
        query.update(order_by="id")
    ours, others = None, []
    for dep in project.deployments.list(sort="desc", per_page=100, get_all=False, **query, **OPTS):
        attrs = dep.attributes
        if attrs.get("sha") != version["sha"] or attrs.get("ref") != version["ref"]:
            continue
        created = attrs.get("created_at")
        mine = (
            not attrs.get("deployable")
            and (attrs.get("user") or {}).get("id") == me
            and (since is None or (created and outbox.parse_time(created) >= since))
        )
        if mine and ours is None:
            ours = dep
        elif not mine:
            others.append(_describe(attrs))
    conflict = None
    if others:
        conflict = (
            f"{', '.join(others[:3])} with the same environment, ref and sha "
            "was made by someone else and left alone"
        )
    return Found(ours, conflict)


def _me(gl: gitlab.Gitlab) -> Any:
    """The id of the token's user (``GET /user``), once per delivery."""
    if gl.user is None:
        gl.auth()
    return (gl.user.attributes if gl.user is not None else {}).get("id")


def _describe(attrs: Body) -> str:
    who = (attrs.get("user") or {}).get("username") or "unknown"
    via = " by GitLab CI" if attrs.get("deployable") else ""
    return f"deployment {attrs.get('id')} ({attrs.get('status')}, @{who}{via})"


#: Statuses GitLab lets a deployment leave through the API: ``running`` only
#: from ``created``; success, failed and canceled from created or running.
OPEN_STATUSES = ("created", "running")


def gitlab_deployment(
    gl: gitlab.Gitlab, record: Body, ctx: Context, captured: Captured
) -> outbox.Result:
    """Update-or-create in the record's environment, never sending a status it already has.

    The deployment this record made (``remoteId``), or else the one the lookup
    finds as ours, is updated when GitLab allows the transition; one that
    already has the desired status is taken as delivered (a create whose
    answer was lost); otherwise a new deployment is created. GitLab may answer
    a create with an existing deployment (equal to the environment's last
    successful one): when someone else made that one, the record says so.
    """
    kind, target, desired = record["sink"], record["target"], record["desired"]
    project = gl.projects.get(target, lazy=True)
    version = ctx.version(kind, target)
    environment = ctx.gitlab_environment
    facts = {"ref": str(version["ref"]), "sha": str(version["sha"]), "environment": environment}
    conflict = None
    found: Any | None = None
    if record.get("remoteId"):
        with explained(f"read deployment {record['remoteId']}", target, captured, **facts):
            found = project.deployments.get(record["remoteId"], **OPTS)
    else:
        with explained("look up deployments", target, captured, **facts):
            lookup = _find_deployment(gl, project, record, ctx, version)
        found, conflict = lookup.ours, lookup.conflict
    if found is not None:
        dep_id, current = str(found.attributes["id"]), found.attributes.get("status")
        if current == desired:
            return outbox.Result(delivered=True, remote_id=dep_id, conflict=conflict)
        if current in OPEN_STATUSES and desired != "running":
            with explained(f"update deployment {dep_id}", target, captured, **facts):
                project.deployments.update(dep_id, {"status": desired}, **OPTS)
            return outbox.Result(delivered=True, remote_id=dep_id, conflict=conflict)
    with explained("create a deployment", target, captured, **facts):
        created = project.deployments.create(
            {
                "environment": environment,
                "sha": version["sha"],
                "ref": version["ref"],
                "tag": bool(version.get("tag", False)),
                "status": desired,
            },
            **OPTS,
        )
    attrs = created.attributes
    if attrs.get("deployable") or (attrs.get("user") or {}).get("id") != _me(gl):
        conflict = (
            f"GitLab answered the create with {_describe(attrs)}, equal to the environment's "
            "last successful deployment; recorded as delivered, it is not ours"
        )
    return outbox.Result(delivered=True, remote_id=str(attrs["id"]), conflict=conflict)


def qa_issue(gl: gitlab.Gitlab, record: Body, ctx: Context, captured: Captured) -> outbox.Result:
    target = record["target"]
    project = gl.projects.get(target, lazy=True)
    version = policy.version(ctx.spec, ctx.sink(policy.QA_ISSUE), target)
    what = f"{version['ref']} {str(version['sha'])[:11]} " if version else ""
    title = f"{ctx.environment}: post-deploy migrations of {what}{ctx.marker}"
    with explained("look up the QA issue", target, captured):
        for issue in project.issues.list(search=ctx.marker, in_="title", get_all=False, **OPTS):
            if ctx.marker in issue.attributes.get("title", ""):
                return outbox.Result(delivered=True, remote_id=str(issue.attributes["iid"]))
    shipped = f" for `{version['ref']}` (`{version['sha']}`)" if version else ""
    with explained("create the QA issue", target, captured):
        issue = project.issues.create(
            {
                "title": title,
                "description": (
                    f"Post-deployment migrations ran in `{ctx.environment}`{shipped} "
                    "and succeeded. Please run QA."
                ),
                "labels": "QA,post-deploy-migrations",
            },
            **OPTS,
        )
    return outbox.Result(delivered=True, remote_id=str(issue.attributes["iid"]))


#: Default bound on the wait for GitLab to link merge requests to a deployment.
LINK_TIMEOUT = 900.0


def mr_labels(gl: gitlab.Gitlab, record: Body, ctx: Context, captured: Captured) -> outbox.Result:
    """Label the merge requests GitLab linked to the project's successful deployment.

    GitLab links them asynchronously after the deployment succeeds
    (``Deployments::LinkMergeRequestWorker``), so an empty list right after
    the success means "not yet": the record waits (non-blocking), polling
    with a growing interval, until ``linkTimeoutSeconds`` after the
    deployment was delivered; still none then is its own outcome
    (``NoMergeRequests``), never Delivered.
    """
    target = record["target"]
    deployment = next(
        (
            r
            for r in ctx.records
            if r.get("sink") == policy.GITLAB_DEPLOYMENT and r.get("target") == target
        ),
        None,
    )
    if deployment is None:
        return outbox.Result(error=f"no GitLabDeployment sink for project {target}", permanent=True)
    if deployment.get("state") != outbox.DELIVERED or not deployment.get("remoteId"):
        return outbox.Result(waiting=True, note=f"waiting for the deployment in {target}")
    sink = ctx.sink(policy.MR_LABELS)
    label = policy.label(sink, ctx.spec)
    if not label:
        return outbox.Result(error="no label for this environment", permanent=True)
    dep_id = deployment["remoteId"]
    project = gl.projects.get(target, lazy=True)
    dep = project.deployments.get(dep_id, lazy=True)
    with explained(f"list the merge requests of deployment {dep_id}", target, captured):
        merge_requests = dep.mergerequests.list(get_all=True, **OPTS)
    if not merge_requests:
        timeout = float(sink.get("linkTimeoutSeconds") or LINK_TIMEOUT)
        delivered = deployment.get("deliveredTime")
        waited = (ctx.now - outbox.parse_time(delivered)).total_seconds() if delivered else 0.0
        if waited >= timeout:
            return outbox.Result(
                no_merge_requests=True,
                error=(
                    f"GitLab linked no merge requests to deployment {dep_id} in {target} "
                    f"within {timeout:.0f}s of its success: nothing labelled (GitLab links "
                    "the merge requests merged since the environment's previous successful "
                    "deployment; an environment in a folder, like db/gprd, is linked only "
                    "when its tier is production or staging)"
                ),
            )
        return outbox.Result(
            waiting=True,
            retry_after=min(60.0, max(BACKOFF_FLOOR, waited / 4)),
            note=f"waiting for GitLab to link merge requests to deployment {dep_id}",
        )
    for mr in merge_requests:
        iid = mr.attributes["iid"]
        if label not in (mr.attributes.get("labels") or []):
            with explained(f"label merge request !{iid}", target, captured):
                project.mergerequests.update(iid, {"add_labels": label}, **OPTS)
    return outbox.Result(delivered=True, remote_id=f"{len(merge_requests)} merge request(s)")


#: The first polls for linked merge requests come this often.
BACKOFF_FLOOR = 2.0


def sentry_deploy(record: Body, ctx: Context, sink: Body, token: str) -> outbox.Result:
    base = str(sink.get("url") or "https://sentry.io").rstrip("/")
    url = f"{base}/api/0/organizations/{sink['org']}/releases/{sink['release']}/deploys/"
    headers = {"Authorization": f"Bearer {token}"}
    status = ctx.migration.get("status") or {}
    # Sentry caps deploy names at 64 characters; the uid makes it unique.
    name = f"pdm-{ctx.migration['metadata'].get('uid', '')}"
    with requests.Session() as session:
        listed = session.get(url, headers=headers, timeout=ctx.timeout)
        if listed.ok:
            for deploy in listed.json() or []:
                if deploy.get("name") == name:
                    return outbox.Result(delivered=True, remote_id=str(deploy.get("id")))
        else:
            return _sentry_error(listed, token)
        resp = session.post(
            url,
            headers=headers,
            timeout=ctx.timeout,
            json={
                "environment": ctx.environment,
                "name": name,
                "dateStarted": status.get("startTime"),
                "dateFinished": status.get("jobCompletionTime"),
            },
        )
        if resp.status_code in (200, 201):
            return outbox.Result(delivered=True, remote_id=str(resp.json().get("id")))
        return _sentry_error(resp, token)


def _sentry_error(resp: requests.Response, token: str) -> outbox.Result:
    message = scrub(f"Sentry answered {resp.status_code}: {resp.text[:200]}", token)
    if resp.status_code == 429 or resp.status_code >= 500:
        return outbox.Result(error=message, retry_after=retry_after(dict(resp.headers)))
    return outbox.Result(error=message, permanent=resp.status_code in PERMANENT_STATUSES)


GITLAB_SINKS: dict[str, Callable[[gitlab.Gitlab, Body, Context, Captured], outbox.Result]] = {
    policy.GITLAB_DEPLOYMENT: gitlab_deployment,
    policy.RELEASE_METADATA: gitlab_deployment,
    policy.QA_ISSUE: qa_issue,
    policy.MR_LABELS: mr_labels,
}
