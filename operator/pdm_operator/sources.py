"""Reading what a migration Job is built from: its image and its pod template.

One path for the operator's passes and for ``pdm-operator diff``, so the CLI
shows exactly the Job the operator would create. The decisions are in the
pure modules (``images``, ``templates``); this module only reads.
"""

from __future__ import annotations

from collections.abc import Callable

from pdm_operator import images, templates
from pdm_operator.kube import Kube
from pdm_operator.model import Body


def deployment_pods(kube: Kube, namespace: str, deployment: Body | None) -> list[Body]:
    """The pods of ``deployment`` (by its selector's matchLabels), for digest pinning."""
    if deployment is None:
        return []
    labels = (deployment.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    if not labels:
        return []
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return kube.list_pods(namespace, selector)


def image(
    kube: Kube,
    namespace: str,
    image_spec: Body,
    get_deployment: Callable[[str], Body | None] | None = None,
) -> images.Resolved | images.Unresolved:
    """``spec.image``: the reference as written, or the live Deployment's container image.

    ``get_deployment``: how to read the Deployment (a pass reads each once).
    """
    if image_spec.get("reference"):
        ref = str(image_spec["reference"])
        return images.Resolved(image=ref, source=ref)
    source = image_spec["fromDeployment"]
    read = get_deployment or (lambda name: kube.get_deployment(namespace, name))
    deployment = read(source["name"])
    pods = deployment_pods(kube, namespace, deployment)
    return images.resolve(source["name"], deployment, source["container"], pods)


def template(
    kube: Kube, namespace: str, spec: Body
) -> templates.Template | templates.Missing | None:
    """``spec.podTemplateFrom`` read from the cluster; None when the PDM has none."""
    source = spec.get("podTemplateFrom")
    if not source:
        return None
    if "migrationsJob" in source:
        wanted = source["migrationsJob"]
        selector = templates.job_selector(wanted)
        found = templates.newest_job(kube.list_jobs(namespace, selector), selector)
        if isinstance(found, templates.Missing):
            return found
        return templates.from_job(
            found, str(wanted.get("container") or templates.DEFAULT_JOB_CONTAINER)
        )
    wanted = source["toolboxDeployment"]
    deployment = kube.get_deployment(namespace, wanted["name"])
    if deployment is None:
        return templates.Missing(
            "TemplateNotFound",
            f"Deployment {wanted['name']!r} (spec.podTemplateFrom.toolboxDeployment) was not found",
        )
    return templates.from_deployment(
        deployment, str(wanted.get("container") or templates.DEFAULT_DEPLOYMENT_CONTAINER)
    )
