"""The operator as a separate process, the way it runs in production."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

from tests.support.waiting import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """``pdm-operator run`` scoped to one namespace, with its log in a file."""

    #: Every log file of the run, scanned for tracebacks at the end of the session.
    all_logs: ClassVar[list[Path]] = []
    #: Processes told to stop whose exit nobody waited for (see ``stop_later``).
    stopping: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(self, env: dict[str, str], namespace: str, log_path: Path, *extra: str) -> None:
        OperatorProcess.all_logs.append(log_path)
        self.env = env
        self.namespace = namespace
        self.log_path = log_path
        self.extra = extra
        #: Which namespaces it watches and where its locks live.
        self.scope_args = ["--namespace", namespace, "--lock-namespace", namespace]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port = 0
        self.starts = 0

    def start(self) -> OperatorProcess:
        self.port = free_port()
        self.metrics_port = free_port()
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== operator start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pdm_operator.cli",
                "run",
                *self.scope_args,
                "--liveness-port",
                str(self.port),
                "--metrics-port",
                str(self.metrics_port),
                *self.extra,
            ],
            env={**self.env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_until(self.healthy, timeout=60, what="the operator's /healthz to answer")
        return self

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
