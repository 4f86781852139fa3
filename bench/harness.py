"""What every benchmark shares: the cluster, namespaces, the operator process,
the API server's request counters, process costs and statistics.

The cluster is ``$KUBECONFIG`` or, without it, a fresh local control plane
named ``pdm-bench`` (torn down at the end). The operator runs as a separate
process, as in production, scoped to the benchmark's namespace.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "hack"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from tests.support.operator import OperatorProcess, pythonpath_env  # noqa: E402

from localcluster import LocalCluster  # noqa: E402

GROUP, VERSION, PLURAL = "pdm-operator.io", "v1alpha1", "postdeploymigrations"
ENVIRONMENTS = "postdeployenvironments"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
#: Of the operator's status writes, those that changed status.progress alone
#: (``pdm_status_writes_total{change="progress"}``). Not a "VERB resource" key:
#: never summed twice as a write.
PROGRESS_WRITES = "of which progress alone"
RESULTS = Path(os.environ.get("PDM_BENCH_RESULTS") or ROOT / "bench" / "results")
IMAGE = "registry.example.com/gitlab-toolbox-ee:v18.6.0"


# --- statistics ------------------------------------------------------------------
def percentile(values: Iterable[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    v = list(values)
    return min(v), statistics.median(v), max(v)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return float("nan")
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else float("nan")


# --- the operator's process -----------------------------------------------------
@dataclass(frozen=True)
class Cost:
    cpu_s: float
    rss_mib: float
    peak_rss_mib: float


def process_cost(pid: int) -> Cost:
    """CPU seconds (user + system), current and peak resident memory of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    kib = lambda key: int(fields[key].split()[0]) / 1024  # noqa: E731
    return Cost(cpu, kib("VmRSS"), kib("VmHWM"))


