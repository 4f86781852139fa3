"""Declared environments on the real API server: who may run an environment's
migrations, with which pods, and what `kubectl get pdenv` shows.

Each test names its own environment (they are cluster-scoped and outlive the
test's namespace), except where the point is the shared default one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.integration.conftest import Cluster
from tests.integration.test_real_migrations import kubectl_pdm
from tests.support import helm
from tests.support.operator import OperatorProcess
from tests.support.pdm import Api, migration, toolbox
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def env_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def no_lease(api: Api, environment: str) -> bool:
    leases = client.CoordinationV1Api(api.core.api_client)
    names = [lease.metadata.name for lease in leases.list_namespaced_lease(api.ns).items]
    return f"pdm-env-{environment}" not in names


def test_a_migration_of_an_undeclared_environment_waits_naming_the_fix_and_takes_no_lock(
    api: Api, operator: OperatorProcess
) -> None:
    env = env_name("undeclared")
    api.deploy(toolbox())
    api.create(migration("pdm-undeclared", env=env), declare=False)
    gated = api.wait_condition("pdm-undeclared", "Gated")
    assert gated["status"] == "True"
    assert gated["reason"] == "EnvironmentNotDeclared"
    assert f"PostDeployEnvironment {env!r}" in gated["message"]
    assert api.jobs() == []
    assert no_lease(api, env)

    # The admin declares it: the same migration goes on, nothing to re-create.
    api.declare(env)
    api.wait_condition("pdm-undeclared", "Succeeded", timeout=90)


def test_a_namespace_the_environment_does_not_list_cannot_queue_on_its_lock(
    api: Api, operator: OperatorProcess
) -> None:
    env = env_name("gprd")
    api.deploy(toolbox())
    # Another team's environment: declared for their namespace only.
    api.custom.create_cluster_custom_object(
        "pdm-operator.io",
        "v1alpha1",
        "postdeployenvironments",
        {
            "apiVersion": "pdm-operator.io/v1alpha1",
            "kind": "PostDeployEnvironment",
            "metadata": {"name": env},
            "spec": {"namespaces": ["gitlab-production"]},
        },
    )
    api.create(migration("pdm-intruder", env=env), declare=False)
    gated = api.wait_condition("pdm-intruder", "Gated")
    assert gated["reason"] == "NamespaceNotAllowed"
    assert "gitlab-production" in gated["message"]
    assert api.jobs() == []
    assert no_lease(api, env)


def test_a_job_that_would_run_as_a_service_account_the_environment_does_not_allow_waits(
    api: Api, operator: OperatorProcess
) -> None:
    env = env_name("sa")
    api.declare(env)
    api.deploy(toolbox())
    api.core.create_namespaced_service_account(api.ns, {"metadata": {"name": "powerful"}})
    api.create(migration("pdm-sa", env=env, job={"serviceAccountName": "powerful"}), declare=False)
    gated = api.wait_condition("pdm-sa", "Gated")
    assert gated["reason"] == "ServiceAccountNotAllowed"
    assert "'powerful'" in gated["message"]
    assert api.jobs() == []
    assert no_lease(api, env)

    # Allowed by the admin: it runs, as that ServiceAccount, still without a token.
    api.declare(env, serviceAccounts=["powerful"])
    api.wait_condition("pdm-sa", "Succeeded", timeout=90)
    (job,) = api.jobs()
    pod = job.spec.template.spec
    assert pod.service_account_name == "powerful"
    assert pod.automount_service_account_token is False


def test_a_job_that_would_carry_an_api_token_or_hold_the_environment_too_long_waits(
    api: Api, operator: OperatorProcess
) -> None:
    env = env_name("token")
    api.declare(env, maxDeadlineSeconds=7200)
    api.deploy(toolbox())
    token = {"name": "kube-api", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
    api.create(migration("pdm-token", env=env, job={"volumes": [token]}), declare=False)
    api.create(migration("pdm-long", env=env, job={"activeDeadlineSeconds": 86400}), declare=False)
    gated = api.wait_condition("pdm-token", "Gated")
    assert gated["reason"] == "TokenNotAllowed"
    assert "'kube-api'" in gated["message"]
    gated = api.wait_condition("pdm-long", "Gated")
    assert gated["reason"] == "DeadlineNotAllowed"
    assert "7200" in gated["message"]
    assert api.jobs() == []
    assert no_lease(api, env)


def test_an_environment_that_requires_approval_holds_a_migration_without_a_preflight(
    api: Api, operator: OperatorProcess
) -> None:
    env = env_name("approved")
    api.declare(env, approval={"required": True})
    api.deploy(toolbox())
    # Its creator did not ask for approval, and cannot opt out: the environment decides.
    api.create(migration("pdm-unapproved", env=env), declare=False)
    gated = api.wait_condition("pdm-unapproved", "Gated")
    assert gated["reason"] == "ApprovalNeedsPreflight"
    assert api.jobs() == []


def test_the_environment_status_shows_the_history_floor_and_last_run(
    cluster: Cluster, api: Api, operator: OperatorProcess
) -> None:
    env = env_name("status")
    api.declare(env)
    api.deploy(toolbox())
    api.create(migration("pdm-recorded", env=env, gitlabVersion="18.6.0"), declare=False)
    api.wait_condition("pdm-recorded", "Succeeded", timeout=90)

    def shown() -> dict[str, Any] | None:
        status = (api.environment(env) or {}).get("status") or {}
        return status if status.get("lastRun") else None

    status = wait_until(shown, timeout=60, what=f"pdenv/{env} shows its last run")
    assert status["history"] == f"{api.ns}/pdm-history-{env}"
    assert status["lastRun"] == f"{api.ns}/pdm-recorded (Succeeded)"
    assert status["floor"] == "18.6.0"
    assert status["runs"][0]["version"] == "18.6.0"
    assert status.get("holder") is None
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True"

    # What a release manager looks at first: one line with the floor and the last run.
    shown_line = cluster.run_kubectl("get", "pdenv", env)
    assert shown_line.returncode == 0, shown_line.stderr
    header, line = shown_line.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "FLOOR", "HOLDER", "QUEUED"]
    assert line.split()[:2] == [env, "18.6.0"]
    assert f"{api.ns}/pdm-recorded" in line

    # rollback-check finds the history through the environment, with no -n to guess.
    unsafe = kubectl_pdm(cluster, "rollback-check", env, "--to", "18.5.9")
    assert unsafe.returncode == 1, unsafe.stdout + unsafe.stderr
    assert f"{api.ns}/pdm-history-{env}" in unsafe.stdout
    safe = kubectl_pdm(cluster, "rollback-check", env, "--to", "18.6.0")
    assert safe.returncode == 0, safe.stdout + safe.stderr
    # An environment nobody declared is unknown (exit 3), never "safe".
    unknown = kubectl_pdm(cluster, "rollback-check", env_name("nowhere"), "--to", "18.5.9")
    assert unknown.returncode == 3, unknown.stdout + unknown.stderr
    assert unknown.stdout.startswith("UNKNOWN:")
    assert "not declared" in unknown.stdout


# --- who may create a PostDeployMigration: the chart's creator policy -----------------
@pytest.fixture
def creator_policy(cluster: Cluster, crd: None) -> Iterator[None]:
    """The chart's creator policy, rendered by helm and applied (cluster-wide; removed after)."""
    objects = helm.template("--show-only", "templates/creator-policy.yaml")
    text = yaml.safe_dump_all(objects)
    out = cluster.run_kubectl("apply", "-f", "-", input=text)
    assert out.returncode == 0, out.stderr
    try:
        yield
    finally:
        cluster.run_kubectl("delete", "-f", "-", "--ignore-not-found", input=text)


