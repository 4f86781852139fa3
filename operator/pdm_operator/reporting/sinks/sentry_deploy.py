"""SentryDeploy: after a successful run, a deploy of the Sentry release
named, once (it is named after the migration's uid and looked up by that
name before one is created). Sentry's API through requests: Sentry has no
maintained Python client for it."""

from __future__ import annotations

import requests

from pdm_operator.http_answers import retry_after, scrub
from pdm_operator.model import Body
from pdm_operator.reporting.records import Result
from pdm_operator.reporting.sinks.common import (
    PERMANENT_STATUSES,
    Context,
    attempt,
)

TYPE = "SentryDeploy"
DEFAULTS = {"Regular": (True, False), "Rollback": (True, False)}


def targets(sink: Body, spec: Body, final: str) -> list[tuple[str, str]]:
    return [(f"{sink['org']}/{sink['release']}", "created")] if final == "success" else []


def deliver(record: Body, ctx: Context) -> Result:
    target = record["target"]
    sink = ctx.sink(TYPE, match=lambda s: f"{s['org']}/{s['release']}" == target)
    return attempt(
        lambda: ctx.sentry_token(sink),
        lambda token: create_once(record, ctx, sink, token),
        ctx.timeout,
    )


def create_once(record: Body, ctx: Context, sink: Body, token: str) -> Result:
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
                    return Result(delivered=True, remote_id=str(deploy.get("id")))
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
            return Result(delivered=True, remote_id=str(resp.json().get("id")))
        return _sentry_error(resp, token)


def _sentry_error(resp: requests.Response, token: str) -> Result:
    message = scrub(f"Sentry answered {resp.status_code}: {resp.text[:200]}", token)
    if resp.status_code == 429 or resp.status_code >= 500:
        return Result(error=message, retry_after=retry_after(dict(resp.headers)))
    return Result(error=message, permanent=resp.status_code in PERMANENT_STATUSES)
