"""A sink is one module under reporting/sinks/, registered in SINKS, named in the CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pdm_operator.reporting.sinks import SINKS

CRD = Path(__file__).resolve().parents[2] / "crds" / "pdm-operator.io_postdeploymigrations.yaml"


def crd_sink_types() -> list[str]:
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    sink = schema["properties"]["spec"]["properties"]["tracking"]["properties"]["sinks"]["items"]
    return list(sink["properties"]["type"]["enum"])


def test_every_sink_the_crd_admits_has_a_module_and_no_module_is_unreachable() -> None:
    assert sorted(crd_sink_types()) == sorted(SINKS)


@pytest.mark.parametrize("kind", sorted(SINKS))
def test_each_sink_says_its_policy_for_every_pipeline(kind: str) -> None:
    sink = SINKS[kind]
    assert kind == sink.TYPE
    assert set(sink.DEFAULTS) == {"Regular", "Rollback"}
    for required, blocking in sink.DEFAULTS.values():
        assert required or not blocking, "a skipped sink cannot block"


@pytest.mark.parametrize("kind", sorted(SINKS))
def test_a_failed_run_is_reported_only_by_the_sinks_that_record_failures(kind: str) -> None:
    """Deployments and the issue note record every outcome; the others speak only of a success."""
    sink = {
        "type": kind, "project": "p", "projects": ["p"], "org": "o", "release": "r", "issue": 7,
    }  # fmt: skip
    spec = {"environment": "gstg", "tracking": {"sinks": [sink]}}
    failed = SINKS[kind].targets(sink, spec, "failed")
    succeeded = SINKS[kind].targets(sink, spec, "success")
    assert succeeded
    if kind in ("GitLabDeployment", "ReleaseMetadata", "IssueNote"):
        assert failed == [(t, "failed") for t, _ in succeeded]
    else:
        assert failed == []
