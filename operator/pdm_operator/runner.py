"""``pdm-operator run``: Kopf, configured for this operator.

Kopf does the watching (with reconnects, bookmarks and an inactivity timeout
against silently stalled streams), the liveness endpoint and signal handling;
the handlers only hand events to the ``Controller``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import kopf

from pdm_operator import (
    allocator,
    heapwatch,
    history,
    logs,
    metrics,
    model,
    preflight,
    render,
    timestamps,
)
from pdm_operator.controller import Controller
from pdm_operator.envstatus import EnvironmentStatus
from pdm_operator.health import Health
from pdm_operator.kube import Kube, load_config
from pdm_operator.leader import LeaderElection
from pdm_operator.model import Body
from pdm_operator.reconcile import LIST_AHEAD_THREADS, Reconciler
from pdm_operator.reporting.reporter import ReportingHub

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    namespaces: list[str] = field(default_factory=list)  # empty: the whole cluster
    lock_namespace: str = "default"
    kubeconfig: str | None = None
    liveness_port: int = 8080
    workers: int = 32  # threads for blocking API calls
    report_threads: int = 16  # threads for GitLab/Sentry calls, apart from the above
    report_timeout: float = 5.0  # seconds per GitLab/Sentry call
    metrics_port: int = 9180  # 0: no metrics endpoint
    log_format: str = "plain"  # plain | json
    stall_threshold: float = 120.0  # seconds out of step before a watch counts as stalled
    audit_interval: float = 30.0  # seconds between watch audits
    leader_election: bool = False  # HA: act only while holding the leader Lease
    leader_identity: str = ""  # default: $POD_NAME, else host and pid
    leader_lease_duration: float = 15.0
    leader_renew_interval: float = 5.0
    #: Seconds between rounds of the PostDeployEnvironments' status (envstatus.py).
    environment_status_interval: float = 10.0
    verbose: bool = False


def default_identity() -> str:
    """The pod's name in a cluster (downward API), else host and process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


#: Kopf settings, as (section, field, value), under their names in Kopf 1.45
#: (``kopf/_cogs/configs/configuration.py``). ``settings.batching`` was
#: renamed ``settings.queueing`` in 1.42 (the old name still works, with a
#: DeprecationWarning), and its ``batch_window`` does nothing since then
#: ("Time-based event batching was removed"), so it is not set.
#: ``watching.chunk_size`` exists from 1.45 and ``watching.inactivity_timeout``
#: from 1.44 (pyproject requires 1.45).
KOPF_SETTINGS: tuple[tuple[str, str, object], ...] = (
    # Our own events say what happened; Kopf's are only for its errors.
    ("posting", "level", logging.WARNING),
    # Watch streams can stall without an error; restart them when quiet for
    # longer than this.
    ("watching", "server_timeout", 300),
    ("watching", "client_timeout", 330),
    ("watching", "connect_timeout", 10),
    ("watching", "inactivity_timeout", 600),
    ("networking", "request_timeout", 60),
    # The watched resources are fixed: no scanning of CRDs and namespaces,
    # which would need cluster-wide read access to CRDs for nothing.
    ("scanning", "disabled", True),
    # The initial listing a page at a time: thousands of migrations are not
    # read and parsed as one response (Kopf's default).
    ("watching", "chunk_size", 500),
    # Kopf keeps a worker task per object until it has idled this long
    # (default 5 s): after listing 5,000 migrations, 5,000 workers and their
    # queues coexisted, and the memory they took was never given back (RSS
    # 208 MiB instead of 111 MiB). Our handlers only route.
    ("queueing", "idle_timeout", 0.1),
)


#: The pods of the pre-flight Jobs, selected by the API server: a handler's
#: ``labels=`` filters only in the operator, after every pod of the watched
#: namespaces has been sent to it. ``settings.watching.label_selectors``
#: (Kopf 1.45, ``_cogs/configs/configuration.py``) go into the list and watch
#: requests' ``labelSelector`` (``_cogs/clients/watching.py``).
PREFLIGHT_POD_LABELS = {
    model.LABEL_COMPONENT: preflight.COMPONENT,
    model.LABEL_MANAGED_BY: render.MANAGED_BY,
}
PREFLIGHT_PODS = ",".join(f"{key}={value}" for key, value in PREFLIGHT_POD_LABELS.items())
#: The Jobs of this operator, selected by the API server in the same way.
OWN_JOBS = model.LABEL_MIGRATION_UID


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    for section, name, value in KOPF_SETTINGS:
        setattr(getattr(settings, section), name, value)
    settings.watching.label_selectors["v1", "pods"] = PREFLIGHT_PODS
    settings.watching.label_selectors["batch", "v1", "jobs"] = OWN_JOBS


def default_lock_namespace() -> str:
    """The operator's own namespace when in a pod (downward API), else ``default``."""
    return os.environ.get("POD_NAMESPACE") or "default"


