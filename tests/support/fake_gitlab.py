"""A fake GitLab: a real HTTP server speaking a subset of the REST API v4.

Start it, point ``gitlab.Gitlab(fake.url, private_token=fake.token)`` at it::

    with FakeGitLab() as fake:
        gl = gitlab.Gitlab(fake.url, private_token=fake.token, timeout=5)
        project = gl.projects.get("gitlab-org/gitlab", lazy=True)
        project.deployments.create({...})

Endpoints (under ``/api/v4``; every request needs ``PRIVATE-TOKEN: <token>`` or
``Authorization: Bearer <token>``, else 401 ``{"message": "401 Unauthorized"}``):

- ``GET /user`` (the token's user)
- ``GET /projects/:id``
- ``GET|POST /projects/:id/deployments``, ``GET|PUT /projects/:id/deployments/:deployment_id``
- ``GET /projects/:id/deployments/:deployment_id/merge_requests``
- ``GET|PUT /projects/:id/merge_requests/:merge_request_iid``
- ``GET|POST /projects/:id/issues``, ``GET /projects/:id/issues/:issue_iid``
- ``GET|POST /projects/:id/issues/:issue_iid/notes`` (below)

``:id`` is a numeric id or a URL-encoded path (``gitlab-org%2Fgitlab``); a project
is created on the first reference by path (numeric ids from 1). Anything else
is 404 ``{"message": "404 Not Found"}``.

Where the documentation is silent, this follows GitLab's code (``lib/api/deployments.rb``,
``Deployments::CreateService``, ``Deployment``'s state machine, ``DeploymentsFinder``):

- parameter errors are Grape's: 400 ``{"error": "environment is missing, sha is missing"}``,
  ``{"error": "status does not have a valid value"}``, ``{"error": "tag is invalid"}``;
- creating a deployment equal (ref, tag, sha, status) to the environment's last
  successful one returns that one instead of a new one;
- a status update the state machine refuses (the current status again, or
  ``running`` after anything but ``created`` or ``blocked``, :func:`may_move`) is
  400 with :func:`transition_error` as body; updating a CI deployment is 403
  :data:`CI_DEPLOYMENT_FORBIDDEN`; a test moves any deployment (a CI one's
  ``blocked`` approved, its job running) with :meth:`FakeGitLab.move_deployment`;
- ``finished_after``/``finished_before`` filter too, and the finder's pairing
  rules for ``updated_*``/``finished_*`` filters and sorting apply
  (``app/finders/deployments_finder.rb``: an ``updated_*`` filter needs
  ``order_by=updated_at``);
- a project has a repository: a linear history of commits on its default
  branch, other refs and tags (:meth:`FakeGitLab.add_commits`). Creating a
  deployment checks, in ``lib/api/deployments.rb``'s order: the abilities
  ``create_deployment`` and ``create_environment`` on the project (403
  ``{"message": "403 Forbidden"}``), that ``ref`` resolves to a commit (400
  ``{"message": {"ref": ["The branch or tag does not exist"]}}``), the
  environment name (``Gitlab::Regex.environment_name_regex``, 255 characters;
  the environment is created on first use), then ``Deployment#valid_sha`` (400
  ``{"message": {"sha": ["The commit does not exist"]}}``, the environment
  already created);
- a deployment records its creator (``user``); ``deployable`` is set only for
  deployments made by CI;
- merge requests are linked to a deployment asynchronously after it reaches
  ``success`` (``Deployments::LinkMergeRequestWorker`` ->
  ``Deployments::LinkMergeRequestsService``): those merged by the commits
  after the previous successful deployment of the environment, or, for the
  first one, every merged merge request into its ref; an environment in a
  folder (``db/gprd``) is linked only when its tier guessed from the name is
  production or staging (``Environment#should_link_to_merge_requests?``), and
  never with ``legacy_folder_linking`` (older GitLab skipped every foldered
  environment);
- abilities a test takes away (:meth:`FakeGitLab.forbid`) answer 403
  ``{"message": "403 Forbidden"}`` where GitLab authorizes them.

Issue notes follow ``lib/api/notes.rb`` and ``API::Helpers::NotesHelpers``:

- the parameters first (Grape): ``body`` is required (400 ``{"error": "body is
  missing"}``), ``internal`` a boolean; the list's ``order_by``
  (``created_at``|``updated_at``, default ``created_at``), ``sort``
  (``asc``|``desc``, default ``desc``, ``id`` in the same direction breaking
  ties) and ``activity_filter`` (``all_notes``|``only_comments``|
  ``only_activity``) must be among their values; ``per_page`` (at most 100)
  and ``page`` with ``X-Next-Page``, ``X-Total`` and the ``Link`` header;
- then the ``notes_create`` rate limit (:attr:`FakeGitLab.notes_rate_limit`:
  429 ``{"message": {"error": "This endpoint has been requested too many
  times. Try again later."}}`` once that many notes were created, with
  ``Retry-After`` if :attr:`FakeGitLab.notes_retry_after` is set);
- then the issue: 404 ``{"message": "404 Issue Not Found"}`` when there is no
  such iid; then ``create_note`` (403);
- then ``Note``'s validations (``Notes::ActiveRecord``): a blank body is 400
  ``{"message": "400 Bad request - Note {:note=>[\"can't be blank\"]}"}``, one
  over ``MAX_NOTE_LENGTH`` (1,000,000, ``Gitlab::Database::MAX_TEXT_SIZE_LIMIT``)
  ``... {:note=>[\"is too long (maximum is 1000000 characters)\"]}"}``;
- ``created_at`` is dropped (the token's user is no administrator or owner:
  ``set_note_created_at``);
- quick actions (``Notes::QuickActionsService``): a line that starts with
  ``/close``, ``/reopen``, ``/label``, ``/unlabel``, ``/lock`` or ``/assign`` is
  executed on the issue and taken out of the note (recorded in
  :meth:`FakeGitLab.quick_actions`); a note of commands only is not saved
  (202 with ``commands_changes`` and ``summary``).

Ids are global and start in distinct ranges (deployments 1001, environments 501,
merge requests 2001, issues 3001, CI jobs 4001, notes 5001) so that an id is
never mistaken for an iid.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlencode

from tests.support.faults import FakeServer, Request, Response

API_PREFIX = "/api/v4"
DEFAULT_TOKEN = "glpat-test-token"
BOT_USER = {"id": 1, "username": "pdm-bot", "name": "PDM Bot", "state": "active"}
#: Someone else with access to the same projects (a release manager, other tooling).
OTHER_USER = {"id": 2, "username": "release-tools", "name": "Release Tools", "state": "active"}

DEPLOYMENT_STATUSES = ("created", "running", "success", "failed", "canceled", "skipped", "blocked")
API_DEPLOYMENT_STATUSES = ("running", "success", "failed", "canceled")
FINISHED_STATUSES = ("success", "failed", "canceled")
DEPLOYMENT_ORDER_BY = ("id", "iid", "created_at", "updated_at", "finished_at", "ref")
SORT_DIRECTIONS = ("asc", "desc")
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20

# PUT .../deployments/:id: the state machine event each status fires.
STATUS_EVENTS = {"running": "run", "success": "succeed", "failed": "drop", "canceled": "cancel"}
# The body of a refused transition (e.g. success -> success) is
# {"message": {"status": [TRANSITION_ERROR.format(event=...)]}}, see transition_error().
TRANSITION_ERROR = 'cannot transition via "{event}"'
CI_DEPLOYMENT_FORBIDDEN = (
    "403 Forbidden - Deployments created using GitLab CI can not be updated using the API"
)
UNAUTHORIZED = {"message": "401 Unauthorized"}
ROUTE_NOT_FOUND = {"message": "404 Not Found"}
RECORD_NOT_FOUND = {"message": "404 Not found"}  # ActiveRecord::RecordNotFound, as GitLab words it
FORBIDDEN = {"message": "403 Forbidden"}
REF_MISSING = {"message": {"ref": ["The branch or tag does not exist"]}}
SHA_MISSING = {"message": {"sha": ["The commit does not exist"]}}
#: Abilities a test can take away (GitLab's names; Developer has them all).
ABILITIES = (
    "create_deployment",
    "create_environment",
    "update_deployment",
    "update_merge_request",
    "create_issue",
    "create_note",
)
#: ``Gitlab::Database::MAX_TEXT_SIZE_LIMIT``: the most characters a note may have.
MAX_NOTE_LENGTH = 1_000_000
ISSUE_NOT_FOUND = {"message": "404 Issue Not Found"}
NOTES_RATE_LIMITED = {
    "message": {"error": "This endpoint has been requested too many times. Try again later."}
}
NOTE_ORDER_BY = ("created_at", "updated_at")
ACTIVITY_FILTERS = ("all_notes", "only_comments", "only_activity")
QUICK_ACTIONS = ("close", "reopen", "label", "unlabel", "lock", "assign")
_QUICK_ACTION = re.compile(r"^/(?P<cmd>[a-z_]+)(?:[ ]+(?P<arg>[^\n]*))?$")
# lib/gitlab/regex.rb: environment_name_regex (no leading or trailing '/').
ENVIRONMENT_NAME = re.compile(r"\A[a-zA-Z0-9_${}. -]([a-zA-Z0-9_/${}. -]*[a-zA-Z0-9_${}. -])?\Z")
ENVIRONMENT_NAME_MESSAGE = (
    "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, "
    "but it cannot start or end with '/'"
)
# Environment#guess_tier, in its order.
_TIERS = (
    ("development", re.compile(r"(dev|review|trunk)", re.I)),
    ("testing", re.compile(r"(test|tst|int|ac(ce|)pt|qa|qc|control|quality)", re.I)),
    ("staging", re.compile(r"(st(a|)g|mod(e|)l|pre|demo|non)", re.I)),
    ("production", re.compile(r"(pr(o|)d|live)", re.I)),
)


def guess_tier(name: str) -> str:
    return next((tier for tier, pattern in _TIERS if pattern.search(name)), "other")


# CI job status of a deployment made by CI, per deployment status.
_JOB_STATUS = {"blocked": "manual"}
# Deployment's state machine (app/models/deployment.rb): the statuses each
# status may be reached from; the others (success, failed, canceled, skipped)
# from any status but their own. finished_at is set on each move to success,
# failed or canceled.
_REACHED_FROM = {
    "running": frozenset({"created", "blocked"}),  # event :run
    "blocked": frozenset({"created"}),  # event :block (a manual job waiting for approval)
    "created": frozenset({"skipped"}),  # event :create (a manual job)
}


def may_move(current: str, status: str) -> bool:
    """Whether Deployment's state machine moves a deployment from ``current`` to ``status``."""
    allowed = _REACHED_FROM.get(status)
    return current in allowed if allowed is not None else current != status


