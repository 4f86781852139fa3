"""The restricted Pod Security Standard, checked on the migration Job before it exists (pure).

A namespace without Pod Security enforcement would let whoever may create a
PostDeployMigration run a root, privileged or hostPath pod under the
operator's identity. So every migration Job must meet the ``restricted``
level whatever its namespace enforces: a spec (or a copied template) that asks
for more is refused before any Job exists, with the field named.

The controls are those of the ``restricted`` profile (which includes
``baseline``) as the Pod Security admission plugin implements them for the
``latest`` version (``k8s.io/pod-security-admission/policy``, ``check_*.go``,
as on its main branch in July 2026; documented at
https://kubernetes.io/docs/concepts/security/pod-security-standards/), for
everything a Job's pod template can carry: its spec, and the AppArmor
annotations of its metadata (check_appArmorProfile.go). Where this module
differs it is stricter: it does not make upstream's exemptions for a pod in a
user namespace (``hostUsers: false``: runAsNonRoot, runAsUser) nor for a
Windows pod (``spec.os.name: windows``: seccomp, capabilities,
allowPrivilegeEscalation), which no GitLab migration needs, and its safe
sysctls are those of policy 1.29 (upstream allows more from 1.32 on). The
seccomp annotations (``seccomp.security.alpha.kubernetes.io/*``) are not
checked: upstream checks them only for policy versions before 1.19
(check_seccompProfile_baseline.go).
"""

from __future__ import annotations

from collections.abc import Iterator

from pdm_operator.model import Body

#: check_restrictedVolumes.go: the volume sources the restricted level allows.
ALLOWED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
#: check_capabilities_restricted.go: the only capability that may be added.
ALLOWED_ADD = frozenset({"NET_BIND_SERVICE"})
#: check_seccompProfile_restricted.go.
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
#: check_sysctls.go: the safe set (baseline), as of policy 1.29.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
#: check_appArmorProfile.go: the profile types baseline allows (unset too), on the
#: pod and on each container.
ALLOWED_APPARMOR = frozenset({"RuntimeDefault", "Localhost"})
#: check_appArmorProfile.go: the deprecated per-container annotation
#: (``container.apparmor.security.beta.kubernetes.io/<container>``) may be
#: empty, ``runtime/default`` or ``localhost/<profile>``; any other value
#: (``unconfined``) is refused, whatever container the key names.
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
APPARMOR_ANNOTATION_DEFAULT = "runtime/default"
APPARMOR_ANNOTATION_LOCALHOST = "localhost/"
#: check_hostProbesAndhostLifecycle.go (1.34+): the handlers whose ``host``
#: must be unset or empty (a probe or hook must not reach another host).
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
HOOKS = ("postStart", "preStop")
#: check_seLinuxOptions.go: the types baseline allows.
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)

POD = "spec.template.spec"
POD_ANNOTATIONS = "spec.template.metadata.annotations"


def _containers(pod: Body) -> Iterator[tuple[str, Body]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod.get(key) or []:
            yield f"{POD}.{key}[{c.get('name')}]", c


def _pod_level(pod: Body) -> list[str]:
    out = [
        f"{POD}.{key}: true (host namespaces are not allowed)"
        for key in ("hostNetwork", "hostPID", "hostIPC")
        if pod.get(key)
    ]
    for v in pod.get("volumes") or []:
        kinds = [k for k in v if k != "name"]
        for kind in kinds:
            if kind not in ALLOWED_VOLUMES:
                out.append(f"{POD}.volumes[{v.get('name')}].{kind}: volume type not allowed")
    sc = pod.get("securityContext") or {}
    if sc.get("runAsUser") == 0:
        out.append(f"{POD}.securityContext.runAsUser: 0 (root is not allowed)")
    # check_runAsNonRoot.go: an explicit false on the pod is refused even when
    # every container says true.
    if sc.get("runAsNonRoot") is False:
        out.append(f"{POD}.securityContext.runAsNonRoot: false is not allowed")
    out += _apparmor(f"{POD}.securityContext", sc)
    for sysctl in sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"{POD}.securityContext.sysctls[{sysctl.get('name')}]: not a safe sysctl")
    out += _selinux(f"{POD}.securityContext", sc)
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"{POD}.securityContext.windowsOptions.hostProcess: true")
    return out


