"""A small HTTP/1.1 client for the request path: keep-alive connections to one upstream, over asyncio
streams, with the response parsed by hand (Content-Length, chunked, or read to close).

Why not aiohttp here: measured against a 50 ms upstream at one request at a time, an aiohttp request took
~0.4-0.5 ms longer than the same request over plain asyncio streams (bench/README.md), which was the whole
gap to the gateway's added-latency target. This client does only what a JSON/SSE model API needs:
POST with a body, HTTP/1.1, TLS, keep-alive, no redirects, no cookies, no compression.

Errors are the standard library's (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError for a
response that is not HTTP); ``_http.translate_errors`` turns them into ours at the adapter's edge.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit

_MAX_HEAD = 64 * 1024
_MAX_IDLE = 256


class ConnectFailed(OSError):
    """The connection could not be opened (refused, unreachable, DNS, TLS handshake)."""


class Response:
    """Status and headers have arrived; the body is read with ``read()`` or ``iter_lines()``.

    The connection goes back to the pool once the body has been read to its end, and is closed
    otherwise (an early stop, an error, a cancellation)."""

    __slots__ = ("status", "headers", "_pool", "_reader", "_writer", "_length", "_chunked", "_done")

    def __init__(
        self,
        pool: Pool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
    ) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._reader = reader
        self._writer = writer
        length = headers.get("content-length")
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._length = int(length) if length is not None and not self._chunked else None
        self._done = False

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self._pieces()])

    async def iter_lines(self) -> AsyncIterator[bytes]:
        """The body split into lines, each with its line ending (as server-sent events need)."""
        buffer = b""
        async for piece in self._pieces():
            buffer += piece
            start = 0
            while True:
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                yield buffer[start : end + 1]
                start = end + 1
            buffer = buffer[start:]
        if buffer:
            yield buffer

    async def _pieces(self) -> AsyncIterator[bytes]:
        reader = self._reader
        try:
            if self._length is not None:
                if self._length:
                    yield await reader.readexactly(self._length)
            elif self._chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass  # trailers
                        break
                    yield await reader.readexactly(size)
                    await reader.readexactly(2)
            else:  # delimited by the connection's close
                while piece := await reader.read(65536):
                    yield piece
                self._close()
                return
            self._done = True
            self._release()
        finally:
            if not self._done:
                self._close()

    def _release(self) -> None:
        if "close" in self.headers.get("connection", "").lower():
            self._close()
        else:
            self._pool.put(self._reader, self._writer)

    def _close(self) -> None:
        self._writer.close()

    def close(self) -> None:
        """Stop reading: the connection is closed unless the body was read to its end."""
        if not self._done:
            self._close()
            self._done = True


class Pool:
    """Keep-alive connections to the origin of ``base_url``."""

    def __init__(self, base_url: str, *, max_idle: int = _MAX_IDLE) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.base_path = parts.path.rstrip("/")
        default_port = self.port == (443 if self.ssl else 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host and not self.host.startswith("["):
            self.host_header = f"[{self.host}]" + ("" if default_port else f":{self.port}")
        self.max_idle = max_idle
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def target(self, path: str, query: dict[str, str] | None = None) -> str:
        return self.base_path + path + ("?" + urlencode(query) if query else "")

    def put(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._idle) < self.max_idle and not reader.at_eof():
            self._idle.append((reader, writer))
        else:
            writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None, limit=_MAX_HEAD
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(exc.errno, exc.strerror or str(exc)) from exc

    async def request(self, method: str, target: str, head: bytes, body: bytes) -> Response:
        """Send ``method target`` with ``head`` (pre-built header lines, each ending in CRLF) and ``body``.

        A pooled connection the server has meanwhile closed fails before any byte of an answer: then,
        and only then, the request is sent again once on a new connection."""
        message = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\nContent-Length: {len(body)}\r\n".encode()
            + head
            + b"\r\n"
            + body
        )
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, message)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                break  # stale: fall through to a fresh connection
        reader, writer = await self._connect()
        return await self._exchange(reader, writer, message)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes
    ) -> Response:
        ok = False
        try:
            writer.write(message)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
            status = int(rest[:3])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            ok = True
            return Response(self, reader, writer, status, headers)
        except asyncio.LimitOverrunError as exc:
            raise ValueError("the response head is larger than 64 KiB") from exc
        finally:
            if not ok:
                writer.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
