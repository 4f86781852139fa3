"""Every migration Job meets the restricted Pod Security Standard, and what does not
is named field by field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pdm_operator import render, security, templates
from tests.support.chart import release_object
from tests.unit.test_render import IMAGE, migration

Body = dict[str, Any]
#: The deprecated AppArmor annotation (check_appArmorProfile.go), one per container.
APPARMOR = "container.apparmor.security.beta.kubernetes.io/"


def inline(job: Body | None = None) -> Body:
    return render.render_job(migration(job), IMAGE)


def test_the_default_inline_job_meets_the_restricted_level() -> None:
    assert security.violations(inline()) == []


def test_the_charts_own_jobs_meet_the_restricted_level() -> None:
    job = templates.from_job(release_object("Job", "gitlab-migrations-3b1f2c7"))
    deployment = templates.from_deployment(release_object("Deployment", "gitlab-toolbox"))
    for template in (job, deployment):
        assert isinstance(template, templates.Template)
        rendered = render.render_job(migration(), IMAGE, template)
        assert security.violations(rendered) == []


UNSAFE: list[tuple[str, Body, str]] = [
    (
        "root",
        {"securityContext": {**render.RESTRICTED_CONTAINER_SECURITY, "runAsUser": 0}},
        "containers[migrations].securityContext.runAsUser: 0",
    ),
    (
        "root-pod",
        {"podSecurityContext": {**render.RESTRICTED_POD_SECURITY, "runAsUser": 0}},
        "spec.template.spec.securityContext.runAsUser: 0",
    ),
    (
        "sys-admin",
        {
            "securityContext": {
                **render.RESTRICTED_CONTAINER_SECURITY,
                "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            }
        },
        "capabilities.add: ['SYS_ADMIN']",
    ),
    (
        "privileged",
        {"securityContext": {**render.RESTRICTED_CONTAINER_SECURITY, "privileged": True}},
        "securityContext.privileged: true",
    ),
    (
        "escalation",
        {"securityContext": {"capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}},
        "allowPrivilegeEscalation: must be false",
    ),
    (
        "host-path",
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        "volumes[root].hostPath: volume type not allowed",
    ),
    (
        "run-as-root-allowed",
        {
            "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        },
        "runAsNonRoot: must be true",
    ),
    (
        "unconfined-seccomp",
        {"podSecurityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "Unconfined"}}},
        "seccompProfile.type: must be RuntimeDefault or Localhost",
    ),
    # check_appArmorProfile.go: the pod-level field, as well as each container's.
    (
        "unconfined-apparmor-pod",
        {
            "podSecurityContext": {
                **render.RESTRICTED_POD_SECURITY,
                "appArmorProfile": {"type": "Unconfined"},
            }
        },
        "spec.template.spec.securityContext.appArmorProfile.type: 'Unconfined' is not allowed",
    ),
    (
        "unconfined-apparmor-container",
        {
            "securityContext": {
                **render.RESTRICTED_CONTAINER_SECURITY,
                "appArmorProfile": {"type": "Unconfined"},
            }
        },
        "containers[migrations].securityContext.appArmorProfile.type: 'Unconfined' is not allowed",
    ),
    # check_appArmorProfile.go: the deprecated annotation, whatever container it names.
    (
        "unconfined-apparmor-annotation",
        {"podAnnotations": {f"{APPARMOR}migrations": "unconfined"}},
        f"spec.template.metadata.annotations[{APPARMOR}migrations]: 'unconfined' is not allowed "
        "(runtime/default or localhost/*)",
    ),
    (
        "unconfined-apparmor-annotation-other-container",
        {"podAnnotations": {f"{APPARMOR}sidecar": "unconfined"}},
        f"annotations[{APPARMOR}sidecar]: 'unconfined'",
    ),
    # check_runAsNonRoot.go: the pod must not say false, even when every container says true.
    (
        "run-as-root-pod",
        {"podSecurityContext": {**render.RESTRICTED_POD_SECURITY, "runAsNonRoot": False}},
        "spec.template.spec.securityContext.runAsNonRoot: false is not allowed",
    ),
]


@pytest.mark.parametrize(("case", "job", "named"), UNSAFE, ids=[u[0] for u in UNSAFE])
def test_an_unsafe_inline_job_is_refused_naming_the_field(case: str, job: Body, named: str) -> None:
    found = security.violations(inline(job))
    assert any(named in v for v in found), found


@pytest.mark.parametrize(
    ("field", "value"),
    [("hostNetwork", True), ("hostPID", True), ("hostIPC", True)],
)
def test_host_namespaces_in_a_copied_template_are_refused(field: str, value: bool) -> None:
    job = copy.deepcopy(release_object("Job", "gitlab-migrations-3b1f2c7"))
    job["spec"]["template"]["spec"][field] = value
    template = templates.from_job(job)
    assert isinstance(template, templates.Template)
    found = security.violations(render.render_job(migration(), IMAGE, template))
    assert found == [f"spec.template.spec.{field}: true (host namespaces are not allowed)"]


def test_an_init_container_of_a_copied_template_is_checked_too() -> None:
    job = copy.deepcopy(release_object("Job", "gitlab-migrations-3b1f2c7"))
    init = job["spec"]["template"]["spec"]["initContainers"][0]
    init["securityContext"] = {"privileged": True}
    init["ports"] = [{"containerPort": 80, "hostPort": 80}]
    template = templates.from_job(job)
    assert isinstance(template, templates.Template)
    found = security.violations(render.render_job(migration(), IMAGE, template))
    where = "spec.template.spec.initContainers[certificates]"
    assert (
        f"{where}.securityContext.privileged: true (privileged containers are not allowed)" in found
    )
    assert f"{where}.ports[80].hostPort: not allowed" in found
    assert (
        f"{where}.securityContext.runAsNonRoot: must be true (here or in the pod's securityContext)"
        in found
    )


@pytest.mark.parametrize(
    "value", ["", "runtime/default", "localhost/gitlab-migrations", "localhost/"]
)
def test_an_apparmor_annotation_the_baseline_allows_passes(value: str) -> None:
    """check_appArmorProfile.go: empty, runtime/default and localhost/* are allowed."""
    annotations = {f"{APPARMOR}migrations": value}
    assert security.violations(inline({"podAnnotations": annotations})) == []


@pytest.mark.parametrize("kind", ["RuntimeDefault", "Localhost"])
def test_an_apparmor_profile_the_baseline_allows_passes(kind: str) -> None:
    profile = {"type": kind, **({"localhostProfile": "gitlab"} if kind == "Localhost" else {})}
    job = {
        "podSecurityContext": {**render.RESTRICTED_POD_SECURITY, "appArmorProfile": profile},
        "securityContext": {**render.RESTRICTED_CONTAINER_SECURITY, "appArmorProfile": profile},
    }
    assert security.violations(inline(job)) == []


def test_an_apparmor_annotation_of_a_copied_template_is_refused() -> None:
    job = copy.deepcopy(release_object("Job", "gitlab-migrations-3b1f2c7"))
    metadata = job["spec"]["template"].setdefault("metadata", {})
    key = f"{APPARMOR}certificates"
    metadata.setdefault("annotations", {})[key] = "unconfined"
    template = templates.from_job(job)
    assert isinstance(template, templates.Template)
    found = security.violations(render.render_job(migration(), IMAGE, template))
    assert found == [
        f"spec.template.metadata.annotations[{key}]: 'unconfined' is not allowed "
        "(runtime/default or localhost/*)"
    ]


def test_a_probe_or_hook_naming_a_host_in_a_copied_template_is_refused() -> None:
    """check_hostProbesAndhostLifecycle.go (1.34+): probes and hooks must not set a host."""
    job = copy.deepcopy(release_object("Job", "gitlab-migrations-3b1f2c7"))
    pod = job["spec"]["template"]["spec"]
    (migrations,) = [c for c in pod["containers"] if c["name"] == "migrations"]
    migrations["livenessProbe"] = {"httpGet": {"host": "10.0.0.1", "port": 80, "path": "/"}}
    migrations["lifecycle"] = {"preStop": {"tcpSocket": {"host": "metadata.internal", "port": 80}}}
    init = pod["initContainers"][0]
    init["startupProbe"] = {"tcpSocket": {"host": "169.254.169.254", "port": 80}}
    template = templates.from_job(job)
    assert isinstance(template, templates.Template)
    found = security.violations(render.render_job(migration(), IMAGE, template))
    where = "spec.template.spec"
    assert found == [
        f"{where}.initContainers[certificates].startupProbe.tcpSocket.host: '169.254.169.254' "
        "(must not be set)",
        f"{where}.containers[migrations].livenessProbe.httpGet.host: '10.0.0.1' (must not be set)",
        f"{where}.containers[migrations].lifecycle.preStop.tcpSocket.host: 'metadata.internal' "
        "(must not be set)",
    ]


def test_a_probe_without_a_host_passes() -> None:
    job = copy.deepcopy(release_object("Job", "gitlab-migrations-3b1f2c7"))
    (migrations,) = [
        c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "migrations"
    ]
    migrations["livenessProbe"] = {"httpGet": {"host": "", "port": 80, "path": "/"}}
    migrations["readinessProbe"] = {"tcpSocket": {"port": 80}}
    template = templates.from_job(job)
    assert isinstance(template, templates.Template)
    assert security.violations(render.render_job(migration(), IMAGE, template)) == []
