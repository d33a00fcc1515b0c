#!/usr/bin/env python3
"""Which async HTTP client should carry the provider calls? Shipyard's own HTTP/1.1 client
(shipyard/providers/_h1.py) vs aiohttp vs httpx, measured.

    /work/venv/bin/python bench/http_clients.py [--duration 10] [--concurrency 32] [--runs 1] [--quick] [--json FILE]

Each client, in its own fresh process pinned to CPU 0 (`taskset -c 0`), runs ``--concurrency``
coroutines that POST the same chat-completions request as bench/wrk_chat.lua, in a loop, to the
instant nginx upstream (bench/upstream_nginx.conf, pinned to CPU 1), for ``--duration`` seconds after a
short warm-up. Each reply is read in full and parsed with orjson, as the gateway does. Both clients are
set up the way shipyard/providers/_http.py sets up aiohttp: one shared client/session, a 1000-connection
pool, no total timeout, keep-alive, and the same event loop as the server (uvloop).

Because the process is pinned to one saturated core, requests/s is the inverse of the client's CPU cost
per call; the CPU microseconds per request are printed too. Clients run in alternating order when
``--runs`` > 1. ``--clients`` also accepts ``httpx2`` when that package is installed.

Needs nginx and taskset (``apt-get update && apt-get install -y nginx-light wrk``); installs nothing;
only talks to 127.0.0.1; stops everything it starts (by pid), Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NGINX_CONF = HERE / "upstream_nginx.conf"
CLIENT_CPU, UPSTREAM_CPU = 0, 1
APT_HINT = "apt-get update && apt-get install -y nginx-light wrk"
PAYLOAD = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in one short sentence."},
    ],
    "max_tokens": 32,
}
# The process helpers are the overhead benchmark's: this script runs beside it in bench/.
from overhead import _die_with_parent, _stop, free_port  # noqa: E402

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
CLIENTS = ("shipyard-h1", "aiohttp", "httpx", "httpx2")


# -- worker: one client, one process, one core ------------------------------------------------------------


def _make_client(name: str) -> tuple[Any, Any, Any]:
    """(post(url) -> (status, body bytes), aclose(), version) for one client, set up like the gateway's."""
    import orjson

    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=1000, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
            ),
            timeout=aiohttp.ClientTimeout(total=None),
            json_serialize=lambda v: orjson.dumps(v).decode(),
            skip_auto_headers=("User-Agent",),
        )

        async def post(url: str) -> tuple[int, bytes]:
            async with session.post(url, json=PAYLOAD, headers=HEADERS) as resp:
                return resp.status, await resp.read()

        return post, session.close, aiohttp.__version__

    if name in ("httpx", "httpx2"):
        mod = __import__(name)
        client = mod.AsyncClient(
            limits=mod.Limits(max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=60),
            timeout=mod.Timeout(None),
        )

        async def post(url: str) -> tuple[int, bytes]:
            resp = await client.post(url, content=orjson.dumps(PAYLOAD), headers=HEADERS)
            return resp.status_code, resp.content

        return post, client.aclose, metadata.version(name)

    if name == "shipyard-h1":
        from urllib.parse import urlsplit

        from shipyard import __version__
        from shipyard.providers._h1 import Pool

        pools: dict[str, Any] = {}
        head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items()).encode("latin-1")

        async def post(url: str) -> tuple[int, bytes]:
            parts = urlsplit(url)
            origin = f"{parts.scheme}://{parts.netloc}"
            pool = pools.get(origin) or pools.setdefault(origin, Pool(origin, max_idle=1000))
            resp = await pool.request("POST", parts.path, head, orjson.dumps(PAYLOAD))
            return resp.status, await resp.read()

        async def aclose() -> None:
            for pool in pools.values():
                await pool.aclose()

        return post, aclose, __version__

    raise SystemExit(f"unknown client {name!r} (known: {', '.join(CLIENTS)})")


