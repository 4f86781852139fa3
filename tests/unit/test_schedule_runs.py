"""The schedule's effects, through the environment loop (``envstatus.EnvironmentStatus``),
against a cluster in memory that answers as the API server does (409 on a taken
name, 422 on a refused spec): one run per opening, never another's run taken
for the schedule's, and waiting migrations woken by an edit of their environment.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, cast

from pdm_operator import errors, schedule
from pdm_operator.envstatus import EnvironmentStatus
from pdm_operator.kube import Kube
from pdm_operator.model import Body

NOW = "2026-12-02T13:10:00Z"  # Wednesday, inside the window
TEMPLATE = {"image": {"reference": "registry.example.com/gitlab-toolbox-ee:v18.6.0"}}
NAME = "gprd-20261202-1300"
#: Some of the defaults the CRD's schema fills in.
DEFAULTS = {"mode": "Run", "pipeline": "Regular", "suspend": False}


def environment(**status: Any) -> Body:
    return {
        "metadata": {"name": "gprd", "generation": 1},
        "spec": {
            "namespaces": ["gitlab"],
            "windows": [{"start": "13:00", "end": "16:00"}],
            "schedule": {"namespace": "gitlab", "template": TEMPLATE},
        },
        "status": status,
    }


class Cluster:
    """The calls EnvironmentStatus makes, answered from memory."""

    def __init__(self, env: Body, *, refuse: errors.ApiError | None = None) -> None:
        self.env = env
        self.migrations: dict[str, Body] = {}
        self.refuse = refuse
        self.creates = 0

    def list_environments(self) -> list[Body]:
        return [copy.deepcopy(self.env)]

    def get_lease(self, namespace: str, name: str) -> Body | None:
        return None

    def get_configmap(self, namespace: str, name: str) -> Body | None:
        return None

    def patch_environment_status(self, name: str, patch: Body) -> Body:
        for key, value in patch["status"].items():
            if value is None:
                self.env["status"].pop(key, None)
            else:
                self.env["status"][key] = value
        return self.env

    def list_migrations(self, namespace: str, selector: str | None = None) -> list[Body]:
        key, _, value = (selector or "=").partition("=")
        return [
            m
            for m in self.migrations.values()
            if not key or (m["metadata"].get("labels") or {}).get(key) == value
        ]

    def create_migration(self, namespace: str, migration: Body, *, dry_run: bool = False) -> Body:
        """As the API server: the CRD's defaults filled in; 409 on a taken name."""
        stored = copy.deepcopy(migration)
        stored["spec"] = {**DEFAULTS, **stored["spec"]}
        if dry_run:
            return stored
        self.creates += 1
        if self.refuse is not None:
            raise self.refuse
        name = migration["metadata"]["name"]
        if name in self.migrations:
            raise errors.AlreadyExists(f'postdeploymigrations "{name}" already exists', 409)
        self.migrations[name] = stored
        return stored

    def get_migration(self, namespace: str, name: str) -> Body | None:
        return self.migrations.get(name)


def loop(cluster: Cluster, changed: list[str] | None = None) -> EnvironmentStatus:
    return EnvironmentStatus(
        cast("Kube", cluster),
        "pdm-system",
        [],
        lambda _: [],
        lambda: NOW,
        changed=(changed.append if changed is not None else lambda _: None),
    )


def scheduled(cluster: Cluster) -> tuple[str, str]:
    found = [c for c in cluster.env["status"]["conditions"] if c["type"] == schedule.SCHEDULED]
    return found[0]["status"], found[0]["reason"]


def test_one_run_per_opening_however_many_rounds() -> None:
    cluster = Cluster(environment())
    envs = loop(cluster)
    for _ in range(3):
        envs.refresh()
    assert list(cluster.migrations) == [NAME]
    assert cluster.creates == 1
    assert cluster.env["status"]["scheduled"] == {
        "opening": "2026-12-02T13:00:00Z",
        "migration": f"gitlab/{NAME}",
    }
    assert scheduled(cluster) == ("True", "Started")


def test_a_run_made_before_a_restart_is_recorded_not_made_again() -> None:
    cluster = Cluster(environment())
    loop(cluster).refresh()
    del cluster.env["status"]["scheduled"]  # the status write was lost in the crash
    cluster.migrations[NAME]["status"] = {"state": "Succeeded", "conditions": [
        {"type": "Succeeded", "status": "True"}]}  # fmt: skip
    loop(cluster).refresh()  # a new process
    assert cluster.env["status"]["scheduled"]["migration"] == f"gitlab/{NAME}"
    assert list(cluster.migrations) == [NAME]


def test_someone_elses_run_under_the_name_is_not_taken_for_the_schedules() -> None:
    cluster = Cluster(environment())
    forged = schedule.migration("gprd", "gitlab", {"template": TEMPLATE}, _opening())
    forged["spec"] = DEFAULTS | forged["spec"] | {"suspend": True}  # held: no run this opening
    cluster.migrations[NAME] = forged
    loop(cluster).refresh()
    assert scheduled(cluster)[1] == "NameTaken"
    assert "scheduled" not in cluster.env["status"]
    other = schedule.migration(
        "gprd", "gitlab", {"template": {"image": {"reference": "x:1"}}}, _opening()
    )
    cluster.migrations[NAME] = other  # the label, another spec: waits for it to end
    loop(cluster).refresh()
    assert scheduled(cluster)[1] == "PreviousRunUnfinished"
    other["status"] = {"conditions": [{"type": "Succeeded", "status": "True"}]}
    loop(cluster).refresh()
    assert scheduled(cluster)[1] == "NameTaken"
    del cluster.migrations[NAME]["metadata"]["labels"]
    cluster.migrations[NAME]["spec"] = DEFAULTS | TEMPLATE | {"environment": "gprd"}
    loop(cluster).refresh()  # the spec as stored, no label
    assert scheduled(cluster)[1] == "NameTaken"


def test_an_unfinished_scheduled_run_starts_nothing_new() -> None:
    cluster = Cluster(environment())
    earlier = schedule.migration("gprd", "gitlab", {"template": TEMPLATE}, _opening(day=1))
    cluster.migrations[earlier["metadata"]["name"]] = earlier
    loop(cluster).refresh()
    assert scheduled(cluster) == ("False", "PreviousRunUnfinished")
    assert cluster.creates == 0


def test_a_template_the_api_server_refuses_says_its_words() -> None:
    refusal = errors.Invalid('spec.image: Invalid value: "x y": not an image reference', 422)
    cluster = Cluster(environment(), refuse=refusal)
    loop(cluster).refresh()
    assert scheduled(cluster) == ("False", "TemplateRejected")
    message = next(
        c["message"] for c in cluster.env["status"]["conditions"] if c["type"] == "Scheduled"
    )
    assert "not an image reference" in message
    assert "scheduled" not in cluster.env["status"]


def test_an_edit_of_the_environment_wakes_its_migrations_once() -> None:
    cluster = Cluster(environment())
    woken: list[str] = []
    envs = loop(cluster, woken)
    envs.refresh()
    assert woken == []  # the first sighting is no change
    cluster.env["metadata"]["generation"] = 2  # kubectl pdm lock
    envs.refresh()
    envs.refresh()
    assert woken == ["gprd"]


def _opening(day: int = 2) -> datetime:
    return datetime(2026, 12, day, 13, 0, tzinfo=UTC)
