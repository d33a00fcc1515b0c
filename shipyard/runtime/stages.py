"""The stages of the pipeline. Each has one async method, ``handle(call, next)``.

A stage may act before passing the call on, after it comes back, or instead of passing it on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from ..errors import (
    AllRoutesFailed,
    BudgetExceeded,
    DeadlineExceeded,
    InputValidationError,
    OutputContractError,
    PolicyFallback,
    ProviderRejected,
    ShipyardError,
    error_class_name,
)
from ..monitor.metrics import SegmentLabels
from ..monitor.refusal import of_completion as refusal_of
from ..providers._format import chat_completion, chunks_from_completion, message_text
from .call import Call, ChunkStream
from .feature import describe, schema_errors

Next = Callable[[Call], Awaitable[Any]]

_log = logging.getLogger("shipyard.runtime")


class Stage(Protocol):
    async def handle(self, call: Call, next: Next) -> Any: ...


class Record:
    """Outermost: whatever happens inside, the call ends up in the trace store, exactly once."""

    def __init__(self, submit: Callable[[dict[str, Any]], None],
                 observe: Callable[[Call, str | None], None] | None = None,
                 recorders: list[Callable[[Call], None]] | None = None) -> None:
        self.submit = submit
        self.observe = observe
        self.recorders = recorders if recorders is not None else []  # the list itself: later additions count

    async def handle(self, call: Call, next: Next) -> Any:
        try:
            result = await next(call)
        except ShipyardError as exc:
            call.status, call.error = "error", exc
            self.finish(call)
            raise
        except asyncio.CancelledError:
            call.status = "cancelled"
            self.finish(call)
            raise
        except Exception as exc:  # a bug of ours: the client gets a clean 500, the trace keeps the class
            call.status = "error"
            call.error = ShipyardError(f"internal error ({type(exc).__name__}); the trace has the details")
            call.event("internal_error", error_type=type(exc).__name__, message=str(exc)[:500])
            self.finish(call)
            raise call.error from exc
        if isinstance(result, ChunkStream):
            if call.feature.retention.store_content != "none" or self.observe is not None:
                result.collect_text()
            result.on_close(lambda c: self.finish(c, result.text, result.refusal() if c.op == "chat" else None))
            return result
        if call.status == "pending":
            call.status = "ok"
        if call.op != "embed" and isinstance(result, dict):  # a typed call's answer may be a refusal too
            self.finish(call, message_text(result) if call.op == "chat" else None, refusal_of(result))
        else:
            self.finish(call)
        return result

    @staticmethod
    def content(call: Call, answer: str | None) -> dict[str, Any] | None:
        """What the call was asked and answered, for the store to seal (redact or encrypt) or drop.
        Embedding inputs are not kept: they are data, not a conversation."""
        if call.feature.retention.store_content == "none" or call.op == "embed":
            return None
        asked = {"input": call.input} if call.op == "invoke" else {"messages": call.body.get("messages")}
        if call.op == "invoke" and call.output is not None:
            return {**asked, "output": call.output}
        return {**asked, "answer": answer} if answer is not None else asked

    def finish(self, call: Call, answer: str | None = None, refusal: str | None = None) -> None:
        if refusal is not None and call.status == "ok":  # a fallback_response is ours, not a refusal
            call.event("refusal", how=refusal)
        err = call.error
        usage = call.usage or {}
        principal = call.principal
        retention = call.feature.retention
        self.submit(
            {
                "trace_id": call.trace_id,
                "feature": call.feature.name,
                "op": call.op,
                "stream": call.stream,
                "status": call.status,
                "error_type": error_class_name(err) if err else None,
                "error_message": err.message if err else None,
                "http_status": 200 if call.streamed or not err else err.status,
                "route": call.route,
                "started_at": call.started_at,
                "latency_ms": round(call.elapsed_ms(), 3),
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"),
                "total_tokens": usage.get("total_tokens"),
                "attempts": [a.to_dict() for a in call.attempts],
                "events": call.events,
                "tenant": principal.tenant if principal else None,
                "key_id": principal.key_id if principal else None,
                "cost_usd": call.cost_nano / 1e9 if call.cost_nano is not None else None,
                "cost_estimated": call.cost_estimated,
                "cache": call.cache,
                "subject": call.subject,
                "severity": call.severity,
                "segment": segment_of(call),
                "content": self.content(call, answer),
                "content_mode": retention.store_content,
                "content_key_env": retention.key_env,
            }
        )
        if self.observe is not None:
            self.observe(call, answer)
        for record in self.recorders:
            try:
                record(call)
            except Exception as exc:  # noqa: BLE001 - metrics and tracing must never break a call
                _log.warning("a recorder (%r) failed on %s: %r", record, call.trace_id, exc)


def segment_of(call: Call) -> str | None:
    """The call's segment as the trace keeps it (``lang=es,tier=gold`` over the feature's declared
    ``segments``, from X-Shipyard-Segment-* headers or input fields), None for a feature without any."""
    keys = call.feature.spec.segments
    if not keys:
        return None
    return SegmentLabels(keys).canonical(call.metadata.get("segment"), call.input) or None


class InputContract:
    """Typed input: validate against input_schema, then render the prompt into chat messages."""

    async def handle(self, call: Call, next: Next) -> Any:
        if call.op != "invoke":
            return await next(call)
        feature = call.feature
        if feature.input_validator is not None:
            problems = schema_errors(feature.input_validator, call.input)
            if problems:
                raise InputValidationError(
                    f"input does not match the input_schema of {feature.name}: {describe(problems)}",
                    details=problems,
                )
        call.body["messages"] = feature.render(call.input)
        return await next(call)


class Fallback:
    """When every route failed (or ran out of time), answer with the feature's fallback_response."""

    CATCHES = (AllRoutesFailed, DeadlineExceeded, OutputContractError, PolicyFallback)

    async def handle(self, call: Call, next: Next) -> Any:
        try:
            return await next(call)
        except self.CATCHES as exc:
            fallback = call.feature.spec.fallback_response
            if fallback is None or call.op == "embed":
                raise
            call.event("fallback", reason=exc.code, message=exc.message)
        call.route, call.route_index, call.status = "fallback", None, "fallback"
        if call.op == "invoke":
            call.output = fallback
            content = orjson.dumps(fallback).decode()
        elif set(fallback) == {"content"}:
            content = str(fallback["content"])
        else:
            content = orjson.dumps(fallback).decode()
        completion = chat_completion(content, model=call.feature.name)
        return stream_of(call, completion) if call.stream else completion


