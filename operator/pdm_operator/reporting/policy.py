"""Which sinks are required and blocking, by pipeline (pure).

The defaults are each sink's (``DEFAULTS`` in its module under ``sinks/``,
the product's table). "Blocking" means the migration is not Succeeded until
the sink is delivered, and fails (BlockingReportFailed) if it cannot be
within the deadline; "not required" means the sink is skipped. Each sink may
override both. Nothing else ever waits on GitLab or Sentry.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdm_operator.model import Body
from pdm_operator.reporting.sinks import SINKS


@dataclass(frozen=True)
class Policy:
    required: bool
    blocking: bool


def for_sink(sink: Body, pipeline: str) -> Policy:
    defaults = SINKS[sink["type"]].DEFAULTS
    required, blocking = defaults.get(pipeline, defaults["Regular"])
    required = bool(sink.get("required", required))
    blocking = bool(sink.get("blocking", blocking)) and required
    return Policy(required=required, blocking=blocking)
