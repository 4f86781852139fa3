"""The operator's own Kubernetes calls, through the official client.

Every function here blocks: callers on the event loop run them with
``asyncio.to_thread``. Reads ask for the raw JSON (``_preload_content=False``)
so that objects keep the API's own field names (``activeDeadlineSeconds``,
not ``active_deadline_seconds``) and the pure modules can treat a Job read
from the API and a Job they rendered alike.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from pdm_operator import metrics, model, timestamps
from pdm_operator.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Transient,
)
from pdm_operator.model import Body

log = logging.getLogger(__name__)

#: Per-request timeout (connect, read) in seconds: a hung API server must not
#: hang a reconcile forever.
REQUEST_TIMEOUT = (5.0, 30.0)

#: Accept header for a list of metadata only, and the page size of such lists.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
LIST_PAGE = 500
#: Seconds more than asked that a log read since a time goes back (``pod_log_since``):
#: a node's clock may be ahead of the operator's.
LOG_SINCE_MARGIN = 60
VERSION_KEYS = ("namespace", "name", "resourceVersion")


def load_config(kubeconfig: str | None = None, connections: int | None = None) -> client.ApiClient:
    """An API client from an explicit kubeconfig, $KUBECONFIG, or the in-cluster account.

    ``connections``: keep-alive connections to pool, one per thread that
    calls the API; the client's default (5 per CPU) makes a busy operator
    open and close a TLS connection per request on a small machine.
    """
    cfg = client.Configuration()
    if kubeconfig or os.environ.get("KUBECONFIG"):
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    if connections:
        cfg.connection_pool_maxsize = connections
    return client.ApiClient(cfg)


def _json(resp: Any) -> Body:
    data = resp.data if hasattr(resp, "data") else resp
    return dict(json.loads(data))


def _error(e: ApiException) -> ApiError:
    """The ApiError for an answer of the official client.

    The body of an error answer is a ``metav1.Status``; its ``reason`` tells a
    409 on a create (``AlreadyExists``) from one on a guarded write
    (``Conflict``): k8s.io/apimachinery ``pkg/apis/meta/v1/types.go``,
    ``StatusReasonAlreadyExists`` and ``StatusReasonConflict``.
    """
    status = int(e.status or 0)
    try:
        body = json.loads(e.body)
        message, reason = str(body["message"]), str(body.get("reason") or e.reason or "")
    except (TypeError, ValueError, KeyError):
        message, reason = f"{status} {e.reason}", str(e.reason or "")
    kind: type[ApiError]
    if status == 404:
        kind = NotFound
    elif status == 409:
        kind = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif status in (400, 422):
        kind = Invalid
    elif status in (401, 403):
        kind = Forbidden
    elif status in {0, 429} or status >= 500:
        kind = Transient
    else:
        kind = ApiError
    return kind(message, status, reason)


class _Translated:
    """An API object of the official client whose calls raise ApiErrors."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._api, name)

        def translated(*args: Any, **kwargs: Any) -> Any:
            try:
                result = call(*args, **kwargs)
                if kwargs.get("_preload_content") is False:
                    _ = result.data  # the body is read here, so a cut-off read is translated too
                return result
            except ApiException as e:
                raise _error(e) from e
            except (HTTPError, OSError) as e:
                raise Transient(f"{type(e).__name__}: {e}") from e

        return translated


def expected(error: Exception) -> bool:
    """A failure of the API server or the network, as opposed to a bug in a pass."""
    return isinstance(error, ApiError)


def describe(error: Exception) -> str:
    """One line for a log: the status of an API error, else the exception itself."""
    if isinstance(error, ApiError):
        return f"{error.status} {error.reason}".strip() if error.status else error.message
    return f"{type(error).__name__}: {error}"


def current_namespace(kubeconfig: str | None) -> str:
    """The kubeconfig context's namespace; in a pod, $POD_NAMESPACE; else default."""
    try:
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
        return str((context or {}).get("context", {}).get("namespace") or "default")
    except Exception:  # noqa: BLE001 - in a pod there is no kubeconfig
        return os.environ.get("POD_NAMESPACE") or "default"