def transition_error(status: str) -> dict[str, Any]:
    """The 400 body GitLab sends when a deployment cannot move to ``status``."""
    event = STATUS_EVENTS.get(status, status)
    return {"message": {"status": [TRANSITION_ERROR.format(event=event)]}}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:24] or "env"


def _split_labels(value: str | Iterable[str]) -> list[str]:
    parts = value.split(",") if isinstance(value, str) else value
    return _dedupe(part.strip() for part in parts if part.strip())


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


class ApiError(Exception):
    """Raised by a route: answer ``status`` with ``body``."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def _bad_request(message: str) -> ApiError:
    return ApiError(400, {"message": f"400 Bad request - {message}"})


class _Params:
    """Grape-style parameter checks: errors gathered in declaration order, then 400."""

    _TRUE: ClassVar[set[str]] = {"1", "on", "t", "true", "y", "yes"}
    _FALSE: ClassVar[set[str]] = {"0", "off", "f", "false", "n", "no"}

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.errors: list[str] = []

    def _get(self, name: str, required: bool) -> Any:
        value = self.raw.get(name)
        if value is None and required:
            self.errors.append(f"{name} is missing")
        return value

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        values: Iterable[str] | None = None,
        default: str | None = None,
    ) -> str | None:
        value = self._get(name, required)
        if value is None or (value == "" and not required):
            return default
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, int | float):
            value = str(value)
        elif not isinstance(value, str):
            self.errors.append(f"{name} is invalid")
            return default
        if values is not None and value not in values:
            self.errors.append(f"{name} does not have a valid value")
            return default
        return value

    def boolean(self, name: str, *, required: bool = False) -> bool | None:
        value = self._get(name, required)
        if value is None or isinstance(value, bool):
            return value
        if str(value).lower() in self._TRUE:
            return True
        if str(value).lower() in self._FALSE:
            return False
        self.errors.append(f"{name} is invalid")
        return None

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self._get(name, required=False)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            self.errors.append(f"{name} is invalid")
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            self.errors.append(f"{name} is invalid")
            return default

    def timestamp(self, name: str) -> datetime | None:
        value = self._get(name, required=False)
        if value is None or value == "":
            return None
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.errors.append(f"{name} is invalid")
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def labels(self, name: str) -> list[str] | None:
        value = self._get(name, required=False)
        if value is None:
            return None
        if isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            return _split_labels(value)
        self.errors.append(f"{name} is invalid")
        return None

    def pagination(self) -> tuple[int, int]:
        page = self.integer("page", default=1)
        per_page = self.integer("per_page", default=DEFAULT_PER_PAGE)
        if per_page == 0:
            self.errors.append("per_page has a value not allowed")
        page = max(page or 1, 1)
        per_page = DEFAULT_PER_PAGE if per_page is None or per_page < 1 else per_page
        return page, min(per_page, MAX_PER_PAGE)

    def check(self) -> None:
        if self.errors:
            raise ApiError(400, {"error": ", ".join(self.errors)})


@dataclass
class _Environment:
    id: int
    name: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "slug": _slug(self.name),
            "external_url": None,
            "created_at": _time(self.created_at),
            "updated_at": _time(self.created_at),
        }


@dataclass
class _Deployment:
    id: int
    iid: int
    environment: _Environment
    ref: str
    sha: str
    tag: bool
    status: str
    created_at: datetime
    updated_at: datetime
    user: dict[str, Any] = field(default_factory=lambda: dict(BOT_USER))
    finished_at: datetime | None = None
    job: dict[str, Any] | None = None  # the CI job (deployable) of a deployment made by CI

    def set_status(self, status: str) -> None:
        now = _now()
        self.status, self.updated_at = status, now
        if status in FINISHED_STATUSES:
            self.finished_at = now
        if self.job is not None:
            self.job["status"] = _JOB_STATUS.get(status, status)
            self.job["finished_at"] = _time(self.finished_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "iid": self.iid,
            "ref": self.ref,
            "sha": self.sha,
            "tag": self.tag,
            "status": self.status,
            "created_at": _time(self.created_at),
            "updated_at": _time(self.updated_at),
            "finished_at": _time(self.finished_at),
            "user": dict(self.user),
            "environment": self.environment.to_json(),
            "deployable": json.loads(json.dumps(self.job)) if self.job is not None else None,
        }


@dataclass
class _MergeRequest:
    id: int
    iid: int
    project_id: int
    title: str
    description: str
    state: str
    labels: list[str]
    created_at: datetime
    updated_at: datetime
    project_path: str
    merge_commit_sha: str | None = None
    target_branch: str = "master"

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "iid": self.iid,
            "project_id": self.project_id,
            "title": self.title,
            "description": self.description,
            "state": self.state,
            "labels": list(self.labels),
            "source_branch": f"mr-{self.iid}",
            "target_branch": self.target_branch,
            "merge_commit_sha": self.merge_commit_sha,
            "created_at": _time(self.created_at),
            "updated_at": _time(self.updated_at),
            "merged_at": _time(self.updated_at) if self.state == "merged" else None,
            "web_url": f"{base_url}/{self.project_path}/-/merge_requests/{self.iid}",
        }


@dataclass
class _Note:
    id: int
    body: str
    author: dict[str, Any]
    created_at: datetime
    issue_id: int
    issue_iid: int
    project_id: int
    internal: bool = False
    system: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": None,
            "body": self.body,
            "attachment": None,
            "author": dict(self.author),
            "created_at": _time(self.created_at),
            "updated_at": _time(self.created_at),
            "system": self.system,
            "noteable_id": self.issue_id,
            "noteable_type": "Issue",
            "project_id": self.project_id,
            "resolvable": False,
            "confidential": self.internal,
            "internal": self.internal,
            "noteable_iid": self.issue_iid,
            "commands_changes": {},
        }


@dataclass
class _Issue:
    id: int
    iid: int
    project_id: int
    title: str
    description: str | None
    labels: list[str]
    created_at: datetime
    project_path: str
    author: dict[str, Any]
    state: str = "opened"
    notes: list[_Note] = field(default_factory=list)
    discussion_locked: bool = False
    commands: list[str] = field(default_factory=list)  # quick actions executed

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "iid": self.iid,
            "project_id": self.project_id,
            "title": self.title,
            "description": self.description,
            "state": self.state,
            "labels": list(self.labels),
            "created_at": _time(self.created_at),
            "updated_at": _time(self.created_at),
            "closed_at": None,
            "author": dict(self.author),
            "confidential": False,
            "web_url": f"{base_url}/{self.project_path}/-/issues/{self.iid}",
        }


@dataclass
class _Project:
    id: int
    path: str
    environments: dict[str, _Environment] = field(default_factory=dict)
    deployments: dict[int, _Deployment] = field(default_factory=dict)
    merge_requests: dict[int, _MergeRequest] = field(default_factory=dict)
    issues: dict[int, _Issue] = field(default_factory=dict)
    links: dict[int, list[int]] = field(default_factory=dict)  # deployment id -> MR iids
    history: list[str] = field(default_factory=list)  # the default branch, oldest first
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha
    forbidden: set[str] = field(default_factory=set)

    def commit(self, ref: str) -> str | None:
        """``Project#commit``: a branch, a tag or a (short) sha of the repository."""
        if ref in self.refs:
            return self.refs[ref]
        if len(ref) >= 7:
            return next((sha for sha in self.history if sha.startswith(ref)), None)
        return None

    def authorize(self, ability: str) -> None:
        if ability in self.forbidden:
            raise ApiError(403, FORBIDDEN)


