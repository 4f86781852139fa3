"""The change-lock policy lets a locker change the lock and nothing else: it compares
every other field of an environment's spec, and that list must be the CRD's."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "charts" / "pdm-operator" / "templates" / "change-lock-policy.yaml"
CRD = ROOT / "crds" / "pdm-operator.io_postdeployenvironments.yaml"


def compared_fields() -> set[str]:
    found = re.search(r"range \$field := list ((?:\"\w+\" ?)+)", POLICY.read_text())
    assert found is not None, "the policy's list of compared fields is gone"
    return set(re.findall(r'"(\w+)"', found.group(1)))


def spec_fields() -> set[str]:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return set(schema["properties"]["spec"]["properties"])


def test_every_spec_field_but_the_lock_is_compared() -> None:
    assert compared_fields() == spec_fields() - {"changeLock"}
