"""GA4 dates: the forms ``date_range`` accepts, resolved against the run, and per-day/week chunks.

GA4 takes ``YYYY-MM-DD``, ``today``, ``yesterday`` and ``NdaysAgo``. The connector resolves the
relative forms itself, against the run's date (``ds``), so that it can cut the range into chunks
and keep a cursor on the last date read; the API is only ever sent explicit dates.

Weekly chunks are ISO weeks (Monday to Sunday), clipped to the range: their boundaries do not
depend on where a run starts, so a week re-read later is the same week.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Literal, TypeAlias

ChunkSize: TypeAlias = Literal["day", "week"]

_ABSOLUTE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RELATIVE = re.compile(r"^(?:today|yesterday|(?P<days>\d+)daysAgo)$")
DATE_FORMS = "YYYY-MM-DD, today, yesterday or NdaysAgo (e.g. 7daysAgo)"
DATE_PATTERN = r"^(\d{4}-\d{2}-\d{2}|today|yesterday|\d+daysAgo)$"


def check_date_form(value: object) -> str:
    """``value`` as a GA4 date string; YAML's unquoted dates become ``YYYY-MM-DD``."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"{value!r} is a timestamp; write a date: {DATE_FORMS}")
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date: write {DATE_FORMS}")
    text = value.strip()
    if _RELATIVE.match(text):
        return text
    if _ABSOLUTE.match(text):
        try:
            dt.date.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid date ({exc})") from None
        return text
    raise ValueError(f"{value!r} is not a date GA4 understands: write {DATE_FORMS}")


def is_absolute(value: str) -> bool:
    return bool(_ABSOLUTE.match(value))


def resolve_date(value: str, today: dt.date) -> dt.date:
    """The calendar date of ``value`` (a checked date form) for a run whose date is ``today``."""
    if _ABSOLUTE.match(value):
        return dt.date.fromisoformat(value)
    match = _RELATIVE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a date: write {DATE_FORMS}")
    if value == "today":
        return today
    if value == "yesterday":
        return today - dt.timedelta(days=1)
    return today - dt.timedelta(days=int(match["days"]))


def chunk_start(day: dt.date, size: ChunkSize) -> dt.date:
    """The first day of the chunk holding ``day`` (itself, or the Monday of its ISO week)."""
    return day if size == "day" else day - dt.timedelta(days=day.weekday())


def chunks(start: dt.date, end: dt.date, size: ChunkSize) -> Iterator[tuple[dt.date, dt.date]]:
    """``(first, last)`` of each chunk from ``start`` to ``end`` (inclusive), in date order."""
    first = start
    while first <= end:
        last = first if size == "day" else chunk_start(first, "week") + dt.timedelta(days=6)
        last = min(last, end)
        yield first, last
        first = last + dt.timedelta(days=1)


def span(first: dt.date, last: dt.date) -> str:
    """How warnings name a chunk's dates: ``2024-03-01`` or ``2024-03-04..2024-03-10``."""
    return first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
