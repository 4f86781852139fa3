"""A real node beside the kwok node: kubelet, containerd, runc and CNI on this machine.

kwok fakes every pod, so a Job that cannot boot, or that skips every
migration, still "completes". This node runs containers for real. It is the
recipe of ``shared/notes/real-node.md`` (measured on these machines), each
setting there because it was a failure until set:

* containerd (Debian's 1.6) with a private root, state and socket per
  cluster; CRI ``restrict_oom_score_adj`` (the sandbox writes -998 to
  ``oom_score_adj`` and these machines withhold CAP_SYS_RESOURCE), a
  ``sandbox_image`` built here (the pause image cannot be pulled), CNI from
  Debian's ``containernetworking-plugins`` with a private conf dir;
* the kubelet built from the same Kubernetes module as the control plane, with
  ``cgroupDriver: cgroupfs``, ``failCgroupV1: false`` (cgroup v1 here),
  ``failSwapOn: false``, no QoS cgroups or node-allocatable enforcement, no
  eviction, a private root dir and its own ports;
* a bridge interface made here for the node's address (kubelet refuses a
  loopback node IP, and ``kubectl logs`` goes from the API server to that
  address); pods get addresses from a second bridge through the CNI bridge
  plugin. Both are private test ranges on links this harness creates and
  removes; nothing leaves the machine.

The kubelet authenticates callers by client certificate (the cluster's CA)
and the API server presents one, so ``kubectl logs`` and the operator's log
tail work as on a real cluster. The node is tainted
``pdm-operator.io/real-node=true:NoSchedule``: pods land here only when they
ask (a toleration and the ``pdm-operator.io/node: real`` selector), and
everything else stays on kwok.

Images cannot be pulled: ``images()`` builds them here (``hack/oci.py``) from
Debian packages and imports them into this containerd.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import oci
import standin

NODE_NAME = "real-node-0"
TAINT_KEY = "pdm-operator.io/real-node"
NODE_LABEL = "pdm-operator.io/node"
CNI_BIN = Path("/usr/lib/cni")
BUSYBOX = Path("/bin/busybox")
PAUSE_IMAGE = "localhost/pdm/pause:1"
BUSYBOX_IMAGE = "localhost/pdm/busybox:1"
#: Debian packages the node needs (``make tools`` installs them).
PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
    "mmdebstrap",
    "postgresql",
)


class NodeError(RuntimeError):
    """The real node cannot run here; the message names the cause."""


def preflight() -> None:
    """One clear message for each thing this machine lacks, before starting anything."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the kubelet and containerd manage mounts, cgroups and netns)")
    for cmd in ("containerd", "ctr", "runc", "ip", "mmdebstrap", "psql", "runuser"):
        if shutil.which(cmd) is None:
            missing.append(f"the {cmd!r} command")
    if not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        missing.append("PostgreSQL's server (Debian's postgresql)")
    if not (CNI_BIN / "bridge").exists():
        missing.append(f"the CNI bridge plugin in {CNI_BIN}")
    if not BUSYBOX.exists() or b"BusyBox" not in BUSYBOX.read_bytes()[:2_000_000]:
        missing.append(f"a static busybox at {BUSYBOX} (Debian's busybox-static)")
    if (
        not Path("/sys/fs/cgroup/memory").exists()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        missing.append("a mounted cgroup hierarchy with the memory controller")
    if missing:
        raise NodeError(
            "the real node cannot start: missing "
            + "; ".join(missing)
            + f". Install Debian's {' '.join(PACKAGES)} (make tools) and run as root."
        )


def images() -> list[oci.Image]:
    """The images the real node needs, from Debian's static busybox."""
    busybox = BUSYBOX.read_bytes()
    applets = ("sh", "echo", "sleep", "cat", "env", "ls", "id", "true", "false", "printf")
    base = [
        oci.File("/bin/busybox", busybox, 0o755),
        *[oci.File(f"/bin/{a}", link="busybox") for a in applets],
        oci.File("/tmp", directory=True, mode=0o1777),  # noqa: S108 - a path in the image
    ]
    return [
        # The sandbox ("pause") container only has to stay alive.
        oci.Image(PAUSE_IMAGE, base, entrypoint=["/bin/busybox", "sleep", "2147483647"]),
        oci.Image(BUSYBOX_IMAGE, base, entrypoint=["/bin/sh"], user="65532"),
    ]


def _short(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


@dataclass
class RealNode:
    """The real node of one local cluster; its files live under ``root``."""

    cluster: str
    root: Path
    pki: Path
    apiserver_port: int
    cache: Path

    # --- names and addresses, stable per cluster ------------------------------------
    @property
    def index(self) -> int:
        return int(_short(self.cluster), 16) % 200 + 20

    @property
    def node_ip(self) -> str:
        return f"10.251.{self.index}.1"

    @property
    def pod_cidr(self) -> str:
        return f"10.250.{self.index}.0/24"

    @property
    def node_link(self) -> str:
        return f"pdmn{_short(self.cluster)}"

    @property
    def pod_bridge(self) -> str:
        return f"pdmc{_short(self.cluster)}"

    @property
    def socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    # --- lifecycle ---------------------------------------------------------------
    def start(
        self,
        kubelet: Path,
        spawn: Callable[[str, list[str]], int],
        ports: dict[str, int],
        pids: dict[str, int],
    ) -> None:
        """Start containerd and the kubelet, recording each pid in ``pids`` as it starts
        (so a failure half-way is cleaned up); the caller waits for the node to be Ready."""
        preflight()
        self.root.mkdir(parents=True, exist_ok=True)
        self._network()
        self._certificates()
        config = self._containerd_config()
        pids["containerd"] = spawn("containerd", ["containerd", "--config", str(config)])
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if time.monotonic() > deadline:
                raise NodeError(f"containerd did not open {self.socket} within 30 s")
            time.sleep(0.1)
        self._import_images()
        pids["kubelet"] = spawn("kubelet", self._kubelet_argv(kubelet, ports))

    def stop(self, pids: dict[str, int]) -> None:
        """Stop the kubelet, every container of this containerd and containerd; clean up."""
        for comp in ("kubelet",):
            _kill(pids.get(comp))
        if self.socket.exists():
            for task in self._ctr("tasks", "ls", "-q").stdout.split():
                self._ctr("tasks", "kill", "-s", "SIGKILL", task)
        # The shims outlive containerd; they carry our socket on their command line.
        for pid in _pids_with(str(self.socket)):
            _kill(pid)
        _kill(pids.get("containerd"))
        for pid in _pids_with(str(self.socket)):
            _kill(pid, signal.SIGKILL)
        self._unmount_all()
        for link in (self.node_link, self.pod_bridge):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for ns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").exists() else []:
            out = subprocess.run(
                ["ip", "netns", "pids", ns.name], capture_output=True, text=True, check=False
            )
            if out.returncode == 0 and not out.stdout.strip():
                subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)

    # --- pieces ------------------------------------------------------------------
    def _network(self) -> None:
        link = self.node_link
        if subprocess.run(
            ["ip", "link", "show", link], capture_output=True, check=False
        ).returncode:
            _run("ip", "link", "add", link, "type", "bridge")
        subprocess.run(
            ["ip", "addr", "add", f"{self.node_ip}/32", "dev", link],
            capture_output=True,
            check=False,
        )
        _run("ip", "link", "set", link, "up")
        conf = self.root / "cni"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "10-pdm.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": f"pdm-{_short(self.cluster)}",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.pod_bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": self.pod_cidr}]],
                                # Pods reach the node's address (the API server
                                # is not theirs to call; PostgreSQL listens
                                # there) and nothing else: no default route.
                                "routes": [{"dst": f"{self.node_ip}/32"}],
                                "dataDir": str(self.root / "cni-ipam"),
                            },
                        },
                        {"type": "loopback"},
                    ],
                },
                indent=2,
            )
        )

    def _certificates(self) -> None:
        p = self.pki
        ext = p / "kubelet-serving.ext"
        ext.write_text(
            f"subjectAltName=IP:{self.node_ip},DNS:{NODE_NAME}\nextendedKeyUsage=serverAuth\n"
        )
        _signed(p, "kubelet-serving", f"/CN={NODE_NAME}", ext)
        client = p / "client.ext"
        _signed(p, "kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}", client)

    def _containerd_config(self) -> Path:
        c = self.root / "containerd"
        c.mkdir(parents=True, exist_ok=True)
        config = f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.root / "cni"}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
