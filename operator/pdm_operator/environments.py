"""What a declared environment allows a PostDeployMigration (pure).

A PostDeployMigration names its environment (``spec.environment``) and, through
it, takes a lock that every namespace of the cluster shares, writes a history
that ``rollback-check`` trusts, and makes the operator create a Job with the
pod it describes. Left to the creator, that is more than creating a Job: a
PDM in namespace A could queue on, hold, or flood the history of namespace
B's ``gprd``, and its Job could run as any ServiceAccount of its namespace
with the token mounted. So an environment is a cluster-scoped
``PostDeployEnvironment`` written by the platform admin, as Argo CD's
AppProject is for Applications: it says which namespaces may run the
environment's migrations, which ServiceAccounts their Jobs may use, whether
they may carry an API token, which GitLab releases a pod template may be
copied from, whether approval is required, and how long a Job may hold the
environment.

Every check here fails closed: an environment that is not declared, a
namespace not listed, a ServiceAccount or a token not allowed, a deadline
above the maximum, a template without the chart's labels, each hold the
migration before the lock, with a reason that names the fix. Holds, not
failures: the admin's fix (or a corrected PostDeployMigration) lets the same
object go on, and nothing irreversible has happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pdm_operator import gates
from pdm_operator.model import Body

KIND = "PostDeployEnvironment"
PLURAL = "postdeployenvironments"

#: Defaults of the CRD's schema, for an object read before defaulting (tests, ``render``).
DEFAULT_MAX_DEADLINE = 43200

#: Labels the chart puts on its migrations Job's and toolbox Deployment's pods:
#: ``gitlab.standardLabels`` (``app: <chart name>``, ``release: <release>``,
#: chart ``templates/_application.tpl``), included in the pod template of
#: ``charts/gitlab/charts/migrations/templates/_jobspec.yaml`` (chart 9.x, read
#: in integratop/gitlab-org-charts-mirror) and of the toolbox Deployment.
CHART_APP = {"Job": "migrations", "Deployment": "toolbox"}

#: A projected volume source that mints a Kubernetes API token.
TOKEN_SOURCE = "serviceAccountToken"  # noqa: S105 - a field name, not a secret

# Hold reasons (Gated=True).
NOT_DECLARED = "EnvironmentNotDeclared"
NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
SERVICE_ACCOUNT_NOT_ALLOWED = "ServiceAccountNotAllowed"
TOKEN_NOT_ALLOWED = "TokenNotAllowed"  # noqa: S105 - a reason, not a secret
DEADLINE_NOT_ALLOWED = "DeadlineNotAllowed"
APPROVAL_NEEDS_PREFLIGHT = "ApprovalNeedsPreflight"
HOLDS_NEED_PREFLIGHT = "HoldsNeedPreflight"
TEMPLATE_NOT_FROM_RELEASE = "TemplateNotFromRelease"
#: Every hold of this module: each needs someone to act (an admin, or a new
#: PostDeployMigration), so each is a Warning event.
HOLDS = frozenset(
    {
        NOT_DECLARED,
        NAMESPACE_NOT_ALLOWED,
        SERVICE_ACCOUNT_NOT_ALLOWED,
        TOKEN_NOT_ALLOWED,
        DEADLINE_NOT_ALLOWED,
        APPROVAL_NEEDS_PREFLIGHT,
        TEMPLATE_NOT_FROM_RELEASE,
    }
)


@dataclass(frozen=True)
class Policy:
    """A PostDeployEnvironment's spec, with the schema's defaults."""

    name: str
    namespaces: frozenset[str]
    service_accounts: frozenset[str]
    mount_token: bool
    releases: frozenset[str]
    approval_required: bool
    max_deadline: int
    #: When runs may start (``when``): the raw windows, the change lock, the
    #: Deployments that must not be rolling out, the GitLab deployments gate.
    windows: tuple[Body, ...] = ()
    change_lock: Body | None = None
    change_lock_from: Body | None = None
    quiet_deployments: tuple[str, ...] = ()
    gitlab_deployments: Body | None = None
    #: Versions no run of the environment applies (``spec.holds``: version, reason).
    holds: tuple[Body, ...] = ()
    #: ``spec.retry``: which failure classes are retried, how often, after how long.
    retry: Body | None = None

    @classmethod
    def of(cls, body: Body) -> Policy:
        spec = body.get("spec") or {}
        return cls(
            name=str((body.get("metadata") or {}).get("name") or ""),
            namespaces=frozenset(str(n) for n in spec.get("namespaces") or []),
            service_accounts=frozenset(str(s) for s in spec.get("serviceAccounts") or []),
            mount_token=bool(spec.get("mountServiceAccountToken")),
            releases=frozenset(str(r) for r in spec.get("releases") or []),
            approval_required=bool((spec.get("approval") or {}).get("required")),
            max_deadline=int(spec.get("maxDeadlineSeconds") or DEFAULT_MAX_DEADLINE),
            windows=tuple(spec.get("windows") or ()),
            change_lock=spec.get("changeLock") or None,
            change_lock_from=spec.get("changeLockFrom") or None,
            quiet_deployments=tuple(str(n) for n in spec.get("quietDeployments") or ()),
            gitlab_deployments=spec.get("gitlabDeployments") or None,
            holds=tuple(spec.get("holds") or ()),
            retry=spec.get("retry") or None,
        )


def admits(environment: str, body: Body | None, namespace: str) -> Policy | gates.Hold:
    """The environment's policy, or why a migration of ``namespace`` may not use it."""
    if body is None:
        return gates.Hold(
            NOT_DECLARED,
            f"environment {environment!r} is not declared: a platform admin creates "
            f"PostDeployEnvironment {environment!r} listing namespace {namespace!r} in "
            "spec.namespaces (kubectl get pdenv lists the declared ones)",
        )
    policy = Policy.of(body)
    if namespace not in policy.namespaces:
        return gates.Hold(
            NAMESPACE_NOT_ALLOWED,
            f"namespace {namespace!r} may not run migrations of environment {environment!r}: "
            f"PostDeployEnvironment {environment!r} allows {sorted(policy.namespaces)} "
            "(spec.namespaces, written by a platform admin)",
        )
    return policy


