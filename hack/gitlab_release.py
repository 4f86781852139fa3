"""The chart-shaped GitLab release (examples/gitlab-chart-release.yaml), made to run here.

One place for ``make run`` and the tests to turn the example into a release
that really runs on the real node: database.yml pointed at the stand-in
GitLab's PostgreSQL (main, and ci in ``<name>_ci``), the chosen Jobs and
Deployments placed on the real node, and the chart values a deploy sets
(``gitlab.webservice.extraEnv`` / ``gitlab.sidekiq.extraEnv``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from realnode import NODE_LABEL, TAINT_KEY

RELEASE_FILE = Path(__file__).resolve().parents[1] / "examples" / "gitlab-chart-release.yaml"
CHART_JOB = "gitlab-migrations-3b1f2c7"
TOOLBOX = "gitlab-toolbox"
WEBSERVICE = "gitlab-webservice-default"
SIDEKIQ = "gitlab-sidekiq-all-in-1-v2"
#: The Deployments whose pods wait in the chart's ``dependencies`` check.
RAILS = (WEBSERVICE, SIDEKIQ)
BYPASS = "BYPASS_POST_DEPLOYMENT"


@dataclass(frozen=True)
class Database:
    """Where the release's Rails finds PostgreSQL: ``name`` for main, ``name_ci`` for ci."""

    host: str
    port: int
    name: str

    @property
    def ci(self) -> str:
        return f"{self.name}_ci"


def objects() -> list[dict[str, Any]]:
    """The example as written."""
    return [d for d in yaml.safe_load_all(RELEASE_FILE.read_text()) if d]


def point_at(database_yml: str, db: Database) -> str:
    """The chart's database.yml.erb with both databases on ``db``'s server."""
    text = database_yml.replace('host: "gitlab-postgresql.gitlab.svc"', f'host: "{db.host}"')
    text = text.replace("port: 5432", f"port: {db.port}")
    text = re.sub(r"database: gitlabhq_production_ci$", f"database: {db.ci}", text, flags=re.M)
    return re.sub(r"database: gitlabhq_production$", f"database: {db.name}", text, flags=re.M)


def on_real_node(pod_spec: dict[str, Any]) -> None:
    """Put a pod template on the local real node (its label and taint)."""
    pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), NODE_LABEL: "real"}
    pod_spec["tolerations"] = [
        *pod_spec.get("tolerations", []),
        {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"},
    ]


def with_bypass(deployment: dict[str, Any]) -> dict[str, Any]:
    """``deployment`` as ``--set gitlab.<app>.extraEnv.BYPASS_POST_DEPLOYMENT=true`` renders
    it: the chart's extraEnv helpers put it in every container, ``dependencies`` included."""
    out = copy.deepcopy(deployment)
    spec = out["spec"]["template"]["spec"]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        env = [e for e in container.get("env", []) if e["name"] != BYPASS]
        container["env"] = [*env, {"name": BYPASS, "value": "true"}]
    return out


def release(
    db: Database | None = None,
    *,
    real_node: Collection[str] = (),
    bypass: bool = False,
    replicas: int | None = None,
) -> list[dict[str, Any]]:
    """The release's objects.

    ``db``: where database.yml points. ``real_node``: the Jobs and Deployments
    (by name) placed on the real node. ``bypass``: the webservice and Sidekiq
    rendered with ``BYPASS_POST_DEPLOYMENT=true``. ``replicas``: the webservice's.
    """
    docs = objects()
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap" and db is not None:
            doc["data"]["database.yml.erb"] = point_at(doc["data"]["database.yml.erb"], db)
        if doc["kind"] in ("Job", "Deployment") and name in real_node:
            on_real_node(doc["spec"]["template"]["spec"])
        if name == WEBSERVICE and replicas is not None:
            doc["spec"]["replicas"] = replicas
    if bypass:
        docs = [with_bypass(d) if d["metadata"]["name"] in RAILS else d for d in docs]
    return docs
