"""Resolve the image a migration runs, from the live Deployment (pure part).

The rule from GitLab's rollout: the migration runs the toolbox image of the
version that is deployed right now, and the caller never passes a tag. So the
image comes from the named container of the Deployment, and is pinned by
digest when the Deployment's running pods all report the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdm_operator.model import Body


@dataclass(frozen=True)
class Resolved:
    image: str  # what the Job runs (pinned when possible)
    source: str  # what the Deployment's pod template says


@dataclass(frozen=True)
class Unresolved:
    reason: str  # DeploymentNotFound | ContainerNotFound
    message: str


def _name_and_tag(image: str) -> tuple[str, str | None]:
    """``registry:5000/repo:v18.6.0@sha256:…`` -> (``registry:5000/repo``, ``v18.6.0``)."""
    name = image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return (name[:colon], name[colon + 1 :]) if colon > slash else (name, None)


def strip_tag(image: str) -> str:
    """``registry:5000/repo:tag`` -> ``registry:5000/repo`` (digests are kept out too)."""
    return _name_and_tag(image)[0]


def tag(image: str) -> str | None:
    """``registry:5000/repo:v18.6.0@sha256:…`` -> ``v18.6.0``; None without a tag."""
    return _name_and_tag(image)[1]


def digest_of(image_id: str) -> str | None:
    """The manifest digest in a container status imageID, if it has one.

    Runtimes report ``repo@sha256:…`` (containerd, CRI-O) or
    ``docker-pullable://repo@sha256:…``; a bare ``sha256:…`` is an image
    config ID, not something a registry can pull, so it is not used.
    """
    if "@sha256:" not in image_id:
        return None
    digest = image_id.rsplit("@", 1)[1]
    hexpart = digest.removeprefix("sha256:")
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        return None
    return digest


def normalized(image: str) -> str:
    """The fully qualified form runtimes report: ``x:t`` -> ``docker.io/library/x:t``."""
    first, _, rest = image.partition("/")
    if not rest:
        return f"docker.io/library/{image}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{image}"
    return image


def template_image(deployment: Body, container: str) -> str | None:
    for c in deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        if c.get("name") == container:
            image = c.get("image")
            return str(image) if image else None
    return None


def pinned(source: str, container: str, pods: list[Body]) -> str:
    """``source`` pinned by the digest its running pods agree on, else unchanged."""
    if "@sha256:" in source:
        return source
    digests = set()
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        for status in pod.get("status", {}).get("containerStatuses") or []:
            if status.get("name") != container:
                continue
            if normalized(status.get("image") or "") != normalized(source):
                continue
            digest = digest_of(status.get("imageID") or "")
            if digest:
                digests.add(digest)
    if len(digests) == 1:
        return f"{strip_tag(source)}@{digests.pop()}"
    # None reported, or pods disagree (the tag moved mid-rollout): the tag
    # is the honest answer.
    return source


def resolve(
    deployment_name: str, deployment: Body | None, container: str, pods: list[Body]
) -> Resolved | Unresolved:
    if deployment is None:
        return Unresolved(
            "DeploymentNotFound",
            f"Deployment {deployment_name!r} (spec.image.fromDeployment.name) was not found",
        )
    source = template_image(deployment, container)
    if source is None:
        names = [
            c.get("name")
            for c in deployment.get("spec", {})
            .get("template", {})
            .get("spec", {})
            .get("containers", [])
        ]
        return Unresolved(
            "ContainerNotFound",
            f"Deployment {deployment_name!r} has no container {container!r} "
            f"(spec.image.fromDeployment.container); it has {names}",
        )
    return Resolved(image=pinned(source, container, pods), source=source)
