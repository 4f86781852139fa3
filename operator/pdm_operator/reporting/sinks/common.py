"""What every sink shares: the delivery's context, GitLab's refusals in words a
person can act on, Retry-After, token scrubbing, and one attempt that never
raises (``attempt``).

Each function blocks for at most a few calls of ``timeout`` seconds and
returns a ``Result``; nothing here retries or sleeps: scheduling is the
outbox's. python-gitlab is told not to obey 429s by itself (it would sleep
in this thread); the answer's ``Retry-After`` is read from the session and
handed back instead. Tokens are read from their Secrets for each delivery
and never leave the sinks: error texts are scrubbed of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import gitlab
import requests
from gitlab import exceptions as glexc

from pdm_operator.http_answers import retry_after, scrub
from pdm_operator.model import Body
from pdm_operator.reporting.records import Result

#: Answers that retrying cannot change. 429 and 5xx are retried; so are
#: timeouts, dropped connections and 401 (a rotated token heals it).
PERMANENT_STATUSES = (400, 403, 404, 405, 409, 410, 422)


def gitlab_environment(spec: Body) -> str:
    """The GitLab environment the deployments are recorded on.

    GitLab.com records post-deployment migration runs on ``db/gstg`` and
    ``db/gprd``, apart from the application's ``gstg``/``gprd`` deployments
    (gitlab-com/gl-infra/delivery#2363, gitlab-org/release-tools!1864).
    """
    tracking = spec.get("tracking") or {}
    return str((tracking.get("gitlab") or {}).get("environment") or f"db/{spec['environment']}")


def version(spec: Body, sink: Body, project: str | None = None) -> Body | None:
    """The version (ref, sha, tag) a sink records for ``project``.

    A deployment's ref and sha must exist in the project it is created in
    (gitlabhq ``lib/api/deployments.rb``: 400 "The branch or tag does not
    exist"; ``app/models/deployment.rb`` ``valid_sha``), so each target may
    carry its own; the shared ``spec.tracking.version`` is the fallback.
    """
    for target in sink.get("targets") or []:
        if target.get("project") == project and target.get("version"):
            return dict(target["version"])
    if sink.get("version"):
        return dict(sink["version"])
    shared = (spec.get("tracking") or {}).get("version")
    return dict(shared) if shared else None


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
        return gitlab_environment(self.spec)

    def version(self, kind: str, project: str) -> Body:
        """The ref and sha recorded in ``project`` (admission makes sure there is one)."""
        found = version(self.spec, self.sink(kind), project)
        if found is None:
            raise Refusal(f"no version (ref, sha) for {kind} {project}", permanent=True)
        return found

    @property
    def marker(self) -> str:
        meta = self.migration["metadata"]
        return f"[pdm {meta['namespace']}/{meta['name']} {str(meta.get('uid', ''))[:8]}]"

    def sink(self, kind: str, match: Callable[[Body], bool] | None = None) -> Body:
        """The spec's first sink of type ``kind`` (that ``match`` accepts)."""
        for sink in self.spec["tracking"]["sinks"]:
            if sink["type"] == kind and (match is None or match(sink)):
                return dict(sink)
        raise KeyError(kind)


class Captured:
    """The headers of the last HTTP answer a session received (for Retry-After)."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.headers = dict(response.headers)


def attempt(  # noqa: PLR0911 - one return per failure kind
    token_of: Callable[[], str], call: Callable[[str], Result], timeout: float
) -> Result:
    """One attempt: ``call`` with the token ``token_of`` reads; never raises.

    Every failure becomes a Result whose error names it, scrubbed of the
    token: permanent for an answer retrying cannot change, with the server's
    Retry-After for 429 and 5xx.
    """
    token = ""
    try:
        token = token_of()
        return call(token)
    except Refusal as e:
        message = scrub(str(e), token)
        if e.code == 429 or (e.code is not None and e.code >= 500):
            return Result(error=message, retry_after=retry_after(e.headers))
        return Result(error=message, permanent=e.permanent or e.code in PERMANENT_STATUSES)
    except TokenError as e:
        return Result(error=str(e))
    except requests.Timeout:
        return Result(error=f"no answer within {timeout:.0f}s")
    except requests.TooManyRedirects:
        # GitLab's API does not redirect; a proxy or a wrong URL (http for
        # https) does, and the token would go along (below).
        return Result(
            error="GitLab answered with a redirect, which is not followed (the token would "
            "go with it): spec.tracking.gitlab.url must be GitLab's own base URL"
        )
    except requests.ConnectionError as e:
        return Result(error=scrub(f"connection failed: {type(e).__name__}", token))
    except Exception as e:  # noqa: BLE001 - a delivery never takes the reporter down
        return Result(error=scrub(f"{type(e).__name__}: {e}", token))


GitLabCall = Callable[[gitlab.Gitlab, Body, Context, Captured], Result]


def through_gitlab(record: Body, ctx: Context, call: GitLabCall) -> Result:
    """One attempt at ``record`` with a GitLab client made for it."""

    def with_client(token: str) -> Result:
        captured = Captured()
        session = requests.Session()
        # requests follows a redirect to another host keeping python-gitlab's
        # PRIVATE-TOKEN header (it strips only Authorization, sessions.py
        # rebuild_auth): never follow one.
        session.max_redirects = 0
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
            with explained(record["sink"], record["target"], captured):
                return call(gl, record, ctx, captured)
        finally:
            session.close()

    return attempt(ctx.gitlab_token, with_client, ctx.timeout)


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
    "create the note": (
        "the ability create_note on the issue (and the Reporter role for an internal note)"
    ),
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


def token_user_id(gl: gitlab.Gitlab) -> Any:
    """The id of the token's user (``GET /user``), once per delivery: what a
    sink made is recognised by its author before anything is created again."""
    if gl.user is None:
        gl.auth()
    return (gl.user.attributes if gl.user is not None else {}).get("id")
