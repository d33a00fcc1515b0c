"""Admission and limits: who is calling (API key -> principal), rate limits and budgets.

Both stages adapt a Call to plain rules (``economics.quotas``) and the shared state; the state does the
atomic arithmetic, so limits hold across replicas when it is Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..access import OPEN, KeyRing, Principal
from ..config import BudgetSpec, LimitSpec
from ..economics.pricing import NANO, estimate_prompt_tokens, max_output_tokens
from ..economics.quotas import BudgetRule, RateRule, budget_rules, rate_rules
from ..errors import BudgetExceeded, PayloadTooLarge, RateLimited, ShipyardError
from ..state import State
from .call import Background, Call, ChunkStream
from .stages import Next

log = logging.getLogger("shipyard.limits")


class Admit:
    """API key -> principal (tenant, role, features); 401 without a valid key, 403 for another feature.

    A trusted in-process caller may set ``call.principal`` itself (the Python API's ``tenant=``).

    A call it rejects never reaches the Record stage (nothing is stored for it), so the stage tells the
    ``rejected`` recorders instead (``Services.rejected``: the metrics' counter), with ``call.error``
    set. Like ``Services.recorders`` they run on the request path: a dict update, never raising."""

    def __init__(self, auth: str, keys: KeyRing, rejected: list[Callable[[Call], None]] | None = None) -> None:
        self.auth = auth
        self.keys = keys
        self.rejected = rejected if rejected is not None else []  # the list itself: later additions count

    async def handle(self, call: Call, next: Next) -> Any:
        try:
            if call.principal is None:
                call.principal = OPEN if self.auth == "none" else await self.keys.verify(call.api_key)
            call.principal.check_feature(call.feature.name)
        except ShipyardError as exc:
            if exc.status in (401, 403):  # a rejection (a state or store outage is not one)
                call.status, call.error = "error", exc
                for record in self.rejected:
                    record(call)
            raise
        return await next(call)


class Limit:
    """Before the call: the prompt's size, rate limits (requests and tokens per minute) and budgets
    (a reservation of the most the call can cost). After it: settle the tokens and the cost it really
    used, whatever the outcome (a failed call gives its reservation back)."""

    def __init__(
        self,
        state: State,
        *,
        feature: str,
        limits: LimitSpec | None,
        budget: BudgetSpec | None,
        tenants: dict[str, tuple[list[RateRule], list[BudgetRule]]],
        background: Background,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.rates = rate_rules("feature", feature, limits.rpm, limits.tpm) if limits else []
        self.budgets = budget_rules_for("feature", feature, budget)
        self.tenants = tenants
        self.background = background
        self.clock = clock
        self._warned: set[str] = set()

    def rules_for(self, principal: Principal | None) -> tuple[list[RateRule], list[BudgetRule]]:
        rates, budgets = list(self.rates), list(self.budgets)
        if principal is None:
            return rates, budgets
        tenant = self.tenants.get(principal.tenant)
        if tenant is not None:
            rates += tenant[0]
            budgets += tenant[1]
        if principal.key_id is not None:
            rates += rate_rules("key", principal.key_id, principal.rpm, principal.tpm)
            budgets += budget_rules(
                "key", principal.key_id, usd_per_day=principal.usd_per_day, usd_per_month=principal.usd_per_month
            )
        return rates, budgets

    async def handle(self, call: Call, next: Next) -> Any:
        spec = call.feature.spec
        estimate = estimate_prompt_tokens(call.body)
        if spec.max_input_tokens is not None and estimate > spec.max_input_tokens:
            raise PayloadTooLarge(
                f"the request is about {estimate} tokens; {call.feature.name} takes at most "
                f"{spec.max_input_tokens} (max_input_tokens). Shorten the messages."
            )
        rates, rules = self.rules_for(call.principal)
        if not rates and not rules:
            return await next(call)
        tokens = [r for r in rates if r.what == "tokens"]
        now = self.clock()
        budgets = [r.budget(now) for r in rules]
        amount = self._worst_case(call, estimate) if rules else 0
        # One step (one round trip on Redis): the rate limits and the budget reservation, all or nothing.
        rate, budget = await self.state.admit(
            [r.bucket(1 if r.what == "requests" else estimate) for r in rates], budgets, amount
        )
        if rate.degraded or budget.degraded:
            call.event("state_degraded", stage="limit")
        if not rate.allowed:
            self._rate_limited(call, rates, rate.denied, rate.retry_after_s, estimate)
        if not budget.allowed:
            i = [b.key for b in budgets].index(budget.denied)  # (``next`` is the next stage here)
            message, retry_after = rules[i].refusal(now, budget.spent[i], amount)
            call.retry_after = retry_after
            raise BudgetExceeded(message, retry_after=retry_after, details={"budget": budget.denied})
        self._soft_and_downgrade(call, rules, budgets, budget.spent, amount)
        if not tokens and not budgets:
            return await next(call)
        held = [amount]  # what is reserved so far: one worst case per paid attempt

        if budgets:
            self._cap_output(call)

            async def extend() -> None:
                # One more paid attempt (a repair re-ask, a failover after a bad answer, a hedge): it must
                # fit too, or a hard budget could be passed by the attempts of one call.
                asking = asyncio.ensure_future(self.state.admit((), budgets, amount))
                try:
                    _, more = await asyncio.shield(asking)
                except asyncio.CancelledError:
                    # Cancelled while the state answers: a reservation that lands after this is given
                    # back on its own, since the call's settlement will not know of it.
                    asking.add_done_callback(self._give_back_late(budgets, amount))
                    raise
                if not more.allowed:
                    i = [b.key for b in budgets].index(more.denied)
                    message, retry_after = rules[i].refusal(now, more.spent[i], amount)
                    raise BudgetExceeded(message, retry_after=retry_after, details={"budget": more.denied})
                held[0] += amount
                call.reserved_attempts += 1

            call.extend_budget = extend

        def settle(_: Call | None = None) -> None:
            self.background.spawn(self._settle(call, tokens, estimate, budgets, held[0]))

        try:
            result = await next(call)
        except BaseException:
            settle()
            raise
        if isinstance(result, ChunkStream):
            result.on_close(settle)
        else:
            settle()
        return result

    def _give_back_late(self, budgets: list[Any], amount: int) -> Callable[[asyncio.Future[Any]], None]:
        def give_back(asking: asyncio.Future[Any]) -> None:
            if not asking.cancelled() and asking.exception() is None and asking.result()[1].allowed:
                self.background.spawn(self.state.finish((), budgets, amount, 0))

        return give_back

    @staticmethod
    def _worst_case(call: Call, estimate: int) -> int:
        """The most one attempt can cost, in nano-USD: its prompt and its output cap (a route's own cap in
        ``params``, else the request's, else ``max_output_tokens``) at each route's price, the dearest
        (capped at 2**52: Redis counts in 64-bit integers, and no budget is that large)."""
        feature = call.feature
        default = max_output_tokens(call.body, feature.spec.max_output_tokens)
        worst = 0
        for route, price in zip(feature.spec.route, feature.prices, strict=True):
            if price is not None:
                worst = max(worst, price.cost_nano(estimate, max_output_tokens(route.params, default)))
        return min(worst, 2**52)

    @staticmethod
    def _cap_output(call: Call) -> None:
        """What a budget reserved for the output is what the provider may write: a request without a cap
        gets ``max_tokens = max_output_tokens`` (unless a route sets its own cap in ``params``)."""
        body = call.body
        if call.op != "chat" and call.op != "invoke":
            return
        if "max_tokens" in body or "max_completion_tokens" in body:
            return
        # A route with its own cap in params overrides this one (and drops it for max_completion_tokens).
        body["max_tokens"] = call.feature.spec.max_output_tokens

    @staticmethod
    def _rate_limited(
        call: Call, rates: list[RateRule], denied_keys: tuple[str, ...], retry_after: float | None, estimate: int
    ) -> None:
        denied = [r for r in rates if r.key in denied_keys] or rates
        if retry_after is None:
            raise PayloadTooLarge(
                f"the request is about {estimate} tokens, more than {denied[0].describe()}: it can never pass. "
                "Shorten it, or raise the limit."
            )
        call.retry_after = retry_after
        raise RateLimited(
            f"rate limited: {denied[0].describe()}; retry after {retry_after:.2f}s",
            retry_after=retry_after,
            details=[{"limit": r.key, "per_minute": r.limit} for r in denied],
        )

    def _soft_and_downgrade(
        self, call: Call, rules: list[BudgetRule], budgets: list[Any], spent: tuple[int, ...], amount: int
    ) -> None:
        feature = call.feature
        for rule, budget, used in zip(rules, budgets, spent, strict=False):
            share = (used + amount) / budget.limit if budget.limit else 1.0
            if not rule.hard and used + amount > budget.limit:
                call.event("budget_soft_exceeded", budget=budget.key, spent_usd=used / NANO, limit_usd=rule.usd)
                if budget.key not in self._warned:
                    self._warned.add(budget.key)
                    log.warning("soft budget exceeded: %s; calls are still served", rule.describe())
            if rule.downgrade_at is not None and share >= rule.downgrade_at and call.route_from == 0:
                cheaper = feature.cheaper_route
                if cheaper is not None:
                    call.route_from = cheaper
                    call.event("downgraded", budget=budget.key, share=round(share, 4),
                               route=feature.spec.route[cheaper].label)

    async def _settle(self, call: Call, tokens: list[RateRule], estimate: int, budgets: list[Any], reserved: int) -> None:
        used = int((call.usage or {}).get("total_tokens") or 0)
        charges = [r.bucket(used - estimate) for r in tokens] if used != estimate else []
        if charges or budgets:
            await self.state.finish(charges, budgets, reserved, call.cost_nano or 0)


def budget_rules_for(scope: str, name: str, spec: BudgetSpec | None) -> list[BudgetRule]:
    if spec is None:
        return []
    return budget_rules(
        scope, name, usd_per_day=spec.usd_per_day, usd_per_month=spec.usd_per_month,
        hard=spec.mode == "hard", downgrade_at=spec.downgrade_at,
    )