def wait_for(probe: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the cluster ------------------------------------------------------------------
class Bench:
    """A cluster to benchmark against, with the CRD installed."""

    def __init__(self, cluster_name: str = "pdm-bench", *, real_node: bool = False) -> None:
        self.env = dict(os.environ)
        self.local: LocalCluster | None = None
        #: Whether ``close`` stops the cluster: not one the bench was given.
        self.owned = False
        attach = self.env.get("PDM_BENCH_LOCAL_CLUSTER") if real_node else None
        if attach:
            # A local cluster with a real node that already runs (the
            # integration suite's): its kubeconfig and its PostgreSQL.
            self.local = LocalCluster(attach, real_node=True)
            if not self.local.running():
                raise RuntimeError(f"PDM_BENCH_LOCAL_CLUSTER={attach}: that cluster is not running")
            self.env["KUBECONFIG"] = str(self.local.kubeconfig)
        elif not self.env.get("KUBECONFIG"):
            self.local = LocalCluster(cluster_name, real_node=real_node)
            self.local.down(quiet=True)
            self.env["KUBECONFIG"] = str(self.local.up())
            self.owned = True
        self.kubeconfig = self.env["KUBECONFIG"]
        self.kubectl = (
            str(self.local.state()["bins"]["kubectl"])
            if self.local
            else shutil.which("kubectl", path=self.env.get("PATH")) or "kubectl"
        )
        self.api = config.new_client_from_config(config_file=self.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.run_kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        wait_for(self._crd_served, 60, "the CRD to be served")
        RESULTS.mkdir(exist_ok=True)
        self.operator_log = RESULTS / "operator.log"

    def close(self) -> None:
        if self.local is not None and self.owned:
            self.local.down(quiet=True)

    def _crd_served(self) -> bool:
        try:
            self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
        except ApiException:
            return False
        return True

    def run_kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl, *args], env=self.env, check=check, capture_output=True, text=True
        )

    # --- namespaces ------------------------------------------------------------
    def namespace(self, prefix: str) -> str:
        ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": ns}})
        wait_for(lambda: self._has_default_sa(ns), 30, f"namespace {ns}'s ServiceAccount")
        return ns

    def _has_default_sa(self, ns: str) -> bool:
        try:
            self.core.read_namespaced_service_account("default", ns)
        except ApiException:
            return False
        return True

    def delete_namespace(self, ns: str, timeout: float = 600) -> None:
        """Delete and wait until it is gone: the next measurement starts on a quiet cluster."""
        try:
            self.core.delete_namespace(ns)
        except ApiException as e:
            if e.status != 404:
                raise
        wait_for(lambda: not self._exists(ns), timeout, f"namespace {ns} to be deleted", 1.0)

    def _exists(self, ns: str) -> bool:
        try:
            self.core.read_namespace(ns)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    # --- the operator ----------------------------------------------------------
    @contextlib.contextmanager
    def operator(
        self, ns: str, *extra: str, env: dict[str, str] | None = None
    ) -> Iterator[OperatorProcess]:
        """The operator watching ``ns`` (its locks there too), started and healthy;
        stopped on the way out, whatever happened. ``env``: added to its environment."""
        proc = OperatorProcess(
            pythonpath_env({**self.env, **(env or {})}), ns, self.operator_log, *extra
        )
        try:
            yield proc.start()
        finally:
            proc.stop()

    @staticmethod
    def pid(op: OperatorProcess) -> int:
        assert op.proc is not None
        return op.proc.pid

    @staticmethod
    def operator_requests(op: OperatorProcess) -> Counter[str]:
        """What the operator's own client has sent (``pdm_api_requests_total``),
        as ``{"VERB resource": count}``, a dry run as ``"POST jobs (dry run)"``;
        and under ``PROGRESS_WRITES`` how many of its status patches were
        progress alone."""
        out: Counter[str] = Counter()
        for line in op.metrics().splitlines():
            if line.startswith('pdm_status_writes_total{change="progress"}'):
                out[PROGRESS_WRITES] += int(float(line.rsplit(" ", 1)[1]))
            if line.startswith("pdm_api_requests_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                key = f"{labels['method']} {labels['resource']}"
                if labels.get("dry_run") == "true":
                    key += " (dry run)"
                out[key] += int(float(line.rsplit(" ", 1)[1]))
        return out

    @staticmethod
    def full_collections(op: OperatorProcess) -> int:
        """The operator's full garbage collections so far (prometheus-client's
        ``python_gc_collections_total{generation="2"}``)."""
        for line in op.metrics().splitlines():
            if line.startswith('python_gc_collections_total{generation="2"}'):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def settled_requests(self, op: OperatorProcess, quiet: float = 1.5) -> Counter[str]:
        """The operator's requests once they stop changing for ``quiet`` seconds:
        its Events are posted in the background, after the status they tell of."""
        deadline = time.monotonic() + 30.0
        last, since = self.operator_requests(op), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.25)
            now = self.operator_requests(op)
            if now != last:
                last, since = now, time.monotonic()
        return last

    # --- the API server ------------------------------------------------------------
    def apiserver_requests(self) -> Counter[tuple[str, str]]:
        """``apiserver_request_total`` summed by (verb, resource[/subresource])."""
        # The client's own connection pool carries its credentials (client
        # certificate or token header) for a raw GET.
        headers = {}
        cfg = self.api.configuration
        # Where the client keeps a token: "BearerToken" since v36.0.1, "authorization" before.
        token = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
            "authorization"
        )
        if token:
            headers["Authorization"] = token
        text = self.api.rest_client.pool_manager.request(
            "GET", f"{self.api.configuration.host}/metrics", headers=headers
        ).data.decode()
        out: Counter[tuple[str, str]] = Counter()
        for line in text.splitlines():
            if line.startswith("apiserver_request_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                resource = labels.get("resource", "")
                if labels.get("subresource"):
                    resource += "/" + labels["subresource"]
                out[(labels.get("verb", ""), resource)] += int(float(line.rsplit(" ", 1)[1]))
        return out

    @staticmethod
    def writes(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]) -> dict[str, int]:
        """Write requests between two snapshots, as ``{"VERB resource": count}``."""
        return {
            f"{verb} {resource}": count
            for (verb, resource), count in sorted((after - before).items())
            if verb in WRITE_VERBS
        }

    def background_writes(self, seconds: float = 30.0) -> dict[str, float]:
        """Writes per second of an idle cluster: leader-election and node Lease renewals."""
        before = self.apiserver_requests()
        time.sleep(seconds)
        return {k: v / seconds for k, v in self.writes(before, self.apiserver_requests()).items()}

    def server_version(self) -> str:
        info = client.VersionApi(self.api).get_code()
        return str(info.git_version)

    def gitlab_token(self, ns: str, token: str) -> None:
        """The Secret ``gitlab-api`` that :func:`tracked` migrations name."""
        self.core.create_namespaced_secret(
            ns, {"metadata": {"name": "gitlab-api"}, "stringData": {"token": token}}
        )

    def declare(self, ns: str, environments: set[str]) -> None:
        """Each environment declared for ``ns`` (a PostDeployEnvironment), as an admin would."""
        for name in sorted(environments):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "PostDeployEnvironment",
                "metadata": {"name": name},
                "spec": {"namespaces": [ns]},
            }
            try:
                self.custom.create_cluster_custom_object(GROUP, VERSION, ENVIRONMENTS, body)
            except ApiException as e:
                if e.status != 409:
                    raise
                self.custom.patch_cluster_custom_object(
                    GROUP, VERSION, ENVIRONMENTS, name, {"spec": {"namespaces": [ns]}}
                )

    def create_migrations(self, ns: str, bodies: list[dict[str, Any]], threads: int = 8) -> None:
        """Their environments declared for ``ns`` first, then the migrations, in a burst."""
        self.declare(ns, {str(b["spec"]["environment"]) for b in bodies})

        def create(body: dict[str, Any]) -> None:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, bodies))


