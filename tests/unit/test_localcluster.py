"""The local control plane is configured like a real cluster, and stays on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import localcluster
import oci
import realnode

BINS = {name: Path(f"/bin/{name}") for name in (*localcluster.COMPONENTS, "kubectl")}
PORTS = {
    "etcd": 1,
    "etcd-peer": 2,
    "apiserver": 3,
    "controller-manager": 4,
    "scheduler": 5,
    "kwok": 6,
}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> localcluster.LocalCluster:
    monkeypatch.setattr(localcluster, "CACHE", tmp_path)
    c = localcluster.LocalCluster("unit")
    c.root.mkdir(parents=True)
    return c


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in argv[1:] if "=" in a)


def test_apiserver_enforces_rbac_and_keeps_the_default_admission_chain(
    cluster: localcluster.LocalCluster,
) -> None:
    f = flags(cluster._argv("kube-apiserver", BINS, PORTS))
    # Node: the real node's kubelet is authorized as a node (its own pods, its Node).
    assert f["authorization-mode"] == "Node,RBAC"
    assert "disable-admission-plugins" not in f
    assert f["bind-address"] == "127.0.0.1"


def test_fake_kubelet_endpoint_is_on_loopback(cluster: localcluster.LocalCluster) -> None:
    # The API server dials a node's address for logs; it must never leave the machine.
    f = flags(cluster._argv("kwok", BINS, PORTS))
    assert f["node-ip"] == "127.0.0.1"
    assert f["server-address"] == "127.0.0.1:6"
    assert f["node-port"] == "6"


def test_every_listener_binds_to_loopback(cluster: localcluster.LocalCluster) -> None:
    for comp in localcluster.COMPONENTS:
        for flag, value in flags(cluster._argv(comp, BINS, PORTS)).items():
            if ("url" in flag or "address" in flag) and flag != "kubelet-preferred-address-types":
                assert "127.0.0.1" in value, f"{comp} --{flag}={value}"


def test_the_real_node_listens_on_its_own_bridge_and_reaches_only_that_address(
    tmp_path: Path,
) -> None:
    node = realnode.RealNode("pdm-test-1", tmp_path, tmp_path, 6443, tmp_path)
    assert node.node_ip.startswith("10.251.")
    assert node.pod_cidr.startswith("10.250.")
    assert len(node.node_link) <= 15  # Linux IFNAMSIZ
    assert len(node.pod_bridge) <= 15
    argv = node._kubelet_argv(Path("/bin/kubelet"), {"kubelet": 7, "kubelet-healthz": 8})
    config = json.loads((tmp_path / "kubelet" / "config.json").read_text())
    assert config["address"] == node.node_ip
    assert config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert f"--node-ip={node.node_ip}" in argv
    # Each cluster gets its own addresses, links and paths.
    other = realnode.RealNode("pdm-test-2", tmp_path, tmp_path, 6443, tmp_path)
    assert (other.node_link, other.socket) != (
        node.node_link,
        node.socket,
    ) or other.root != node.root


def test_the_real_node_says_what_is_missing_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnode.shutil, "which", lambda cmd: None)
    with pytest.raises(realnode.NodeError) as missing:
        realnode.preflight()
    message = str(missing.value)
    assert "the 'containerd' command" in message
    assert "make tools" in message


def test_oci_layers_are_deterministic(tmp_path: Path) -> None:
    image = oci.Image("localhost/x:1", [oci.File("/a", b"x"), oci.File("/b/c", link="/a")])
    assert image.archive() == image.archive()
    assert oci.cached_archive(image, tmp_path) == oci.cached_archive(image, tmp_path)


def pod_stages() -> dict[str, dict]:
    docs = yaml.safe_load_all((localcluster.HACK / "kwok" / "stages.yaml").read_text())
    return {d["metadata"]["name"]: d for d in docs if d["spec"]["resourceRef"]["kind"] == "Pod"}


def test_stages_replace_kwoks_full_default_pod_set() -> None:
    # Passing any pod stage drops kwok's defaults: ready, complete and delete
    # must all be here, or pods never start, finish or go away.
    assert {"pod-ready", "pod-complete", "pod-delete", "pod-fail"} <= set(pod_stages())


def test_failing_and_hanging_pods_never_complete() -> None:
    stages = pod_stages()

    def outcome_rule(stage: str) -> dict:
        exprs = stages[stage]["spec"]["selector"]["matchExpressions"]
        return next(e for e in exprs if "sim.pdm-operator.io/outcome" in e["key"])

    assert outcome_rule("pod-complete") == {
        "key": '.metadata.annotations["sim.pdm-operator.io/outcome"]',
        "operator": "NotIn",
        "values": ["fail", "hang"],
    }
    assert outcome_rule("pod-fail")["operator"] == "In"
    assert outcome_rule("pod-fail")["values"] == ["fail"]


def test_crd_reference_is_generated_from_the_current_schema() -> None:
    out = subprocess.run(
        [sys.executable, str(localcluster.HACK / "crd-reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
