"""HA: two operators with leader election never both act; the standby takes
over when the leader stops (at once) or dies (after the Lease expires)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster
from tests.support.operator import OperatorProcess, pythonpath_env
from tests.support.pdm import Api, migration, toolbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def replica(cluster: Cluster, namespace: str, tmp_path: Path, name: str) -> OperatorProcess:
    return OperatorProcess(
        pythonpath_env(cluster.env()),
        namespace,
        tmp_path / f"{name}.log",
        "--leader-election",
        "--leader-identity",
        name,
        "--leader-lease-duration",
        "6",
        "--leader-renew-interval",
        "1",
    )


def acquired(op: OperatorProcess, name: str) -> list[float]:
    return [float(t) for t in re.findall(rf"leadership acquired by {name} at ([0-9.]+)", op.log())]


def mentions(op: OperatorProcess, namespace: str, pdm: str) -> bool:
    return f"{namespace}/{pdm} " in op.log()


def test_standby_never_acts_and_takes_over_when_the_leader_stops_or_dies(
    cluster: Cluster, api: Api, namespace: str, tmp_path: Path
) -> None:
    a = replica(cluster, namespace, tmp_path, "a")
    b = replica(cluster, namespace, tmp_path, "b")
    try:
        a.start()
        wait_until(lambda: acquired(a, "a"), timeout=30, what="a to lead")
        b.start()
        api.deploy(toolbox())

        api.create(migration("ha-1"))
        api.wait_condition("ha-1", "Succeeded", timeout=60)
        assert mentions(a, namespace, "ha-1")
        assert not mentions(b, namespace, "ha-1")
        assert acquired(b, "b") == []

        # Graceful stop: a drains, then releases; b acquires only after that.
        assert a.stop() == 0
        wait_until(lambda: acquired(b, "b"), timeout=30, what="b to take over")
        released = float(re.findall(r"leadership released by a at ([0-9.]+)", a.log())[-1])
        assert released <= acquired(b, "b")[0]
        api.create(migration("ha-2"))
        api.wait_condition("ha-2", "Succeeded", timeout=60)
        assert mentions(b, namespace, "ha-2")
        assert not mentions(a, namespace, "ha-2")

        # a comes back as standby; b dies without a word: a takes over after
        # the Lease expires, and finishes what b left.
        a.start()
        api.create(
            migration("ha-3", job={"podAnnotations": {"sim.pdm-operator.io/duration": "3s"}})
        )
        api.wait_condition("ha-3", "JobCreated", timeout=60)
        b.kill()
        wait_until(
            lambda: len(acquired(a, "a")) == 2, timeout=60, what="a to take over after b died"
        )
        api.wait_condition("ha-3", "Succeeded", timeout=60)
        assert len(api.jobs()) == 3  # one Job per migration, whoever acted
    finally:
        for op in (a, b):
            op.stop()
        print(f"----- a -----\n{a.log()[-8000:]}\n----- b -----\n{b.log()[-8000:]}")
