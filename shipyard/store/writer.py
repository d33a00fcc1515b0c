"""The background writer: records leave the request path as a list append, and reach the store in
batches from a worker thread. A clean stop flushes everything; a failing store keeps records (up to
``max_pending``) and retries; anything dropped is counted, never silent."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

log = logging.getLogger("shipyard.store")


class _Sink(Protocol):
    def insert_traces(self, records: list[dict[str, Any]]) -> int: ...


class TraceWriter:
    def __init__(
        self,
        sink: _Sink,
        *,
        flush_interval_s: float = 0.25,
        batch_size: int = 500,
        max_pending: int = 200_000,
    ) -> None:
        self.sink = sink
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self.rejected = 0
        self._pending: list[dict[str, Any]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = threading.Lock()  # flush_sync (atexit) and the flusher never write the same batch
        # Its own thread: a busy shared pool (slow in-process models) must never hold traces back.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipyard-traces")

    def submit(self, record: dict[str, Any]) -> None:
        """Queue one record. Never blocks, never raises."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("trace store is not keeping up; %d record(s) dropped so far", self.dropped)
            return
        self._pending.append(record)
        if len(self._pending) >= self.batch_size and self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="shipyard-trace-writer")

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)
            except Exception as exc:  # noqa: BLE001 - keep the records, try again on the next tick
                self.write_errors += 1
                log.error("writing %d trace(s) failed (%s); will retry", len(batch), exc)
                room = self.max_pending - len(self._pending)
                self.dropped += max(0, len(batch) - room)
                self._pending[:0] = batch[: max(0, room)]
                return

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self._lock:
            try:
                self.written += self.sink.insert_traces(batch)
                return
            except Exception:
                if len(batch) == 1:
                    raise
            # Record by record: when some records go in and others do not, the others are bad (a value
            # the store refuses): drop and count them. When none goes in, the store itself is failing:
            # raise, and the whole batch is kept for the next try.
            failed: list[tuple[dict[str, Any], Exception]] = []
            for record in batch:
                try:
                    self.written += self.sink.insert_traces([record])
                except Exception as exc:  # noqa: BLE001
                    failed.append((record, exc))
            if len(failed) == len(batch):
                raise failed[0][1]
            retried = []
            for record, _ in failed:  # once more: the store may have hiccuped, not refused
                try:
                    self.written += self.sink.insert_traces([record])
                except Exception as exc:  # noqa: BLE001
                    retried.append((record, exc))
            for record, exc in retried:
                self.rejected += 1
                log.error("the trace store rejected trace %s (%s); dropped it", record.get("trace_id"), exc)

    async def aclose(self) -> None:
        """Stop the flusher and write everything still pending (retrying a few times on errors)."""
        self._closing = True
        if self._task is not None:
            if self._wake is not None:
                self._wake.set()
            await self._task
            self._task = None
        for attempt in range(5):
            await self.flush()
            if not self._pending:
                self._executor.shutdown(wait=False)
                return
            await asyncio.sleep(0.2 * (attempt + 1))
        self.dropped += len(self._pending)
        log.error("could not write %d trace(s) at shutdown", len(self._pending))
        self._pending = []
        self._executor.shutdown(wait=False)

    def flush_sync(self) -> None:
        """Last resort at interpreter exit (a notebook that never closed its gateway)."""
        batch, self._pending = self._pending, []
        if batch:
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001
                self.dropped += len(batch)
                log.error("could not write %d trace(s) at exit: %s", len(batch), exc)
