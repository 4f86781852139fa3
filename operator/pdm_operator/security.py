"""The restricted Pod Security Standard, checked on the migration Job before it exists (pure).

A namespace without Pod Security enforcement would let whoever may create a
PostDeployMigration run a root, privileged or hostPath pod under the
operator's identity. So every migration Job must meet the ``restricted``
level whatever its namespace enforces: a spec (or a copied template) that asks
for more is refused before any Job exists, with the field named.

The controls are those of the ``restricted`` profile (which includes
``baseline``) as the Pod Security admission plugin implements them
(``k8s.io/pod-security-admission/policy``, ``check_*.go``; documented at
https://kubernetes.io/docs/concepts/security/pod-security-standards/), for the
fields a Job's pod template can carry. Windows-only and annotation-based
controls that no GitLab migration uses are checked by the namespace's own
admission, if any.
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
#: check_sysctls.go: the safe set (baseline).
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
#: check_seLinuxOptions.go: the types baseline allows.
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)

POD = "spec.template.spec"


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
    for sysctl in sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"{POD}.securityContext.sysctls[{sysctl.get('name')}]: not a safe sysctl")
    out += _selinux(f"{POD}.securityContext", sc)
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"{POD}.securityContext.windowsOptions.hostProcess: true")
    return out


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
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        out.append(f"{here}.appArmorProfile.type: Unconfined is not allowed")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"{here}.windowsOptions.hostProcess: true")
    out += _selinux(here, sc)
    for port in c.get("ports") or []:
        if port.get("hostPort"):
            out.append(f"{path}.ports[{port.get('containerPort')}].hostPort: not allowed")
    return out


def violations(job: Body) -> list[str]:
    """What in ``job``'s pod template the restricted level forbids; empty when it meets it."""
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    out = _pod_level(pod)
    pod_sc = pod.get("securityContext") or {}
    if (pod_sc.get("seccompProfile") or {}).get("type") not in (None, *ALLOWED_SECCOMP):
        out.append(
            f"{POD}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost"
        )
    for path, c in _containers(pod):
        out += _container(path, c, pod_sc)
    return out