_Route = tuple[str, re.Pattern[str], str]
_P = r"/projects/(?P<project>[^/]+)"
_ROUTES: list[_Route] = [
    (method, re.compile(f"^{pattern}$"), name)
    for method, pattern, name in [
        ("GET", "/user", "_get_user"),
        ("GET", _P, "_get_project"),
        ("GET", _P + "/deployments", "_list_deployments"),
        ("POST", _P + "/deployments", "_create_deployment"),
        ("GET", _P + "/deployments/(?P<deployment_id>[^/]+)", "_get_deployment"),
        ("PUT", _P + "/deployments/(?P<deployment_id>[^/]+)", "_update_deployment"),
        (
            "GET",
            _P + "/deployments/(?P<deployment_id>[^/]+)/merge_requests",
            "_deployment_merge_requests",
        ),
        ("GET", _P + "/merge_requests/(?P<iid>[^/]+)", "_get_merge_request"),
        ("PUT", _P + "/merge_requests/(?P<iid>[^/]+)", "_update_merge_request"),
        ("GET", _P + "/issues", "_list_issues"),
        ("POST", _P + "/issues", "_create_issue"),
        ("GET", _P + "/issues/(?P<iid>[^/]+)", "_get_issue"),
        ("GET", _P + "/issues/(?P<iid>[^/]+)/notes", "_list_notes"),
        ("POST", _P + "/issues/(?P<iid>[^/]+)/notes", "_create_note"),
    ]
]