async def lead(
    election: LeaderElection, controller: Controller, relist: Callable[[], list[Body]]
) -> None:
    """Acquire or renew the leader Lease forever; start and stop acting accordingly."""
    while True:
        try:
            held = await asyncio.to_thread(election.try_acquire_or_renew)
        except Exception as e:  # noqa: BLE001 - an API hiccup is not a lost leadership yet
            log.warning("leader election: %s", e)
            held = False
        if held and not controller.active:
            migrations = await asyncio.to_thread(relist)
            log.info("leadership acquired by %s at %.3f: acting", election.identity, time.time())
            metrics.LEADER.set(1)
            controller.activate(migrations)
        elif controller.active and not held and not election.still_safe():
            log.warning(
                "leadership lost by %s at %.3f: standing by", election.identity, time.time()
            )
            metrics.LEADER.set(0)
            await controller.deactivate()
        await asyncio.sleep(election.renew)


def build_registry(
    controller: Controller,
    health: Health,
    audit_interval: float = 30.0,
    election: LeaderElection | None = None,
    relist: Callable[[], list[Body]] | None = None,
    *,
    flush_events: Callable[[float], bool],
    environments: EnvironmentStatus | None = None,
    environment_interval: float = 10.0,
) -> kopf.OperatorRegistry:
    """The operator's handlers. ``flush_events``: posts the Events still queued at
    shutdown, within the timeout given; whether all were posted."""
    registry = kopf.OperatorRegistry()
    lead_task: list[asyncio.Task[None]] = []
    audit_task: list[asyncio.Task[None]] = []

    async def environments_forever(writer: EnvironmentStatus) -> None:
        # Only the acting replica writes; a round that fails is logged and
        # the next one tries again (a status, never a reason to stop).
        while True:
            if controller.active:
                try:
                    await asyncio.to_thread(writer.refresh)
                except Exception as e:  # noqa: BLE001
                    log.warning("PostDeployEnvironment statuses not refreshed: %s", e)
            await asyncio.sleep(environment_interval)

    async def audit_forever() -> None:
        while True:
            await asyncio.sleep(audit_interval)
            try:
                await asyncio.to_thread(health.run_audit)
            except Exception:
                log.exception("the watch audit failed; trying again in %.0fs", audit_interval)

    @kopf.on.startup(registry=registry)
    async def start_audit(**_: Any) -> None:
        audit_task.append(asyncio.create_task(audit_forever(), name="watch-audit"))
        if environments is not None:
            audit_task.append(
                asyncio.create_task(environments_forever(environments), name="environments")
            )
        if election is not None and relist is not None:
            lead_task.append(asyncio.create_task(lead(election, controller, relist), name="leader"))

    @kopf.on.probe(id="watches", registry=registry)
    def watches(**_: Any) -> dict[str, str]:
        # Raising makes /healthz answer 500: the liveness probe fails.
        return health.check()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # Kopf's watches authenticate exactly as our own client does:
        # $KUBECONFIG, or the pod's service account.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)

    # Async on purpose: Kopf runs sync handlers in threads, and the
    # controller creates tasks on the event loop.
    @kopf.on.event(model.GROUP, model.VERSION, model.PLURAL, registry=registry)
    async def migration_event(event: kopf.RawEvent, **_: Any) -> None:
        body = dict(event["object"])
        health.observed("postdeploymigrations", body, event.get("type"))
        controller.on_migration(event.get("type"), body)

    @kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={model.LABEL_MIGRATION_UID: kopf.PRESENT},
        registry=registry,
    )
    async def job_event(event: kopf.RawEvent, **_: Any) -> None:
        body = dict(event["object"])
        health.observed("jobs", body, event.get("type"))
        controller.on_job(body, event.get("type"))

    # The pre-flight pod's end, a second before its Job's Complete
    # (``Controller.on_preflight_pod``). Not audited (``Health``): a missed
    # event costs that second, as the Job's end still wakes the migration.
    @kopf.on.event("v1", "pods", labels=dict(PREFLIGHT_POD_LABELS), registry=registry)
    async def preflight_pod_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_preflight_pod(dict(event["object"]), event.get("type"))

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        for task in lead_task:
            task.cancel()
        for task in audit_task:
            task.cancel()
        log.info("stopping %d migration workers", len(controller.workers))
        await controller.stop()
        if not await asyncio.to_thread(flush_events, 5.0):
            log.warning("stopped with events not yet posted")
        if election is not None:
            # Only now, with every pass drained: a standby may take over at once.
            await asyncio.to_thread(election.release)
            log.info("leadership released by %s at %.3f", election.identity, time.time())

    return registry


def load_rollback_floors(kube: Kube, namespace: str) -> None:
    """Set the rollback-floor metric from the environments' history ConfigMaps."""
    try:
        found = kube.list_configmaps(namespace, f"{model.LABEL_COMPONENT}={history.COMPONENT}")
    except Exception as e:  # noqa: BLE001 - a metric, not a reason to stop
        log.warning("cannot read the migration history in %s: %s", namespace, e)
        return
    for cm in found:
        environment = ((cm.get("metadata") or {}).get("labels") or {}).get(model.LABEL_ENVIRONMENT)
        top = history.floor(history.runs(cm))
        if environment and top is not None:
            metrics.rollback_floor(environment, top.version)


