"""The operator as a separate process, the way it runs in production.

Each start is a new process running ``pdm_operator.cli.main(["run", ...])``.
By default it is ``python -m pdm_operator.cli``. The integration suite, which
starts one per test (about 150), forks it instead from a multiprocessing
forkserver that has imported the operator and the official client's API
classes once: the client builds its pydantic models on first use, about
1.5 s, plus 1 s of imports, before every start. The process then runs
exactly the same code from the same ``main``. The packaging test, the
in-cluster test and the benchmarks start it the ordinary way.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tests.support.waiting import wait_until

#: What the forkserver imports once: the operator, and the client classes it
#: builds on first use (tests/support/warm.py).
PRELOAD = ["pytest", "tests.support.warm", "tests.support.operator"]


#: Ports for the operators' listeners come from below the kernel's ephemeral
#: range (net.ipv4.ip_local_port_range, 32768-60999 by default): a port the
#: kernel handed out as free can be taken next as the local port of any
#: outgoing connection (to the API server, a fake GitLab) before the operator
#: binds it, and its start then fails with EADDRINUSE.
LISTEN_PORTS = range(20000, 32768)


def free_port(but: int | None = None) -> int:
    """A port nobody listens on, outside the ephemeral range, bindable on every
    address, and not ``but`` (a port just chosen, not yet bound by its process)."""
    for _ in range(100):
        port = random.choice(LISTEN_PORTS)  # noqa: S311 - spreading, not secrecy
        if port == but:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))  # noqa: S104 - the operator's listeners do
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS}")


class Child(Protocol):
    """The part of ``subprocess.Popen`` the tests use."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


def run_operator(argv: list[str], env: dict[str, str], log_path: str) -> None:
    """The forked process: the given environment and log, then the CLI's ``main``."""
    os.setsid()
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    # The client reads $KUBECONFIG when its module is imported (in the
    # forkserver, with the session's environment): point it at this one's.
    from kubernetes.config import kube_config  # noqa: PLC0415

    from pdm_operator import cli  # noqa: PLC0415

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = env.get(
        "KUBECONFIG", kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    )
    sys.exit(cli.main(argv))


class Forked:
    """A forkserver child with Popen's interface."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode  # type: ignore[no-any-return]

    def poll(self) -> int | None:
        return None if self.process.is_alive() else self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"operator pid {self.pid}", timeout or 0)
        return int(self.process.exitcode)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.process.kill()


_forkserver: ForkServerContext | None = None


def forkserver() -> ForkServerContext:
    global _forkserver  # noqa: PLW0603 - one forkserver per test session
    if _forkserver is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _forkserver = ctx
    return _forkserver


class OperatorProcess:
    """``pdm-operator run`` scoped to one namespace, with its log in a file."""

    #: Every log file of the run, scanned for tracebacks at the end of the session.
    all_logs: ClassVar[list[Path]] = []
    #: Processes told to stop whose exit nobody waited for (see ``stop_later``).
    stopping: ClassVar[list[Child]] = []
    #: Fork from the warm forkserver (the integration suite turns it on).
    fork: ClassVar[bool] = False

    def __init__(self, env: dict[str, str], namespace: str, log_path: Path, *extra: str) -> None:
        OperatorProcess.all_logs.append(log_path)
        self.env = env
        self.namespace = namespace
        self.log_path = log_path
        self.extra = extra
        #: Which namespaces it watches and where its locks live.
        self.scope_args = ["--namespace", namespace, "--lock-namespace", namespace]
        self.proc: Child | None = None
        self.port = 0
        self.metrics_port = 0
        self.starts = 0

    def start(self) -> OperatorProcess:
        self.port = free_port()
        # Not the same one twice: the metrics server binds first, answers any
        # path (/healthz too), and the liveness server would fail to bind.
        self.metrics_port = free_port(but=self.port)
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== operator start #{self.starts} =====\n".encode())
        log.flush()
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        if OperatorProcess.fork:
            log.close()
            process = forkserver().Process(
                target=run_operator, args=(self._argv(), env, str(self.log_path)), daemon=False
            )
            process.start()
            self.proc = Forked(process)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pdm_operator.cli", *self._argv()],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        log.close()
        wait_until(self.healthy, timeout=60, what="the operator's /healthz to answer")
        return self

    def _argv(self) -> list[str]:
        return [
            "run",
            *self.scope_args,
            "--liveness-port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            *self.extra,
        ]

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        """The /metrics text, as Prometheus scrapes it."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return str(r.read().decode())

    def health(self) -> tuple[int, str]:
        """Status and body of GET /healthz."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=15) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a crash or an OOM kill."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM and wait: a graceful shutdown; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def stop_later(self) -> None:
        """SIGTERM, without waiting for the graceful shutdown to finish.

        For fixtures: the next test need not wait the second a shutdown
        takes. ``reap`` waits for all of them (and kills a straggler) before
        the logs are scanned; a test that checks the shutdown uses ``stop``.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            OperatorProcess.stopping.append(self.proc)

    @classmethod
    def reap(cls) -> None:
        """Wait for every process ``stop_later`` left behind."""
        while cls.stopping:
            proc = cls.stopping.pop()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def restart(self) -> OperatorProcess:
        self.kill()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def pythonpath_env(env: dict[str, str]) -> dict[str, str]:
    """Make sure the child imports this checkout's package."""
    src = str(repo_root() / "operator")
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)}
