"""The status declared in code (``statuses``) and in the CRDs agree, field for field.

The API server prunes a status field its CRD does not declare, without an
error: a field added to the code alone is written and silently lost. A field
added to the CRD alone is documented but never typed. Either fails here with
the field's path.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, TypedDict

import pytest
import yaml

from pdm_operator import statuses

CRDS = Path(__file__).resolve().parents[2] / "crds"
DECLARED = {
    "pdm-operator.io_postdeploymigrations.yaml": statuses.PostDeployMigrationStatus,
    "pdm-operator.io_postdeployenvironments.yaml": statuses.PostDeployEnvironmentStatus,
}
SCALARS: dict[type, str] = {str: "string", int: "integer", bool: "boolean", float: "number"}
FIX = "declare it in both operator/pdm_operator/statuses.py and the CRD (docs/development.md)"


def crd_schema(file: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / file).read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def non_null(hint: Any) -> Any:
    """``X | None`` as ``X``: None is how a merge patch removes a field, not a stored value."""
    if typing.get_origin(hint) in {typing.Union, types.UnionType}:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def disagreements(hint: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Every way ``hint`` (a type of ``statuses``) and ``schema`` (the CRD's) differ, by path."""
    hint = non_null(hint)
    kind = schema.get("type")
    if typing.is_typeddict(hint):
        return object_disagreements(hint, schema, path)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if kind != "array" or "items" not in schema:
            return [f"{path}: a list in code, but the CRD has type {kind!r}"]
        return disagreements(args[0], schema["items"], f"{path}[]")
    if origin is dict:
        extra = schema.get("additionalProperties")
        if kind != "object" or not isinstance(extra, dict):
            return [f"{path}: a map in code, but the CRD has no additionalProperties schema"]
        return disagreements(args[1], extra, f"{path}{{}}")
    return scalar_disagreements(hint, schema, path)


def object_disagreements(hint: Any, schema: dict[str, Any], path: str) -> list[str]:
    """A TypedDict and an object schema: the same keys both ways, the CRD's required required."""
    name = hint.__name__
    if schema.get("type") != "object" or "properties" not in schema:
        return [f"{path}: a {name} in code, but the CRD has type {schema.get('type')!r}"]
    fields = typing.get_type_hints(hint)
    props: dict[str, Any] = schema["properties"]
    out = [f"{path}.{k}: in the CRD but not in {name}; {FIX}" for k in props if k not in fields]
    out += [
        f"{path}.{k}: in {name} but not in the CRD (the API server would drop it); {FIX}"
        for k in fields
        if k not in props
    ]
    out += [
        f"{path}.{k}: the CRD requires it, {name} does not"
        for k in schema.get("required", [])
        if k not in hint.__required_keys__
    ]
    for k in fields:
        if k in props:
            out += disagreements(fields[k], props[k], f"{path}.{k}")
    return out


def scalar_disagreements(hint: Any, schema: dict[str, Any], path: str) -> list[str]:
    """str, int, bool or float against the CRD's type; a Literal against its enum too."""
    enum = schema.get("enum")
    if typing.get_origin(hint) is Literal:
        values = typing.get_args(hint)
        if set(enum or []) != set(values):
            return [f"{path}: code admits {sorted(values)}, the CRD's enum is {enum}"]
        hint = type(values[0])
    elif enum is not None:
        return [f"{path}: the CRD's enum {enum} is a plain {hint!r} in code: use a Literal"]
    if hint not in SCALARS:
        return [f"{path}: {hint!r} in code is no type this test knows how to compare"]
    if schema.get("type") != SCALARS[hint]:
        return [f"{path}: {hint.__name__} in code, {schema.get('type')!r} in the CRD"]
    return []


@pytest.mark.parametrize("file", sorted(DECLARED))
def test_the_status_in_code_and_in_the_crd_declare_the_same_fields(file: str) -> None:
    schema = crd_schema(file)["properties"]["status"]
    found = disagreements(DECLARED[file], schema, "status")
    assert not found, f"{file}:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("file", sorted(DECLARED))
def test_no_key_of_the_crd_schema_is_a_comma_in_an_unquoted_description(file: str) -> None:
    """``{type: string, description: A, B}`` parses B as a key with no value: quote it."""
    accidents: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            accidents.extend(f"{path}: {k!r}" for k, v in node.items() if v is None)
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(crd_schema(file), "openAPIV3Schema")
    assert not accidents, "keys with no value (quote the description):\n  " + "\n  ".join(accidents)


class _Inner(TypedDict, total=False):
    kept: str
    extra: int


class _Outer(TypedDict, total=False):
    count: int
    items: list[_Inner]
    flag: Literal["True", "False"]
    labels: dict[str, str]


def test_each_disagreement_is_named_by_its_path() -> None:
    """The comparison itself: what it reports when code and schema differ, both ways."""
    schema = {
        "type": "object",
        "properties": {
            "count": {"type": "string"},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["missing"],
                    "properties": {"kept": {"type": "string"}, "missing": {"type": "string"}},
                },
            },
            "flag": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "labels": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    }
    found = disagreements(_Outer, schema, "status")
    assert [f.split(":")[0] for f in found] == [
        "status.count",
        "status.items[].missing",
        "status.items[].extra",
        "status.items[].missing",
        "status.flag",
        "status.labels{}",
    ]
    assert "in the CRD but not in _Inner" in found[1]
    assert "in _Inner but not in the CRD" in found[2]
    assert "the CRD requires it" in found[3]
