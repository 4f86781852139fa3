"""The migration image comes from the live Deployment, pinned by digest when pods agree."""

from __future__ import annotations

import pytest

from pdm_operator import images
from pdm_operator.images import Resolved, Unresolved
from pdm_operator.model import Body

HEX_A = "a" * 64
HEX_B = "0123456789abcdef" * 4
DIGEST_A = f"sha256:{HEX_A}"
DIGEST_B = f"sha256:{HEX_B}"

REPO = "registry.example.com:5000/gitlab/toolbox"
SOURCE = f"{REPO}:v17.5.0"


def pod(
    image_id: str | None,
    *,
    image: str = SOURCE,
    container: str = "toolbox",
    deleting: bool = False,
    name: str = "toolbox-abc",
) -> Body:
    status: Body = {"name": container, "image": image}
    if image_id is not None:
        status["imageID"] = image_id
    meta: Body = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    return {"metadata": meta, "status": {"containerStatuses": [status]}}


def deployment(*containers: tuple[str, str]) -> Body:
    return {
        "metadata": {"name": "gitlab-toolbox"},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": n, "image": image} for n, image in containers]}
            }
        },
    }


# --- strip_tag -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("toolbox:v1", "toolbox"),
        ("toolbox", "toolbox"),
        ("gitlab/toolbox:v1", "gitlab/toolbox"),
        ("registry:5000/repo:tag", "registry:5000/repo"),
        ("registry:5000/repo", "registry:5000/repo"),
        ("registry:5000/group/repo:v17.5.0-ee", "registry:5000/group/repo"),
        (f"repo@{DIGEST_A}", "repo"),
        (f"repo:tag@{DIGEST_A}", "repo"),
        (f"registry:5000/repo@{DIGEST_A}", "registry:5000/repo"),
        (f"registry:5000/repo:tag@{DIGEST_A}", "registry:5000/repo"),
    ],
)
def test_strip_tag_removes_tag_and_digest_but_not_a_registry_port(
    image: str, expected: str
) -> None:
    assert images.strip_tag(image) == expected


# --- digest_of -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image_id",
    [
        f"{REPO}@{DIGEST_B}",
        f"docker.io/library/busybox@{DIGEST_B}",
        f"docker-pullable://{REPO}@{DIGEST_B}",
    ],
)
def test_digest_of_accepts_a_pullable_repo_digest(image_id: str) -> None:
    assert images.digest_of(image_id) == DIGEST_B


@pytest.mark.parametrize(
    "image_id",
    [
        pytest.param(DIGEST_A, id="bare-config-id"),
        pytest.param(f"docker://{DIGEST_A}", id="docker-config-id"),
        pytest.param(f"{REPO}@sha256:{HEX_A[:63]}", id="short"),
        pytest.param(f"{REPO}@sha256:{HEX_A}0", id="long"),
        pytest.param(f"{REPO}@sha256:{'g' * 64}", id="not-hex"),
        pytest.param(f"{REPO}@sha256:{HEX_A.upper()}", id="upper-case"),
        pytest.param(f"{REPO}@sha512:{'a' * 128}", id="other-algorithm"),
        pytest.param(f"{REPO}:v17.5.0", id="tag"),
        pytest.param("", id="empty"),
    ],
)
def test_digest_of_rejects_what_a_registry_cannot_pull_by(image_id: str) -> None:
    assert images.digest_of(image_id) is None


# --- pinned ----------------------------------------------------------------------------


def test_image_is_pinned_when_all_running_pods_report_the_same_digest() -> None:
    pods = [
        pod(f"{REPO}@{DIGEST_A}", name="a"),
        pod(f"docker-pullable://{REPO}@{DIGEST_A}", name="b"),
    ]
    assert images.pinned(SOURCE, "toolbox", pods) == f"{REPO}@{DIGEST_A}"


def test_image_keeps_its_tag_when_there_are_no_pods() -> None:
    assert images.pinned(SOURCE, "toolbox", []) == SOURCE


def test_image_keeps_its_tag_when_no_pod_reports_a_digest() -> None:
    pods = [pod(None, name="a"), pod("", name="b"), pod(DIGEST_A, name="c")]
    assert images.pinned(SOURCE, "toolbox", pods) == SOURCE


def test_image_keeps_its_tag_when_pods_disagree_on_the_digest() -> None:
    pods = [pod(f"{REPO}@{DIGEST_A}", name="a"), pod(f"{REPO}@{DIGEST_B}", name="b")]
    assert images.pinned(SOURCE, "toolbox", pods) == SOURCE


