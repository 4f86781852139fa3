"""Building and watching PostDeployMigrations and their neighbours in tests."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.waiting import wait_until

GROUP, VERSION, PLURAL = "pdm-operator.io", "v1alpha1", "postdeploymigrations"
ENVIRONMENTS = "postdeployenvironments"
TOOLBOX_IMAGE = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.6.0"
TOOLBOX_DIGEST = "sha256:" + "5f3a9c1e" * 8

RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def migration(name: str, env: str = "gstg", **spec: Any) -> dict[str, Any]:
    """A PostDeployMigration; without the pre-flight unless ``preflight`` is given.

    The pre-flight reads its pod's log, which simulated (kwok) nodes do not
    serve; tests whose pods run on the real node pass ``preflight={}`` for the
    product's default.
    """
    spec.setdefault("preflight", {"enabled": False})
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PostDeployMigration",
        "metadata": {"name": name},
        "spec": {
            "environment": env,
            "image": {"fromDeployment": {"name": "gitlab-toolbox", "container": "toolbox"}},
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def deployment(  # noqa: PLR0917 - a test builder, read at the call site
    name: str,
    container: str,
    image: str,
    replicas: int = 1,
    annotations: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    pod_labels = labels or {"app": name}
    pod_spec: dict[str, Any] = {
        "securityContext": RESTRICTED_POD,
        "containers": [
            {"name": container, "image": image, "securityContext": RESTRICTED_CONTAINER}
        ],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations or {}},
                "spec": pod_spec,
            },
        },
    }


def toolbox(image: str = TOOLBOX_IMAGE, digest: str | None = TOOLBOX_DIGEST) -> dict[str, Any]:
    repo = image.rsplit(":", 1)[0]
    annotations = {"sim.pdm-operator.io/image-id": f"{repo}@{digest}"} if digest else {}
    # The chart's labels (gitlab.selectorLabels): a copied template must carry them.
    return deployment(
        "gitlab-toolbox",
        "toolbox",
        image,
        annotations=annotations,
        labels={"app": "toolbox", "release": "gitlab"},
    )


class Api:
    """The few calls the tests make, on the cluster under test."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    def create(self, body: dict[str, Any], *, declare: bool = True) -> dict[str, Any]:
        """Create a PostDeployMigration; first declare its environment for this
        namespace (as a platform admin would), unless ``declare`` is False."""
        environment = (body.get("spec") or {}).get("environment")
        if declare and isinstance(environment, str) and environment:
            self.declare(environment)
        return dict(
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
        )

    def environment(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_cluster_custom_object(GROUP, VERSION, ENVIRONMENTS, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def declare(self, name: str, **spec: Any) -> dict[str, Any]:
        """PostDeployEnvironment ``name`` lets this namespace in (created if missing);
        ``spec`` sets its other fields. Environments are cluster-scoped: tests of
        one name share it, each adding its own namespace."""
        found = self.environment(name)
        if found is None:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "PostDeployEnvironment",
                "metadata": {"name": name},
                "spec": {"namespaces": [self.ns], **spec},
            }
            try:
                return dict(
                    self.custom.create_cluster_custom_object(GROUP, VERSION, ENVIRONMENTS, body)
                )
            except ApiException as e:
                if e.status != 409:
                    raise
                found = self.environment(name) or {}
        namespaces = list((found.get("spec") or {}).get("namespaces") or [])
        patch: dict[str, Any] = dict(spec)
        if self.ns not in namespaces:
            patch["namespaces"] = [*namespaces, self.ns][-64:]
        if not patch:
            return found
        return dict(
            self.custom.patch_cluster_custom_object(
                GROUP, VERSION, ENVIRONMENTS, name, {"spec": patch}
            )
        )

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, patch)
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def deploy(self, body: dict[str, Any], wait: bool = True) -> None:
        self.apps.create_namespaced_deployment(self.ns, body)
        if wait:
            name = body["metadata"]["name"]
            wait_until(
                lambda: self.rolled_out(name), timeout=60, what=f"deployment {name} rolled out"
            )

    def rolled_out(self, name: str) -> bool:
        d = self.apps.read_namespaced_deployment_status(name, self.ns)
        want = d.spec.replicas
        s = d.status
        return bool(
            (s.observed_generation or 0) >= d.metadata.generation
            and (s.updated_replicas or 0) == want
            and (s.available_replicas or 0) == want
            and (s.replicas or 0) == want
        )

    def jobs(self) -> list[Any]:
        return list(self.batch.list_namespaced_job(self.ns).items)

    def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        obj = self.get(name) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == ctype:
                return dict(cond)
        return None

    def wait_condition(
        self, name: str, ctype: str, status: str = "True", timeout: float = 60
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            cond = self.condition(name, ctype)
            return cond if cond and cond["status"] == status else None

        return wait_until(probe, timeout=timeout, what=f"pdm/{name} {ctype}={status}")

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get(name)
            return obj if obj and (obj.get("status") or {}).get("state") == state else None

        return wait_until(probe, timeout=timeout, what=f"pdm/{name} state {state}")

    def lease_holder(self, environment: str = "gstg") -> str | None:
        """Who holds the environment's lock (the tests run the operator with its
        lock namespace in the test's namespace), or None when it is free."""
        try:
            lease = client.CoordinationV1Api(self.core.api_client).read_namespaced_lease(
                f"pdm-env-{environment}", self.ns
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return str(lease.spec.holder_identity or "") or None

    def wait_lock_free(self, environment: str = "gstg", timeout: float = 10) -> None:
        """The environment's lock is free (a migration gives it back just after its
        final status is written, so a test that saw the status waits for the lock)."""
        wait_until(
            lambda: self.lease_holder(environment) is None,
            timeout=timeout,
            what=f"environment {environment}'s lock to be free",
        )

    def events(self, name: str) -> list[Any]:
        return [
            e
            for e in self.core.list_namespaced_event(self.ns).items
            if e.involved_object.kind == "PostDeployMigration" and e.involved_object.name == name
        ]

    def wait_events(self, name: str, *reasons: str, timeout: float = 30) -> list[Any]:
        """The migration's Events once one of each reason is among them: the
        operator posts Events in the background, after the status they tell of."""
        return wait_until(
            lambda: (
                (found := self.events(name)) and set(reasons) <= {e.reason for e in found} and found
            ),
            timeout=timeout,
            what=f"Events {', '.join(reasons)} of pdm/{name}",
        )
