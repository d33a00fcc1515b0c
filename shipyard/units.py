"""Small parsers shared by the command line and the admin API."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w`` -> seconds; ValueError saying how to write one."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration; use a number and a unit: 90s, 15m, 12h, 30d, 2w")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than 100 years; use a shorter duration")
    return seconds


MAX_DURATION_S = 100 * 365.25 * 86400


def feature_list(text_or_list: str | list[str], known: set[str] | frozenset[str]) -> list[str]:
    """The features a key may use, checked against the config's: ValueError naming what is wrong."""
    items = text_or_list.split(",") if isinstance(text_or_list, str) else list(text_or_list)
    wanted = [str(f).strip() for f in items if str(f).strip()]
    if not wanted:
        # An empty list would make a key that may call nothing; leave it out for every feature.
        raise ValueError(f"no feature named (got {text_or_list!r}); the config has: {', '.join(sorted(known))}")
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"unknown feature(s) {', '.join(unknown)}; the config has: {', '.join(sorted(known))}")
    return wanted


TRAFFIC = "traffic:"


def parse_window(text: str, now: float) -> tuple[float, float]:
    """``START..END`` -> (since, until) in epoch seconds. Each end is an ISO 8601 date or time (UTC unless
    it has an offset: ``2026-11-01``, ``2026-11-01T08:00``, ``2026-11-01T08:00+01:00``) or a duration ago
    (``14d``); an empty END is now. ValueError saying how to write one."""
    import datetime as dt

    how = "write START..END, e.g. 2026-11-01..2026-11-08 (UTC dates or times) or 14d..7d (durations ago)"
    start, sep, end = (text or "").partition("..")
    if not sep or not start.strip():
        raise ValueError(f"{text!r} is not a time window; {how}")

    def point(part: str) -> float:
        part = part.strip()
        if not part:
            return now
        try:
            return now - parse_duration(part)
        except ValueError:
            pass
        try:
            when = dt.datetime.fromisoformat(part)
        except ValueError:
            raise ValueError(f"{part!r} in {text!r} is neither a date, a time nor a duration; {how}") from None
        return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()

    since, until = point(start), point(end)
    if since < 0:
        raise ValueError(f"{text!r} starts before 1970; {how}")
    if since >= until:
        raise ValueError(f"{text!r} ends before it starts; {how}")
    return since, until
