"""Acting as a ServiceAccount in tests: a kubeconfig that authenticates with a
token the TokenRequest API minted, so RBAC is checked as the cluster checks it."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client


def service_account_kubeconfig(
    api: client.ApiClient, namespace: str, name: str, path: Path
) -> tuple[str, Path]:
    """ServiceAccount ``namespace/name``'s user name, and ``path`` written as a
    kubeconfig that authenticates as it (an hour's token)."""
    token = (
        client.CoreV1Api(api)
        .create_namespaced_service_account_token(
            name, namespace, client.AuthenticationV1TokenRequest(spec={"expirationSeconds": 3600})
        )
        .status.token
    )
    cfg = api.configuration
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": cfg.host, "certificate-authority": cfg.ssl_ca_cert},
                    }
                ],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": name}}],
                "current-context": "c",
            }
        )
    )
    return f"system:serviceaccount:{namespace}:{name}", path
