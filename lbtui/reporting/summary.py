"""From per-minute rollups to what a report says: totals, peaks, lulls, hours and days.

Percentiles of an hour or a day come from merging the minutes' latency histograms, not
from averaging their percentiles (an average of p99s is not a p99).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.stats import LatencyHistogram
from workers.analytics import histogram_from_doc, ms

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """``1h``, ``30m``, ``7d`` ago, or an ISO 8601 time (UTC when no zone); epoch seconds."""
    match = _SINCE.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a duration like 1h, 30m, 7d or an ISO time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass(slots=True)
class ServerFigures:
    requests: int = 0
    errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(slots=True)
class Period:
    """One minute, hour, day or the whole range, merged from rollups."""

    start: int  # epoch seconds
    seconds: int
    requests: int = 0
    errors: int = 0
    bytes_out: int = 0
    minutes: int = 0  # minutes with traffic inside the period
    status: dict[str, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    servers: dict[str, ServerFigures] = field(default_factory=dict)

    def add(self, doc: Mapping[str, Any]) -> None:
        self.requests += int(doc.get("requests", 0))
        self.errors += int(doc.get("errors", 0))
        self.bytes_out += int(doc.get("bytes_out", 0))
        self.minutes += 1
        for table, source in ((self.status, doc.get("status")), (self.codes, doc.get("codes"))):
            for key, value in (source or {}).items():
                table[key] = table.get(key, 0) + int(value)
        self.latency.merge(histogram_from_doc(doc.get("latency")))
        for name, figures in (doc.get("servers") or {}).items():
            entry = self.servers.setdefault(name, ServerFigures())
            entry.requests += int(figures.get("requests", 0))
            entry.errors += int(figures.get("errors", 0))
            entry.latency.merge(histogram_from_doc(figures.get("latency")))

    @property
    def label(self) -> str:
        when = dt.datetime.fromtimestamp(self.start, dt.UTC)
        if self.seconds >= 86400:
            return when.strftime("%Y-%m-%d")
        return when.strftime("%Y-%m-%d %H:%M") + " UTC"

    @property
    def rpm(self) -> float:
        """Requests per minute of traffic (minutes without traffic are not counted)."""
        return self.requests / self.minutes if self.minutes else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": dt.datetime.fromtimestamp(self.start, dt.UTC).isoformat(),
            "seconds": self.seconds,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "bytes_out": self.bytes_out,
            "status": dict(sorted(self.status.items())),
            "codes": dict(sorted(self.codes.items())),
            "p50_ms": ms(self.latency, 50),
            "p90_ms": ms(self.latency, 90),
            "p99_ms": ms(self.latency, 99),
            "servers": {
                name: {
                    "requests": s.requests,
                    "errors": s.errors,
                    "share": round(s.requests / self.requests, 6) if self.requests else 0.0,
                    "p50_ms": ms(s.latency, 50),
                    "p99_ms": ms(s.latency, 99),
                }
                for name, s in sorted(self.servers.items())
            },
        }


@dataclass(slots=True)
class Summary:
    """A report's content, whatever its format."""

    since: int
    until: int
    total: Period
    minutes: list[Period]
    hours: list[Period]
    days: list[Period]

    @property
    def peak_minute(self) -> Period | None:
        return max(self.minutes, key=lambda p: (p.requests, p.start), default=None)

    @property
    def lowest_minute(self) -> Period | None:
        return min(self.minutes, key=lambda p: (p.requests, p.start), default=None)

    @property
    def peak_hour(self) -> Period | None:
        return max(self.hours, key=lambda p: (p.requests, p.start), default=None)

    @property
    def lowest_hour(self) -> Period | None:
        return min(self.hours, key=lambda p: (p.requests, p.start), default=None)

    def to_dict(self) -> dict[str, Any]:
        def one(period: Period | None) -> dict[str, Any] | None:
            return None if period is None else {"start": period.to_dict()["start"], "requests": period.requests}

        return {
            "since": dt.datetime.fromtimestamp(self.since, dt.UTC).isoformat(),
            "until": dt.datetime.fromtimestamp(self.until, dt.UTC).isoformat(),
            "total": self.total.to_dict(),
            "peak_minute": one(self.peak_minute),
            "lowest_minute": one(self.lowest_minute),
            "peak_hour": one(self.peak_hour),
            "lowest_hour": one(self.lowest_hour),
            "hours": [p.to_dict() for p in self.hours],
            "days": [p.to_dict() for p in self.days],
            "minutes": [
                {"start": p.to_dict()["start"], "requests": p.requests, "errors": p.errors, "p99_ms": ms(p.latency, 99)}
                for p in self.minutes
            ],
        }


def summarize(rollups: Iterable[Mapping[str, Any]], since: float, until: float) -> Summary:
    """Merge the rollups with ``since <= minute < until`` into minutes, hours, days and a total."""
    first, last = int(since // 60), int(until // 60)
    total = Period(first * 60, max(60, (last - first + 1) * 60))
    minutes: list[Period] = []
    hours: dict[int, Period] = {}
    days: dict[int, Period] = {}
    for doc in sorted(rollups, key=lambda d: int(d["minute"])):
        minute = int(doc["minute"])
        if not first <= minute <= last:
            continue
        period = Period(minute * 60, 60)
        period.add(doc)
        minutes.append(period)
        total.add(doc)
        hour, day = minute // 60 * 3600, minute // 1440 * 86400
        hours.setdefault(hour, Period(hour, 3600)).add(doc)
        days.setdefault(day, Period(day, 86400)).add(doc)
    return Summary(
        int(since), int(until), total, minutes, [hours[k] for k in sorted(hours)], [days[k] for k in sorted(days)]
    )
