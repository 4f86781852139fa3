"""QAIssue: after a successful Regular run, an issue asking for QA in the
project named (once: the issue carries the migration's marker and is looked
up by it before one is created)."""

from __future__ import annotations

import gitlab

from pdm_operator.model import Body
from pdm_operator.reporting.records import Result
from pdm_operator.reporting.sinks.common import (
    OPTS,
    Captured,
    Context,
    explained,
    through_gitlab,
    version,
)

TYPE = "QAIssue"
#: Blocking in a Regular pipeline (QA waits on it); a rollback asks for none.
DEFAULTS = {"Regular": (True, True), "Rollback": (False, False)}


def targets(sink: Body, spec: Body, final: str) -> list[tuple[str, str]]:
    return [(str(sink["project"]), "created")] if final == "success" else []


def deliver(record: Body, ctx: Context) -> Result:
    return through_gitlab(record, ctx, create_once)


def create_once(gl: gitlab.Gitlab, record: Body, ctx: Context, captured: Captured) -> Result:
    target = record["target"]
    project = gl.projects.get(target, lazy=True)
    shipped = version(ctx.spec, ctx.sink(TYPE), target)
    what = f"{shipped['ref']} {str(shipped['sha'])[:11]} " if shipped else ""
    title = f"{ctx.environment}: post-deploy migrations of {what}{ctx.marker}"
    with explained("look up the QA issue", target, captured):
        for issue in project.issues.list(search=ctx.marker, in_="title", get_all=False, **OPTS):
            if ctx.marker in issue.attributes.get("title", ""):
                return Result(delivered=True, remote_id=str(issue.attributes["iid"]))
    what_ran = f" for `{shipped['ref']}` (`{shipped['sha']}`)" if shipped else ""
    with explained("create the QA issue", target, captured):
        issue = project.issues.create(
            {
                "title": title,
                "description": (
                    f"Post-deployment migrations ran in `{ctx.environment}`{what_ran} "
                    "and succeeded. Please run QA."
                ),
                "labels": "QA,post-deploy-migrations",
            },
            **OPTS,
        )
    return Result(delivered=True, remote_id=str(issue.attributes["iid"]))
