"""The innermost stage: the feature's ordered routes, each attempt under the deadline, with retries,
backoff, circuit breakers, per-route concurrency limits (load shedding) and optional hedging."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import (
    AllRoutesFailed,
    BudgetExceeded,
    DeadlineExceeded,
    MalformedResponse,
    Overloaded,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ShipyardError,
    StateUnavailable,
    TransientProviderError,
    error_class_name,
)
from ..providers._format import message_text
from ..providers._http import TRACEPARENT
from .call import Attempt, Call, ChunkStream
from .stages import Next, usage_wanted

_closing: set[asyncio.Future[Any]] = set()  # discards of abandoned hedge streams, referenced until done


class _Skipped(Exception):
    """A route that was not tried: its breaker is open, or it is saturated."""

    def __init__(self, error: ShipyardError) -> None:
        self.error = error


class Route:
    """Raises AllRoutesFailed / DeadlineExceeded / Overloaded when nothing served."""

    def __init__(
        self,
        providers: dict[str, Any],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = providers
        self.sleep = sleep
        self.clock = clock

    async def handle(self, call: Call, next: Next | None = None) -> Any:
        feature = call.feature
        routes = feature.spec.route
        if call.route_only is not None:
            indexes: list[int] = [call.route_only]
        else:
            indexes = list(range(call.route_from, len(routes)))
        hedge = feature.spec.hedge
        last: ShipyardError | None = None
        shed = 0
        for pos, index in enumerate(indexes):
            route = routes[index]
            partner = indexes[pos + 1] if hedge is not None and pos + 1 < len(indexes) else None
            for retry in range(route.retries + 1):
                if call.deadline - self.clock() <= 0:
                    raise self._deadline(call)
                try:
                    delay = feature.hedge_delay_s(index) if partner is not None and retry == 0 else None
                    if delay is not None and partner is not None:
                        return await self._hedged(call, index, partner, delay)
                    return await self._try(call, index)
                except _Skipped as skipped:
                    shed += isinstance(skipped.error, Overloaded)
                    last = last or skipped.error
                    break
                except ProviderRejected:
                    raise
                except ProviderError as err:
                    last = err
                    if not isinstance(err, TransientProviderError) or retry == route.retries:
                        break
                    delay = feature.backoff.delay(retry, err.retry_after)
                    if delay is None or delay >= call.deadline - self.clock():
                        call.event("retry_abandoned", route=route.label, wanted_delay_s=err.retry_after)
                        break
                    await self.sleep(delay)
        if call.deadline - self.clock() <= 0:
            raise self._deadline(call)
        if shed and shed == len(call.attempts):
            raise Overloaded(
                f"every route of {feature.name} is at its concurrency limit and its queue is full; "
                "retry shortly, or raise concurrency.max_in_flight",
                details=[a.to_dict() for a in call.attempts][-10:],
            )
        raise AllRoutesFailed(
            f"every route of {feature.name} failed"
            + (f"; last error: {last.message}" if last else "")
            + ". Check the providers, or give the feature a fallback_response.",
            details=[a.to_dict() for a in call.attempts][-10:],
        )

    async def _try(self, call: Call, index: int, *, commit: bool = True) -> Any:
        """One attempt at route ``index``: the result, or the ProviderError it failed with (recorded).
        ``commit``: the route becomes the call's serving route (a hedge commits only its winner)."""
        feature = call.feature
        route = feature.spec.route[index]
        if call.extend_budget is not None and call.paid_attempts >= call.reserved_attempts:
            await call.extend_budget()  # every reserved attempt was paid for (a repair, a failover): cover this one
        gate = feature.gates[index]
        if gate is not None and not await gate.acquire():
            call.attempts.append(
                Attempt(route.provider, route.model, "skipped", error_type="overloaded",
                        error_message=f"{route.label} is at its concurrency limit", offset_ms=call.elapsed_ms())
            )
            raise _Skipped(Overloaded(f"{route.label} is at its concurrency limit"))
        held = gate is not None
        try:
            breaker = feature.breakers[index]
            ticket = await breaker.admit()
            if ticket is None:
                call.attempts.append(
                    Attempt(route.provider, route.model, "skipped", error_type="circuit_open",
                            error_message=f"circuit breaker of {route.label} is open", offset_ms=call.elapsed_ms())
                )
                raise _Skipped(AllRoutesFailed(f"the circuit breaker of {route.label} is open"))
            remaining = call.deadline - self.clock()
            timeout = max(0.0, min(route.timeout_s, remaining))
            started = self.clock()
            attempt = Attempt(route.provider, route.model, "ok", offset_ms=(started - call.t0) * 1000.0)
            body = {k: v for k, v in call.body.items() if k not in ("model", "stream")}
            if route.params:
                body.update(route.params)
                if "max_completion_tokens" in route.params:
                    body.pop("max_tokens", None)  # the route's own cap (o-series models take only this one)
            if not call.stream:
                body.pop("stream_options", None)
            provider = self.providers[route.provider]
            try:
                outbound = call.metadata.get("trace_out")
                if outbound is not None:  # W3C trace context for the provider: our trace, this attempt's span
                    attempt.span_id = random.getrandbits(64) or 1
                    token = TRACEPARENT.set(b"traceparent: 00-%s-%016x-%s\r\n" % (outbound[0], attempt.span_id,
                                                                                 outbound[1]))
                try:
                    async with asyncio.timeout(timeout):
                        result = await self._once(call, provider, route.model, body, route.timeout_s)
                finally:
                    if outbound is not None:
                        TRACEPARENT.reset(token)
            except TimeoutError:
                err: ProviderError = ProviderTimeout(
                    f"{route.label} did not answer within {timeout:.3g}s"
                    + (" (the rest of the feature's deadline)" if timeout < route.timeout_s else "")
                )
            except ProviderError as exc:
                err = exc
            except asyncio.CancelledError:
                # A hedge lost, or the client left: no verdict on the route, but it may have billed the prompt.
                attempt.outcome, attempt.error_type = "cancelled", "cancelled"
                attempt.latency_ms = (self.clock() - started) * 1000.0
                call.attempts.append(attempt)
                breaker.release(ticket)
                raise
            except BaseException:
                # Unsupported, or an adapter bug: no verdict on the route's health, but the half-open
                # probe slot this call may hold must be given back.
                breaker.release(ticket)
                raise
            else:
                attempt.latency_ms = (self.clock() - started) * 1000.0
                call.attempts.append(attempt)
                breaker.record(True, ticket)
                feature.latencies[index].append(attempt.latency_ms)
                call.paid_attempts += 1
                if commit:
                    self._commit(call, index)
                if isinstance(result, dict):
                    if isinstance(result.get("usage"), dict):
                        call.add_usage(result["usage"], price=feature.prices[index])
                    elif call.op != "embed":  # no usage reported: estimate it (and say so in the trace)
                        call.add_prompt_estimate(feature.prices[index], len(message_text(result)))
                elif isinstance(result, ChunkStream) and gate is not None:
                    held = False  # the slot is the stream's until it ends or is discarded
                    result.hold(gate.release)
                return result
            attempt.latency_ms = (self.clock() - started) * 1000.0
            attempt.outcome = "error"
            attempt.error_type = error_class_name(err)
            attempt.error_message = err.message
            attempt.status_code = err.status_code
            call.attempts.append(attempt)
            if isinstance(err, ProviderRejected):
                breaker.release(ticket)  # the request's fault says nothing about the route's health
            else:
                breaker.record(False, ticket)
            raise err
        finally:
            if held:
                gate.release()  # type: ignore[union-attr]

    @staticmethod
    def _commit(call: Call, index: int) -> None:
        call.route, call.route_index = call.feature.spec.route[index].label, index
        call.price = call.feature.prices[index]

    async def _hedged(self, call: Call, first: int, second: int, after_s: float) -> Any:
        """Try ``first``; if it has not answered after ``after_s``, try ``second`` too. The first answer
        wins; the other attempt is cancelled (its prompt counted in the cost, as an estimate) or, if it
        also finished, discarded (its usage, or an estimate, counted). When both fail, the first one's
        error is raised (its retries follow as usual). However this ends, cancellation included, no
        attempt is left running and no route slot is left taken."""
        primary = asyncio.ensure_future(self._try(call, first, commit=False))
        tasks = {primary: first}
        winner: asyncio.Future[Any] | None = None
        try:
            done, _ = await asyncio.wait({primary}, timeout=after_s)
            if not done and call.extend_budget is not None and call.paid_attempts + 1 >= call.reserved_attempts:
                try:
                    await call.extend_budget()  # a second attempt in flight may cost as much as the first
                except (BudgetExceeded, StateUnavailable) as exc:
                    call.event("hedge_skipped", reason=exc.code)
                    done, _ = await asyncio.wait({primary})
                if primary.done():
                    done = {primary}  # it answered while the budget was asked: no hedge needed
            if not done:
                call.event("hedge", after_ms=round(after_s * 1000, 1), route=call.feature.spec.route[second].label)
                tasks[asyncio.ensure_future(self._try(call, second, commit=False))] = second
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task, index in tasks.items():  # the first route wins a tie
                    if task in done and task.exception() is None:
                        winner = task
                        self._commit(call, index)
                        return task.result()
            return primary.result()  # both failed: the first route's error
        finally:
            try:
                await self._settle_losers(call, tasks, winner)
            except BaseException:
                # Cancelled while settling: nobody will read the winner either.
                for task in tasks:
                    self._discard_when_done(task)
                raise

    @classmethod
    async def _settle_losers(cls, call: Call, tasks: dict[asyncio.Future[Any], int], winner: Any) -> None:
        """Cancel what still runs, discard what finished but lost, retrieve every failure. Waiting for a
        cancelled loser never swallows the caller's own cancellation (asyncio.wait does not raise)."""
        for task, index in tasks.items():
            if task is winner:
                continue
            label = call.feature.spec.route[index].label
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            if task.cancelled():
                call.add_prompt_estimate(call.feature.prices[index])
                call.event("hedge_cancelled", route=label)
            elif task.exception() is None:
                result = task.result()
                if isinstance(result, ChunkStream):  # a stream that lost a tie: its start was billed
                    call.add_prompt_estimate(call.feature.prices[index], result.chars)
                    await result.discard()
                call.event("hedge_discarded", route=label)

    @staticmethod
    def _discard_when_done(task: asyncio.Future[Any]) -> None:
        def discard(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None and isinstance(done.result(), ChunkStream):
                closing = asyncio.ensure_future(done.result().discard())
                _closing.add(closing)
                closing.add_done_callback(_closing.discard)

        if not task.done():
            task.cancel()
        task.add_done_callback(discard)

    async def _once(self, call: Call, provider: Any, model: str, body: dict[str, Any], idle_s: float) -> Any:
        if call.op == "embed":
            return await provider.embed(model, body)
        if not call.stream:
            return await provider.complete(model, body)
        chunks = provider.stream(model, body)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            raise MalformedResponse(f"{provider.name} ended the stream before sending anything") from None
        except BaseException:
            await chunks.aclose()
            raise
        return ChunkStream(call, first, chunks, idle_s=idle_s, usage_wanted=usage_wanted(call))

    @staticmethod
    def _deadline(call: Call) -> DeadlineExceeded:
        spec = call.feature.spec
        return DeadlineExceeded(
            f"{call.feature.name} did not finish within its deadline of {spec.deadline_s:g}s "
            f"after {len(call.attempts)} attempt(s)",
            details=[a.to_dict() for a in call.attempts][-10:],
        )
