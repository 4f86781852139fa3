"""Reads of GitLab's Deployments API for the GitLab deployments gate (effects).

``deployments`` says what to ask and judges the answers; this module asks.
Its one promise: :meth:`DeploymentsReader.read` never raises and never
blocks a pass thread past its timeout. Every failure becomes an
:class:`~pdm_operator.deployments.Unreachable` that says what failed, and the
gate stays shut on it. One that only a person ends is marked ``needs_action``
(the gate then holds with ``GitLabRefused``, not ``GitLabUnreachable``): the
token could not be read (but for the API server failing, ``errors.Transient``),
GitLab answered 401, 403 or 404, or a redirect. A timeout, no connection, a
5xx or a 429 may pass by itself.

Why a cache of answers and errors, keyed by GitLab, project, GitLab
environment and token: every held migration of an environment asks the same
question on each of its looks, from the passes' thread pool. Without it, ten
migrations held behind a GitLab that is down would make ten attempts per
look, each waiting for its timeout in a pass thread, and a GitLab answering
429 would be asked again at once by each. With it a GitLab environment costs
one attempt per TTL whatever the number of migrations, and concurrent
readers of one key wait for the one attempt under way instead of making
theirs. A 429's Retry-After keeps the error for that long (up to
:data:`MAX_BACKOFF`). The cache keeps a digest of the token, not the token.

Why python-gitlab is told ``obey_rate_limit=False, max_retries=0`` and
``retry_transient_errors=False`` on each call: it would otherwise sleep in
this thread, Retry-After seconds for a 429 (python-gitlab ``gitlab/utils.py``
``Retry.handle_retry_on_status``) and with backoff for 5xx and timeouts; the
cache is the only retry here. The token goes only to the URL its owner named:
``keep_base_url`` keeps pagination links on it (a GitLab behind a proxy may
answer with another base URL, ``gitlab/client.py`` ``_check_url``), and no
redirect is followed (requests would follow one to another host with the
PRIVATE-TOKEN header, ``requests/sessions.py`` ``rebuild_auth`` strips only
Authorization).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import gitlab
import requests
from gitlab import exceptions as glexc

from pdm_operator import deployments, errors, metrics
from pdm_operator.deployments import Listing, Unreachable, Watch
from pdm_operator.http_answers import retry_after, scrub
from pdm_operator.when import ISSUES_SHOWN, Issues, LockSource

#: Seconds one HTTP call may take (connect, then each read).
DEFAULT_TIMEOUT = 5.0
#: Seconds an answer, or an error, is reused.
DEFAULT_TTL = 15.0
#: The longest a 429's Retry-After keeps the error cached (a GitLab asking for
#: hours would otherwise keep the gate shut for hours after it recovers).
MAX_BACKOFF = 300.0
#: Never let python-gitlab sleep or retry in a pass thread.
_OPTS: dict[str, Any] = {"obey_rate_limit": False, "max_retries": 0}
#: The longest piece of GitLab's own error text kept in a message.
_DETAIL = 200

Answer = Listing | Issues | Unreachable


@dataclass(frozen=True)
class _Question:
    """One read: of which GitLab and project, what (a part of the cache key), under
    which metric label, the calls (``ask``), and the field that names the URL."""

    url: str
    project: str
    what: str
    metric: str
    ask: Callable[[Any], Listing | Issues]
    field: str


def _detail(raw: object, token: str) -> str:
    text = " ".join(str(raw).split())
    if len(text) > _DETAIL:
        text = text[:_DETAIL] + "…"
    return scrub(text, token)


#: GitLab's answers that no later attempt changes until someone acts (the token, its
#: user's access, the project's path).
_REFUSALS = frozenset({401, 403, 404})


@dataclass(frozen=True)
class _Failure:
    reason: str  # the metric's label: bounded
    message: str
    retry_after: float | None = None
    needs_action: bool = False


def _explain(
    error: glexc.GitlabError,
    project: str,
    token: str,
    retry_after: float | None,
    noun: str = "deployments",
) -> _Failure:
    """GitLab's refusal in words a person can act on."""
    code = error.response_code
    detail = _detail(error.error_message, token)
    if code is None:
        return _Failure("error", f"GitLab's answer could not be read: {detail}")
    said = f"GitLab answered {code}"
    if code == 401:
        message = (
            f"{said}: the token is not accepted (expired, revoked, or the wrong Secret or key)"
        )
    elif code == 403:
        message = (
            f"{said}: the token's user may not read the {noun} of {project} (a token "
            "with read_api, of a user who may see them)"
        )
    elif code == 404:
        message = f"{said}: the project {project} does not exist, or the token's user cannot see it"
    elif code == 429:
        wait = "" if retry_after is None else f", Retry-After {retry_after:.0f}s"
        message = f"{said} Too Many Requests{wait}"
    else:
        message = f"{said}: {detail}"
    return _Failure(f"http_{code}", message, retry_after, needs_action=code in _REFUSALS)