def stream_of(call: Call, completion: dict[str, Any]) -> ChunkStream:
    """A finished completion served as a stream (a fallback, a cache hit): no provider, nothing to estimate."""
    first, *others = chunks_from_completion(completion)

    async def rest() -> Any:
        for piece in others:
            yield piece

    stream = ChunkStream(call, first, rest(), idle_s=1.0, usage_wanted=usage_wanted(call))
    stream.estimate = False
    return stream


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_json_answer(text: str) -> Any:
    """The JSON a model meant: the whole text, or the inside of a ```json fence. ValueError if none."""
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    return orjson.loads(text)


class OutputContract:
    """Typed output: parse the answer as JSON and check it against output_schema.

    On a bad answer: one repair re-ask on the same route that shows the model the errors, then the next
    route. When no route is left, OutputContractError (which the Fallback stage may answer).
    """

    async def handle(self, call: Call, next: Next) -> Any:
        feature = call.feature
        applies = call.op == "invoke" or (
            call.op == "chat" and not call.stream and feature.output_validator is not None
        )
        if not applies:
            return await next(call)
        original = call.body["messages"]
        n_routes = len(feature.spec.route)
        result = await next(call)
        repaired_at: int | None = None
        while True:
            text = message_text(result)
            output, problems = self.check(call, text)
            if not problems:
                call.output = output
                call.body["messages"] = original
                return result
            served = call.route_index if call.route_index is not None else 0
            will_repair = feature.spec.repair and repaired_at != served
            last = not will_repair and served + 1 >= n_routes
            # A guard finding like the others: major while a repair or another route may still answer,
            # critical when this was the last chance (the caller gets the fallback or a 502).
            call.finding("output_contract", "output_schema", severity="critical" if last else "major",
                         action="repair" if will_repair else "fail" if last else "next_route", where="output",
                         route=call.route, problems=problems[:10])
            if will_repair:
                repaired_at = served
                repaired = await self._repair(call, next, original, text, problems, served)
                if repaired is not None:
                    result = repaired
                    continue  # check the repaired answer; a second failure moves on
            call.body["messages"] = original
            call.route_from = served + 1
            if call.route_from >= n_routes:
                raise OutputContractError(
                    f"no route of {feature.name} produced an answer matching its output_schema: "
                    + describe(problems),
                    details=problems,
                )
            try:
                result = await next(call)
            except BudgetExceeded as exc:  # the answers so far were paid for; the fallback may answer
                raise OutputContractError(
                    f"the answer of {call.route} did not match the output_schema of {feature.name} "
                    f"({describe(problems)}) and the budget does not cover another route: {exc.message}",
                    details=problems,
                ) from exc

    async def _repair(
        self, call: Call, next: Next, original: list[Any], text: str, problems: list[dict[str, str]], route: int
    ) -> Any:
        """Ask ``route`` once more, showing it its answer and what was wrong; None if that attempt failed."""
        call.body["messages"] = [*original, *self.repair_messages(text, problems)]
        call.route_only = route
        call.event("repair", route=call.route)
        try:
            return await next(call)
        except (AllRoutesFailed, DeadlineExceeded, ProviderRejected, BudgetExceeded) as exc:
            # ProviderRejected too: the longer repair conversation may overflow the context, which
            # is no fault of the caller's accepted request. BudgetExceeded: no budget for the re-ask.
            if isinstance(exc, BudgetExceeded):
                call.event("repair_skipped", reason=exc.code)
            return None
        finally:
            call.route_only = None

    def check(self, call: Call, text: str) -> tuple[Any, list[dict[str, str]]]:
        try:
            output = parse_json_answer(text)
        except ValueError:
            if call.feature.output_validator is None and call.op == "invoke":
                return text, []  # no contract: plain text is a fine answer
            return None, [{"path": "$", "message": "the answer is not valid JSON"}]
        validator = call.feature.output_validator
        if validator is None:
            return output, []
        return output, schema_errors(validator, output)

    @staticmethod
    def repair_messages(text: str, problems: list[dict[str, str]]) -> list[dict[str, str]]:
        listing = "\n".join(f"- {p['path']}: {p['message']}" for p in problems[:20])
        return [
            {"role": "assistant", "content": text},
            {
                "role": "user",
                "content": "Your answer did not match the required JSON format:\n"
                f"{listing}\nAnswer again with only the corrected JSON, nothing else.",
            },
        ]


def usage_wanted(call: Call) -> bool:
    options = call.body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))

