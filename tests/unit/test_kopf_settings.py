"""The Kopf settings the operator sets exist under those names, without deprecation."""

from __future__ import annotations

import dataclasses
import warnings

import kopf

from pdm_operator import runner


def test_every_setting_is_a_current_field_and_none_is_deprecated() -> None:
    settings = kopf.OperatorSettings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a renamed setting warns: fail on it
        runner.configure_kopf(settings)
    for section, field, value in runner.KOPF_SETTINGS:
        fields = {f.name for f in dataclasses.fields(getattr(settings, section))}
        assert field in fields, f"settings.{section}.{field} is not a Kopf setting"
        assert getattr(getattr(settings, section), field) == value


def test_the_renamed_batching_section_is_not_used() -> None:
    assert all(section != "batching" for section, _, _ in runner.KOPF_SETTINGS)
    # Kopf 1.42+ still accepts the old name, with a warning: the test above
    # would have failed on it.
    settings = kopf.OperatorSettings()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        settings.batching.idle_timeout = 0.1
    assert any("queueing" in str(w.message) for w in seen)


def test_the_api_server_selects_only_the_preflight_pods_and_the_operators_jobs() -> None:
    """What Kopf puts in the watch requests' ``labelSelector`` (Kopf's own lookup)."""
    from kopf._cogs.structs.references import Resource  # noqa: PLC0415

    settings = kopf.OperatorSettings()
    runner.configure_kopf(settings)
    selectors = settings.watching.label_selectors

    def selector(group: str, version: str, plural: str) -> list[str]:
        return list(selectors.collect(Resource(group, version, plural, preferred=True)))

    assert selector("", "v1", "pods") == [
        "app.kubernetes.io/component=post-deploy-migration-preflight,"
        "app.kubernetes.io/managed-by=pdm-operator"
    ]
    assert selector("batch", "v1", "jobs") == ["pdm-operator.io/migration-uid"]
    # The migrations themselves, and pods of another API group, are not narrowed.
    assert selector("pdm-operator.io", "v1alpha1", "postdeploymigrations") == []
    assert selector("metrics.k8s.io", "v1beta1", "pods") == []
