"""Our HTTP/1.1 client against a raw socket server that answers exactly as scripted."""

from __future__ import annotations

import asyncio

import pytest

from shipyard.errors import MalformedResponse, ProviderConnectError, TransientProviderError
from shipyard.providers._h1 import Pool
from shipyard.providers._http import post_json, translate_errors
from tests.conftest import free_port

OK = b'{"ok": true}'


async def raw_server(answers: list[bytes], *, close_after_each: bool = False):
    """Answers each request (on any connection) with the next raw bytes; records connections."""
    seen = {"connections": 0, "requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0
                )
                await reader.readexactly(length)
                seen["requests"] += 1
                answer = answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if close_after_each or b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


def fixed(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def test_keep_alive_reuses_one_connection():
    server, url, seen = await raw_server([fixed(OK), fixed(OK), fixed(OK)])
    pool = Pool(url)
    for _ in range(3):
        assert await post_json("p", pool, "/x", b"", b"{}") == {"ok": True}
    assert seen == {"connections": 1, "requests": 3}
    await pool.aclose()
    server.close()


async def test_chunked_and_close_delimited_bodies():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"ok\r\n8\r\n\": true}\r\n0\r\n\r\n"
    to_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OK
    server, url, seen = await raw_server([chunked, to_close], close_after_each=False)
    pool = Pool(url)
    assert await post_json("p", pool, "/x", b"", b"{}") == {"ok": True}
    assert await post_json("p", pool, "/x", b"", b"{}") == {"ok": True}
    await pool.aclose()
    server.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced_once():
    server, url, seen = await raw_server([fixed(OK), fixed(OK)], close_after_each=True)
    pool = Pool(url)
    assert await post_json("p", pool, "/x", b"", b"{}") == {"ok": True}
    await asyncio.sleep(0.05)  # the server has closed the pooled connection
    assert await post_json("p", pool, "/x", b"", b"{}") == {"ok": True}
    assert seen == {"connections": 2, "requests": 2}
    await pool.aclose()
    server.close()


async def test_garbage_and_truncated_answers_are_our_errors():
    server, url, _ = await raw_server([b"SMTP ready\r\n\r\n"])
    with pytest.raises(MalformedResponse, match="not a valid HTTP response"):
        await post_json("p", Pool(url), "/x", b"", b"{}")
    server.close()
    server, url, _ = await raw_server([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial"], close_after_each=True)
    with pytest.raises(TransientProviderError, match="in the middle of an answer"):
        await post_json("p", Pool(url), "/x", b"", b"{}")
    server.close()


async def test_connection_refused_is_a_connect_error():
    pool = Pool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderConnectError, match="cannot connect to p"), translate_errors("p"):
        await pool.request("POST", "/x", b"", b"{}")


def test_targets_and_host_headers():
    pool = Pool("https://api.example.com/v1/")
    assert (pool.host, pool.port, pool.host_header) == ("api.example.com", 443, "api.example.com")
    assert pool.target("/chat/completions", {"api-version": "2024-06-01"}) == "/v1/chat/completions?api-version=2024-06-01"
    assert Pool("http://[::1]:8080/v1").host_header == "[::1]:8080"
    with pytest.raises(ValueError):
        Pool("ftp://example.com")
