"""When an environment's runs may start: its windows and its change lock (pure).

How GitLab.com runs post-deployment migrations (public delivery issues, see
PRODUCT.md): a release manager starts them on weekdays around 13:00 UTC, never
during a production change lock. A PostDeployEnvironment says the same in
``spec.windows`` and ``spec.changeLock``; a migration outside every window, or
while the lock holds, waits before the environment's lock and takes nothing.

Both decide when a run *starts*. A migration Job that runs when its window
closes, or when someone locks the environment, goes on: stopping a migration
half-way is what post-deployment migrations must never meet. The pre-flight is
read-only: a window closing lets it finish (the run started inside it), a
change lock stops it (it runs again once the lock is lifted, and no migration
Job starts under a lock).

Times are local to each window's IANA time zone, resolved by :mod:`zoneinfo`
(the system's database, else the ``tzdata`` package): a window opening at a
local time that a daylight-saving change skips opens at the same wall-clock
time before the change, as :class:`zoneinfo.ZoneInfo` resolves it (``fold=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pdm_operator import gates, timestamps
from pdm_operator.model import Body

OUTSIDE_WINDOW = "OutsideWindow"
INVALID_WINDOW = "InvalidWindow"
CHANGE_LOCKED = "ChangeLocked"
#: Whether the GitLab source locks the environment cannot be known (it fails closed).
CHANGE_LOCK_UNKNOWN = "ChangeLockUnknown"
#: Open issues of a lock source named in a hold's message.
ISSUES_SHOWN = 5

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Days looked ahead for the next opening: every window opens within a week, or
#: the week after when a daylight-saving change erases an occurrence.
LOOKAHEAD_DAYS = 15


class InvalidWindowError(ValueError):
    """A window the schema let through but no clock can read (an unknown time zone)."""


@dataclass(frozen=True)
class Window:
    """One of ``spec.windows``: on ``days``, from ``start`` to ``end`` minutes of the
    local day in ``zone``; an ``end`` not after ``start`` runs into the next day."""

    days: frozenset[int]  # date.weekday(): Monday 0
    start: int
    end: int
    zone: ZoneInfo

    def occurrences(self, around: datetime) -> list[tuple[datetime, datetime]]:
        """The window's (opening, closing) instants from the day before ``around``
        to :data:`LOOKAHEAD_DAYS` after, in UTC, earliest first."""
        today = around.astimezone(self.zone).date()
        found = []
        for offset in range(-1, LOOKAHEAD_DAYS):
            day = today + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens = self._at(day, self.start)
            closes = self._at(day + timedelta(days=1 if self.end <= self.start else 0), self.end)
            if opens < closes:  # a window a daylight-saving change erases that day is not
                found.append((opens, closes))
        return found

    def _at(self, day: date, minute: int) -> datetime:
        if minute == 24 * 60:
            day, minute = day + timedelta(days=1), 0
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.zone)
        return local.astimezone(UTC)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def parse(raw: Sequence[Body]) -> tuple[Window, ...]:
    """``spec.windows`` as the schema admitted them; an unknown time zone raises
    :class:`InvalidWindowError` naming the window."""
    windows = []
    for i, w in enumerate(raw):
        zone_name = str(w.get("timeZone") or "UTC")
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise InvalidWindowError(
                f"spec.windows[{i}].timeZone {zone_name!r} is not an IANA time zone "
                "(e.g. UTC, Europe/Amsterdam, America/New_York)"
            ) from e
        days = frozenset(DAYS.index(d) for d in (w.get("days") or DAYS))
        windows.append(Window(days, _minutes(str(w["start"])), _minutes(str(w["end"])), zone))
    return tuple(windows)


def open_since(windows: Sequence[Window], now: datetime) -> datetime | None:
    """When the time open at ``now`` opened; None when no window is open.

    Windows that overlap make one opening (13:00-16:00 and 15:00-18:00 open
    once, at 13:00): a schedule starts one run for it. Windows that only
    touch (Mon 22:00-24:00, Tue 00:00-06:00) are two openings.
    """
    merged: list[tuple[datetime, datetime]] = []
    for opens, closes in sorted(o for w in windows for o in w.occurrences(now)):
        if merged and opens < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(closes, merged[-1][1]))
        else:
            merged.append((opens, closes))
    return next((opens for opens, closes in merged if opens <= now < closes), None)


def next_opening(windows: Sequence[Window], now: datetime) -> datetime | None:
    """The first opening after ``now``; None with no windows."""
    later = [opens for w in windows for opens, _ in w.occurrences(now) if opens > now]
    return min(later) if later else None


def outside(environment: str, raw: Sequence[Body], now: datetime) -> gates.Hold | None:
    """The hold of a migration whose environment's windows are all shut at ``now``."""
    if not raw:
        return None
    try:
        windows = parse(raw)
    except InvalidWindowError as e:
        return gates.Hold(
            INVALID_WINDOW,
            f"PostDeployEnvironment {environment!r} has a window no clock can read: {e}; "
            "no run starts until a platform admin mends it",
        )
    if open_since(windows, now) is not None:
        return None
    opens = next_opening(windows, now)
    if opens is None:  # a window on no day cannot be written (the schema's enum)
        return gates.Hold(OUTSIDE_WINDOW, f"no window of environment {environment!r} ever opens")
    return gates.Hold(
        OUTSIDE_WINDOW,
        f"outside the windows of environment {environment!r} (spec.windows of its "
        f"PostDeployEnvironment): the next opens at {timestamps.rfc3339(opens)}",
        opens=opens,
    )


