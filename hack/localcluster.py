#!/usr/bin/env python3
"""A real Kubernetes control plane on this machine, without Docker.

Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
kwok controller as plain processes, built from upstream Go modules by
``hack/build-binaries.sh``. kwok fakes the nodes and the pods' lifecycle
(stages in ``hack/kwok/stages.yaml``); everything else is the real thing:
RBAC authorization, the default admission chain with Pod Security admission,
the Job controller, the scheduler, service-account tokens.

Usage::

    hack/localcluster.py up [--name NAME] [--real-node]
        # start (or reuse) and print the kubeconfig path;
        # --real-node adds kubelet + containerd (hack/realnode.py)
    hack/localcluster.py down [--name NAME]   # stop and delete its state
    hack/localcluster.py status [--name NAME]
    hack/localcluster.py env [--name NAME]    # shell exports: KUBECONFIG and PATH (our kubectl)

The same class is used by the pytest fixture in ``tests/integration/conftest.py``.
State lives in ``${PDM_CACHE_DIR:-~/.cache/pdm-operator}/clusters/NAME/``:
certificates, the admin kubeconfig, etcd's data, one log file per process.

Only the standard library and the ``openssl`` command are used, so this runs
before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HACK = Path(__file__).resolve().parent
sys.path.insert(0, str(HACK))

import postgres  # noqa: E402 - hack/ is not a package
import realnode  # noqa: E402

CACHE = Path(os.environ.get("PDM_CACHE_DIR", Path.home() / ".cache" / "pdm-operator"))
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Processes in start order. The controllers need a serving apiserver first.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
#: With --real-node: the node's runtime and the stand-in GitLab's database.
REAL_NODE = ("containerd", "kubelet", "postgres", "apiserver-proxy")
#: The API server's port on the real node's address (hack/tcpforward.py).
NODE_APISERVER_PORT = 6443
NODE_NAME = "kwok-node-0"


class ClusterError(RuntimeError):
    """The control plane could not be built or started; the message says why."""


def log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


def build_binaries(kubelet: bool = False) -> dict[str, Path]:
    """Build (first time) or look up (cached) the binaries; returns name -> path."""
    proc = subprocess.run(
        ["bash", str(HACK / "build-binaries.sh"), "all", *(["kubelet"] if kubelet else [])],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError("building the control plane binaries failed (see the messages above)")
    dirs = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    k8s, etcd, kwok = (Path(dirs[k]) for k in ("KUBERNETES_BIN", "ETCD_BIN", "KWOK_BIN"))
    found = {} if not kubelet else {"kubelet": Path(dirs["KUBELET_BIN"]) / "kubelet"}
    return found | {
        "etcd": etcd / "etcd",
        "kube-apiserver": k8s / "kube-apiserver",
        "kube-controller-manager": k8s / "kube-controller-manager",
        "kube-scheduler": k8s / "kube-scheduler",
        "kubectl": k8s / "kubectl",
        "kwok": kwok / "kwok",
    }


def build_tool(name: str) -> Path:
    """``helm``, ``argo-lua`` or ``argo-notify``: built the first time, cached like the
    control plane."""
    key = {"helm": "HELM_BIN", "argo-lua": "ARGO_LUA_BIN", "argo-notify": "ARGO_NOTIFY_BIN"}[name]
    proc = subprocess.run(
        ["bash", str(HACK / "build-binaries.sh"), name],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"building {name} failed (see the messages above)")
    dirs = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return Path(dirs[key]) / name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass
class LocalCluster:
    """One local control plane, identified by its name and state directory."""

    name: str = "pdm-dev"
    #: Also run a real node (kubelet + containerd) beside the kwok node.
    real_node: bool = False
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = CACHE / "clusters" / self.name

    # --- paths --------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def state(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    # --- lifecycle ----------------------------------------------------------
    def running(self) -> bool:
        st = self.state()
        pids = st.get("pids")
        wanted = set(COMPONENTS) | (set(REAL_NODE) if self.real_node else set())
        if not isinstance(pids, dict) or not wanted <= set(pids):
            return False
        return all(pid_alive(int(p)) for p in pids.values()) and self._ready(st)

    def up(self, timeout: float = 120.0) -> Path:
        """Start the control plane, or reuse it when it already runs; returns the kubeconfig."""
        if self.running():
            log(f"cluster {self.name!r} already running; kubeconfig {self.kubeconfig}")
            return self.kubeconfig
        self.down(quiet=True)
        if not shutil.which("openssl"):
            raise ClusterError("the 'openssl' command is needed to make the cluster's certificates")
        if self.real_node:
            try:
                realnode.preflight()  # before anything starts: one message naming what is missing
            except realnode.NodeError as e:
                raise ClusterError(str(e)) from e
        bins = build_binaries(kubelet=self.real_node)
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        ports = {
            "etcd": free_port(),
            "etcd-peer": free_port(),
            "apiserver": free_port(),
            "controller-manager": free_port(),
            "scheduler": free_port(),
            "kwok": free_port(),
            "kubelet": free_port(),
            "kubelet-healthz": free_port(),
        }
        st: dict[str, object] = {"ports": ports, "bins": {k: str(v) for k, v in bins.items()}}
        self._write_pki()
        self._write_kubeconfigs(ports["apiserver"])
        pids: dict[str, int] = {}
        st["pids"] = pids
        try:
            for comp in COMPONENTS:
                pids[comp] = self._spawn(comp, self._argv(comp, bins, ports))
                self.state_file.write_text(json.dumps(st, indent=2))
                if comp == "etcd":
                    self._wait(lambda: self._etcd_healthy(ports["etcd"]), timeout, "etcd", pids)
                elif comp == "kube-apiserver":
                    self._wait(lambda: self._ready(st), timeout, "kube-apiserver", pids)
            self._create_node(bins["kubectl"])
            self._wait(
                lambda: self._node_ready(bins["kubectl"]),
                timeout,
                "the kwok node to be Ready",
                pids,
            )
            self._wait(
                lambda: self._default_sa(bins["kubectl"]),
                timeout,
                "kube-controller-manager to create the default ServiceAccount",
                pids,
            )
            if self.real_node:
                self._start_real_node(bins, ports, pids, st, timeout)
        except BaseException:
            self.down(quiet=True, keep_logs=True)
            raise
        took = time.monotonic() - started
        log(f"cluster {self.name!r} up in {took:.1f}s; kubeconfig {self.kubeconfig}")
        return self.kubeconfig

    def _start_real_node(
        self,
        bins: dict[str, Path],
        ports: dict[str, int],
        pids: dict[str, int],
        st: dict[str, object],
        timeout: float,
    ) -> None:
        """kubelet and containerd, then the stand-in GitLab's PostgreSQL on the node's address."""
        st["real_node"] = True
        try:
            node = self.node(ports["apiserver"])
            node.start(bins["kubelet"], self._spawn, ports, pids)
        except realnode.NodeError as e:
            raise ClusterError(str(e)) from e
        self.state_file.write_text(json.dumps(st, indent=2))
        self._wait(
            lambda: self._node_ready(bins["kubectl"], realnode.NODE_NAME),
            timeout,
            f"the real node {realnode.NODE_NAME} to be Ready",
            pids,
        )
        db = self.postgres(node.node_ip, free_port())
        try:
            db.prepare()
        except postgres.PostgresError as e:
            raise ClusterError(str(e)) from e
        pids["postgres"] = self._spawn("postgres", db.argv())
        st["postgres"] = {"host": db.host, "port": db.port, "socket": str(db.socket_dir)}
        self.state_file.write_text(json.dumps(st, indent=2))
        self._wait(db.ready, timeout, "PostgreSQL to accept connections", pids)
        db.bootstrap()
        pids["apiserver-proxy"] = self._spawn(
            "apiserver-proxy",
            [sys.executable, str(HACK / "tcpforward.py"), node.node_ip, str(NODE_APISERVER_PORT),
             "127.0.0.1", str(ports["apiserver"])],
        )  # fmt: skip
        self.state_file.write_text(json.dumps(st, indent=2))

    def node(self, apiserver_port: int) -> realnode.RealNode:
        return realnode.RealNode(self.name, self.root / "node", self.pki, apiserver_port, CACHE)

    def down(self, quiet: bool = False, keep_logs: bool = False) -> None:
        """Stop every process of the cluster and delete its state (logs kept on request)."""
        st = self.state()
        pids = st.get("pids") or {}
        assert isinstance(pids, dict)
        self._stop_real_node(st, pids)
        for comp in ("apiserver-proxy", *reversed(COMPONENTS)):
            pid = pids.get(comp)
            if pid and pid_alive(int(pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in pids.values():
            while pid_alive(int(pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(int(pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGKILL)
        if self.root.exists():
            for child in self.root.iterdir():
                if keep_logs and child == self.logs:
                    continue
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            if not keep_logs:
                shutil.rmtree(self.root, ignore_errors=True)
        if not quiet:
            log(f"cluster {self.name!r} stopped")

    def postgres(self, host: str, port: int) -> postgres.Postgres:
        return postgres.Postgres(self.name, host, port)

    def database(self) -> postgres.Postgres | None:
        """The running stand-in GitLab database, if this cluster has one."""
        db = self.state().get("postgres")
        if not isinstance(db, dict):
            return None
        return self.postgres(str(db["host"]), int(db["port"]))

    def _stop_real_node(self, st: dict[str, object], pids: dict[str, int]) -> None:
        """Containers, shims, mounts and links of the real node: before the control plane."""
        if "postgres" in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pids["postgres"]), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while pid_alive(int(pids["postgres"])) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pids["postgres"]), signal.SIGKILL)
            postgres.Postgres(self.name, "", 0).remove()
        if not st.get("real_node") and "containerd" not in pids:
            return
        ports = st.get("ports") or {}
        assert isinstance(ports, dict)
        self.node(int(ports.get("apiserver", 0))).stop(
            {k: int(v) for k, v in pids.items() if k in ("containerd", "kubelet")}
        )

    # --- internals ----------------------------------------------------------
    def _spawn(self, comp: str, argv: list[str]) -> int:
        logf = (self.logs / f"{comp}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: survives our exit, killable as a group
            cwd=self.root,
        )
        logf.close()
        return proc.pid

    def _wait(self, check: object, timeout: float, what: str, pids: dict[str, int]) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for comp, pid in pids.items():
                if not pid_alive(pid):
                    tail = self._log_tail(comp)
                    raise ClusterError(
                        f"{comp} exited while waiting for {what}; its log ends:\n{tail}"
                    )
            if check():
                return
            time.sleep(0.2)
        raise ClusterError(
            f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.logs}"
        )

    def _log_tail(self, comp: str, lines: int = 30) -> str:
        try:
            return "\n".join(
                (self.logs / f"{comp}.log").read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def _write_pki(self) -> None:
        p = self.pki
        p.mkdir(parents=True, exist_ok=True)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                "-keyout", str(p / "ca.key"), "-out", str(p / "ca.crt"),
                "-subj", "/CN=pdm-local-ca")  # fmt: skip
        ext = p / "apiserver.ext"
        # The real node's address too: pods reach the API server there.
        node_ip = self.node(0).node_ip
        ext.write_text(
            f"subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:{node_ip},DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local\n"
            "extendedKeyUsage=serverAuth\n"
        )
        self._signed("apiserver", "/CN=kube-apiserver", ext)
        client_ext = p / "client.ext"
        client_ext.write_text("extendedKeyUsage=clientAuth\n")
        # Identities the bootstrap RBAC policy knows: admin is a cluster admin
        # through system:masters; the controllers get their own roles.
        self._signed("admin", "/O=system:masters/CN=pdm-admin", client_ext)
        self._signed("controller-manager", "/CN=system:kube-controller-manager", client_ext)
        self._signed("scheduler", "/CN=system:kube-scheduler", client_ext)
        openssl("genrsa", "-out", str(p / "sa.key"), "2048")
        openssl("rsa", "-in", str(p / "sa.key"), "-pubout", "-out", str(p / "sa.pub"))

    def _signed(self, name: str, subj: str, ext: Path) -> None:
        p = self.pki
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p / f"{name}.key"),
                "-out", str(p / f"{name}.csr"), "-subj", subj)  # fmt: skip
        openssl("x509", "-req", "-in", str(p / f"{name}.csr"), "-CA", str(p / "ca.crt"),
                "-CAkey", str(p / "ca.key"), "-CAcreateserial", "-days", "3650",
                "-extfile", str(ext), "-out", str(p / f"{name}.crt"))  # fmt: skip

    def _kubeconfig_text(self, port: int, user: str) -> str:
        p = self.pki
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": self.name,
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "certificate-authority": str(p / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(p / f"{user}.crt"),
                            "client-key": str(p / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user}}],
                "current-context": self.name,
            },
            indent=2,
        )

    def _write_kubeconfigs(self, port: int) -> None:
        self.kubeconfig.write_text(self._kubeconfig_text(port, "admin"))
        for user in ("controller-manager", "scheduler"):
            (self.root / f"{user}.kubeconfig").write_text(self._kubeconfig_text(port, user))

    def _argv(self, comp: str, bins: dict[str, Path], ports: dict[str, int]) -> list[str]:
        p, r = self.pki, self.root
        if comp == "etcd":
            peer = f"http://127.0.0.1:{ports['etcd-peer']}"
            client = f"http://127.0.0.1:{ports['etcd']}"
            return [
                str(bins["etcd"]),
                "--name=pdm",
                f"--data-dir={r / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=pdm={peer}",
                "--unsafe-no-fsync",  # test data; durability is not the point
                "--log-level=warn",
            ]
        if comp == "kube-apiserver":
            return [
                str(bins["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # v1.37 refuses a loopback advertise address for the endpoint
                # reconciler of the `kubernetes` Service; nothing here routes
                # that Service (no kube-proxy), so it is not reconciled at all.
                "--endpoint-reconciler-type=none",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Real authorization and the default admission plugins
                # (NamespaceLifecycle, ServiceAccount, PodSecurity, ResourceQuota, ...).
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                # The API server's client identity towards kubelets (`kubectl
                # logs`, exec); the real node's kubelet checks it against the CA.
                f"--kubelet-client-certificate={p / 'admin.crt'}",
                f"--kubelet-client-key={p / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--v=1",
            ]
        if comp == "kube-controller-manager":
            kc = r / "controller-manager.kubeconfig"
            return [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller-manager']}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                "--v=1",
            ]
        if comp == "kube-scheduler":
            kc = r / "scheduler.kubeconfig"
            return [
                str(bins["kube-scheduler"]),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                "--v=1",
            ]
        if comp == "kwok":
            return [
                str(bins["kwok"]),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self._kwok_config()}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16",
                # Heartbeat through a node Lease, as a kubelet does. Without it
                # kwok only refreshes node status every ~55s, past the node
                # controller's 50s grace period: the node flaps and the pods
                # on it are marked NotReady for good.
                "--node-lease-duration-seconds=40",
                # The node's address and kubelet port are kwok's own server on
                # loopback, so `kubectl logs` (apiserver -> "kubelet") never
                # leaves this machine.
                "--node-ip=127.0.0.1",
                f"--node-port={ports['kwok']}",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
            ]
        raise ValueError(comp)

    def _kwok_config(self) -> Path:
        """kwok's config: our pod stages, plus canned logs for migration containers."""
        logs = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": "migration-logs"},
            "spec": {
                "logs": [
                    {"containers": ["migrations"], "logsFile": str(HACK / "kwok" / "migration.log")}
                ]
            },
        }
        path = self.root / "kwok.yaml"
        stages = (HACK / "kwok" / "stages.yaml").read_text()
        path.write_text(f"{stages}\n---\n{json.dumps(logs)}\n")
        return path

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _ready(self, st: dict[str, object]) -> bool:
        ports = st.get("ports")
        if not isinstance(ports, dict):
            return False
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{ports['apiserver']}/readyz",
                context=self._ssl_context(),
                timeout=2,
            ) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                return bool(json.load(resp).get("health") == "true")
        except (OSError, ValueError):
            return False

    def kubectl(
        self, kubectl: Path, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )

    def _create_node(self, kubectl: Path) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        out = self.kubectl(kubectl, "apply", "-f", "-", stdin=json.dumps(node))
        if out.returncode != 0:
            raise ClusterError(f"could not create the kwok node: {out.stderr.strip()}")

    def _node_ready(self, kubectl: Path, node: str = NODE_NAME) -> bool:
        out = self.kubectl(
            kubectl,
            "get",
            "node",
            node,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        )
        return out.returncode == 0 and out.stdout.strip() == "True"

    def _default_sa(self, kubectl: Path) -> bool:
        return (
            self.kubectl(kubectl, "get", "serviceaccount", "default", "-n", "default").returncode
            == 0
        )

    def env(self) -> Iterator[str]:
        bins = self.state().get("bins")
        if isinstance(bins, dict):
            yield f"export PATH={Path(str(bins['kubectl'])).parent}:$PATH"
        yield f"export KUBECONFIG={self.kubeconfig}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "down", "status", "env", "build"])
    ap.add_argument("--name", default=os.environ.get("PDM_CLUSTER_NAME", "pdm-dev"))
    ap.add_argument(
        "--real-node",
        action="store_true",
        default=os.environ.get("PDM_REAL_NODE") == "1",
        help="also run a real node: kubelet, containerd, runc, CNI (root; make tools)",
    )
    args = ap.parse_args(argv)
    cluster = LocalCluster(args.name, real_node=args.real_node)
    try:
        if args.command == "build":
            for name, path in build_binaries().items():
                print(f"{name}={path}")
        elif args.command == "up":
            print(cluster.up())
        elif args.command == "down":
            cluster.down()
        elif args.command == "status":
            ok = cluster.running()
            print(f"{args.name}: {'running' if ok else 'not running'}")
            return 0 if ok else 1
        elif args.command == "env":
            if not cluster.running():
                log(f"cluster {args.name!r} is not running; start it with: hack/localcluster.py up")
                return 1
            print("\n".join(cluster.env()))
    except (ClusterError, realnode.NodeError) as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
