"""Deliver one outbox record to GitLab (python-gitlab) or Sentry (requests).

Each function blocks for at most a few calls of ``timeout`` seconds and
returns an ``outbox.Result``; nothing here retries or sleeps: scheduling is
the outbox's. python-gitlab is told not to obey 429s by itself (it would
sleep in this thread); the answer's ``Retry-After`` is read from the session
and handed back instead.

Exactly once toward GitLab: a deployment is looked up (environment + ref +
sha, made through the API rather than by CI) before anything is created, and
a status it already has is never sent again. The QA issue and the Sentry
deploy carry a marker with the migration's uid and are looked up the same
way, so a create whose answer was lost is not repeated.

Tokens are read from their Secrets for each delivery and never leave this
module: error texts are scrubbed of them.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
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

    @property
    def spec(self) -> Body:
        return dict(self.migration["spec"])

    @property
    def environment(self) -> str:
        return str(self.spec["environment"])

    @property
    def version(self) -> Body:
        return dict(self.spec["tracking"]["version"])

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
            if kind in (policy.GITLAB_DEPLOYMENT, policy.RELEASE_METADATA):
                return gitlab_deployment(gl, record, ctx)
            if kind == policy.QA_ISSUE:
                return qa_issue(gl, record, ctx)
            if kind == policy.MR_LABELS:
                return mr_labels(gl, record, ctx)
            return outbox.Result(error=f"unknown sink {kind}", permanent=True)
        except glexc.GitlabError as e:
            code = e.response_code
            message = scrub(f"GitLab answered {code}: {e.error_message}", token)
            if code == 429 or (code is not None and code >= 500):
                return outbox.Result(error=message, retry_after=retry_after(captured.headers))
            return outbox.Result(error=message, permanent=code in PERMANENT_STATUSES)
        finally:
            session.close()
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


OPTS: dict[str, Any] = {"obey_rate_limit": False, "max_retries": 0}


def _find_deployment(project: Any, ctx: Context) -> Any | None:
    """Our deployment for environment + ref + sha, newest first.

    Deployments made by GitLab CI are skipped: GitLab refuses to update them (403).
    """
    version = ctx.version
    for dep in project.deployments.list(
        environment=ctx.environment, order_by="id", sort="desc", per_page=100, get_all=False, **OPTS
    ):
        attrs = dep.attributes
        if (
            attrs.get("sha") == version["sha"]
            and attrs.get("ref") == version["ref"]
            and not attrs.get("deployable")
        ):
            return dep
    return None


#: Statuses GitLab lets a deployment leave through the API: ``running`` only
#: from ``created``; success, failed and canceled from created or running.
OPEN_STATUSES = ("created", "running")


def gitlab_deployment(gl: gitlab.Gitlab, record: Body, ctx: Context) -> outbox.Result:
    """Update-or-create by environment + ref + sha, never sending a status it already has.

    A deployment this record made (``remoteId``), or else the newest API-made
    deployment of the same environment, ref and sha, is updated when GitLab
    allows the transition; one that already has the desired status is taken
    as delivered (a create whose answer was lost); a finished one of an
    earlier run gets a new deployment beside it.
    """
    project = gl.projects.get(record["target"], lazy=True)
    desired = record["desired"]
    found: Any | None = None
    if record.get("remoteId"):
        found = project.deployments.get(record["remoteId"], **OPTS)
    else:
        found = _find_deployment(project, ctx)
    if found is not None:
        dep_id, current = str(found.attributes["id"]), found.attributes.get("status")
        if current == desired:
            return outbox.Result(delivered=True, remote_id=dep_id)
        if current in OPEN_STATUSES and desired != "running":
            project.deployments.update(dep_id, {"status": desired}, **OPTS)
            return outbox.Result(delivered=True, remote_id=dep_id)
    version = ctx.version
    created = project.deployments.create(
        {
            "environment": ctx.environment,
            "sha": version["sha"],
            "ref": version["ref"],
            "tag": bool(version.get("tag", False)),
            "status": desired,
        },
        **OPTS,
    )
    return outbox.Result(delivered=True, remote_id=str(created.attributes["id"]))


def qa_issue(gl: gitlab.Gitlab, record: Body, ctx: Context) -> outbox.Result:
    project = gl.projects.get(record["target"], lazy=True)
    version = ctx.version
    title = (
        f"{ctx.environment}: post-deploy migrations of {version['ref']} "
        f"{version['sha'][:11]} {ctx.marker}"
    )
    for issue in project.issues.list(search=ctx.marker, in_="title", get_all=False, **OPTS):
        if ctx.marker in issue.attributes.get("title", ""):
            return outbox.Result(delivered=True, remote_id=str(issue.attributes["iid"]))
    issue = project.issues.create(
        {
            "title": title,
            "description": (
                f"Post-deployment migrations ran in `{ctx.environment}` for `{version['ref']}` "
                f"(`{version['sha']}`) and succeeded. Please run QA."
            ),
            "labels": "QA,post-deploy-migrations",
        },
        **OPTS,
    )
    return outbox.Result(delivered=True, remote_id=str(issue.attributes["iid"]))


def mr_labels(gl: gitlab.Gitlab, record: Body, ctx: Context) -> outbox.Result:
    deployment = next(
        (
            r
            for r in ctx.records
            if r.get("sink") == policy.GITLAB_DEPLOYMENT and r.get("target") == record["target"]
        ),
        None,
    )
    if deployment is None:
        return outbox.Result(
            error=f"no GitLabDeployment sink for project {record['target']}", permanent=True
        )
    if deployment.get("state") != outbox.DELIVERED or not deployment.get("remoteId"):
        return outbox.Result(waiting=True)
    label = ctx.sink(policy.MR_LABELS)["label"]
    project = gl.projects.get(record["target"], lazy=True)
    dep = project.deployments.get(deployment["remoteId"], lazy=True)
    labelled = 0
    for mr in dep.mergerequests.list(get_all=True, **OPTS):
        if label not in (mr.attributes.get("labels") or []):
            project.mergerequests.update(mr.attributes["iid"], {"add_labels": label}, **OPTS)
        labelled += 1
    return outbox.Result(delivered=True, remote_id=f"{labelled} merge request(s)")


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
