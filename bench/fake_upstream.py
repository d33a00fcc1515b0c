#!/usr/bin/env python3
"""A fake OpenAI-compatible upstream that answers every POST .../chat/completions after a fixed delay.

    python bench/fake_upstream.py --port 18402 --delay-ms 50

Binds 127.0.0.1 only. HTTP/1.1 with keep-alive; request bodies must carry Content-Length (wrk and
aiohttp both send it). Requests on one connection are answered in order. Other paths get a 404.
Built on asyncio.Protocol (uvloop when installed) and loop.call_later, so 8-32 connections waiting
50 ms each cost next to nothing and the delay stays close to the one asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

BODY = json.dumps(
    {
        "id": "chatcmpl-bench0002",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! This is a fixed reply from the fake upstream.",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23},
    },
    separators=(",", ":"),
).encode()

OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n"
_BAD_TEXT = b"bad request (Content-Length bodies only)\n"
BAD = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "
    + str(len(_BAD_TEXT)).encode()
    + b"\r\n\r\n"
    + _BAD_TEXT
)

MAX_HEAD = 64 * 1024


class Upstream(asyncio.Protocol):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buf = bytearray()
        self.busy = False  # one request in flight per connection: answers leave in request order
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        if self.transport is None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self.fail()
            return
        head = bytes(self.buf[:end]).split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return self.fail()
            elif name == b"transfer-encoding":
                return self.fail()
        total = end + 4 + length
        if len(self.buf) < total:
            return  # the rest of the body is still on its way
        del self.buf[:total]
        parts = head[0].split(b" ")
        path = parts[1].split(b"?")[0].rstrip(b"/") if len(parts) > 1 else b""
        reply = OK if path.endswith(b"/chat/completions") else NOT_FOUND
        self.busy = True
        if self.delay > 0:
            self.timer = asyncio.get_running_loop().call_later(self.delay, self.send, reply)
        else:
            self.send(reply)

    def send(self, reply: bytes) -> None:
        self.timer = None
        self.busy = False
        if self.transport is None:
            return
        self.transport.write(reply)
        if self.buf:
            self.next_request()

    def fail(self) -> None:
        if self.transport is not None:
            self.transport.write(BAD)
            self.transport.close()


async def main(port: int, delay_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(delay_ms / 1000.0), "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream listening on http://127.0.0.1:{port} delay={delay_ms:g}ms", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18402)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    args = parser.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    asyncio.run(main(args.port, args.delay_ms))