class FakeGitLab(FakeServer):
    """GitLab REST API v4 subset, in memory; see the module docstring."""

    name: ClassVar[str] = "fake-gitlab"

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        super().__init__()
        self.token = token
        self.user: dict[str, Any] = dict(BOT_USER)
        self._state = threading.RLock()
        self._projects: dict[int, _Project] = {}
        self._by_path: dict[str, int] = {}
        self._project_ids = itertools.count(1)
        self._environment_ids = itertools.count(501)
        self._deployment_ids = itertools.count(1001)
        self._merge_request_ids = itertools.count(2001)
        self._issue_ids = itertools.count(3001)
        self._job_ids = itertools.count(4001)
        self._note_ids = itertools.count(5001)
        #: Notes the token's user may create before the ``notes_create`` limit
        #: answers 429 (None: no limit), and the Retry-After it sends then.
        self.notes_rate_limit: int | None = None
        self.notes_retry_after: int | None = None
        self._notes_created = 0
        self._commit_ids = itertools.count(1)
        #: Seconds between a deployment's success and its merge requests being linked.
        self.link_delay = 0.2
        #: Older GitLab: environments in a folder (``db/gprd``) are never linked.
        self.legacy_folder_linking = False
        self._timers: list[threading.Timer] = []
        self._held_links: list[tuple[_Project, _Deployment]] | None = None

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        super().stop()

    # -- helpers for tests (Python, not HTTP) -----------------------------------

    def project_id(self, project: str | int) -> int:
        """The numeric id of a project (created if referenced by a new path)."""
        with self._state:
            return self._known(project).id

    def add_commits(
        self,
        project: str | int,
        count: int = 1,
        *,
        ref: str = "master",
        shas: Iterable[str] = (),
    ) -> list[str]:
        """Commits added on ``ref`` (``shas``, or ``count`` new ones); ``ref`` points at the last.

        The default branch's history is linear: "commits between" two
        deployments is a slice of it.
        """
        with self._state:
            proj = self._known(project)
            made = list(shas) or [
                hashlib.sha1(
                    f"{proj.path}:{next(self._commit_ids)}".encode(), usedforsecurity=False
                ).hexdigest()
                for _ in range(count)
            ]
            proj.history.extend(made)
            proj.refs[ref] = made[-1]
            return made

    def add_ref(self, project: str | int, name: str, sha: str) -> None:
        """A branch or tag ``name`` pointing at an existing commit."""
        with self._state:
            proj = self._known(project)
            if sha not in proj.history:
                raise KeyError(f"no commit {sha} in {proj.path}")
            proj.refs[name] = sha

    def head(self, project: str | int, ref: str = "master") -> str:
        with self._state:
            return self._known(project).refs[ref]

    def forbid(self, project: str | int, *abilities: str) -> None:
        """Take abilities away from the token's user in ``project`` (403 where GitLab checks)."""
        unknown = set(abilities) - set(ABILITIES)
        if unknown:
            raise ValueError(f"unknown abilities {sorted(unknown)}")
        with self._state:
            self._known(project).forbidden.update(abilities)

    def add_api_deployment(
        self,
        project: str | int,
        environment: str,
        ref: str,
        sha: str,
        *,
        status: str = "success",
        user: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A deployment someone else made through the API (``user``, no ``deployable``).

        Only the statuses the API creates (``lib/api/deployments.rb``: running,
        success, failed, canceled); a created or blocked one is made by CI
        (:meth:`add_ci_deployment`).
        """
        if status not in API_DEPLOYMENT_STATUSES:
            raise ValueError(
                f"the API creates no {status!r} deployment (only {API_DEPLOYMENT_STATUSES}); "
                "use add_ci_deployment"
            )
        with self._state:
            proj = self._known(project)
            deployment = self._new_deployment(proj, environment, ref, sha, tag=False)
            deployment.user = dict(user or OTHER_USER)
            self._set_status(proj, deployment, status)
            return deployment.to_json()

    def add_ci_deployment(
        self,
        project: str | int,
        environment: str,
        ref: str = "master",
        sha: str = "0" * 40,
        status: str = "success",
    ) -> dict[str, Any]:
        """A deployment made by a CI job (``deployable`` set): the API may not update it."""
        if status not in DEPLOYMENT_STATUSES:
            raise ValueError(f"unknown deployment status {status!r}")
        with self._state:
            proj = self._known(project)
            deployment = self._new_deployment(proj, environment, ref, sha, tag=False)
            now = _time(deployment.created_at)
            deployment.job = {
                "id": next(self._job_ids),
                "status": "created",
                "stage": "deploy",
                "name": f"deploy:{environment}",
                "ref": ref,
                "tag": False,
                "created_at": now,
                "started_at": now,
                "finished_at": None,
                "user": dict(self.user),
                "pipeline": {
                    "id": deployment.id + 4000,
                    "project_id": proj.id,
                    "sha": sha,
                    "ref": ref,
                    "status": "running",
                },
            }
            if status != "created":
                self._set_status(proj, deployment, status)
            return deployment.to_json()

    def move_deployment(
        self, project: str | int, deployment_id: int, status: str
    ) -> dict[str, Any]:
        """Move a deployment to ``status`` as GitLab itself would (its CI job went on, someone
        approved it): any deployment, CI's included, by Deployment's state machine
        (:func:`may_move`; ``ValueError`` for a move it refuses)."""
        if status not in DEPLOYMENT_STATUSES:
            raise ValueError(f"unknown deployment status {status!r}")
        with self._state:
            proj = self._known(project)
            deployment = proj.deployments.get(deployment_id)
            if deployment is None:
                raise KeyError(f"no deployment {deployment_id} in {proj.path}")
            if not may_move(deployment.status, status):
                raise ValueError(
                    f"deployment {deployment_id} cannot move from {deployment.status!r} "
                    f"to {status!r}"
                )
            self._set_status(proj, deployment, status)
            return deployment.to_json()

    def add_merge_request(
        self,
        project: str | int,
        title: str,
        *,
        labels: Iterable[str] = (),
        state: str = "merged",
        description: str = "",
    ) -> int:
        """A merge request; returns its iid. A merged one adds its merge commit to master."""
        merge_commit = self.add_commits(project)[0] if state == "merged" else None
        with self._state:
            proj = self._known(project)
            iid = len(proj.merge_requests) + 1
            now = _now()
            proj.merge_requests[iid] = _MergeRequest(
                id=next(self._merge_request_ids),
                iid=iid,
                project_id=proj.id,
                title=title,
                description=description,
                state=state,
                labels=_split_labels(list(labels)),
                created_at=now,
                updated_at=now,
                project_path=proj.path,
                merge_commit_sha=merge_commit,
            )
            return iid

    def link_merge_requests(
        self, project: str | int, deployment_id: int, iids: Iterable[int]
    ) -> None:
        """Record that the deployment shipped these merge requests."""
        with self._state:
            proj = self._known(project)
            if deployment_id not in proj.deployments:
                raise KeyError(f"no deployment {deployment_id} in {proj.path}")
            iids = list(iids)
            missing = [iid for iid in iids if iid not in proj.merge_requests]
            if missing:
                raise KeyError(f"no merge requests {missing} in {proj.path}")
            linked = proj.links.setdefault(deployment_id, [])
            linked.extend(iid for iid in iids if iid not in linked)

    def add_issue(
        self,
        project: str | int,
        title: str,
        description: str | None = None,
        labels: Iterable[str] = (),
    ) -> dict[str, Any]:
        with self._state:
            return self._new_issue(self._known(project), title, description, list(labels))

    def close_issue(self, project: str | int, iid: int) -> None:
        """Close an issue, as someone does when the change it tracks is over."""
        with self._state:
            proj = self._known(project)
            issue = next(i for i in proj.issues.values() if i.iid == iid)
            issue.state = "closed"

    def add_note(
        self,
        project: str | int,
        iid: int,
        body: str,
        *,
        user: dict[str, Any] | None = None,
        system: bool = False,
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        """A note someone else (``user``, default :data:`OTHER_USER`) wrote, or
        GitLab's own (``system``), at ``created_at`` (default now)."""
        with self._state:
            issue = self._issue(self._known(project), str(iid))
            note = _Note(
                id=next(self._note_ids),
                body=body,
                author=dict(user or OTHER_USER),
                created_at=created_at or _now(),
                issue_id=issue.id,
                issue_iid=issue.iid,
                project_id=issue.project_id,
                system=system,
            )
            issue.notes.append(note)
            return note.to_json()

    def notes(self, project: str | int, iid: int) -> list[dict[str, Any]]:
        """The issue's notes as the API renders them, oldest first."""
        with self._state:
            issue = self._issue(self._known(project), str(iid))
            return [n.to_json() for n in issue.notes]

    def quick_actions(self, project: str | int, iid: int) -> list[str]:
        """The quick actions notes executed on the issue, in order."""
        with self._state:
            return list(self._issue(self._known(project), str(iid)).commands)

    def deployments(self, project: str | int) -> list[dict[str, Any]]:
        """The project's deployments as the API renders them, by id."""
        with self._state:
            proj = self._known(project)
            return [d.to_json() for d in proj.deployments.values()]

    def issues(self, project: str | int) -> list[dict[str, Any]]:
        """The project's issues as the API renders them, by id."""
        with self._state:
            return [i.to_json(self._base_url) for i in self._known(project).issues.values()]

    def merge_request(self, project: str | int, iid: int) -> dict[str, Any]:
        with self._state:
            return self._known(project).merge_requests[iid].to_json(self._base_url)

    def merge_requests_of(self, project: str | int, deployment_id: int) -> list[int]:
        """The iids linked to a deployment."""
        with self._state:
            return list(self._known(project).links.get(deployment_id, []))

    def _known(self, project: str | int) -> _Project:
        try:
            return self._project(project)
        except ApiError:
            raise KeyError(f"no project {project!r}") from None

    # -- HTTP ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            if not self._authorized(request):
                raise ApiError(401, UNAUTHORIZED)
            route = self._route(request)
            if route is None:
                raise ApiError(404, ROUTE_NOT_FOUND)
            handler, groups = route
            params = self._params(request)
            with self._state:
                return handler(request, params, **groups)
        except ApiError as e:
            return Response(e.status, e.body)

    def _authorized(self, request: Request) -> bool:
        if request.headers.get("PRIVATE-TOKEN") == self.token:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and credentials.strip() == self.token

    def _route(self, request: Request) -> tuple[Callable[..., Response], dict[str, str]] | None:
        if not request.path.startswith(API_PREFIX + "/"):
            return None
        path = request.path[len(API_PREFIX) :]
        for method, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match and method == request.method:
                return getattr(self, name), {k: unquote(v) for k, v in match.groupdict().items()}
        return None

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        """Query and body parameters together (the body wins), as Grape sees them."""
        params = _flatten(request.query)
        if not request.body:
            return params
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            params.update(_flatten(parse_qs(request.body.decode(), keep_blank_values=True)))
            return params
        try:
            body = json.loads(request.body)
        except ValueError as e:
            raise ApiError(400, {"message": "400 Bad request - the body is not valid JSON"}) from e
        if not isinstance(body, dict):
            raise ApiError(400, {"message": "400 Bad request - the body must be a JSON object"})
        params.update(body)
        return params

    def _paginate(self, request: Request, params: _Params, items: list[dict[str, Any]]) -> Response:
        page, per_page = params.pagination()
        params.check()
        total = len(items)
        pages = max(1, math.ceil(total / per_page))
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(total),
            "X-Total-Pages": str(pages),
            "X-Next-Page": str(page + 1) if page < pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }
        query = {k: v for k, v in request.query.items() if k not in {"page", "per_page"}}

        def link(to: int, rel: str) -> str:
            q = urlencode({**query, "page": to, "per_page": per_page}, doseq=True)
            return f'<{self.url}{request.path}?{q}>; rel="{rel}"'

        links = [link(page - 1, "prev")] if page > 1 else []
        if page < pages:
            links.append(link(page + 1, "next"))
        links += [link(1, "first"), link(pages, "last")]
        headers["Link"] = ", ".join(links)
        start = (page - 1) * per_page
        return Response(200, items[start : start + per_page], headers)

    # -- state ----------------------------------------------------------------------

    @property
    def _base_url(self) -> str:
        return self.url if self._port is not None else "http://gitlab.invalid"

    def _project(self, ref: str | int) -> _Project:
        if isinstance(ref, int) or ref.isdigit():
            project = self._projects.get(int(ref))
            if project is None:
                raise ApiError(404, {"message": "404 Project Not Found"})
            return project
        if ref not in self._by_path:
            project = _Project(next(self._project_ids), ref)
            self._projects[project.id] = project
            self._by_path[ref] = project.id
        return self._projects[self._by_path[ref]]

    def _environment(self, project: _Project, name: str) -> _Environment:
        if name not in project.environments:
            project.environments[name] = _Environment(next(self._environment_ids), name, _now())
        return project.environments[name]

    def _new_deployment(
        self, project: _Project, environment: str, ref: str, sha: str, *, tag: bool
    ) -> _Deployment:
        now = _now()
        deployment = _Deployment(
            id=next(self._deployment_ids),
            iid=len(project.deployments) + 1,
            environment=self._environment(project, environment),
            ref=ref,
            sha=sha,
            tag=tag,
            status="created",
            created_at=now,
            updated_at=now,
        )
        project.deployments[deployment.id] = deployment
        return deployment

    def _new_issue(
        self, project: _Project, title: str, description: str | None, labels: list[str]
    ) -> dict[str, Any]:
        iid = len(project.issues) + 1
        issue = _Issue(
            id=next(self._issue_ids),
            iid=iid,
            project_id=project.id,
            title=title,
            description=description,
            labels=_split_labels(labels),
            created_at=_now(),
            project_path=project.path,
            author=dict(self.user),
        )
        project.issues[iid] = issue
        return issue.to_json(self._base_url)

    def _set_status(self, project: _Project, deployment: _Deployment, status: str) -> None:
        deployment.set_status(status)
        if status == "success":  # Deployments::LinkMergeRequestWorker, after the commit
            timer = threading.Timer(self.link_delay, self._link, (project, deployment))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def hold_linking(self) -> None:
        """Keep merge requests unlinked (a busy Sidekiq) until :meth:`release_linking`."""
        with self._state:
            self._held_links = []

    def release_linking(self) -> None:
        with self._state:
            held, self._held_links = self._held_links or [], None
            for project, deployment in held:
                self._link(project, deployment)

    def _link(self, project: _Project, deployment: _Deployment) -> None:
        """``Deployments::LinkMergeRequestsService#execute``."""
        with self._state:
            if self._held_links is not None:
                self._held_links.append((project, deployment))
                return
            env = deployment.environment
            foldered = "/" in env.name
            if foldered and (
                self.legacy_folder_linking or guess_tier(env.name) not in ("production", "staging")
            ):
                return
            if deployment.status != "success":
                return
            previous = [
                d
                for d in project.deployments.values()
                if d.environment is env and d.status == "success" and d.id < deployment.id
            ]
            merged = [mr for mr in project.merge_requests.values() if mr.state == "merged"]
            if previous:
                prev = max(previous, key=lambda d: d.id)
                history = project.history
                if prev.sha not in history or deployment.sha not in history:
                    return
                between = set(
                    history[history.index(prev.sha) + 1 : history.index(deployment.sha) + 1]
                )
                found = [mr.iid for mr in merged if mr.merge_commit_sha in between]
            else:
                found = [mr.iid for mr in merged if mr.target_branch == deployment.ref]
            linked = project.links.setdefault(deployment.id, [])
            linked.extend(iid for iid in found if iid not in linked)

    def _deployment(self, project: _Project, raw_id: str) -> _Deployment:
        if not raw_id.isdigit():
            raise ApiError(400, {"error": "deployment_id is invalid"})
        deployment = project.deployments.get(int(raw_id))
        if deployment is None:
            raise ApiError(404, RECORD_NOT_FOUND)
        return deployment

    # -- routes ---------------------------------------------------------------------

    def _get_user(self, request: Request, params: dict[str, Any]) -> Response:
        return Response(200, {**self.user, "web_url": f"{self._base_url}/{self.user['username']}"})

    def _get_project(self, request: Request, params: dict[str, Any], project: str) -> Response:
        proj = self._project(project)
        return Response(
            200,
            {
                "id": proj.id,
                "name": proj.path.rsplit("/", 1)[-1],
                "path": proj.path.rsplit("/", 1)[-1],
                "path_with_namespace": proj.path,
                "default_branch": "master",
                "web_url": f"{self.url}/{proj.path}",
            },
        )

    def _list_deployments(self, request: Request, params: dict[str, Any], project: str) -> Response:
        proj = self._project(project)
        p = _Params(params)
        order_by = p.string("order_by", values=DEPLOYMENT_ORDER_BY, default="id") or "id"
        sort = p.string("sort", values=SORT_DIRECTIONS, default="asc")
        updated_after = p.timestamp("updated_after")
        updated_before = p.timestamp("updated_before")
        finished_after = p.timestamp("finished_after")
        finished_before = p.timestamp("finished_before")
        environment = p.string("environment")
        status = p.string("status", values=DEPLOYMENT_STATUSES)
        p.check()
        by_updated = updated_after is not None or updated_before is not None
        by_finished = finished_after is not None or finished_before is not None
        if by_updated and by_finished:
            raise _bad_request(
                "Both `updated_at` filter and `finished_at` filter can not be specified"
            )
        if by_updated and order_by != "updated_at":
            raise _bad_request("`updated_at` filter requires `updated_at` sort")
        if by_finished != (order_by == "finished_at"):
            raise _bad_request("`finished_at` filter and `finished_at` sorting must be paired")
        if by_finished and status != "success":
            raise _bad_request(
                "`finished_at` filter must be combined with `success` status filter."
            )

        def keep(d: _Deployment) -> bool:
            finished = d.finished_at
            return (
                (environment is None or d.environment.name == environment)
                and (status is None or d.status == status)
                and (updated_after is None or d.updated_at >= updated_after)
                and (updated_before is None or d.updated_at <= updated_before)
                and (
                    finished_after is None or (finished is not None and finished >= finished_after)
                )
                and (
                    finished_before is None or (finished is not None and finished < finished_before)
                )
            )

        found = sorted((d for d in proj.deployments.values() if keep(d)), key=lambda d: d.id)
        descending = sort == "desc"
        if order_by == "updated_at":  # GitLab adds "id DESC" as the tie-breaker
            found.sort(key=lambda d: d.id, reverse=True)
            found.sort(key=lambda d: d.updated_at, reverse=descending)
        elif order_by == "finished_at":  # PostgreSQL: NULLS LAST ascending, FIRST descending
            found.sort(
                key=lambda d: (d.finished_at is None, d.finished_at or _EPOCH), reverse=descending
            )
        elif order_by == "ref":
            found.sort(key=lambda d: d.ref, reverse=descending)
        elif descending:  # id, iid and created_at all order like id
            found.reverse()
        return self._paginate(request, p, [d.to_json() for d in found])

    def _create_deployment(
        self, request: Request, params: dict[str, Any], project: str
    ) -> Response:
        proj = self._project(project)
        p = _Params(params)
        environment = p.string("environment", required=True)
        sha = p.string("sha", required=True)
        ref = p.string("ref", required=True)
        tag = p.boolean("tag", required=True)
        status = p.string("status", required=True, values=API_DEPLOYMENT_STATUSES)
        p.check()
        # p.check() raised if any of them was missing.
        assert environment is not None
        assert sha is not None
        assert ref is not None
        assert tag is not None
        assert status is not None
        # lib/api/deployments.rb, in its order.
        proj.authorize("create_deployment")
        proj.authorize("create_environment")
        if proj.commit(ref) is None:
            raise ApiError(400, REF_MISSING)
        if not environment.strip():
            raise ApiError(400, {"message": {"name": ["can't be blank"]}})
        if len(environment) > 255:
            raise ApiError(400, {"message": {"name": ["is too long (maximum is 255 characters)"]}})
        if not ENVIRONMENT_NAME.match(environment):
            raise ApiError(400, {"message": {"name": [ENVIRONMENT_NAME_MESSAGE]}})
        env = self._environment(proj, environment)  # created before the sha is validated
        # Deployments::CreateService returns the environment's last successful
        # deployment when it is equal (ref, tag, sha, status).
        successful = [
            d for d in proj.deployments.values() if d.environment is env and d.status == "success"
        ]
        if successful:
            last = max(successful, key=lambda d: (d.finished_at or d.created_at, d.id))
            if (last.ref, last.tag, last.sha, last.status) == (ref, tag, sha, status):
                return Response(201, last.to_json())
        if proj.commit(sha) is None:  # Deployment#valid_sha
            raise ApiError(400, SHA_MISSING)
        deployment = self._new_deployment(proj, environment, ref, sha, tag=tag)
        deployment.user = dict(self.user)
        self._set_status(proj, deployment, status)
        return Response(201, deployment.to_json())

    def _get_deployment(
        self, request: Request, params: dict[str, Any], project: str, deployment_id: str
    ) -> Response:
        deployment = self._deployment(self._project(project), deployment_id)
        return Response(200, deployment.to_json())

    def _update_deployment(
        self, request: Request, params: dict[str, Any], project: str, deployment_id: str
    ) -> Response:
        proj = self._project(project)
        p = _Params(params)
        status = p.string("status", required=True, values=API_DEPLOYMENT_STATUSES)
        p.check()
        assert status is not None
        deployment = self._deployment(proj, deployment_id)
        proj.authorize("update_deployment")
        if deployment.job is not None:
            raise ApiError(403, {"message": CI_DEPLOYMENT_FORBIDDEN})
        if not may_move(deployment.status, status):
            raise ApiError(400, transition_error(status))
        self._set_status(proj, deployment, status)
        return Response(200, deployment.to_json())

    def _deployment_merge_requests(
        self, request: Request, params: dict[str, Any], project: str, deployment_id: str
    ) -> Response:
        proj = self._project(project)
        if not deployment_id.isdigit():
            raise ApiError(400, {"error": "deployment_id is invalid"})
        p = _Params(params)
        state = p.string("state", values=("opened", "closed", "locked", "merged", "all"))
        order_by = p.string("order_by", values=("created_at", "updated_at"), default="created_at")
        sort = p.string("sort", values=SORT_DIRECTIONS, default="desc")
        p.check()
        found = [proj.merge_requests[iid] for iid in proj.links.get(int(deployment_id), [])]
        found = [mr for mr in found if state in {None, "all", mr.state}]
        found.sort(key=lambda mr: mr.id, reverse=sort == "desc")
        if order_by == "updated_at":
            found.sort(key=lambda mr: mr.updated_at, reverse=sort == "desc")
        return self._paginate(request, p, [mr.to_json(self._base_url) for mr in found])

    def _merge_request(self, project: _Project, raw_iid: str) -> _MergeRequest:
        if not raw_iid.isdigit():
            raise ApiError(400, {"error": "merge_request_iid is invalid"})
        mr = project.merge_requests.get(int(raw_iid))
        if mr is None:
            raise ApiError(404, {"message": "404 Merge Request Not Found"})
        return mr

    def _get_merge_request(
        self, request: Request, params: dict[str, Any], project: str, iid: str
    ) -> Response:
        mr = self._merge_request(self._project(project), iid)
        return Response(200, mr.to_json(self._base_url))

    def _update_merge_request(
        self, request: Request, params: dict[str, Any], project: str, iid: str
    ) -> Response:
        proj = self._project(project)
        mr = self._merge_request(proj, iid)
        proj.authorize("update_merge_request")
        p = _Params(params)
        title = p.string("title")
        description = p.string("description")
        labels = p.labels("labels")
        add_labels = p.labels("add_labels")
        remove_labels = p.labels("remove_labels")
        state_event = p.string("state_event", values=("close", "reopen"))
        p.check()
        names = ("title", "description", "labels", "add_labels", "remove_labels", "state_event")
        if not any(name in params for name in names):
            raise ApiError(
                400,
                {
                    "error": f"{', '.join(names)} are missing, "
                    "at least one parameter must be provided"
                },
            )
        new = list(mr.labels) if labels is None else labels
        new = _dedupe([*new, *(add_labels or [])])
        mr.labels = [label for label in new if label not in (remove_labels or [])]
        if title is not None:
            mr.title = title
        if description is not None:
            mr.description = description
        if state_event is not None and mr.state != "merged":
            mr.state = "closed" if state_event == "close" else "opened"
        mr.updated_at = _now()
        return Response(200, mr.to_json(self._base_url))

    def _list_issues(self, request: Request, params: dict[str, Any], project: str) -> Response:
        proj = self._project(project)
        p = _Params(params)
        search = p.string("search")
        where = p.string("in") or "title,description"
        labels = p.labels("labels")
        state = p.string("state", values=("opened", "closed", "all"), default="all")
        p.string("order_by", values=("created_at", "updated_at"))
        sort = p.string("sort", values=SORT_DIRECTIONS, default="desc")
        p.check()
        fields = [f for f in ("title", "description") if f in where.split(",")] or [
            "title",
            "description",
        ]
        terms = (search or "").lower().split()

        def keep(issue: _Issue) -> bool:
            if state not in {"all", issue.state}:
                return False
            if labels is not None and not _labels_match(labels, issue.labels):
                return False
            texts = [(getattr(issue, f) or "").lower() for f in fields]
            return all(any(term in text for text in texts) for term in terms)

        found = [i for i in proj.issues.values() if keep(i)]
        found.sort(key=lambda i: i.id, reverse=sort == "desc")
        return self._paginate(request, p, [i.to_json(self._base_url) for i in found])

    def _create_issue(self, request: Request, params: dict[str, Any], project: str) -> Response:
        proj = self._project(project)
        proj.authorize("create_issue")
        p = _Params(params)
        title = p.string("title", required=True)
        description = p.string("description")
        labels = p.labels("labels")
        p.check()
        assert title is not None
        if not title.strip():
            raise ApiError(400, {"message": {"title": ["can't be blank"]}})
        return Response(201, self._new_issue(proj, title, description, labels or []))

    def _get_issue(
        self, request: Request, params: dict[str, Any], project: str, iid: str
    ) -> Response:
        return Response(200, self._issue(self._project(project), iid).to_json(self._base_url))

    @staticmethod
    def _issue(project: _Project, iid: str) -> _Issue:
        issue = project.issues.get(int(iid)) if iid.isdigit() else None
        if issue is None:
            raise ApiError(404, ISSUE_NOT_FOUND)
        return issue

    @staticmethod
    def _noteable_id(iid: str) -> None:
        """Grape's ``requires :noteable_id, type: Integer``."""
        if not iid.lstrip("-").isdigit():
            raise ApiError(400, {"error": "noteable_id is invalid"})

    def _list_notes(
        self, request: Request, params: dict[str, Any], project: str, iid: str
    ) -> Response:
        self._noteable_id(iid)
        p = _Params(params)
        # Notes are never edited here: updated_at is created_at, both orders agree.
        p.string("order_by", values=NOTE_ORDER_BY, default="created_at")
        sort = p.string("sort", values=SORT_DIRECTIONS, default="desc")
        activity = p.string("activity_filter", values=ACTIVITY_FILTERS, default="all_notes")
        p.pagination()
        p.check()
        issue = self._issue(self._project(project), iid)
        found = [
            n
            for n in issue.notes
            if activity == "all_notes" or n.system == (activity == "only_activity")
        ]
        # order_options_with_tie_breaker: the order, then id in the same direction.
        found.sort(key=lambda n: (n.created_at, n.id), reverse=sort == "desc")
        return self._paginate(request, p, [n.to_json() for n in found])

    def _create_note(
        self, request: Request, params: dict[str, Any], project: str, iid: str
    ) -> Response:
        self._noteable_id(iid)
        p = _Params(params)
        body = p.string("body", required=True)
        internal = p.boolean("internal")
        confidential = p.boolean("confidential")
        p.string("created_at")  # dropped: only an administrator or owner may set it
        p.check()
        assert body is not None
        if self.notes_rate_limit is not None and self._notes_created >= self.notes_rate_limit:
            headers = (
                {"Retry-After": str(self.notes_retry_after)}
                if self.notes_retry_after is not None
                else {}
            )
            return Response(429, NOTES_RATE_LIMITED, headers)
        proj = self._project(project)
        issue = self._issue(proj, iid)
        proj.authorize("create_note")
        kept, commands = self._quick_actions(issue, body)
        if commands and not kept.strip():
            return Response(202, {"commands_changes": {}, "summary": commands})
        if not kept.strip():
            raise _bad_request('Note {:note=>["can\'t be blank"]}')
        if len(kept) > MAX_NOTE_LENGTH:
            raise _bad_request(
                f'Note {{:note=>["is too long (maximum is {MAX_NOTE_LENGTH} characters)"]}}'
            )
        note = _Note(
            id=next(self._note_ids),
            body=kept,
            author=dict(self.user),
            created_at=_now(),
            issue_id=issue.id,
            issue_iid=issue.iid,
            project_id=proj.id,
            internal=bool(internal or confidential),
        )
        issue.notes.append(note)
        self._notes_created += 1
        return Response(201, note.to_json())

    @staticmethod
    def _quick_actions(issue: _Issue, body: str) -> tuple[str, list[str]]:
        """Execute the body's quick actions on ``issue``; the body without them."""
        kept, commands, fenced = [], [], False
        for line in body.split("\n"):
            if line.startswith("```"):
                fenced = not fenced
            found = None if fenced else _QUICK_ACTION.match(line)
            if found and found["cmd"] in QUICK_ACTIONS:
                commands.append(line)
                issue.commands.append(line)
                if found["cmd"] == "close":
                    issue.state = "closed"
                elif found["cmd"] == "reopen":
                    issue.state = "opened"
                elif found["cmd"] == "label" and found["arg"]:
                    issue.labels = _dedupe(
                        [*issue.labels, *(x.lstrip("~") for x in found["arg"].split())]
                    )
                elif found["cmd"] == "lock":
                    issue.discussion_locked = True
                continue
            kept.append(line)
        return "\n".join(kept), commands


def _labels_match(wanted: list[str], labels: list[str]) -> bool:
    if wanted == ["None"]:
        return not labels
    if wanted == ["Any"]:
        return bool(labels)
    return all(label in labels for label in wanted)


def _flatten(query: dict[str, list[str]]) -> dict[str, Any]:
    """Query-string style parameters: ``a[]=x&a[]=y`` is a list, otherwise the last value."""
    params: dict[str, Any] = {}
    for key, values in query.items():
        if key.endswith("[]"):
            params[key[:-2]] = list(values)
        else:
            params[key] = values[-1]
    return params


def project_path(path: str) -> str:
    """``group/project`` as it goes in a URL (``group%2Fproject``)."""
    return quote(path, safe="")
