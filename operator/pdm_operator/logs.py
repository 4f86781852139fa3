"""Logging: plain or JSON lines, and every line about a migration says which.

``pdm-operator run --log-format json`` switches Kopf's formatter to JSON
(python-json-logger underneath); lines logged through ``for_migration``
carry ``namespace``, ``migration`` and ``environment`` fields, and start with
``namespace/name (environment):`` in plain text.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import kopf

from pdm_operator.model import Body


class MigrationLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        kwargs["extra"] = {**extra, **(kwargs.get("extra") or {})}
        return f"{extra['namespace']}/{extra['migration']} ({extra['environment']}): {msg}", kwargs


def for_migration(logger: logging.Logger, migration: Body) -> MigrationLog:
    meta, spec = migration.get("metadata") or {}, migration.get("spec") or {}
    return MigrationLog(
        logger,
        {
            "namespace": meta.get("namespace"),
            "migration": meta.get("name"),
            "environment": spec.get("environment"),
        },
    )


def configure(fmt: str = "plain", verbose: bool = False) -> None:
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if fmt == "json" else kopf.LogFormat.PLAIN,
    )
    if not verbose:
        # Kopf logs every handled watch event at INFO; the workers log the
        # transitions that matter instead.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    for noisy in ("kubernetes", "urllib3", "gitlab"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