def freeze_start_up_heap() -> None:
    """Leave what start-up built out of every later garbage collection.

    What exists once the operator is set up (~170,000 objects: Kopf,
    prometheus-client, and the official client's API classes and models, each
    method wrapped in a pydantic validator, which v37 imports on first use
    from a module ``__getattr__`` in ``kubernetes/client/__init__.py``) lives
    as long as the process, yet every full collection walked it again with
    every thread stopped. Frozen, collections walk only what came after.
    Called last, once the client's APIs are built: a freeze before them left
    ~100,000 objects of the 324 modules they import to every collection
    (full pauses of 90-280 ms during a burst of 500 migrations).
    https://docs.python.org/3/library/gc.html#gc.freeze
    """
    gc.collect()
    gc.freeze()


async def serve(opts: Options) -> None:
    loop = asyncio.get_running_loop()
    api_pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="pdm-api")
    loop.set_default_executor(api_pool)
    api = load_config(
        opts.kubeconfig, connections=opts.workers + opts.report_threads + LIST_AHEAD_THREADS
    )
    kube = Kube(api)
    try:
        await asyncio.to_thread(kube.warm, opts.workers)
    except Exception as e:  # noqa: BLE001 - a head start, not a condition to run
        log.warning("could not open connections to the API server ahead: %s", e)
    clock = timestamps.now
    reporting = ReportingHub(
        kube,
        api_pool=api_pool,
        clock=clock,
        call_timeout=opts.report_timeout,
        delivery_threads=opts.report_threads,
    )
    controller = Controller(
        partial(Reconciler, kube, opts.lock_namespace, clock),
        reporting,
        active=not opts.leader_election,
    )
    selector = model.LABEL_MIGRATION_UID
    if opts.namespaces:
        health = Health(
            lambda: [m for ns in opts.namespaces for m in kube.migration_versions(ns)],
            lambda: [j for ns in opts.namespaces for j in kube.job_versions(ns, selector)],
            clock,
            opts.stall_threshold,
        )
    else:
        health = Health(
            lambda: kube.migration_versions(None),
            lambda: kube.job_versions(None, selector),
            clock,
            opts.stall_threshold,
        )
    if opts.metrics_port:
        metrics.serve(
            opts.metrics_port,
            metrics.StateCollector(
                lambda: list(controller.latest.values()) if controller.active else [],
                clock,
            ),
            leader_election=opts.leader_election,
        )
        # The floors the history already holds, before any migration runs.
        loop.run_in_executor(None, load_rollback_floors, kube, opts.lock_namespace)
    election = None
    if opts.leader_election:
        election = LeaderElection(
            kube,
            opts.lock_namespace,
            opts.leader_identity or default_identity(),
            duration=opts.leader_lease_duration,
            renew=opts.leader_renew_interval,
        )
    if opts.namespaces:
        relist: Callable[[], list[Body]] = lambda: [  # noqa: E731
            m for ns in opts.namespaces for m in kube.list_migrations(ns)
        ]
    else:
        relist = kube.list_all_migrations
    environments = EnvironmentStatus(
        kube,
        opts.lock_namespace,
        list(opts.namespaces),
        lambda env: [f"{ns}/{name}" for ns, name in controller.lines.waiting(env)],
        lambda: timestamps.rfc3339(clock()),
        changed=controller.environment_changed,
    )
    registry = build_registry(
        controller,
        health,
        opts.audit_interval,
        election,
        relist,
        environments=environments,
        environment_interval=opts.environment_status_interval,
        flush_events=kube.events.flush,
    )
    scope = ", ".join(opts.namespaces) if opts.namespaces else "all namespaces"
    log.info(
        "pdm-operator watching %s; environment locks in namespace %s", scope, opts.lock_namespace
    )
    freeze_start_up_heap()
    # After start-up: what it built is not what grows, and tracing it took
    # longer than a start may.
    heapwatch.start_from_environment()
    trimming = asyncio.create_task(allocator.trim_forever(), name="malloc-trim")
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not opts.namespaces,
            namespaces=opts.namespaces,
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{opts.liveness_port}/healthz",
            # Kopf names itself with getpass.getuser() unless told so
            # (kopf/_core/engines/peering.py, detect_own_id), which raises
            # KeyError for a uid with no passwd entry: the image's USER 65532.
            # The operator crashed at start in every cluster until the image
            # was run on a real node (tests/integration/test_real_node.py).
            identity=cast(Any, opts.leader_identity or default_identity()),
        )
    finally:
        trimming.cancel()
        api.close()


def run(opts: Options) -> int:
    if opts.kubeconfig:
        os.environ["KUBECONFIG"] = opts.kubeconfig  # Kopf's own login reads it too
    logs.configure(opts.log_format, opts.verbose)
    # Before any thread is started (allocator.py).
    if not allocator.cap_arenas():
        log.info("malloc's arenas not capped (not glibc)")
    asyncio.run(serve(opts))
    return 0
