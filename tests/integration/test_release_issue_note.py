"""The release issue's notes from a real run: the plan Rails listed (the stand-in
GitLab toolbox on the real node, a real PostgreSQL), approved from the note's
own command, and the outcome naming the migration Rails failed on; posted to
the strict fake GitLab's notes endpoint."""

from __future__ import annotations

import re
from typing import Any

import pytest

from postgres import Postgres
from tests.integration.conftest import Cluster
from tests.support.fake_gitlab import FakeGitLab
from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, migration
from tests.support.standin import CHART, REGULAR, both, gated, kubectl_pdm, pending_rows
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

TOKEN = "glpat-release-note-3c9a"
TASKS = "gitlab-org/release/tasks"
ROW = re.compile(
    r"^\| \d+ \| `(?P<version>\d+)` \| `[^`]*` \| `(?P<db>[^`]*)` \| (?P<state>[a-z ]+) \|"
)


def note(gitlab: FakeGitLab, kind: str) -> str | None:
    for found in gitlab.notes(TASKS, 1):
        if f"kind={kind} -->" in found["body"]:
            return str(found["body"])
    return None


def table(body: str) -> list[tuple[str, str, str]]:
    """(database, version, state) of each migration row of a note."""
    return [
        (m["db"], m["version"], m["state"].strip())
        for line in body.splitlines()
        if (m := ROW.match(line))
    ]


def test_the_release_issue_gets_the_plan_rails_listed_and_where_it_failed(
    cluster: Cluster,
    api: Api,
    operator: OperatorProcess,
    deployed: tuple[Postgres, str],
) -> None:
    db, name = deployed
    # Data the first post-deployment migration's unique index cannot be built on.
    db.psql(
        "INSERT INTO projects (path) VALUES ('gitlab-org/gitlab'), ('gitlab-org/gitlab')",
        database=name,
    )
    api.core.create_namespaced_secret(
        api.ns, {"metadata": {"name": "gitlab-api"}, "stringData": {"token": TOKEN}}
    )
    with FakeGitLab(token=TOKEN) as gitlab:
        gitlab.add_issue(TASKS, "Release 18.6.0")
        tracking: dict[str, Any] = {
            "gitlab": {"url": gitlab.url, "tokenSecretRef": {"name": "gitlab-api", "key": "token"}},
            "sinks": [{"type": "IssueNote", "project": TASKS, "issue": 1}],
        }
        api.create(
            migration(
                "pdm-noted",
                podTemplateFrom=CHART,
                preflight={},
                approval={"required": True},
                tracking=tracking,
            )
        )
        gated(api, "pdm-noted", "AwaitingApproval")
        plan = wait_until(
            lambda: note(gitlab, "plan"), timeout=60, what="the plan noted on the release issue"
        )
        # The pending list Rails printed, in its order, before anything ran.
        assert [(d, v) for d, v, _ in table(plan)] == pending_rows(name)
        assert {state for _, _, state in table(plan)} == {"pending"}
        assert "| Pending | 8 |" in plan
        # The note's own command approves exactly the plan it shows.
        command = re.search(r"`kubectl pdm approve -n (\S+) (\S+) --plan (sha256:[0-9a-f]+)`", plan)
        assert command is not None, plan
        status = api.get("pdm-noted")["status"]  # type: ignore[index]
        assert command.group(3) == status["preflight"]["planHash"]
        approved = kubectl_pdm(cluster, "approve", command.group(2), "-n", command.group(1),
                               "--plan", command.group(3))  # fmt: skip
        assert approved.returncode == 0, approved.stderr

        api.wait_condition("pdm-noted", "Failed", timeout=180)
        api.wait_condition("pdm-noted", "Reported", timeout=60)
        outcome = note(gitlab, "outcome")
        assert outcome is not None
        assert outcome.startswith("**Post-deployment migrations failed**")
        assert "| Failed at | `20261115000001` `AddUniqueIndexOnProjectPath` `main` |" in outcome
        assert "PG::UniqueViolation" in outcome
        states = {(d, v): state for d, v, state in table(outcome)}
        assert states[(name, "20261115000001")] == "failed"
        # Nothing ran after it, and nothing is said to have been applied.
        assert "applied" not in states.values()
        assert both(db, name) == (REGULAR, REGULAR)
        assert len(gitlab.notes(TASKS, 1)) == 2
        assert gitlab.quick_actions(TASKS, 1) == []