class DeploymentsReader:
    """Reads a GitLab environment's deployments, with a TTL cache of answers and errors.

    Thread-safe: passes call :meth:`read` from a thread pool. ``clock`` is
    monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, str, str], tuple[Answer, float]] = {}
        #: One lock per key, held during its attempt. Keys are few (GitLab
        #: environments times tokens), so they are kept.
        self._attempts: dict[tuple[str, str, str, str], threading.Lock] = {}

    def read(self, watch: Watch, environment: str, token: Callable[[], str]) -> Answer:
        """``environment``'s latest success and newest deployments, or why they could
        not be read. ``token`` reads the token (its Secret); never raises."""

        def ask(project: Any) -> Listing:
            latest = project.deployments.list(
                **deployments.latest_success_query(environment), get_all=False, **_OPTS
            )
            newest = project.deployments.list(
                **deployments.newest_query(environment), get_all=False, **_OPTS
            )
            return Listing(
                latest_success=dict(latest[0].asdict()) if latest else None,
                newest=[dict(d.asdict()) for d in newest],
            )

        question = _Question(
            watch.url, watch.project, f"deployments {environment}", environment, ask,
            "spec.gitlabDeployments.url",
        )  # fmt: skip
        return self._read(question, token)

    def read_issues(self, source: LockSource, token: Callable[[], str]) -> Issues | Unreachable:
        """The open issues of ``source.project`` carrying every one of its labels (the
        change requests that lock the environment), or why they could not be read."""

        def ask(project: Any) -> Issues:
            found = project.issues.list(
                state="opened",
                labels=",".join(source.labels),
                order_by="created_at",
                sort="asc",
                per_page=ISSUES_SHOWN,
                get_all=False,
                **_OPTS,
            )
            return Issues([dict(i.asdict()) for i in found])

        question = _Question(
            source.url, source.project, "issues " + ",".join(source.labels), "change-lock", ask,
            "spec.changeLockFrom.url",
        )  # fmt: skip
        return cast("Issues | Unreachable", self._read(question, token))  # what ask returns

    def _read(self, question: _Question, token: Callable[[], str]) -> Answer:
        try:
            secret = token()
            # The cache keeps a digest, not the token.
            digest = hashlib.sha256(secret.encode()).hexdigest()
        except Exception as e:  # noqa: BLE001 - the gate holds on any failure, never raises
            metrics.gitlab_gate_error(question.metric, "token")
            # A missing Secret or key, or RBAC, waits for someone; the API server may recover.
            return Unreachable(
                f"the token could not be read ({type(e).__name__}: {e})",
                needs_action=not isinstance(e, errors.Transient),
            )
        key = (question.url.rstrip("/"), question.project, question.what, digest)
        cached = self._cached(key)
        if cached is not None:
            return cached
        with self._attempt_lock(key):
            cached = self._cached(key)  # the attempt this one waited for
            if cached is not None:
                return cached
            answer, keep = self._attempt(question, secret)
            now = self.clock()
            with self._lock:
                for old in [k for k, (_, until) in self._cache.items() if until <= now]:
                    del self._cache[old]
                self._cache[key] = (answer, now + keep)
            return answer

    def _cached(self, key: tuple[str, str, str, str]) -> Answer | None:
        with self._lock:
            found = self._cache.get(key)
        if found is None or found[1] <= self.clock():
            return None
        return found[0]

    def _attempt_lock(self, key: tuple[str, str, str, str]) -> threading.Lock:
        with self._lock:
            return self._attempts.setdefault(key, threading.Lock())

    def _attempt(self, question: _Question, token: str) -> tuple[Answer, float]:
        """One attempt: the reads, and how long to keep what came of them."""
        failure = self._call(question, token)
        if not isinstance(failure, _Failure):
            return failure, self.ttl
        metrics.gitlab_gate_error(question.metric, failure.reason)
        keep = self.ttl
        if failure.retry_after is not None:
            keep = max(keep, min(failure.retry_after, MAX_BACKOFF))
        return Unreachable(scrub(failure.message, token), failure.needs_action), keep

    def _call(self, question: _Question, token: str) -> Listing | Issues | _Failure:
        headers: dict[str, str] = {}

        def keep_headers(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            headers.clear()
            headers.update(response.headers)

        session = requests.Session()
        session.hooks["response"].append(keep_headers)
        # requests follows a GET's redirect to another host with python-gitlab's
        # PRIVATE-TOKEN header (it strips only Authorization, ``rebuild_auth``).
        session.max_redirects = 0
        try:
            gl = gitlab.Gitlab(
                question.url,
                private_token=token,
                timeout=self.timeout,
                session=session,
                retry_transient_errors=False,
                keep_base_url=True,
            )
            return question.ask(gl.projects.get(question.project, lazy=True))
        except requests.TooManyRedirects as e:
            where = "" if e.response is None else e.response.headers.get("Location", "")
            return _Failure(
                "redirect",
                f"GitLab answered with a redirect to {_detail(where, token)!r}, which is not "
                f"followed: the token is sent only to {question.url}; set "
                f"{question.field} to the URL GitLab answers on",
                needs_action=True,
            )
        except requests.Timeout:
            return _Failure("timeout", f"no answer within {self.timeout:g}s")
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            return _Failure("connection", f"connection failed: {type(e).__name__}")
        except glexc.GitlabError as e:
            return _explain(
                e, question.project, token, retry_after(headers), question.what.split()[0]
            )
        except Exception as e:  # noqa: BLE001 - the gate holds on any failure, never raises
            return _Failure("error", f"{type(e).__name__}: {_detail(e, token)}")
        finally:
            session.close()
