"""Integration fixtures: a real Kubernetes control plane and a namespace per test.

``cluster`` (session): when ``PDM_TEST_KUBECONFIG`` or ``KUBECONFIG`` names a
cluster, the suite runs against it (a kind cluster on a laptop, say) and fails
at once if it is unreachable. Otherwise it starts the local control plane from
``hack/localcluster.py`` (building the binaries on first use), named after the
test process so concurrent runs do not collide, and stops it at the end;
``PDM_TEST_REUSE_CLUSTER=1`` keeps and reuses one named ``pdm-test``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from localcluster import ClusterError, LocalCluster, build_binaries
from postgres import USER, Postgres
from tests.support import realnode, standin
from tests.support.operator import OperatorProcess, pythonpath_env
from tests.support.pdm import Api
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Cluster:
    """What a test needs to reach the cluster under test."""

    kubeconfig: Path
    kubectl: Path
    api: client.ApiClient
    local: bool
    #: The stand-in GitLab's PostgreSQL beside the local real node, if there is one.
    database: Postgres | None = None
    #: The local cluster itself (None for a cluster named by KUBECONFIG).
    local_cluster: LocalCluster | None = None

    def run_kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl, as a user or a CI pipeline runs it, against this cluster."""
        return subprocess.run(
            [str(self.kubectl), *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )

    def env(self) -> dict[str, str]:
        """Environment for a child process (kubectl, the operator) aimed at this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.kubectl.parent}{os.pathsep}{env.get('PATH', '')}"
        return env


def _external_kubeconfig() -> Path | None:
    raw = os.environ.get("PDM_TEST_KUBECONFIG") or os.environ.get("KUBECONFIG")
    return Path(raw.split(os.pathsep)[0]) if raw else None


@pytest.fixture(scope="session", autouse=True)
def no_tracebacks_in_operator_logs() -> Iterator[None]:
    """After the whole run: no operator process of any test logged a traceback.

    Every failure the operator can meet (bad input, a refusing API server, an
    unreachable GitLab) is meant to end in a condition, an event and one log
    line; a traceback is a path nobody handled.
    """
    # Operators are forked from a warm forkserver (tests/support/operator.py);
    # PDM_TEST_FORK=0 starts each as `python -m pdm_operator.cli` instead.
    OperatorProcess.fork = os.environ.get("PDM_TEST_FORK", "1") == "1"
    yield
    OperatorProcess.reap()
    found = []
    for path in OperatorProcess.all_logs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        at = text.find("Traceback (most recent call last)")
        if at >= 0:
            found.append(f"{path}:\n{text[max(0, at - 400) : at + 2500]}")
    if found:
        pytest.fail(
            f"{len(found)} operator log(s) hold a traceback:\n\n" + "\n\n".join(found[:5]),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = _external_kubeconfig()
    if external is not None:
        api = config.new_client_from_config(config_file=str(external))
        try:
            client.VersionApi(api).get_code()
        except Exception as e:  # noqa: BLE001 - any failure means "not reachable"
            pytest.fail(f"the cluster in {external} is not reachable: {e}", pytrace=False)
        # Prefer the kubectl built for the local control plane (known version);
        # fall back to the one on PATH.
        try:
            kubectl = build_binaries()["kubectl"]
        except ClusterError:
            found = shutil.which("kubectl")
            if not found:
                pytest.fail("no kubectl found on PATH", pytrace=False)
            kubectl = Path(found)
        yield Cluster(external, kubectl, api, local=False)
        return

    reuse = os.environ.get("PDM_TEST_REUSE_CLUSTER") == "1"
    # A run of its own gets a cluster of its own: two runs on one machine
    # (a developer's and CI's) must not stop each other's control plane.
    default_name = "pdm-test" if reuse else f"pdm-test-{os.getpid()}"
    # The real node (kubelet + containerd) runs beside kwok; pods reach it only
    # when they ask (tests.support.realnode).
    local = LocalCluster(
        os.environ.get("PDM_TEST_CLUSTER_NAME", default_name),
        real_node=os.environ.get("PDM_REAL_NODE", "1") == "1",
    )
    if not reuse:
        local.down(quiet=True)
    try:
        kubeconfig = local.up()
    except ClusterError as e:
        pytest.fail(f"could not start the local control plane: {e}", pytrace=False)
    kubectl = Path(str(local.state()["bins"]["kubectl"]))  # type: ignore[index]
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Cluster(
            kubeconfig, kubectl, api, local=True, database=local.database(), local_cluster=local
        )
    finally:
        api.close()
        if not reuse:
            local.down(quiet=True)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards."""
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(cluster.api)
    labels = getattr(request, "param", None) or {}
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    """The CRDs (PostDeployMigration, PostDeployEnvironment), from crds/, Established."""
    root = Path(__file__).resolve().parents[2]
    out = cluster.run_kubectl(
        "apply", "--server-side", "--force-conflicts", "-k", str(root / "crds")
    )
    assert out.returncode == 0, out.stderr

    def established() -> subprocess.CompletedProcess[str] | None:
        # kubectl wait errs, rather than waits, on a CRD whose status has no
        # conditions yet (one created a moment ago).
        out = cluster.run_kubectl(
            "wait",
            "--for=condition=Established",
            "crd/postdeploymigrations.pdm-operator.io",
            "crd/postdeployenvironments.pdm-operator.io",
            "--timeout=60s",
        )
        return out if out.returncode == 0 else None

    wait_until(established, timeout=60, what="the CRDs Established")


@pytest.fixture
def real_node(cluster: Cluster) -> dict[str, Any]:
    """``spec.job`` placement onto a node that runs containers for real.

    Locally that is the real node beside kwok, with the images hack/realnode.py
    built. On a cluster named by KUBECONFIG the images must be loaded first
    (``kind load image-archive``, see hack/kind-e2e.sh); say so with
    PDM_TEST_IMAGES_LOADED=1.
    """
    if not cluster.local and os.environ.get("PDM_TEST_IMAGES_LOADED") != "1":
        pytest.skip(
            "real-node tests need the local images on the cluster (PDM_TEST_IMAGES_LOADED=1)"
        )
    return realnode.placement(cluster.local)


@pytest.fixture
def api(cluster: Cluster, namespace: str, crd: None) -> Api:
    return Api(cluster.api, namespace)


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, running as its own process, watching the test's namespace."""
    proc = OperatorProcess(pythonpath_env(cluster.env()), namespace, tmp_path / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop_later()
        # Shown by pytest when the test failed.
        print(f"----- operator log ({proc.log_path}) -----\n{proc.log()[-20000:]}")


@pytest.fixture
def gitlab_db(cluster: Cluster) -> Iterator[tuple[Postgres, str]]:
    """Databases of its own for the test (main, and ``<main>_ci`` as GitLab's ci), on
    the stand-in GitLab's PostgreSQL."""
    if cluster.database is None:
        pytest.skip("needs the local real node's PostgreSQL (hack/localcluster.py --real-node)")
    db = cluster.database
    name = f"gitlab_{uuid.uuid4().hex[:10]}"
    for each in (name, standin.ci(name)):
        db.psql(f"CREATE DATABASE {each} OWNER {USER}", database="postgres")
    try:
        yield db, name
    finally:
        for each in (name, standin.ci(name)):
            db.psql(f"DROP DATABASE IF EXISTS {each} WITH (FORCE)", database="postgres")


@pytest.fixture
def deployed(
    api: Api, real_node: dict[str, Any], gitlab_db: tuple[Postgres, str]
) -> tuple[Postgres, str]:
    """The test's database after a regular deploy: the post-deployment migrations pending."""
    db, name = gitlab_db
    standin.regular_deploy(api, db, name, real_node)
    return db, name