def _apparmor(path: str, sc: Body) -> list[str]:
    """check_appArmorProfile.go, for a pod's or a container's securityContext."""
    profile = sc.get("appArmorProfile")
    if profile is None:  # unset: the runtime's default profile
        return []
    kind = profile.get("type")
    if kind in ALLOWED_APPARMOR:
        return []
    return [f"{path}.appArmorProfile.type: {kind!r} is not allowed (RuntimeDefault or Localhost)"]


def _apparmor_annotations(metadata: Body) -> list[str]:
    """check_appArmorProfile.go, for the deprecated annotations on the pod template."""
    out = []
    for key, value in sorted((metadata.get("annotations") or {}).items()):
        if not key.startswith(APPARMOR_ANNOTATION_PREFIX):
            continue
        if (
            not value
            or value == APPARMOR_ANNOTATION_DEFAULT
            or str(value).startswith(APPARMOR_ANNOTATION_LOCALHOST)
        ):
            continue
        out.append(
            f"{POD_ANNOTATIONS}[{key}]: {value!r} is not allowed "
            f"({APPARMOR_ANNOTATION_DEFAULT} or {APPARMOR_ANNOTATION_LOCALHOST}*)"
        )
    return out


def _hosts(path: str, c: Body) -> list[str]:
    """check_hostProbesAndhostLifecycle.go: no probe or lifecycle hook names a host."""
    handlers = [(f"{path}.{p}", c.get(p)) for p in PROBES]
    lifecycle = c.get("lifecycle") or {}
    handlers += [(f"{path}.lifecycle.{h}", lifecycle.get(h)) for h in HOOKS]
    return [
        f"{where}.{action}.host: {handler[action]['host']!r} (must not be set)"
        for where, handler in handlers
        if handler
        for action in ("httpGet", "tcpSocket")
        if (handler.get(action) or {}).get("host")
    ]


def _selinux(path: str, sc: Body) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = []
    if opts.get("type", "") not in SELINUX_TYPES:
        out.append(f"{path}.seLinuxOptions.type: {opts['type']!r} is not allowed")
    for key in ("user", "role"):
        if opts.get(key):
            out.append(f"{path}.seLinuxOptions.{key}: must not be set")
    return out


def _container(path: str, c: Body, pod_sc: Body) -> list[str]:
    sc = c.get("securityContext") or {}
    here = f"{path}.securityContext"
    out = []
    if sc.get("privileged"):
        out.append(f"{here}.privileged: true (privileged containers are not allowed)")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{here}.allowPrivilegeEscalation: must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{here}.capabilities.drop: must include ALL")
    added = sorted(set(caps.get("add") or []) - ALLOWED_ADD)
    if added:
        out.append(f"{here}.capabilities.add: {added} (only NET_BIND_SERVICE may be added)")
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is not True:
        out.append(f"{here}.runAsNonRoot: must be true (here or in the pod's securityContext)")
    if sc.get("runAsUser") == 0:
        out.append(f"{here}.runAsUser: 0 (root is not allowed)")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP:
        out.append(
            f"{here}.seccompProfile.type: must be RuntimeDefault or Localhost "
            "(here or in the pod's securityContext)"
        )
    if sc.get("procMount") not in (None, "Default"):
        out.append(f"{here}.procMount: must be Default")
    out += _apparmor(here, sc)
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"{here}.windowsOptions.hostProcess: true")
    out += _selinux(here, sc)
    for port in c.get("ports") or []:
        if port.get("hostPort"):
            out.append(f"{path}.ports[{port.get('containerPort')}].hostPort: not allowed")
    out += _hosts(path, c)
    return out


def violations(job: Body) -> list[str]:
    """What in ``job``'s pod template the restricted level forbids; empty when it meets it."""
    template = (job.get("spec") or {}).get("template") or {}
    pod = template.get("spec") or {}
    out = _pod_level(pod)
    out += _apparmor_annotations(template.get("metadata") or {})
    pod_sc = pod.get("securityContext") or {}
    if (pod_sc.get("seccompProfile") or {}).get("type") not in (None, *ALLOWED_SECCOMP):
        out.append(
            f"{POD}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost"
        )
    for path, c in _containers(pod):
        out += _container(path, c, pod_sc)
    return out
