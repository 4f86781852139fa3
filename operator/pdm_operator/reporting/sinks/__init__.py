"""The reporting sinks: one module each, with its default policy by pipeline
(``DEFAULTS``), the reports it wants for a run (``targets``) and one
delivery attempt (``deliver``, never raising). Adding a sink is a module
here, its entry in ``SINKS`` and its name in the CRD's sink type enum.
"""

from __future__ import annotations

from typing import Protocol

from pdm_operator.model import Body
from pdm_operator.reporting.records import Result
from pdm_operator.reporting.sinks import (
    gitlab_deployment,
    issue_note,
    mr_labels,
    qa_issue,
    release_metadata,
    sentry_deploy,
)
from pdm_operator.reporting.sinks.common import Context, TokenError

__all__ = ["SINKS", "Context", "Sink", "TokenError", "deliver"]


class Sink(Protocol):
    TYPE: str
    #: (required, blocking) by pipeline (Regular, Rollback); a sink's
    #: ``required`` and ``blocking`` fields override them.
    DEFAULTS: dict[str, tuple[bool, bool]]

    def targets(self, sink: Body, spec: Body, final: str) -> list[tuple[str, str]]:
        """(target, desired state) of each report wanted, ``final`` being the
        run's status as a deployment shows it (running, success or failed), or
        ``planned`` before the Job once the pre-flight found the plan."""
        ...

    def deliver(self, record: Body, ctx: Context) -> Result:
        """One attempt at ``record``; never raises."""
        ...


SINKS: dict[str, Sink] = {
    module.TYPE: module
    for module in (
        gitlab_deployment,
        release_metadata,
        qa_issue,
        mr_labels,
        sentry_deploy,
        issue_note,
    )
}


def deliver(record: Body, ctx: Context) -> Result:
    """One attempt at ``record`` by its sink; never raises."""
    return SINKS[record["sink"]].deliver(record, ctx)