def approval_hold(policy: Policy, spec: Body) -> gates.Hold | None:
    """An environment that requires approval needs the pre-flight: its plan is what is approved.

    So does one with standing holds: without the pre-flight's list the Job
    runs ``db-migrate``, which would apply the held migrations too.
    """
    preflight_off = spec.get("mode", "Run") == "Run" and not (spec.get("preflight") or {}).get(
        "enabled", True
    )
    if policy.holds and preflight_off:
        versions = ", ".join(str(h.get("version")) for h in policy.holds)
        return gates.Hold(
            HOLDS_NEED_PREFLIGHT,
            f"PostDeployEnvironment {policy.name!r} holds {versions} (spec.holds), and only a run "
            "that knows the pending list can leave them out: create the PostDeployMigration "
            "again with spec.preflight.enabled true",
        )
    if not policy.approval_required:
        return None
    if spec.get("mode", "Run") == "Run" and not (spec.get("preflight") or {}).get("enabled", True):
        return gates.Hold(
            APPROVAL_NEEDS_PREFLIGHT,
            f"PostDeployEnvironment {policy.name!r} requires an approved plan "
            "(spec.approval.required), and a plan comes from the pre-flight: create the "
            "PostDeployMigration again with spec.preflight.enabled true",
        )
    return None


def effective_spec(policy: Policy | None, spec: Body) -> Body:
    """``spec`` as the environment makes it: approval required when the environment says so."""
    if policy is None or not policy.approval_required:
        return spec
    approval = {**(spec.get("approval") or {}), "required": True}
    return {**spec, "approval": approval}


def _pod(job: Body) -> Body:
    return ((job.get("spec") or {}).get("template") or {}).get("spec") or {}