def grant(api: Api, user: str, rules: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(api.core.api_client)
    name = f"{user}-{uuid.uuid4().hex[:4]}"
    rbac.create_namespaced_role(api.ns, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(
        api.ns,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


CREATE_PDMS = {
    "apiGroups": ["pdm-operator.io"],
    "resources": ["postdeploymigrations"],
    "verbs": ["create", "get"],
}
#: How the API server names the creator policy in a refusal.
POLICY = "ValidatingAdmissionPolicy 'pdm-operator-creator'"
CREATE_JOBS = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}
READ_LOGS = {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}


def create_as(cluster: Cluster, api: Api, user: str, name: str, *, dry: bool = False) -> Any:
    body = migration(name)
    flags = ["--dry-run=server"] if dry else []
    return cluster.run_kubectl(
        f"--as={user}", "-n", api.ns, "create", *flags, "-f", "-", input=json.dumps(body)
    )


def enforced(cluster: Cluster, api: Api, refused_user: str) -> None:
    """Wait until the policy refuses ``refused_user`` (a server-side dry run: nothing is
    created while the new policy and grants are still on their way to being enforced)."""
    wait_until(
        lambda: POLICY in create_as(cluster, api, refused_user, "probe", dry=True).stderr,
        timeout=30,
        what="the creator policy is enforced",
    )


def test_a_user_who_may_not_create_jobs_may_not_create_a_migration(
    cluster: Cluster, api: Api, creator_policy: None
) -> None:
    grant(api, "pdm-only", [CREATE_PDMS])
    enforced(cluster, api, "pdm-only")
    out = create_as(cluster, api, "pdm-only", "pdm-by-pdm-only")
    assert out.returncode != 0
    assert "create on jobs.batch" in out.stderr
    assert "pdm-only" in out.stderr
    assert api.get("pdm-by-pdm-only") is None


def test_a_user_who_may_create_jobs_but_not_read_logs_may_not_create_a_migration(
    cluster: Cluster, api: Api, creator_policy: None
) -> None:
    # The log tail of a failed migration would show them what its pod printed.
    grant(api, "no-logs", [CREATE_PDMS, CREATE_JOBS])
    enforced(cluster, api, "no-logs")
    out = create_as(cluster, api, "no-logs", "pdm-by-no-logs")
    assert out.returncode != 0
    assert "get on pods/log" in out.stderr


def test_a_user_who_may_create_jobs_may_create_a_migration(
    cluster: Cluster, api: Api, creator_policy: None
) -> None:
    grant(api, "deployer", [CREATE_PDMS, CREATE_JOBS, READ_LOGS])
    grant(api, "pdm-only", [CREATE_PDMS])
    # The policy enforced (the refused user is the probe), then the allowed one's
    # grant (RBAC is cached by the API server).
    enforced(cluster, api, "pdm-only")

    def admitted() -> Any:
        out = create_as(cluster, api, "deployer", "pdm-by-deployer")
        return out if out.returncode == 0 else None

    wait_until(admitted, timeout=30, what="the deployer's migration is admitted")
    assert api.get("pdm-by-deployer") is not None


def test_only_the_operator_writes_a_migrations_status(
    cluster: Cluster, api: Api, creator_policy: None
) -> None:
    # A status is trusted state (the Job, the outcome, the pending list): a
    # user who may patch it could otherwise record a run that never happened.
    api.create(migration("pdm-status"))
    grant(
        api,
        "meddler",
        [
            {
                "apiGroups": ["pdm-operator.io"],
                "resources": ["postdeploymigrations/status"],
                "verbs": ["get", "patch"],
            }
        ],
    )
    patch = json.dumps({"status": {"jobName": "forged", "jobOutcome": "Succeeded"}})

    def refused() -> Any:
        out = cluster.run_kubectl(
            "--as=meddler", "-n", api.ns, "patch", "pdm", "pdm-status", "--subresource=status",
            "--type=merge", "-p", patch, "--dry-run=server",
        )  # fmt: skip
        return out if "pdm-operator-status" in out.stderr else None

    out = wait_until(refused, timeout=30, what="the status policy refuses")
    assert "the operator writes it" in out.stderr
    assert "jobName" not in (api.get("pdm-status") or {}).get("status", {})