"""
        path = c / "config.toml"
        path.write_text(config)
        return path

    def _import_images(self) -> None:
        try:
            toolbox = standin.image(self.cache / "images")
        except standin.ImageError as e:
            raise NodeError(str(e)) from e
        for image in [*images(), toolbox]:
            self.import_archive(oci.cached_archive(image, self.cache / "images"))

    def import_archive(self, archive: Path) -> None:
        """Import an image archive built elsewhere (the operator's, the stand-in toolbox)."""
        out = self._ctr("images", "import", str(archive))
        if out.returncode != 0:
            raise NodeError(f"importing {archive} failed: {out.stderr.strip()}")

    def _kubelet_argv(self, kubelet: Path, ports: dict[str, int]) -> list[str]:
        p = self.pki
        k = self.root / "kubelet"
        k.mkdir(parents=True, exist_ok=True)
        (k / "pod-logs").mkdir(exist_ok=True)
        kubeconfig = k / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {
                                "server": f"https://127.0.0.1:{self.apiserver_port}",
                                "certificate-authority": str(p / "ca.crt"),
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": "kubelet",
                            "user": {
                                "client-certificate": str(p / "kubelet-client.crt"),
                                "client-key": str(p / "kubelet-client.key"),
                            },
                        }
                    ],
                    "contexts": [
                        {"name": "local", "context": {"cluster": "local", "user": "kubelet"}}
                    ],
                    "current-context": "local",
                }
            )
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "port": ports["kubelet"],
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports["kubelet-healthz"],
            "readOnlyPort": 0,
            "tlsCertFile": str(p / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(p / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(p / "ca.crt")},
            },
            # Who may call the kubelet is decided by the client certificate:
            # only the API server (and the admin) hold one from this CA.
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "evictionHard": {},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            "staticPodPath": "",
            # Each node's own pod logs. The default, /var/log/pods, is shared by
            # every kubelet on the machine, and a kubelet removes the log
            # directories of pods it does not know (its container GC): a second
            # local cluster (a kept pdm-test beside a CI run) deleted the first
            # one's logs under running tests ("failed to try resolving symlinks
            # in path /var/log/pods/...": a pre-flight without its table).
            "podLogsDir": str(k / "pod-logs"),
            "syncFrequency": "10s",
            "nodeStatusUpdateFrequency": "10s",
            "shutdownGracePeriod": "0s",
            "localStorageCapacityIsolation": False,
        }
        (k / "config.json").write_text(json.dumps(config, indent=2))
        return [
            str(kubelet),
            f"--config={k / 'config.json'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={k / 'root'}",
            f"--node-ip={self.node_ip}",
            f"--hostname-override={NODE_NAME}",
            f"--node-labels={NODE_LABEL}=real",
            "--v=1",
        ]

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ctr`` on this node's containerd, in the CRI's namespace."""
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def _unmount_all(self) -> None:
        root = str(self.root.resolve())
        with contextlib.suppress(OSError):
            mounts = [
                line.split()[1]
                for line in Path("/proc/mounts").read_text().splitlines()
                if line.split()[1].startswith(root)
            ]
            for mount in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def _run(*argv: str) -> None:
    out = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed: {out.stderr.strip()}")


def _signed(p: Path, name: str, subj: str, ext: Path) -> None:
    for argv in (
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p / f"{name}.key"),
         "-out", str(p / f"{name}.csr"), "-subj", subj],
        ["openssl", "x509", "-req", "-in", str(p / f"{name}.csr"), "-CA", str(p / "ca.crt"),
         "-CAkey", str(p / "ca.key"), "-CAcreateserial", "-days", "3650",
         "-extfile", str(ext), "-out", str(p / f"{name}.crt")],
    ):  # fmt: skip
        _run(*argv)


def _pids_with(needle: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return [p for p in found if p != os.getpid()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # a zombie child: gone, only not reaped yet
    return True


def _kill(pid: int | None, sig: signal.Signals = signal.SIGTERM) -> None:
    if not pid:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
