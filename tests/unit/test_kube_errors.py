"""kube.py is the one boundary to the API: the official client's errors become
the project's own, each with the server's message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from prometheus_client import REGISTRY
from urllib3.exceptions import MaxRetryError, ProtocolError

from pdm_operator import errors, kube


def answer(status: int, reason: str, message: str, http_reason: str = "") -> ApiException:
    e = ApiException(status=status, reason=http_reason or reason)
    e.body = json.dumps(
        {"kind": "Status", "status": "Failure", "reason": reason, "message": message}
    )
    return e


class Raising:
    """An API object of the client whose one call raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def create_namespaced_job(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (404, "NotFound", errors.NotFound),
        (409, "AlreadyExists", errors.AlreadyExists),
        (409, "Conflict", errors.Conflict),
        (422, "Invalid", errors.Invalid),
        (400, "BadRequest", errors.Invalid),
        (403, "Forbidden", errors.Forbidden),
        (401, "Unauthorized", errors.Forbidden),
        (429, "TooManyRequests", errors.Transient),
        (500, "InternalError", errors.Transient),
        (504, "Timeout", errors.Transient),
        (410, "Gone", errors.ApiError),
    ],
)
def test_each_answer_becomes_its_own_error_with_the_servers_message(
    status: int, reason: str, kind: type[errors.ApiError]
) -> None:
    message = f'jobs.batch "pdm-x" is {reason.lower()}'
    api = kube._Translated(Raising(answer(status, reason, message)))
    with pytest.raises(errors.ApiError) as caught:
        api.create_namespaced_job("ns", {})
    assert type(caught.value) is kind
    assert (caught.value.status, caught.value.reason, caught.value.message) == (
        status,
        reason,
        message,
    )
    assert kube.expected(caught.value)


def test_an_answer_without_a_status_body_keeps_the_http_status() -> None:
    e = ApiException(status=503, reason="Service Unavailable")
    e.body = "<html>upstream connect error</html>"
    api = kube._Translated(Raising(e))
    with pytest.raises(errors.Transient, match="503 Service Unavailable"):
        api.create_namespaced_job("ns", {})


@pytest.mark.parametrize(
    "error",
    [
        MaxRetryError(None, "/apis/batch/v1", "connection refused"),  # type: ignore[arg-type]
        ProtocolError("Connection aborted."),
        TimeoutError("timed out"),
    ],
)
def test_no_answer_at_all_is_transient(error: Exception) -> None:
    api = kube._Translated(Raising(error))
    with pytest.raises(errors.Transient) as caught:
        api.create_namespaced_job("ns", {})
    assert caught.value.status == 0
    assert type(error).__name__ in caught.value.message


def test_a_bug_is_not_an_api_error() -> None:
    api = kube._Translated(Raising(KeyError("metadata")))
    with pytest.raises(KeyError):
        api.create_namespaced_job("ns", {})
    assert not kube.expected(KeyError("metadata"))


class CutOff:
    """An answer whose body breaks off while it is read (``_preload_content=False``)."""

    @property
    def data(self) -> bytes:
        raise ProtocolError("Connection broken: IncompleteRead")


class Answering:
    def read_namespaced_pod_log(self, *args: Any, **kwargs: Any) -> Any:
        return CutOff()


def test_a_body_that_breaks_off_while_read_is_transient_too() -> None:
    api = kube._Translated(Answering())
    with pytest.raises(errors.Transient, match="IncompleteRead"):
        api.read_namespaced_pod_log("pod", "ns", _preload_content=False)


# --- what the client sends, counted -------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "resource", "dry_run"),
    [
        ("https://10.0.0.1:6443/api/v1/namespaces/gitlab/pods", "pods", False),
        (
            "https://api:6443/api/v1/namespaces/gitlab/pods/gitlab-toolbox/log?tailLines=5",
            "pods/log",
            False,
        ),
        ("https://h/apis/batch/v1/namespaces/gitlab/jobs?dryRun=All", "jobs", True),
        (
            "https://h/apis/pdm-operator.io/v1alpha1/namespaces/gitlab/postdeploymigrations/m/status",
            "postdeploymigrations/status",
            False,
        ),
        (
            "https://h/apis/coordination.k8s.io/v1/namespaces/pdm/leases/pdm-env-gstg",
            "leases",
            False,
        ),
        ("https://h/api/v1/namespaces/gitlab", "namespaces", False),
        ("https://h/api/v1/nodes/node-1/status", "nodes/status", False),
        ("https://rancher/k8s/clusters/c-1/apis/batch/v1/namespaces/a/jobs/j", "jobs", False),
        ("https://h/version", "version", False),
    ],
)
def test_a_request_is_counted_by_its_resource(url: str, resource: str, dry_run: bool) -> None:
    assert kube.resource_of(url) == (resource, dry_run)


def test_every_request_of_the_client_is_counted_once() -> None:
    sent: list[tuple[str, str]] = []

    class Rest:
        def request(self, method: str, url: str, **kwargs: object) -> str:
            sent.append((method, url))
            return "answer"

    class Api:
        rest_client = Rest()

    def count() -> float:
        value = REGISTRY.get_sample_value(
            "pdm_api_requests_total", {"method": "POST", "resource": "jobs", "dry_run": "true"}
        )
        return value or 0.0

    before = count()
    api = Api()
    kube.Kube(api)  # type: ignore[arg-type]
    kube.Kube(api)  # type: ignore[arg-type] - a second one over the same client
    url = "https://h/apis/batch/v1/namespaces/gitlab/jobs?dryRun=All"
    assert api.rest_client.request("POST", url, body={}) == "answer"
    assert sent == [("POST", url)]
    assert count() == before + 1


class Logs:
    """The core API's pod-log read, answering ``data`` and keeping what was asked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: dict[str, Any] = {}

    def read_namespaced_pod_log(self, pod: str, namespace: str, **kwargs: Any) -> Any:
        self.asked = kwargs
        return type("Response", (), {"data": self.data})()


def kube_reading(data: bytes) -> tuple[kube.Kube, Logs]:
    class Rest:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no request expected")

    class Api:
        rest_client = Rest()

    reader = kube.Kube(Api())  # type: ignore[arg-type]
    logs = Logs(data)
    reader.core = logs  # type: ignore[assignment]
    return reader, logs


def test_a_log_tail_cut_at_its_byte_limit_is_not_taken_for_the_whole_tail() -> None:
    # 20 lines are read with 8 KiB at most: an answer that fills it was cut at
    # its newest end, and a reader of the last lines would misread it.
    reader, logs = kube_reading(b"x" * 8192)
    assert reader.pod_log_tail("gitlab", "pod", "migrations") is None
    assert (logs.asked["tail_lines"], logs.asked["limit_bytes"]) == (20, 8192)


def test_a_long_tail_of_a_previous_run_is_asked_with_room_for_its_lines() -> None:
    reader, logs = kube_reading(b"main: == 1 A: migrating\n")
    assert reader.pod_log_tail("gitlab", "pod", "migrations", 4000, previous=True) == (
        "main: == 1 A: migrating\n"
    )
    assert logs.asked["previous"] is True
    assert (logs.asked["tail_lines"], logs.asked["limit_bytes"]) == (4000, 4000 * 256)