def _validation_message(error: ValueError) -> str:
    """``spec.template.spec.containers[0].env[0].value: Input should be a valid string (got 5)``."""
    details = getattr(error, "errors", None)
    if not callable(details):
        return str(error).splitlines()[0]
    out = []
    for d in details():
        path = ""
        for part in d.get("loc") or ():
            if isinstance(part, int):
                path += f"[{part}]" if path else ""
            else:
                path += f".{part}" if path else str(part)
        out.append(f"{path or 'body'}: {d.get('msg')} (got {d.get('input')!r:.80})")
    return "; ".join(out) or str(error).splitlines()[0]


class EventPoster:
    """Events posted from one background thread, as client-go's recorder does
    (k8s.io/client-go ``tools/record``: the broadcaster hands events to a
    sink from its own goroutine): a pass that holds its environment's line
    never waits for them.

    Events are best effort (a failure is logged, never raised), so nothing
    depends on one being posted before the pass goes on. At most ``limit``
    wait; past that an event is dropped with a warning. ``flush`` waits for
    the queue to empty (at shutdown).
    """

    def __init__(self, post: Any, limit: int = 2000) -> None:
        self._post = post
        self._queue: queue.Queue[Body] = queue.Queue(maxsize=limit)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def post(self, event: Body) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pdm-events", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning(
                "dropped event %s: %d events wait", event.get("reason"), self._queue.qsize()
            )

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was posted (or given up); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._post(event)
            except ApiError as e:
                log.warning("could not post event %s: %s", event.get("reason"), describe(e))
            except Exception:  # an event is never worth the thread
                log.exception("could not post event %s", event.get("reason"))
            finally:
                self._queue.task_done()


def resource_of(url: str) -> tuple[str, bool]:
    """The resource a request URL names, with its subresource, and whether it is a
    dry run: ``.../namespaces/gitlab/jobs/x/status?dryRun=All`` → ("jobs/status", True).

    The paths are Kubernetes' own: ``/api/v1/...`` for the core group,
    ``/apis/GROUP/VERSION/...`` for the others, then ``namespaces/NS/`` when
    namespaced (https://kubernetes.io/docs/reference/using-api/api-concepts/).
    """
    split = urlsplit(url)
    parts, query = [p for p in split.path.split("/") if p], split.query
    for i, part in enumerate(parts):
        if part in ("api", "apis"):
            parts = parts[i + (2 if part == "api" else 3) :]
            break
    else:
        parts = parts[-1:]  # /version, /metrics
    if len(parts) > 2 and parts[0] == "namespaces":
        parts = parts[2:]
    resource = "/".join(parts[:1] + parts[2:3])
    return resource, "dryRun=" in query


def _counted(request: Any) -> Any:
    """``request`` (the client's one way to the API) counting what it sends."""

    if getattr(request, "counted", False):
        return request  # a second Kube over the same client

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        resource, dry_run = resource_of(url)
        metrics.api_request(method, resource, dry_run)
        return request(method, url, *args, **kwargs)

    counted.counted = True  # type: ignore[attr-defined]
    return counted