def _token_volumes(pod: Body) -> Iterator[str]:
    for volume in pod.get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if TOKEN_SOURCE in source:
                yield str(volume.get("name"))


def job_hold(policy: Policy, job: Body, what: str = "migration Job") -> gates.Hold | None:
    """Whether the rendered ``job`` stays inside what the environment allows.

    Checked on the Job as it would be created (the copied template, the
    spec's overrides and the operator's defaults merged), so no path around
    it: a ServiceAccount from the chart's Job, from ``spec.job`` or from a
    copied Deployment is the same ServiceAccount.
    """
    pod = _pod(job)
    fix = f"PostDeployEnvironment {policy.name!r}"
    account = str(pod.get("serviceAccountName") or pod.get("serviceAccount") or "")
    if account and account != "default" and account not in policy.service_accounts:
        allowed = sorted(policy.service_accounts) or "none"
        return gates.Hold(
            SERVICE_ACCOUNT_NOT_ALLOWED,
            f"the {what} would run as ServiceAccount {account!r}, which {fix} does not allow "
            f"(spec.serviceAccounts: {allowed}); drop it from the pod template "
            "(spec.job.serviceAccountName, or the copied template's), or have an admin add it",
        )
    if not policy.mount_token:
        if pod.get("automountServiceAccountToken") is True:
            return gates.Hold(
                TOKEN_NOT_ALLOWED,
                f"the {what} would mount a Kubernetes API token "
                f"(automountServiceAccountToken: true), which {fix} does not allow "
                "(spec.mountServiceAccountToken); a migration needs none",
            )
        volumes = sorted(_token_volumes(pod))
        if volumes:
            return gates.Hold(
                TOKEN_NOT_ALLOWED,
                f"the {what} would mount a Kubernetes API token (projected "
                f"serviceAccountToken in volume(s) {volumes}), which {fix} does not allow "
                "(spec.mountServiceAccountToken)",
            )
    deadline = int((job.get("spec") or {}).get("activeDeadlineSeconds") or 0)
    if deadline > policy.max_deadline:
        return gates.Hold(
            DEADLINE_NOT_ALLOWED,
            f"the {what} asks for activeDeadlineSeconds {deadline}, above the "
            f"{policy.max_deadline} that {fix} allows (spec.maxDeadlineSeconds): a migration "
            "holds its environment at most that long",
        )
    return None


def template_hold(
    policy: Policy, kind: str, name: str, labels: Body, release: str | None
) -> gates.Hold | None:
    """A copied pod template must be the chart's own, of an allowed release.

    ``spec.podTemplateFrom`` copies a pod template with all its wiring (its
    ServiceAccount, Secrets, volumes). A selector may match any Job of the
    namespace; only the chart's migrations Job (or toolbox Deployment) of a
    GitLab release is a template. ``labels`` are the pod template's.
    """
    app = CHART_APP.get(kind, "")
    have_app, have_release = labels.get("app"), labels.get("release")
    where = f"{kind} {name!r} (spec.podTemplateFrom)"
    if have_app != app or not have_release:
        return gates.Hold(
            TEMPLATE_NOT_FROM_RELEASE,
            f"{where} is not a GitLab chart's {app} pod template: its pods carry "
            f"app={have_app!r}, release={have_release!r}, not app={app!r} and a release; "
            "only the chart's own objects are copied",
        )
    if release and have_release != release:
        return gates.Hold(
            TEMPLATE_NOT_FROM_RELEASE,
            f"{where} belongs to release {have_release!r}, not {release!r} "
            "(spec.podTemplateFrom.migrationsJob.release)",
        )
    if policy.releases and have_release not in policy.releases:
        return gates.Hold(
            TEMPLATE_NOT_FROM_RELEASE,
            f"{where} belongs to release {have_release!r}, which PostDeployEnvironment "
            f"{policy.name!r} does not list (spec.releases: {sorted(policy.releases)})",
        )
    return None


def history_location(namespace: str, configmap: str) -> str:
    return f"{namespace}/{configmap}"
