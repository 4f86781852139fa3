"""Imported once by the test suite's forkserver (tests/support/operator.py): what an
operator start would import and build, so a forked start does not pay for it."""

from __future__ import annotations

from kubernetes import client

import pdm_operator.cli
import pdm_operator.runner  # noqa: F401 - imported for its side effect: loaded modules

# The official client (v37) builds each API class, and its pydantic models, on
# first access; kube.Kube uses these.
for _name in (
    "CoreV1Api",
    "AppsV1Api",
    "BatchV1Api",
    "CustomObjectsApi",
    "CoordinationV1Api",
    "PolicyV1Api",
    "AuthenticationV1Api",
):
    getattr(client, _name)
