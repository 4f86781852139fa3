"""A GitLab release as the Helm chart renders it, for tests: examples/gitlab-chart-release.yaml.

One set of chart-shaped objects (the migrations Job of a regular deploy, its
ConfigMap and secrets, the toolbox and webservice Deployments) serves the
unit tests of the template copy, the integration tests and ``make run``.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import gitlab_release
from tests.support.pdm import Api

CHART_JOB = gitlab_release.CHART_JOB
TOOLBOX_IMAGE = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.6.0"
SKIP = "SKIP_POST_DEPLOYMENT_MIGRATIONS"
RELEASE_FILE = gitlab_release.RELEASE_FILE
Database = gitlab_release.Database
objects = gitlab_release.objects


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
    run: Collection[str] = (),
    bypass: bool = False,
    replicas: int | None = None,
) -> None:
    """Create the release in the test's namespace.

    With ``database`` and ``placement``, the release really runs: its
    database.yml points at that PostgreSQL, and the migrations Job, the
    toolbox and the Deployments named in ``run`` (the webservice, Sidekiq) run
    on the real node. The other Deployments stay on kwok and are rolled out on
    return; those in ``run`` are not waited for (their ``dependencies`` check
    decides). ``bypass``: the webservice and Sidekiq rendered with
    ``gitlab.<app>.extraEnv.BYPASS_POST_DEPLOYMENT=true``.
    """
    real = {gitlab_release.TOOLBOX, CHART_JOB, *run}
    for doc in gitlab_release.release(database, bypass=bypass, replicas=replicas):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("Job", "Deployment") and name in real and placement is not None:
            on_real_node(doc["spec"]["template"]["spec"], placement)
        if kind == "ConfigMap":
            api.core.create_namespaced_config_map(api.ns, doc)
        elif kind == "Secret":
            api.core.create_namespaced_secret(api.ns, doc)
        elif kind == "Job":
            if with_job:
                if job is not None and placement is not None:
                    on_real_node(job["spec"]["template"]["spec"], placement)
                api.batch.create_namespaced_job(api.ns, job or doc)
        elif kind == "Deployment":
            api.deploy(doc, wait=name not in run)
        else:
            raise AssertionError(f"unexpected {kind} in {RELEASE_FILE}")


def env_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env") or []]
