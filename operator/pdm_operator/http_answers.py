"""What every client of another service's HTTP API shares (pure): how long its
Retry-After says to wait, and text scrubbed of the secrets sent with it. Used
by the reporting sinks and by the GitLab deployments gate's reader."""

from __future__ import annotations

import email.utils
import time


def retry_after(headers: dict[str, str], now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def scrub(text: str, *secrets: str) -> str:
    """``text`` with each of ``secrets`` replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text