class Kube:
    """Thin, typed wrappers over the calls the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # Every call below goes through the client's one RESTClientObject.request
        # (kubernetes/client/api_client.py, call_api): counted there, once.
        api.rest_client.request = _counted(api.rest_client.request)
        self.core = _Translated(client.CoreV1Api(api))
        self.apps = _Translated(client.AppsV1Api(api))
        self.batch = _Translated(client.BatchV1Api(api))
        self.custom = _Translated(client.CustomObjectsApi(api))
        self.coordination = _Translated(client.CoordinationV1Api(api))
        self.policy = _Translated(client.PolicyV1Api(api))
        self.authentication = _Translated(client.AuthenticationV1Api(api))
        self.events = EventPoster(self._post_event)

    # --- reads that may find nothing -----------------------------------------
    @staticmethod
    def _maybe(call: Any, *args: Any, **kwargs: Any) -> Body | None:
        try:
            return _json(
                call(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            )
        except NotFound:
            return None

    def warm(self, connections: int) -> None:
        """Open ``connections`` keep-alive connections now (concurrent GET /version).

        A burst of migrations otherwise opens them all at once, each a TLS
        handshake on the request that first needs it. ``/version`` needs no
        RBAC of ours: the default ``system:public-info-viewer`` ClusterRole
        grants it to everyone (kubernetes.io/docs/reference/access-authn-authz/
        rbac/#discovery-roles).
        """
        version = _Translated(client.VersionApi(self.api))
        with ThreadPoolExecutor(connections, thread_name_prefix="pdm-warm") as pool:
            list(pool.map(lambda _: version.get_code(_preload_content=False), range(connections)))

    def get_migration(self, namespace: str, name: str) -> Body | None:
        return self._maybe(
            self.custom.get_namespaced_custom_object,
            model.GROUP,
            model.VERSION,
            namespace,
            model.PLURAL,
            name,
        )

    def get_environment(self, name: str) -> Body | None:
        """A PostDeployEnvironment (cluster-scoped); None when it is not declared."""
        return self._maybe(
            self.custom.get_cluster_custom_object,
            model.GROUP,
            model.VERSION,
            model.ENVIRONMENT_PLURAL,
            name,
        )

    def patch_environment_status(self, name: str, patch: Body) -> Body:
        """A JSON merge patch of a PostDeployEnvironment's status subresource."""
        return _json(
            self.custom.patch_cluster_custom_object_status(
                model.GROUP,
                model.VERSION,
                model.ENVIRONMENT_PLURAL,
                name,
                patch,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    def patch_environment(self, name: str, patch: Body) -> Body:
        """A JSON merge patch of a PostDeployEnvironment (the CLI's change lock).

        A ``metadata.resourceVersion`` in ``patch`` makes it apply only to that
        version (Conflict otherwise), so a lock read before the write is the
        lock the write replaces.
        """
        return _json(
            self.custom.patch_cluster_custom_object(
                model.GROUP,
                model.VERSION,
                model.ENVIRONMENT_PLURAL,
                name,
                patch,
                field_manager="pdm-operator-cli",
                _content_type="application/merge-patch+json",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    def get_deployment(self, namespace: str, name: str) -> Body | None:
        return self._maybe(self.apps.read_namespaced_deployment, name, namespace)

    def get_job(self, namespace: str, name: str) -> Body | None:
        return self._maybe(self.batch.read_namespaced_job, name, namespace)

    def get_lease(self, namespace: str, name: str) -> Body | None:
        return self._maybe(self.coordination.read_namespaced_lease, name, namespace)

    def read_secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One value of a Secret, decoded; None if the Secret or key is missing.

        Read at the moment of use and never cached, logged or stored.
        """
        secret = self._maybe(self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
        data = (secret.get("data") or {}).get(key)
        if data is None:
            return None
        return base64.b64decode(data).decode("utf-8").strip()

    @staticmethod
    def _items(call: Any, *args: Any, **kwargs: Any) -> list[Body]:
        resp = call(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        return list(_json(resp).get("items") or [])

    def _versions(self, call: Any, *args: Any, page: int = LIST_PAGE, **kwargs: Any) -> list[Body]:
        """Namespace, name and resourceVersion of every object, a page at a time.

        The API server sends only metadata (``PartialObjectMetadataList``), so
        auditing 5,000 migrations does not parse 5,000 statuses every time.
        """
        out: list[Body] = []
        token = None
        while True:
            chunk = _json(
                call(
                    *args,
                    limit=page,
                    **({"_continue": token} if token else {}),
                    _headers={"Accept": METADATA_ONLY},
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                    **kwargs,
                )
            )
            for item in chunk.get("items") or []:
                meta = item.get("metadata") or {}
                out.append({"metadata": {k: meta.get(k) for k in VERSION_KEYS}})
            token = (chunk.get("metadata") or {}).get("continue")
            if not token:
                return out

    def migration_versions(self, namespace: str | None, page: int = LIST_PAGE) -> list[Body]:
        """Every migration's metadata.{namespace,name,resourceVersion}; all namespaces on None."""
        g, v, plural = model.GROUP, model.VERSION, model.PLURAL
        if namespace is None:
            return self._versions(self.custom.list_cluster_custom_object, g, v, plural, page=page)
        return self._versions(
            self.custom.list_namespaced_custom_object, g, v, namespace, plural, page=page
        )

    def job_versions(
        self, namespace: str | None, selector: str, page: int = LIST_PAGE
    ) -> list[Body]:
        """The same for the Jobs matching ``selector``."""
        if namespace is None:
            return self._versions(
                self.batch.list_job_for_all_namespaces, label_selector=selector, page=page
            )
        return self._versions(
            self.batch.list_namespaced_job, namespace, label_selector=selector, page=page
        )

    def list_migrations(self, namespace: str, selector: str | None = None) -> list[Body]:
        """The PostDeployMigrations of ``namespace`` (matching a label ``selector``)."""
        extra = {"label_selector": selector} if selector else {}
        return self._items(
            self.custom.list_namespaced_custom_object,
            model.GROUP,
            model.VERSION,
            namespace,
            model.PLURAL,
            **extra,
        )

    def create_migration(self, namespace: str, migration: Body, *, dry_run: bool = False) -> Body:
        """Create a PostDeployMigration (the CLI's retry, an environment's schedule);
        ``dry_run``: what the API server would store, nothing stored."""
        extra = {"dry_run": "All"} if dry_run else {}
        return _json(
            self.custom.create_namespaced_custom_object(
                model.GROUP,
                model.VERSION,
                namespace,
                model.PLURAL,
                migration,
                field_manager=model.FIELD_MANAGER,
                **extra,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    def list_all_migrations(self) -> list[Body]:
        return self._items(
            self.custom.list_cluster_custom_object, model.GROUP, model.VERSION, model.PLURAL
        )

    def list_environments(self) -> list[Body]:
        """Every PostDeployEnvironment (cluster-scoped)."""
        return self._items(
            self.custom.list_cluster_custom_object,
            model.GROUP,
            model.VERSION,
            model.ENVIRONMENT_PLURAL,
        )

    def list_pods(self, namespace: str, selector: str) -> list[Body]:
        return self._items(self.core.list_namespaced_pod, namespace, label_selector=selector)

    def list_jobs(self, namespace: str, selector: str) -> list[Body]:
        return self._items(self.batch.list_namespaced_job, namespace, label_selector=selector)

    def pod_log_tail(
        self, namespace: str, pod: str, container: str, lines: int = 20, *, previous: bool = False
    ) -> str | None:
        """The last lines of a container's log, or None when they cannot be had whole.

        At most 256 bytes a line are read (8 KiB at least, 1 MiB at most): the
        server cuts at that many bytes from the first line asked for, so a
        longer answer is cut at its newest end and is not returned (a caller
        would misread it as the whole tail). ``previous``: its last run's.
        """
        limit = max(8192, min(lines * 256, 1024 * 1024))
        try:
            resp = self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                previous=previous,
                tail_lines=lines,
                limit_bytes=limit,
                _preload_content=False,
                _request_timeout=(3.0, 5.0),
            )
            data = bytes(resp.data)
            if len(data) >= limit:
                log.debug("log of pod %s/%s cut at %d bytes: not used", namespace, pod, limit)
                return None
            return data.decode("utf-8", errors="replace")
        except Exception as e:  # noqa: BLE001 - logs are best effort, by design
            log.debug("no log for pod %s/%s: %s", namespace, pod, e)
            return None

    def pod_log_since(
        self,
        namespace: str,
        pod: str,
        container: str,
        since: str | None,
        *,
        limit: int,
        now: datetime,
    ) -> str | None:
        """A container's log lines from about ``since`` (RFC 3339; None: all), each
        with the kubelet's timestamp first, at most ``limit`` bytes (the last line
        may be cut); None when it cannot be read (best effort: a pod gone, a
        kubelet that does not answer).

        ``PodLogOptions`` (k8s.io/api core/v1) has ``sinceTime``, but the
        official client's ``read_namespaced_pod_log`` offers only
        ``sinceSeconds``, which the kubelet turns into ``its now - seconds``
        (kubernetes ``pkg/kubelet/kuberuntime/logs/logs.go``, ``NewLogOptions``):
        so ``since`` is asked as seconds back from ``now`` plus
        :data:`LOG_SINCE_MARGIN`, for a node clock ahead of this one. The
        caller skips what it has read already (``progress.read_lines``).
        """
        back: dict[str, int] = {}
        if since:
            ago = (now - timestamps.parse(since)).total_seconds()
            back["since_seconds"] = max(1, math.ceil(ago) + LOG_SINCE_MARGIN)
        try:
            resp = self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                timestamps=True,
                limit_bytes=limit,
                **back,
                _preload_content=False,
                _request_timeout=(3.0, 5.0),
            )
            return bytes(resp.data).decode("utf-8", errors="replace")
        except Exception as e:  # noqa: BLE001 - progress is best effort, by design
            log.debug("no log for pod %s/%s: %s", namespace, pod, e)
            return None

    def pod_log(self, namespace: str, pod: str, container: str, limit: int) -> str:
        """A container's whole log, up to ``limit`` bytes (the pre-flight's answer).

        Unlike the best-effort tail, a failure raises: the caller must know
        whether it has the answer. Kubernetes' ``limitBytes`` cuts the log at
        that size; a log of exactly ``limit`` bytes is taken as cut.
        """
        resp = self.core.read_namespaced_pod_log(
            pod,
            namespace,
            container=container,
            limit_bytes=limit,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        data = bytes(resp.data)
        if len(data) >= limit:
            raise ValueError(f"the log of pod {pod} is longer than {limit} bytes")
        return data.decode("utf-8", errors="replace")

    # --- writes ----------------------------------------------------------------
    def patch_migration_status(
        self, namespace: str, name: str, status: Body, resource_version: str | None = None
    ) -> Body | None:
        """Merge-patch ``status``; None if the migration is gone.

        With ``resource_version`` the patch applies only to that version of the
        object (Conflict otherwise): the migration worker and the reporter
        both write the status, each computing its part from a fresh read.
        """
        body: Body = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            resp = self.custom.patch_namespaced_custom_object_status(
                model.GROUP,
                model.VERSION,
                namespace,
                model.PLURAL,
                name,
                body,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except NotFound:
            return None
        except Conflict as e:
            raise Conflict(f"{namespace}/{name} changed since it was read", e.status) from e
        return _json(resp)

    def create_job(self, namespace: str, job: Body, dry_run: bool = False) -> Body:
        """Create ``job``: AlreadyExists when it exists, Invalid when the server or
        the client refuses the body."""
        kwargs: dict[str, Any] = {"field_manager": model.FIELD_MANAGER}
        if dry_run:
            kwargs["dry_run"] = "All"
        try:
            resp = self.batch.create_namespaced_job(
                namespace, job, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
        except ValueError as e:
            raise Invalid(_validation_message(e), 0, "Invalid") from e
        return _json(resp)

    def create_disruption_budget(self, namespace: str, budget: Body) -> None:
        """Create ``budget``; one that exists already (an earlier pass) is fine."""
        self._create_once(self.policy.create_namespaced_pod_disruption_budget, namespace, budget)

    @staticmethod
    def _create_once(call: Any, namespace: str, body: Body) -> Body | None:
        """Create ``body``; None when an object of that name exists already."""
        try:
            return _json(
                call(
                    namespace,
                    body,
                    field_manager=model.FIELD_MANAGER,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )
        except AlreadyExists:
            return None

    def job_events(self, namespace: str, name: str, uid: str) -> list[Body]:
        """The Events about one Job (this uid, not an earlier Job of the same name)."""
        events = self._items(
            self.core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.kind=Job,involvedObject.name={name}",
        )
        return [e for e in events if (e.get("involvedObject") or {}).get("uid") == uid]

    def suspend_job(self, namespace: str, name: str) -> None:
        """Set ``spec.suspend``: the Job controller creates no more pods for it."""
        self.batch.patch_namespaced_job(
            name,
            namespace,
            {"spec": {"suspend": True}},
            field_manager=model.FIELD_MANAGER,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )

    def put_configmap(self, namespace: str, configmap: Body) -> None:
        """Create a ConfigMap, or replace it if it is the same owner's.

        Replaced only when the existing one has the same controlling owner
        (the migration it belongs to): a ConfigMap of that name that belongs
        to someone else is never overwritten (AlreadyExists is raised), as
        whoever creates a migration may not write ConfigMaps.
        """
        name = configmap["metadata"]["name"]
        try:
            self.core.create_namespaced_config_map(
                namespace,
                configmap,
                field_manager=model.FIELD_MANAGER,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except AlreadyExists:
            existing = self.get_configmap(namespace, name) or {}

            def owner(cm: Body) -> set[str]:
                refs = (cm.get("metadata") or {}).get("ownerReferences") or []
                return {str(r.get("uid")) for r in refs if r.get("controller")}

            if not owner(configmap) or owner(existing) != owner(configmap):
                raise
            self.core.replace_namespaced_config_map(
                name,
                namespace,
                configmap,
                field_manager=model.FIELD_MANAGER,
                _request_timeout=REQUEST_TIMEOUT,
            )

    def get_configmap(self, namespace: str, name: str) -> Body | None:
        return self._maybe(self.core.read_namespaced_config_map, name, namespace)

    def list_configmaps(self, namespace: str, selector: str) -> list[Body]:
        return self._items(self.core.list_namespaced_config_map, namespace, label_selector=selector)

    def merge_configmap_data(self, namespace: str, base: Body, data: dict[str, str | None]) -> Body:
        """Set (or, with None, remove) keys of a ConfigMap, creating it from ``base``.

        A merge patch of ``data`` (a map: keys merge, null removes) touches only
        those keys, so writers of
        different keys never overwrite each other and need no resourceVersion.
        """
        name = base["metadata"]["name"]
        patch = {"data": data}
        for _ in range(3):
            try:
                return _json(
                    self.core.patch_namespaced_config_map(
                        name,
                        namespace,
                        patch,
                        field_manager=model.FIELD_MANAGER,
                        _preload_content=False,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                )
            except NotFound:
                pass
            body = {**base, "data": {k: v for k, v in data.items() if v is not None}}
            created = self._create_once(self.core.create_namespaced_config_map, namespace, body)
            if created is not None:
                return created
            # Created meanwhile: patch it.
        raise Conflict(f"ConfigMap {namespace}/{name} kept appearing and disappearing")

    def whoami(self) -> str:
        """The user the API server authenticates this client as (SelfSubjectReview)."""
        resp = self.authentication.create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return str(((_json(resp).get("status") or {}).get("userInfo") or {}).get("username"))

    def patch_migration_spec(self, namespace: str, name: str, spec: Body) -> Body:
        """Merge-patch ``spec`` (the CLI's approval)."""
        return _json(
            self.custom.patch_namespaced_custom_object(
                model.GROUP,
                model.VERSION,
                namespace,
                model.PLURAL,
                name,
                {"spec": spec},
                field_manager="pdm-operator-cli",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    def create_event(self, event: Body) -> None:
        """Post an Event in the background (``EventPoster``); never raises."""
        self.events.post(event)

    def _post_event(self, event: Body) -> None:
        self.core.create_namespaced_event(
            event["metadata"]["namespace"], event, _request_timeout=REQUEST_TIMEOUT
        )

    def create_lease(self, namespace: str, lease: Body) -> Body | None:
        """Create; None when a Lease of that name already exists."""
        return self._create_once(self.coordination.create_namespaced_lease, namespace, lease)

    def replace_lease(self, namespace: str, lease: Body) -> Body:
        """Replace, guarded by the resourceVersion in ``lease``; Conflict if it moved."""
        try:
            return _json(
                self.coordination.replace_namespaced_lease(
                    lease["metadata"]["name"],
                    namespace,
                    lease,
                    field_manager=model.FIELD_MANAGER,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )
        except (NotFound, Conflict) as e:
            name = lease["metadata"]["name"]
            raise Conflict(f"lease {name} changed: {e.reason}", e.status) from e

    def delete_lease(self, namespace: str, name: str, uid: str, resource_version: str) -> bool:
        """Delete only the exact Lease version we hold; False if it changed or is gone."""
        try:
            self.coordination.delete_namespaced_lease(
                name,
                namespace,
                body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=uid, resource_version=resource_version)
                ),
                _request_timeout=REQUEST_TIMEOUT,
            )
        except (NotFound, Conflict):
            return False
        return True
