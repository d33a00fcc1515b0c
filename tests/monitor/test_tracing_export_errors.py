"""A collector that is down: the calls are served, the logs get a warning a minute at most (naming the
collector, counting what was dropped, no traceback) instead of the SDK's warning per retry and error per
batch, ``shipyard_trace_export_failures_total`` counts the dropped batches, and a stop does not wait
for the collector (the SDK's flush would try every batch for ``export_timeout_s`` each).

Measured before this was added (500 calls over 20 s, collector port closed, export_timeout_s 10): 16
records from the SDK's exporter (12 warnings, one per retry, and 4 errors, one per batch; no traceback),
about one every 1.3 s for as long as the collector is away, and the stop took 11 s; with 3,000 calls the
stop took 72 s. After: 2 warnings (the first failure, and what the stop dropped), stops in 2-5 s."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from shipyard import Gateway, load_config
from shipyard.monitor.tracing import EXPORTER_LOGGERS, WARN_EVERY_S, guarded_exporter
from tests.conftest import free_port, two_route_config
from tests.monitor.test_metrics import scrape, value

MSG = [{"role": "user", "content": "where is my parcel"}]
SDK_LOGGER = EXPORTER_LOGGERS[0]


@pytest.fixture
def away(primary, backup, write_config):
    """A config whose collector is a closed port on 127.0.0.1."""
    port = free_port()

    def config(extra: str = "") -> Any:
        return write_config(two_route_config(primary, backup, extra=f"""telemetry:
      otlp_endpoint: "http://127.0.0.1:{port}"
      {extra}
    """)), f"http://127.0.0.1:{port}/v1/traces"

    return config


def said(caplog: pytest.LogCaptureFixture) -> tuple[list[logging.LogRecord], list[logging.LogRecord]]:
    """Our tracing warnings, and every record of the OpenTelemetry SDK that reached the logs."""
    ours = [r for r in caplog.records
            if r.name == "shipyard.monitor" and r.getMessage().startswith("tracing:")]
    sdk = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    return ours, sdk


async def test_a_collector_that_is_down_is_one_warning_and_a_metric_not_a_log_flood(away, primary, caplog):
    path, endpoint = away("export_timeout_s: 2")  # a batch fails after one retry, about a second
    gw = Gateway(load_config(path))
    caplog.set_level(logging.DEBUG)
    served = 0
    try:
        deadline = time.monotonic() + 20
        # calls keep coming until three batches have failed (a batch is exported every second)
        while gw.tracing.exports.failures < 3 and time.monotonic() < deadline:
            await gw.chat("triage", MSG)
            served += 1
            await asyncio.sleep(0.01)
        assert gw.tracing.exports.failures >= 3
        s = await scrape(gw)
        assert value(s, "shipyard_trace_export_failures_total") >= 3
        assert value(s, "shipyard_requests_total", feature="triage", route="primary/gpt-4o-mini", status="ok",
                     segment="") == served
        started = time.monotonic()
    finally:
        await gw.aclose()
    assert time.monotonic() - started < 15  # no hang (CLOSE_S at most, then the rest is dropped)
    ours, sdk = said(caplog)
    assert sdk == []  # neither the warning per retry nor the error per batch
    assert 1 <= len(ours) <= 2  # the first failure; then what was dropped until the stop
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in ours)
    first = ours[0].getMessage()
    assert endpoint in first and "span batch(es)" in first and "calls are not affected" in first
    assert "Connection refused" in first or "ConnectionError" in first  # what the exporter ran into
    assert gw.tracing.exports.failed_spans > 0


async def test_a_stop_with_spans_queued_and_the_collector_away_is_quick(away, primary, caplog):
    path, endpoint = away()  # export_timeout_s: the default 10 s, for each of the SDK's tries of a batch
    gw = Gateway(load_config(path))
    caplog.set_level(logging.DEBUG)
    try:
        for _ in range(50):
            await asyncio.gather(*(gw.chat("triage", MSG) for _ in range(20)))  # 2,000 spans
    finally:
        started = time.monotonic()
        await gw.aclose()
        took = time.monotonic() - started
    assert took < 15  # CLOSE_S at most, then the rest is dropped; the SDK's own flush would try each of
    # the 4 batches for 5-10 s
    assert gw.tracing.exports.failed_spans == 2000  # every span is accounted for: dropped, and counted
    ours, sdk = said(caplog)
    assert sdk == []
    assert 1 <= len(ours) <= 2 and all(r.exc_info is None for r in ours)
    assert "before the stop" in ours[-1].getMessage() and endpoint in ours[-1].getMessage()


def test_without_tracing_there_is_no_export_failure_series(primary, backup, write_config):
    gw = Gateway(load_config(write_config(two_route_config(primary, backup))))
    try:
        assert gw.tracing is None
        families = [f.name for f in gw.metrics.families()]
        assert "shipyard_trace_export_failures" not in families
    finally:
        gw.store.close()


# -- the guarded exporter, with a scripted exporter and clock ------------------------------------------


class Scripted(SpanExporter):
    """Fails (logging as the SDK's OTLP exporter does, on its logger) or succeeds, as told."""

    def __init__(self) -> None:
        self.ok = False
        self.raises = False
        self.shut = 0

    def export(self, spans: Any) -> SpanExportResult:
        if self.raises:
            raise RuntimeError("exporter bug")
        if self.ok:
            return SpanExportResult.SUCCESS
        log = logging.getLogger(SDK_LOGGER)
        log.warning("Transient error %s encountered while exporting %s batch, retrying in %.2fs.",
                    ConnectionError("[Errno 111] Connection refused"), "spans", 1.0)
        log.error("Failed to export %s batch due to timeout, max retries or shutdown.", "spans")
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.shut += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_are_said_once_a_minute_and_again_when_exports_work(caplog):
    inner, clock = Scripted(), Clock()
    exports = guarded_exporter(inner, "http://collector:4318/v1/traces")
    exports.clock = clock
    batch = [object(), object()]
    caplog.set_level(logging.DEBUG)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "shipyard.monitor"]

    assert exports.export(batch) is SpanExportResult.FAILURE
    assert len(warnings()) == 1
    refused = "(ConnectionError: [Errno 111] Connection refused)"
    assert f"http://collector:4318/v1/traces {refused}" in warnings()[0]
    assert "1 span batch(es) (2 spans) dropped since the last warning" in warnings()[0]
    for at in (10, 30, WARN_EVERY_S - 1):
        clock.now = 1000.0 + at
        exports.export(batch)
    assert len(warnings()) == 1  # a minute has not passed
    clock.now = 1000.0 + WARN_EVERY_S + 1
    exports.export(batch)
    assert len(warnings()) == 2 and "4 span batch(es) (8 spans) dropped" in warnings()[1]
    clock.now += 5
    exports.export(batch)
    inner.ok = True
    assert exports.export(batch) is SpanExportResult.SUCCESS
    assert len(warnings()) == 3
    assert "exported to http://collector:4318/v1/traces again; 1 span batch(es) (2 spans)" in warnings()[2]
    assert exports.export(batch) is SpanExportResult.SUCCESS
    assert len(warnings()) == 3  # nothing to say while it works
    inner.ok, clock.now = False, clock.now + 1
    exports.export(batch)
    assert len(warnings()) == 4  # a new outage is said at once
    inner.raises = True
    assert exports.export(batch) is SpanExportResult.FAILURE  # an exporter that raises: counted, no traceback
    assert exports.failures == 8 and exports.failed_spans == 16
    assert not any(r.name.startswith("opentelemetry") for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records)
    logging.getLogger(SDK_LOGGER).warning("not from our export")  # the SDK's exporter used by anyone else
    assert caplog.records[-1].getMessage() == "not from our export"
    exports.shutdown()
    exports.shutdown()
    assert inner.shut == 1


def test_while_stopping_the_first_failure_drops_the_rest_at_once(caplog):
    inner = Scripted()
    exports = guarded_exporter(inner, "http://collector:4318/v1/traces")
    caplog.set_level(logging.DEBUG)
    exports.closing()
    calls = []
    def export(spans: Any) -> SpanExportResult:
        calls.append(len(spans))
        return SpanExportResult.FAILURE

    inner.export = export  # type: ignore[method-assign]
    for _ in range(4):
        assert exports.export([object()] * 3) is SpanExportResult.FAILURE
    assert calls == [3]  # one try; the other batches are dropped without one
    assert exports.failures == 4 and exports.failed_spans == 12
    exports.report()
    assert "3 span batch(es) (9 spans) could not be exported" in caplog.records[-1].getMessage()