async def _worker(name: str, url: str, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    import orjson

    post, aclose, version = _make_client(name)
    latencies: list[float] = []
    counts = {"ok": 0, "bad_status": 0, "exceptions": 0}
    first_error: list[str] = []

    async def loop(until: float, record: bool) -> None:
        clock = time.perf_counter
        while clock() < until:
            t = clock()
            try:
                status, body = await post(url)
                orjson.loads(body)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                if record:
                    counts["exceptions"] += 1
                    if not first_error:
                        first_error.append(f"{type(exc).__name__}: {exc}")
                continue
            if record:
                latencies.append(clock() - t)
                if status == 200:
                    counts["ok"] += 1
                else:
                    counts["bad_status"] += 1
                    if not first_error:
                        first_error.append(f"HTTP {status}: {body[:200]!r}")

    try:
        if warmup > 0:
            end = time.perf_counter() + warmup
            await asyncio.gather(*(loop(end, False) for _ in range(concurrency)))
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        end = t0 + duration
        await asyncio.gather(*(loop(end, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await aclose()
    latencies.sort()
    done = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(done - 1, int(p / 100.0 * done))] * 1000.0 if done else float("nan")

    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "client": name,
        "version": version,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": done,
        "rps": round(done / elapsed, 1),
        **counts,
        "first_error": first_error[0] if first_error else None,
        "p50_ms": round(pct(50), 3),
        "p90_ms": round(pct(90), 3),
        "p99_ms": round(pct(99), 3),
        "mean_ms": round(sum(latencies) / done * 1000.0, 3) if done else None,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / done * 1e6, 1) if done else None,
        "cpu_utilisation": round(cpu / elapsed, 3),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
    }


def run_worker(args: argparse.Namespace) -> int:
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    result = asyncio.run(_worker(args.worker, args.url, args.concurrency, args.duration, args.warmup))
    print("BENCH_CLIENT " + json.dumps(result), flush=True)
    return 0


# -- driver ------------------------------------------------------------------------------------------------


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nginx exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            req = urllib.request.Request(
                url, data=json.dumps(PAYLOAD).encode(), headers=HEADERS, method="POST"
            )
            with opener.open(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {url}")


def run_driver(args: argparse.Namespace) -> int:
    duration = args.duration if args.duration is not None else (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for c in clients:
        if c not in CLIENTS:
            raise SystemExit(f"unknown client {c!r} (known: {', '.join(CLIENTS)})")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not nginx or not shutil.which("taskset"):
        raise SystemExit(
            f"needs nginx and taskset. Install them with:\n    {APT_HINT}\nThis script installs nothing itself."
        )
    if not {CLIENT_CPU, UPSTREAM_CPU} <= os.sched_getaffinity(0):
        raise SystemExit(f"needs CPUs {CLIENT_CPU} and {UPSTREAM_CPU}")

    signal.signal(
        signal.SIGINT, signal.default_int_handler
    )  # even when started with SIGINT ignored (e.g. `cmd &`)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-httpclients-"))
    procs: list[subprocess.Popen[bytes]] = []
    results: list[dict[str, Any]] = []
    try:
        port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(
            re.sub(r"listen 127\.0\.0\.1:\d+", f"listen 127.0.0.1:{port}", NGINX_CONF.read_text())
        )
        argv = [
            "taskset",
            "-c",
            str(UPSTREAM_CPU),
            nginx,
            "-p",
            f"{workdir}/",
            "-e",
            "stderr",
            "-c",
            str(conf),
        ]
        print(
            f"instant upstream: $ {shlex.join(argv)}   (bench/upstream_nginx.conf with port {port})",
            flush=True,
        )
        with open(workdir / "nginx.log", "wb") as fh:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - this driver runs no threads
                )
            )
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        _wait_http(url, procs[0])
        print(f"load: {Path('/proc/loadavg').read_text().split()[:3]} (1/5/15 min)", flush=True)
        for run in range(1, args.runs + 1):
            order = clients if run % 2 else list(reversed(clients))
            for client in order:
                wargv = [
                    "taskset",
                    "-c",
                    str(CLIENT_CPU),
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    client,
                    "--url",
                    url,
                    "--concurrency",
                    str(args.concurrency),
                    "--duration",
                    str(duration),
                    "--warmup",
                    str(warmup),
                    "--loop",
                    args.loop,
                ]
                with open(workdir / f"{client}_{run}.log", "wb") as fh:
                    p = subprocess.Popen(
                        wargv,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,  # noqa: PLW1509 - this driver runs no threads
                    )
                procs.append(p)
                try:
                    p.wait(duration + warmup + 60)
                except subprocess.TimeoutExpired:
                    _stop(p, 5.0)
                    raise SystemExit(f"{client} did not finish in time") from None
                procs.remove(p)
                out = (workdir / f"{client}_{run}.log").read_text(errors="replace")
                m = re.search(r"^BENCH_CLIENT (.*)$", out, re.MULTILINE)
                if p.returncode != 0 or not m:
                    raise SystemExit(f"{client} failed (exit {p.returncode}):\n{out[-3000:]}")
                r = json.loads(m.group(1))
                r.update(run=run, command=shlex.join(wargv))
                results.append(r)
                errors = r["bad_status"] + r["exceptions"]
                print(
                    f"[{client} {r['version']} run {run}] {r['rps']:,.0f} req/s at c{r['concurrency']} "
                    f"({r['requests']:,} requests in {r['seconds']:.1f} s); p50 {r['p50_ms']:.2f} ms, "
                    f"p99 {r['p99_ms']:.2f} ms; {r['cpu_us_per_request']:.0f} µs CPU/request "
                    f"(core {r['cpu_utilisation'] * 100:.0f}% busy); {errors} errors"
                    + (f" (first: {r['first_error']})" if r["first_error"] else ""),
                    flush=True,
                )
                print(f"    $ {r['command']}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; stopping everything this script started", flush=True)
        return 130
    finally:
        for p in reversed(procs):
            _stop(p, 5.0)
        shutil.rmtree(workdir, ignore_errors=True)

    best: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["client"] not in best or r["rps"] > best[r["client"]]["rps"]:
            best[r["client"]] = r
    top = max(r["rps"] for r in best.values())
    print(
        f"\n## Summary (best of {args.runs} run(s), {duration} s each, c{args.concurrency}, one core, "
        f"{args.loop} loop; load {Path('/proc/loadavg').read_text().split()[:3]} at end)\n"
    )
    print("| Client | Version | req/s | vs best | CPU µs/request | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(best.values(), key=lambda r: -r["rps"]):
        print(
            f"| {r['client']} | {r['version']} | {r['rps']:,.0f} | {r['rps'] / top * 100:.0f}% | "
            f"{r['cpu_us_per_request']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['bad_status'] + r['exceptions']} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": results, "best": best}, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds per client [10; --quick: 3]"
    )
    parser.add_argument("--warmup", type=float, default=None, help="unmeasured seconds first [2; --quick: 1]")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=1, help="rounds; the order of clients alternates [1]")
    parser.add_argument(
        "--clients", default="shipyard-h1,aiohttp,httpx", help="comma-separated: shipyard-h1, aiohttp, httpx, httpx2"
    )
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--quick", action="store_true", help="3 s per client")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args)
    return run_driver(args)


if __name__ == "__main__":
    sys.exit(main())
