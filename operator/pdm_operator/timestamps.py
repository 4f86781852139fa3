"""Time as the Kubernetes API writes it: RFC 3339 in UTC, to the second
(``metav1.Time``: ``2026-12-02T10:00:00Z``). One way to read and write it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def now() -> datetime:
    return datetime.now(UTC)


def parse(value: str) -> datetime:
    """``2026-12-02T10:00:00Z`` (or with an offset, or fractional seconds) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_or_none(value: str | None) -> datetime | None:
    """``parse``, for a field that may be absent or unreadable."""
    if not value:
        return None
    try:
        return parse(value)
    except ValueError:
        return None


def rfc3339(t: datetime) -> str:
    """``2026-12-02T10:00:00Z``: UTC, whole seconds (a fraction is dropped); a
    naive datetime is taken to be UTC."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ceil(t: datetime) -> str:
    """Like ``rfc3339``, rounded up to the second: never earlier than asked (Retry-After)."""
    if t.microsecond:
        t = t.replace(microsecond=0) + timedelta(seconds=1)
    return rfc3339(t)
