"""A GitLab release as the Helm chart renders it, for tests: examples/gitlab-chart-release.yaml.

One set of chart-shaped objects (the migrations Job of a regular deploy, its
ConfigMap and secrets, the toolbox and webservice Deployments) serves the
unit tests of the template copy, the integration tests and ``make run``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.pdm import Api

RELEASE_FILE = Path(__file__).resolve().parents[2] / "examples" / "gitlab-chart-release.yaml"
CHART_JOB = "gitlab-migrations-3b1f2c7"
TOOLBOX_IMAGE = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.6.0"
SKIP = "SKIP_POST_DEPLOYMENT_MIGRATIONS"


def objects() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(RELEASE_FILE.read_text()) if d]


def release_object(kind: str, name: str) -> dict[str, Any]:
    for doc in objects():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return copy.deepcopy(doc)
    raise AssertionError(f"{kind}/{name} is not in {RELEASE_FILE}")


def chart_job(name: str = CHART_JOB, image: str = TOOLBOX_IMAGE) -> dict[str, Any]:
    """The chart's migrations Job, renamed and re-imaged as another ``helm upgrade`` would."""
    job = release_object("Job", CHART_JOB)
    job["metadata"]["name"] = name
    for c in job["spec"]["template"]["spec"]["containers"]:
        if c["name"] == "migrations":
            c["image"] = image
    return job


@dataclass(frozen=True)
class Database:
    """Where the release's Rails finds PostgreSQL (the ConfigMap's database.yml)."""

    host: str
    port: int
    name: str


def on_real_node(pod_spec: dict[str, Any], placement: dict[str, Any]) -> None:
    """Put a pod template on the real node (``real_node`` fixture's placement)."""
    if placement.get("nodeSelector"):
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **placement["nodeSelector"]}
    pod_spec["tolerations"] = [*pod_spec.get("tolerations", []), *placement.get("tolerations", [])]


def install(
    api: Api,
    *,
    job: dict[str, Any] | None = None,
    with_job: bool = True,
    database: Database | None = None,
    placement: dict[str, Any] | None = None,
) -> None:
    """Create the release in the test's namespace; the Deployments are rolled out on return.

    With ``database`` and ``placement``, the release really runs: its
    database.yml points at that PostgreSQL, and the migrations Job and the
    toolbox run on the real node (the webservice stays on kwok: its image
    exists nowhere).
    """
    for doc in objects():
        kind = doc["kind"]
        if doc["metadata"]["name"] in ("gitlab-toolbox", CHART_JOB) and placement is not None:
            on_real_node(doc["spec"]["template"]["spec"], placement)
        if kind == "ConfigMap":
            if database is not None:
                text = doc["data"]["database.yml.erb"]
                text = text.replace(
                    'host: "gitlab-postgresql.gitlab.svc"', f'host: "{database.host}"'
                )
                text = text.replace("port: 5432", f"port: {database.port}")
                text = text.replace("database: gitlabhq_production", f"database: {database.name}")
                doc["data"]["database.yml.erb"] = text
            api.core.create_namespaced_config_map(api.ns, doc)
        elif kind == "Secret":
            api.core.create_namespaced_secret(api.ns, doc)
        elif kind == "Job":
            if with_job:
                if job is not None and placement is not None:
                    on_real_node(job["spec"]["template"]["spec"], placement)
                api.batch.create_namespaced_job(api.ns, job or doc)
        elif kind == "Deployment":
            api.deploy(doc)
        else:
            raise AssertionError(f"unexpected {kind} in {RELEASE_FILE}")


def env_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env") or []]