@dataclass(frozen=True)
class ChangeLock:
    """``spec.changeLock``: who locked the environment, why, since and until when."""

    reason: str
    by: str
    at: datetime | None
    until: datetime | None
    #: ``until`` was written but cannot be read: the lock holds until unlocked.
    unreadable_until: bool = False

    @classmethod
    def of(cls, raw: Body | None) -> ChangeLock | None:
        if not raw:
            return None
        until_text = raw.get("until")
        until = timestamps.parse_or_none(str(until_text)) if until_text else None
        return cls(
            reason=str(raw.get("reason") or "no reason given"),
            by=str(raw.get("by") or "someone"),
            at=timestamps.parse_or_none(raw.get("at")),
            until=until,
            unreadable_until=bool(until_text) and until is None,
        )

    def holds(self, now: datetime) -> bool:
        return self.until is None or now < self.until


def locked(environment: str, raw: Body | None, now: datetime) -> gates.Hold | None:
    """The hold of a migration whose environment is change-locked at ``now``."""
    lock = ChangeLock.of(raw)
    if lock is None or not lock.holds(now):
        return None
    since = f" since {timestamps.rfc3339(lock.at)}" if lock.at else ""
    if lock.until is not None:
        lasts = f"until {timestamps.rfc3339(lock.until)} (or kubectl pdm unlock {environment})"
    elif lock.unreadable_until:
        lasts = f"until kubectl pdm unlock {environment} (its 'until' cannot be read)"
    else:
        lasts = f"until kubectl pdm unlock {environment}"
    return gates.Hold(
        CHANGE_LOCKED,
        f"environment {environment!r} is change-locked by {lock.by}{since}: {lock.reason}; "
        f"no run starts {lasts}",
        opens=lock.until,
    )


@dataclass(frozen=True)
class LockSource:
    """``spec.changeLockFrom``: the environment is locked while an open issue of
    ``project`` carries every one of ``labels`` (GitLab.com's change requests:
    gl-infra/production issues marked ``change::in-progress``)."""

    url: str
    project: str
    labels: tuple[str, ...]
    token_ref: Body | None

    @classmethod
    def of(cls, raw: Body | None) -> LockSource | None:
        if not raw:
            return None
        ref = raw.get("tokenSecretRef")
        return cls(
            url=str(raw["url"]),
            project=str(raw["project"]),
            labels=tuple(str(label) for label in raw.get("labels") or ()),
            token_ref=dict(ref) if ref else None,
        )


@dataclass(frozen=True)
class Issues:
    """The open issues a lock source's read found (at most :data:`ISSUES_SHOWN`)."""

    found: list[Body]


def locked_by_issues(
    environment: str, source: LockSource, answer: Issues | object
) -> gates.Hold | None:
    """The hold of a migration whose environment's GitLab lock source has an open
    issue with its labels; or, when the source cannot be read (``answer`` is not
    :class:`Issues`: GitLab's words in its ``message``), the hold that says it
    cannot be known: a lock nobody can see is not taken to be lifted."""
    where = f"{source.project} (issues labelled {', '.join(source.labels)})"
    if not isinstance(answer, Issues):
        why = str(getattr(answer, "message", answer))
        return gates.Hold(
            CHANGE_LOCK_UNKNOWN,
            f"whether environment {environment!r} is change-locked cannot be known: its lock "
            f"source {where} at {source.url} could not be read ({why}); no run starts until "
            "it can be (spec.changeLockFrom of its PostDeployEnvironment)",
            costly=True,
        )
    if not answer.found:
        return None
    shown = "; ".join(
        f"#{i.get('iid')} {str(i.get('title') or '')[:120]} ({i.get('web_url') or ''})"
        for i in answer.found[:ISSUES_SHOWN]
    )
    return gates.Hold(
        CHANGE_LOCKED,
        f"environment {environment!r} is change-locked by {where}: {shown}; no run starts "
        "until the issue is closed or loses a label",
        costly=True,
    )