def test_pods_being_deleted_do_not_count() -> None:
    pods = [
        pod(f"{REPO}@{DIGEST_B}", name="old", deleting=True),
        pod(f"{REPO}@{DIGEST_A}", name="new"),
    ]
    assert images.pinned(SOURCE, "toolbox", pods) == f"{REPO}@{DIGEST_A}"


def test_only_pods_being_deleted_leave_the_tag() -> None:
    pods = [pod(f"{REPO}@{DIGEST_A}", deleting=True)]
    assert images.pinned(SOURCE, "toolbox", pods) == SOURCE


def test_pods_running_another_image_do_not_count() -> None:
    pods = [
        pod(f"{REPO}@{DIGEST_B}", name="previous", image=f"{REPO}:v17.4.0"),
        pod(f"{REPO}@{DIGEST_A}", name="current"),
    ]
    assert images.pinned(SOURCE, "toolbox", pods) == f"{REPO}@{DIGEST_A}"


def test_other_containers_of_the_pods_do_not_count() -> None:
    both = pod(f"{REPO}@{DIGEST_A}")
    both["status"]["containerStatuses"].append(
        {"name": "sidecar", "image": SOURCE, "imageID": f"{REPO}@{DIGEST_B}"}
    )
    assert images.pinned(SOURCE, "toolbox", [both]) == f"{REPO}@{DIGEST_A}"


def test_pods_without_container_statuses_do_not_count() -> None:
    pods = [{"metadata": {"name": "pending"}, "status": {}}, pod(f"{REPO}@{DIGEST_A}")]
    assert images.pinned(SOURCE, "toolbox", pods) == f"{REPO}@{DIGEST_A}"


def test_image_already_pinned_by_digest_is_kept_as_is() -> None:
    source = f"{REPO}:v17.5.0@{DIGEST_A}"
    pods = [pod(f"{REPO}@{DIGEST_B}", image=source)]
    assert images.pinned(source, "toolbox", pods) == source


def test_untagged_image_is_pinned_on_its_repository() -> None:
    pods = [pod(f"docker.io/library/toolbox@{DIGEST_A}", image="toolbox")]
    assert images.pinned("toolbox", "toolbox", pods) == f"toolbox@{DIGEST_A}"


# --- resolve ---------------------------------------------------------------------------


def test_missing_deployment_is_deployment_not_found_naming_it() -> None:
    result = images.resolve("gitlab-toolbox", None, "toolbox", [])
    assert isinstance(result, Unresolved)
    assert result.reason == "DeploymentNotFound"
    assert "'gitlab-toolbox'" in result.message


def test_missing_container_is_container_not_found_listing_the_containers() -> None:
    dep = deployment(("toolbox", SOURCE), ("backup", "busybox:1"))
    result = images.resolve("gitlab-toolbox", dep, "migrations", [])
    assert isinstance(result, Unresolved)
    assert result.reason == "ContainerNotFound"
    assert "'gitlab-toolbox'" in result.message
    assert "'migrations'" in result.message
    assert "['toolbox', 'backup']" in result.message


def test_deployment_without_containers_is_container_not_found() -> None:
    result = images.resolve("gitlab-toolbox", {"metadata": {}}, "toolbox", [])
    assert isinstance(result, Unresolved)
    assert result.reason == "ContainerNotFound"


def test_resolved_image_is_the_named_containers_image_pinned_by_pods() -> None:
    dep = deployment(("backup", "busybox:1"), ("toolbox", SOURCE))
    result = images.resolve("gitlab-toolbox", dep, "toolbox", [pod(f"{REPO}@{DIGEST_A}")])
    assert result == Resolved(image=f"{REPO}@{DIGEST_A}", source=SOURCE)


def test_resolved_image_keeps_the_tag_without_pods() -> None:
    dep = deployment(("toolbox", SOURCE))
    assert images.resolve("gitlab-toolbox", dep, "toolbox", []) == Resolved(SOURCE, SOURCE)


def test_template_image_reads_the_named_container_only() -> None:
    dep = deployment(("backup", "busybox:1"), ("toolbox", SOURCE))
    assert images.template_image(dep, "toolbox") == SOURCE
    assert images.template_image(dep, "backup") == "busybox:1"
    assert images.template_image(dep, "missing") is None


def test_pinning_matches_runtime_normalised_short_names() -> None:
    # Runtimes report "docker.io/library/x:t" for a template that says "x:t".
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {
                    "name": "toolbox",
                    "image": "docker.io/library/toolbox:v1",
                    "imageID": "docker.io/library/toolbox@sha256:" + "ab" * 32,
                }
            ]
        },
    }
    assert images.pinned("toolbox:v1", "toolbox", [pod]) == "toolbox@sha256:" + "ab" * 32
