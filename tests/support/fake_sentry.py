"""A fake Sentry: a real HTTP server speaking the release-deploys part of its API.

Endpoints (``Authorization: Bearer <token>``; without it 401 ``{"detail":
"Authentication credentials were not provided."}``, with a wrong one 401
``{"detail": "Invalid token"}``):

- ``POST /api/0/organizations/{org}/releases/{version}/deploys/``: create a deploy
  ("Create a New Deploy for an Organization"); 201 with the deploy;
- ``GET /api/0/organizations/{org}/releases/{version}/deploys/``: "List a
  Release's Deploys".

Releases exist only when a test adds them (:meth:`FakeSentry.add_release`, or
``releases=`` in the constructor); an unknown organization or release is 404
``{"detail": "The requested resource does not exist"}``. Other paths (including
these without their trailing slash) are 404 ``{"detail": "Not found"}``.

As in Sentry's ``ReleaseDeploysEndpoint`` and ``DeploySerializer``:

- a release belongs to projects (default: one, :data:`DEFAULT_PROJECT`); a deploy
  goes to the ``projects`` given, or to all of the release's projects;
- validation errors are DRF's, field by field: 400 ``{"environment": ["This field
  is required."]}``, ``{"dateFinished": ["Datetime has wrong format. ..."]}``;
- ``dateFinished`` defaults to now; dates are rendered like
  ``2024-05-01T10:00:00.000000Z``;
- the list holds, for each (project, environment) of the release, only its LAST
  deploy, newest ``dateFinished`` first. :meth:`FakeSentry.deploys` gives them all.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote

from tests.support.faults import FakeServer, Request, Response, reason

DEFAULT_TOKEN = "sntrys-test-token"
DEFAULT_PROJECT = "default"
NOT_FOUND = {"detail": "The requested resource does not exist"}
ROUTE_NOT_FOUND = {"detail": "Not found"}
NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}
INVALID_TOKEN = {"detail": "Invalid token"}

REQUIRED = "This field is required."
DATETIME_FORMAT_ERROR = (
    "Datetime has wrong format. Use one of these formats instead: "
    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)
MAX_LENGTH = 64
_ENVIRONMENT_NAME = re.compile(r"^[^\n\r\f/]*$")
_URL = re.compile(r"^(?:https?|ftps?)://[^\s/?#]+(?:[/?#]\S*)?$", re.IGNORECASE)
_ROUTE = re.compile(r"^/api/0/organizations/(?P<org>[^/]+)/releases/(?P<version>[^/]+)/deploys/$")


def _render_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Deploy:
    id: int
    environment: str
    name: str | None
    url: str | None
    date_started: datetime | None
    date_finished: datetime
    projects: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "environment": self.environment,
            "dateStarted": _render_time(self.date_started),
            "dateFinished": _render_time(self.date_finished),
            "name": self.name,
            "url": self.url,
        }


@dataclass
class _Release:
    org: str
    version: str
    projects: list[str]
    deploys: list[_Deploy] = field(default_factory=list)
    last: dict[tuple[str, str], _Deploy] = field(default_factory=dict)  # (project, env) -> deploy


class _Invalid(Exception):
    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


class FakeSentry(FakeServer):
    """Sentry's release deploys API, in memory; see the module docstring."""

    name: ClassVar[str] = "fake-sentry"

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        releases: Iterable[tuple[str, str] | tuple[str, str, Iterable[str]]] = (),
    ) -> None:
        super().__init__()
        self.token = token
        self._state = threading.RLock()
        self._releases: dict[tuple[str, str], _Release] = {}
        self._deploy_ids = itertools.count(1)
        for release in releases:
            org, version, *rest = release
            self.add_release(org, version, *rest)

    def error_body(self, status: int) -> Any:
        return {"detail": f"{status} {reason(status)}".strip()}

    # -- helpers for tests (Python, not HTTP) -----------------------------------

    def add_release(
        self, org: str, version: str, projects: Iterable[str] = (DEFAULT_PROJECT,)
    ) -> None:
        with self._state:
            if (org, version) not in self._releases:
                self._releases[org, version] = _Release(org, version, list(projects))

    def deploys(self, org: str, version: str) -> list[dict[str, Any]]:
        """Every deploy of the release, oldest first (the API lists only the last ones)."""
        with self._state:
            release = self._releases.get((org, version))
            return [] if release is None else [d.to_json() for d in release.deploys]

    # -- HTTP ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        match = _ROUTE.match(request.path)
        if match is None or request.method not in {"GET", "POST"}:
            return Response(404, ROUTE_NOT_FOUND)
        refused = self._refuse(request)
        if refused is not None:
            return refused
        key = (unquote(match["org"]), unquote(match["version"]))
        with self._state:
            release = self._releases.get(key)
            if release is None:
                return Response(404, NOT_FOUND)
            if request.method == "GET":
                return self._list(release)
            try:
                return self._create(release, _body(request))
            except _Invalid as e:
                return Response(400, e.errors)

    def _refuse(self, request: Request) -> Response | None:
        """The 401 for a request without the right bearer token."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return Response(401, NO_CREDENTIALS)
        if credentials.strip() != self.token:
            return Response(401, INVALID_TOKEN)
        return None

    def _list(self, release: _Release) -> Response:
        last = sorted(
            {d.id: d for d in release.last.values()}.values(),
            key=lambda d: (d.date_finished, d.id),
            reverse=True,
        )
        return Response(200, [d.to_json() for d in last])

    def _create(self, release: _Release, data: dict[str, Any]) -> Response:
        errors: dict[str, list[str]] = {}
        name = _text(data, "name", errors, required=False)
        environment = _text(data, "environment", errors, required=True)
        if environment is not None and not _ENVIRONMENT_NAME.match(environment):
            errors["environment"] = ["Invalid value for environment"]
        url = _text(data, "url", errors, required=False)
        if url and not _URL.match(url):
            errors["url"] = ["Enter a valid URL."]
        started = _date(data, "dateStarted", errors)
        finished = _date(data, "dateFinished", errors)
        projects = _projects(data, errors, known=self._org_projects(release.org))
        if errors:
            raise _Invalid(errors)
        assert environment is not None
        if projects is None:
            projects = list(release.projects)
        invalid = sorted(set(projects) - set(release.projects))
        if invalid:
            message = f"Invalid projects ({', '.join(invalid)}) for release {release.version}"
            raise _Invalid({"detail": message})
        deploy = _Deploy(
            id=next(self._deploy_ids),
            environment=environment,
            name=name,
            url=url,
            date_started=started,
            date_finished=finished or datetime.now(UTC),
            projects=projects,
        )
        release.deploys.append(deploy)
        for project in projects:
            release.last[project, environment] = deploy
        return Response(201, deploy.to_json())

    def _org_projects(self, org: str) -> set[str]:
        return {p for r in self._releases.values() if r.org == org for p in r.projects}


def _body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not request.body:
        return {}
    if content_type == "application/x-www-form-urlencoded":
        form = parse_qs(request.body.decode(), keep_blank_values=True)
        return {k: v if k == "projects" else v[-1] for k, v in form.items()}
    try:
        data = json.loads(request.body)
    except ValueError as e:
        raise _Invalid({"detail": f"JSON parse error - {e}"}) from e
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise _Invalid(
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {kind}."]}
        )
    return data


def _text(
    data: dict[str, Any], name: str, errors: dict[str, list[str]], *, required: bool
) -> str | None:
    """A DRF CharField(max_length=64), allow_blank/allow_null when optional."""
    if name not in data:
        if required:
            errors[name] = [REQUIRED]
        return None
    value = data[name]
    if value is None:
        if required:
            errors[name] = ["This field may not be null."]
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        errors[name] = ["Not a valid string."]
        return None
    text = str(value).strip()
    if not text and required:
        errors[name] = ["This field may not be blank."]
        return None
    if len(text) > MAX_LENGTH and name != "url":
        errors[name] = [f"Ensure this field has no more than {MAX_LENGTH} characters."]
        return None
    return text


def _date(data: dict[str, Any], name: str, errors: dict[str, list[str]]) -> datetime | None:
    value = data.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        errors[name] = [DATETIME_FORMAT_ERROR]
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _projects(data: dict[str, Any], errors: dict[str, Any], known: set[str]) -> list[str] | None:
    if "projects" not in data:
        return None
    value = data["projects"]
    if not isinstance(value, list):
        errors["projects"] = [f'Expected a list of items but got type "{type(value).__name__}".']
        return None
    if not value:
        errors["projects"] = ["This list may not be empty."]
        return None
    bad = {str(i): ["Invalid project"] for i, slug in enumerate(value) if slug not in known}
    if bad:
        errors["projects"] = bad
        return None
    return _unique(value)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))
