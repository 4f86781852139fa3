"""The per-environment Lease, its holder identity and its body (the pure part of locks)."""

from __future__ import annotations

import copy

import pytest

from pdm_operator import locks
from pdm_operator.locks import Holder
from pdm_operator.model import Body

NOW = "2026-11-22T12:00:00Z"
ME = Holder("gitlab", "gstg-2026-11-22-1200", "0b6c1e52-3f0a-4d8e-9a57-6f2d1c0e4b11")
OTHER = Holder("gitlab", "gstg-2026-11-21-0900", "7d0e9c1a-1111-2222-3333-444455556666")


# --- Holder ----------------------------------------------------------------------------


def test_holder_identity_is_namespace_name_uid() -> None:
    assert ME.identity == "gitlab/gstg-2026-11-22-1200/0b6c1e52-3f0a-4d8e-9a57-6f2d1c0e4b11"


def test_holder_parses_back_from_its_identity() -> None:
    assert Holder.parse(ME.identity) == ME
    assert Holder.parse(OTHER.identity) == OTHER


def test_holder_of_a_migration_uses_its_namespace_name_and_uid() -> None:
    migration = {"metadata": {"namespace": ME.namespace, "name": ME.name, "uid": ME.uid}}
    assert Holder.of(migration) == ME


@pytest.mark.parametrize(
    "identity",
    [
        None,
        "",
        "gitlab",
        "gitlab/name",
        "gitlab/name/uid/extra",
        "/name/uid",
        "gitlab//uid",
        "a/b/",
    ],
)
def test_malformed_holder_identity_is_rejected(identity: str | None) -> None:
    assert Holder.parse(identity) is None


# --- lease_name / lease_body ------------------------------------------------------------


def test_lease_is_named_after_the_environment() -> None:
    assert locks.lease_name("gstg") == "pdm-env-gstg"


def test_new_lease_names_its_holder_and_starts_with_no_transitions() -> None:
    lease = locks.lease_body("gstg", ME, NOW)
    assert lease == {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "pdm-env-gstg",
            "labels": {
                "app.kubernetes.io/managed-by": "pdm-operator",
                "pdm-operator.io/environment": "gstg",
            },
            "annotations": {"pdm-operator.io/acquired-at": NOW},
        },
        "spec": {"holderIdentity": ME.identity, "leaseTransitions": 0},
    }


def existing_lease(transitions: int | None = 4) -> Body:
    spec: Body = {"holderIdentity": OTHER.identity}
    if transitions is not None:
        spec["leaseTransitions"] = transitions
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "pdm-env-gstg",
            "namespace": "pdm-system",
            "uid": "lease-uid",
            "resourceVersion": "12345",
            "labels": {
                "app.kubernetes.io/managed-by": "someone-else",
                "team": "database",
            },
            "annotations": {
                "pdm-operator.io/acquired-at": "2026-11-21T09:00:00Z",
                "note": "kept",
            },
        },
        "spec": spec,
    }


def test_taking_over_a_lease_counts_one_more_transition() -> None:
    lease = locks.lease_body("gstg", ME, NOW, base=existing_lease(4))
    assert lease["spec"] == {"holderIdentity": ME.identity, "leaseTransitions": 5}


def test_taking_over_a_lease_without_a_transition_count_counts_the_first() -> None:
    lease = locks.lease_body("gstg", ME, NOW, base=existing_lease(None))
    assert lease["spec"]["leaseTransitions"] == 1


def test_taking_over_keeps_the_resource_version_that_guards_the_replace() -> None:
    meta = locks.lease_body("gstg", ME, NOW, base=existing_lease())["metadata"]
    assert meta["resourceVersion"] == "12345"
    assert meta["uid"] == "lease-uid"
    assert meta["namespace"] == "pdm-system"
    assert meta["name"] == "pdm-env-gstg"


def test_taking_over_sets_our_labels_and_time_and_keeps_foreign_ones() -> None:
    meta = locks.lease_body("gstg", ME, NOW, base=existing_lease())["metadata"]
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "pdm-operator",
        "pdm-operator.io/environment": "gstg",
        "team": "database",
    }
    assert meta["annotations"] == {"pdm-operator.io/acquired-at": NOW, "note": "kept"}


def test_taking_over_does_not_mutate_the_lease_read_from_the_api() -> None:
    base = existing_lease()
    snapshot = copy.deepcopy(base)
    locks.lease_body("gstg", ME, NOW, base=base)
    assert base == snapshot
