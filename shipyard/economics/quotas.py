"""Rate limits and budgets as plain rules: which counters a call touches, and what a refusal says.

The counters themselves live in the shared state (:mod:`shipyard.state`), which takes and reserves
atomically; this module only names them, sizes them and words the messages.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ..state import Bucket, Budget
from .pricing import NANO

Period = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class RateRule:
    """``limit`` requests (what="requests") or tokens (what="tokens") per minute for one scope."""

    scope: str  # feature | tenant | key
    name: str
    what: str
    limit: int

    @property
    def key(self) -> str:
        return f"rl:{self.scope}:{self.name}:{'rpm' if self.what == 'requests' else 'tpm'}"

    def bucket(self, cost: float) -> Bucket:
        return Bucket(self.key, float(self.limit), self.limit / 60.0, float(cost))

    def describe(self) -> str:
        return f"{self.scope} {self.name} allows {self.limit} {self.what} per minute"


def rate_rules(scope: str, name: str, rpm: int | None, tpm: int | None) -> list[RateRule]:
    rules = []
    if rpm:
        rules.append(RateRule(scope, name, "requests", rpm))
    if tpm:
        rules.append(RateRule(scope, name, "tokens", tpm))
    return rules


@dataclass(frozen=True, slots=True)
class BudgetRule:
    scope: str  # feature | tenant | key
    name: str
    period: Period
    usd: float
    hard: bool
    downgrade_at: float | None = None

    def window(self, now: float) -> tuple[str, float]:
        """The current period's label (2026-11-25 or 2026-11) and when it ends (UTC epoch seconds)."""
        t = datetime.fromtimestamp(now, UTC)
        if self.period == "day":
            start = datetime(t.year, t.month, t.day, tzinfo=UTC)
            return start.strftime("%Y-%m-%d"), start.timestamp() + 86400
        days = calendar.monthrange(t.year, t.month)[1]
        start = datetime(t.year, t.month, 1, tzinfo=UTC)
        return start.strftime("%Y-%m"), start.timestamp() + days * 86400

    def budget(self, now: float) -> Budget:
        label, ends = self.window(now)
        return Budget(
            key=f"budget:{self.scope}:{self.name}:{self.period}:{label}",
            limit=round(self.usd * NANO),
            hard=self.hard,
            ttl_s=int(ends - now) + 86400,  # kept a day past the period, for reports
        )

    def describe(self) -> str:
        per = "daily" if self.period == "day" else "monthly"
        return f"the {per} budget of {self.scope} {self.name} (${self.usd:,.2f})"

    def refusal(self, now: float, spent_nano: int, needed_nano: int) -> tuple[str, float]:
        """The 429 message for a hard budget that cannot take this call, and seconds until it resets."""
        _, ends = self.window(now)
        reset = datetime.fromtimestamp(ends, UTC).strftime("%Y-%m-%d %H:%M UTC")
        message = (
            f"budget exceeded: {self.describe()} is spent or reserved (${spent_nano / NANO:,.4f} of "
            f"${self.usd:,.2f}; this call may cost up to ${needed_nano / NANO:,.4f}). It resets at {reset}."
        )
        return message, max(1.0, math.ceil(ends - now))


def budget_rules(
    scope: str,
    name: str,
    *,
    usd_per_day: float | None,
    usd_per_month: float | None,
    hard: bool = True,
    downgrade_at: float | None = None,
) -> list[BudgetRule]:
    rules = []
    if usd_per_day is not None:
        rules.append(BudgetRule(scope, name, "day", usd_per_day, hard, downgrade_at))
    if usd_per_month is not None:
        rules.append(BudgetRule(scope, name, "month", usd_per_month, hard, downgrade_at))
    return rules
