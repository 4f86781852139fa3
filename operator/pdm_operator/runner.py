"""``pdm-operator run``: Kopf, configured for this operator.

Kopf does the watching (with reconnects, bookmarks and an inactivity timeout
against silently stalled streams), the liveness endpoint and signal handling;
the handlers only hand events to the ``Controller``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf

from pdm_operator import model
from pdm_operator.controller import Controller
from pdm_operator.kube import Kube, load_config
from pdm_operator.reconcile import Reconciler
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
    verbose: bool = False


def default_lock_namespace() -> str:
    """The operator's own namespace when in a pod (downward API), else ``default``."""
    return os.environ.get("POD_NAMESPACE") or "default"


def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # Kopf's watches authenticate exactly as our own client does:
        # $KUBECONFIG, or the pod's service account.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Our own events say what happened; Kopf's are only for its errors.
        settings.posting.level = logging.WARNING
        # Watch streams can stall without an error; restart them when quiet
        # for longer than this (Kopf >= 1.44, Python >= 3.11).
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.watching.inactivity_timeout = 600
        settings.networking.request_timeout = 60
        # Events are handed to the controller at once; no batching delay.
        settings.batching.batch_window = 0.0

    # Async on purpose: Kopf runs sync handlers in threads, and the
    # controller creates tasks on the event loop.
    @kopf.on.event(model.GROUP, model.VERSION, model.PLURAL, registry=registry)
    async def migration_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_migration(event.get("type"), dict(event["object"]))

    @kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={model.LABEL_MIGRATION_UID: kopf.PRESENT},
        registry=registry,
    )
    async def job_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_job(dict(event["object"]))

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        log.info("stopping %d migration workers", len(controller.workers))
        await controller.stop()

    return registry


async def serve(opts: Options) -> None:
    loop = asyncio.get_running_loop()
    api_pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="pdm-api")
    loop.set_default_executor(api_pool)
    api = load_config(opts.kubeconfig)
    kube = Kube(api)
    reconciler = Reconciler(kube, opts.lock_namespace)
    reporting = ReportingHub(
        kube,
        api_pool=api_pool,
        clock=reconciler.clock,
        call_timeout=opts.report_timeout,
        delivery_threads=opts.report_threads,
    )
    controller = Controller(reconciler, reporting)
    registry = build_registry(controller)
    scope = ", ".join(opts.namespaces) if opts.namespaces else "all namespaces"
    log.info(
        "pdm-operator watching %s; environment locks in namespace %s", scope, opts.lock_namespace
    )
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not opts.namespaces,
            namespaces=opts.namespaces,
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{opts.liveness_port}/healthz",
        )
    finally:
        api.close()


def run(opts: Options) -> int:
    if opts.kubeconfig:
        os.environ["KUBECONFIG"] = opts.kubeconfig  # Kopf's own login reads it too
    kopf.configure(verbose=opts.verbose, log_format=kopf.LogFormat.PLAIN)
    if not opts.verbose:
        # Kopf logs every handled watch event at INFO; our workers log the
        # transitions that matter instead.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    asyncio.run(serve(opts))
    return 0