def migration(name: str, environment: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PostDeployMigration",
        "metadata": {"name": name},
        # kwok's pods serve no log for the pre-flight to read: measured without it.
        "spec": {
            "environment": environment,
            "image": {"reference": IMAGE},
            "preflight": {"enabled": False},
            **spec,
        },
    }


#: The container securityContext the restricted Pod Security level asks for.
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def bare_job(name: str) -> dict[str, Any]:
    """The migration Job without the operator: the same container, run once."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "migrations", "image": IMAGE, "securityContext": RESTRICTED}
                    ],
                }
            },
        },
    }


def tracked(
    name: str, environment: str, gitlab_url: str, sha: str, projects: list[str], **spec: Any
) -> dict[str, Any]:
    """A migration that records a GitLab Deployment in ``projects`` (token: Secret gitlab-api)."""
    return migration(
        name,
        environment,
        tracking={
            "gitlab": {"url": gitlab_url, "tokenSecretRef": {"name": "gitlab-api", "key": "token"}},
            "version": {"ref": "master", "sha": sha},
            "sinks": [{"type": "GitLabDeployment", "projects": projects}],
        },
        **spec,
    )


def is_true(obj: dict[str, Any], ctype: str) -> bool:
    return any(
        c.get("type") == ctype and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def machine_facts(bench: Bench) -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    if bench.local is not None:
        for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                versions[key.strip()] = value.strip().strip('"')

    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # What the bench writes itself does not count as a change to what it measures.
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", ".",
         ":!docs/benchmarks.md", ":!README.md"],
        check=False, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if commit and dirty:
        commit += "-dirty"
    return {
        "cpu": f"{os.cpu_count()} × {cpu}",
        "memory": f"{mem_kib / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cluster": (
            f"local control plane (kube-apiserver {bench.server_version()}, "
            f"etcd {versions.get('ETCD_VERSION', '?')}, kwok {versions.get('KWOK_VERSION', '?')}) "
            "on the same cores as the operator"
            if bench.local
            else f"KUBECONFIG cluster, Kubernetes {bench.server_version()}"
        ),
        "libraries": ", ".join(
            f"{name} {version(name)}"
            for name in ("kopf", "kubernetes", "python-gitlab", "prometheus-client")
        ),
        "commit": commit or "unknown",
    }
