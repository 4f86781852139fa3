"""The errors of a call to the API server, as the operator decides on them.

``kube.py`` raises these and nothing else for a Kubernetes call (it turns the
official client's ``ApiException`` and urllib3's errors into them); they live
in a module of their own so that the pure decision of a pass (``decide``)
can tell them apart without importing the client. Reasons per the API
conventions' ``metav1.Status`` (k8s.io/apimachinery pkg/apis/meta/v1/types.go,
``StatusReason``).
"""

from __future__ import annotations


class ApiError(Exception):
    """The API server refused or failed a call, or could not be reached.

    The one kind of error that leaves this module for a Kubernetes call: the
    official client's ``ApiException`` and urllib3's errors stay inside (the
    import-linter contracts in pyproject.toml keep it so). ``message`` is the
    server's own (the ``Status`` it answered), ``status`` the HTTP status (0
    when there was no answer), ``reason`` the Status reason
    (``AlreadyExists``, ``Invalid``, ...). The subclasses are what callers
    decide on.
    """

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return self.message


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class AlreadyExists(ApiError):
    """409 on a create: an object of that name exists."""


class Conflict(ApiError):
    """The object changed under us (409 on a write guarded by a resourceVersion or uid)."""


class Invalid(ApiError):
    """The object can never be accepted: the server says so (400, 422), or the
    client refused it before sending it.

    The official client (v37) validates request bodies with pydantic, so a Job
    carrying ``env: [{name: X, value: 5}]`` (an unquoted YAML number) raises a
    ``ValueError`` in the client, not an error from the server.
    """


class Forbidden(ApiError):
    """401 or 403: not allowed (RBAC, an admission policy, a quota)."""


class Transient(ApiError):
    """5xx, 429, a timeout or no answer at all: the same call may work later."""
