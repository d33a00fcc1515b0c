#!/usr/bin/env python3
"""What the cost, latency and access stages add to a call: keys, rate limits, budgets and the exact cache,
with in-process (memory) state and with Redis state, beside the bare pipeline, in one run.

    /work/venv/bin/python bench/stages.py [--seconds 8] [--redis redis://127.0.0.1:6379/0] [--json FILE]

Each scenario is one `shipyard serve` process pinned to CPU 0 (`taskset -c 0`); the fake upstream
(bench/fake_upstream.py, instant replies) and this driver's load share CPU 1. The load is Shipyard's own
HTTP/1.1 client (bench/http_clients.py shows it is the cheapest at hand), one coroutine per connection.
Every request carries a unique message, so with the cache on every call is a miss that pays for the
lookup and the store; the `cache hit` scenario repeats one request instead. For each scenario:

- latency at concurrency 1 and 8 (p50, p99 in ms), and the difference against `bare`;
- throughput at concurrency 32 (requests/s) and the gateway's CPU microseconds per request.

Scenarios: bare (auth none, no limits), keys+limits+budget+cache on memory state, the same on Redis
state, and the exact-cache hit path (memory). Every response must be HTTP 200: a refusal (a limit
that bit) fails the benchmark. Installs nothing; talks to 127.0.0.1 only; stops what it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from overhead import Processes, cpu_sample, free_port, log, wait_until  # noqa: E402

OWNERS = "{incidents: bench, changes: bench, evaluation: bench, risk: bench}"
LIMITED = """
    limits: {rpm: 100000000, tpm: 10000000000}
    budget: {usd_per_day: 1000000, mode: hard}
    cache: {exact: {ttl_s: 600}}"""


def config(db: Path, upstream: int, *, auth: str, state: str, prefix: str, limited: bool) -> str:
    return f"""storage: "sqlite:///{db}"
auth: {auth}
state: {{url: "{state}", prefix: "{prefix}"}}
pricing:
  upstream/gpt-4o-mini: {{input: 0.15, output: 0.60}}
tenants:
  bench: {{limits: {{rpm: 100000000}}, budget: {{usd_per_day: 1000000}}}}
providers:
  upstream: {{kind: openai, base_url: "http://127.0.0.1:{upstream}/v1", api_key: none}}
features:
  bench:
    owners: {OWNERS}
    route:
      - {{provider: upstream, model: gpt-4o-mini}}{LIMITED if limited else ""}
"""


async def load(port: int, key: str, concurrency: int, seconds: float, *, repeat: bool) -> dict[str, Any]:
    import orjson

    from shipyard.providers._h1 import Pool

    pool = Pool(f"http://127.0.0.1:{port}", max_idle=1000)
    head = f"Content-Type: application/json\r\nAuthorization: Bearer {key}\r\n".encode("latin-1")
    latencies: list[float] = []
    failures: dict[int, int] = {}
    counter = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal counter
        while time.monotonic() < stop:
            counter += 1
            text = "Say hello." if repeat else f"Say hello, request {counter} {uuid.uuid4().hex[:8]}."
            body = orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": text}], "max_tokens": 32})
            t0 = time.perf_counter()
            resp = await pool.request("POST", "/v1/chat/completions", head, body)
            await resp.read()
            latencies.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200:
                failures[resp.status] = failures.get(resp.status, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.monotonic() - t0
    await pool.aclose()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {"n": len(latencies), "rps": len(latencies) / elapsed, "p50": q[49], "p99": q[98], "failures": failures}


def run_scenario(name: str, cfg: str, workdir: Path, procs: Processes, seconds: float, *, keys: bool,
                 repeat: bool) -> dict[str, Any]:
    path = workdir / f"{name.replace(' ', '_')}.yaml"
    path.write_text(cfg)
    shipyard = str(Path(sys.executable).with_name("shipyard"))
    key = "none"
    if keys:
        out = subprocess.run([shipyard, "keys", "create", "--tenant", "bench", "--config", str(path),
                              "--rpm", "100000000", "--usd-per-day", "1000000"],
                             capture_output=True, text=True, check=True, timeout=60)
        key = out.stdout.strip()
    port = free_port()
    argv = ["taskset", "-c", "0", shipyard, "serve", "--config", str(path), "--port", str(port)]
    log_path = workdir / f"{name.replace(' ', '_')}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    proc = procs.start(name, argv, log_path, env=env, stop_timeout=30)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    wait_until(f"{name} /readyz", lambda: opener.open(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200,
               60, proc, log_path)
    asyncio.run(load(port, key, 8, 2.0, repeat=repeat))  # warm-up
    out: dict[str, Any] = {}
    for conc in (1, 8):
        out[f"c{conc}"] = asyncio.run(load(port, key, conc, seconds, repeat=repeat))
    before = cpu_sample(proc.pid)
    out["c32"] = asyncio.run(load(port, key, 32, seconds, repeat=repeat))
    after = cpu_sample(proc.pid)
    out["cpu_us_per_request"] = (after[0] - before[0]) / max(out["c32"]["n"], 1) * 1e6
    procs.stop(proc)
    failures = {k: v for r in (out["c1"], out["c8"], out["c32"]) for k, v in r["failures"].items()}
    if failures:
        raise SystemExit(f"{name}: non-200 answers {failures}; see {log_path}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="each measured phase [8]")
    parser.add_argument("--redis", default=os.environ.get("SHIPYARD_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2:
        log("needs taskset and 2 CPUs")
        return 1
    os.sched_setaffinity(0, {1})  # this driver's load generator shares CPU 1 with the upstream
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-stages-"))
    try:
        up_port = free_port()
        up_log = workdir / "upstream.log"
        up = procs.start("upstream", ["taskset", "-c", "1", sys.executable, str(HERE / "fake_upstream.py"),
                                      "--port", str(up_port), "--delay-ms", "0"], up_log)
        time.sleep(0.5)
        if up.poll() is not None:
            log(f"the fake upstream did not start:\n{up_log.read_text()}")
            return 1
        prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        scenarios = [
            ("bare", dict(auth="none", state="memory", limited=False), False, False),
            ("keys+limits+budget+cache, memory", dict(auth="keys", state="memory", limited=True), True, False),
            ("keys+limits+budget+cache, redis", dict(auth="keys", state=args.redis, limited=True), True, False),
            ("exact cache hits, memory", dict(auth="keys", state="memory", limited=True), True, True),
        ]
        results: dict[str, Any] = {}
        for name, kw, keys, repeat in scenarios:
            db = workdir / f"{len(results)}.db"
            log(f"running: {name}")
            results[name] = run_scenario(name, config(db, up_port, prefix=prefix, **kw), workdir, procs,
                                         args.seconds, keys=keys, repeat=repeat)
        bare = results["bare"]
        log("\n| scenario | p50 c1 ms | p99 c1 ms | p50 c8 ms | p99 c8 ms | added p50 c8 | added p99 c8 |"
            " req/s c32 | CPU µs/req |")
        log("|---|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            log(f"| {name} | {r['c1']['p50']:.2f} | {r['c1']['p99']:.2f} | {r['c8']['p50']:.2f} | "
                f"{r['c8']['p99']:.2f} | {r['c8']['p50'] - bare['c8']['p50']:+.2f} | "
                f"{r['c8']['p99'] - bare['c8']['p99']:+.2f} | {r['c32']['rps']:,.0f} | {r['cpu_us_per_request']:.0f} |")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
