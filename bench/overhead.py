#!/usr/bin/env python3
"""What Shipyard adds on top of a model call: throughput, latency, memory, and whether every call is traced.

    /work/venv/bin/python bench/overhead.py [--duration 20s] [--runs 2] [--warmup 5s] [--quick] [--json FILE]

Measured the way ../shared/anchors/litellm/run.sh measures the LiteLLM proxy, so the figures go side
by side: wrk (one thread) against a fake OpenAI upstream, once directly and once through the gateway.

    CPU 0: the gateway alone          taskset -c 0 shipyard serve --config CFG --host 127.0.0.1 --port P
    CPU 1: wrk and both upstreams     nginx (instant reply) and bench/fake_upstream.py (50 ms reply)

The gateway is configured as in production (SQLite trace store, traces written for every call), with
two features that each have a single ``openai`` route: ``bench`` -> the instant nginx upstream, and
``bench-50ms`` -> the 50 ms upstream. Phases, in this order:

1. memory: gateway RSS (VmRSS) right after /readyz, then after 10,000 and 100,000 requests (wrk at
   c32 on the instant upstream, stopped by bench/wrk_chat.lua once MAX_REQUESTS replies are in; a
   few replies from the last loop turn may count too, so the actual counts are reported);
2. warm-up of each scenario;
3. per run: throughput at c32 (instant upstream) direct vs gateway; latency at c8 and c1 (50 ms
   upstream) direct vs gateway, and the added p50/p99;
4. the trace store: rows in ``traces`` against requests sent through the gateway.

Needs nginx, wrk and taskset (``apt-get update && apt-get install -y nginx-light wrk``) and 2+ CPUs.
Installs nothing. Only talks to 127.0.0.1, on free ports it picks. Every process it starts is stopped
(by pid) on exit, Ctrl-C included; every wait is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_chat.lua"
NGINX_CONF = HERE / "upstream_nginx.conf"
FAKE_UPSTREAM = HERE / "fake_upstream.py"

GATEWAY_CPU = 0
LOAD_CPU = 1  # wrk and the fake upstreams
FAST = "bench"  # feature -> instant nginx upstream
SLOW = "bench-50ms"  # feature -> 50 ms python upstream
TP_CONC, LAT_CONC = 32, 8
MEM_CONC = 32
API_KEY = "sk-bench"
WRK_TIMEOUT = "10s"

TARGETS = {
    "added_p50_ms_c8": 1.0,
    "added_p99_ms_c8": 5.0,
    "gateway_rps_c32": 2000.0,
    "rss_start_mib": 150.0,
    "rss_growth_pct": 10.0,
}

APT_HINT = "apt-get update && apt-get install -y nginx-light wrk"


class BenchError(Exception):
    pass


def log(msg: str = "") -> None:
    print(msg, flush=True)


# -- processes -----------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if this driver dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                    out.append(int(child))
                    out.extend(_descendants(int(child)))
    return out


class Processes:
    """Everything this driver starts, stopped in reverse order by pid (then any child they forked)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], float]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        stop_timeout: float = 5.0,
    ) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as fh:
            proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches only this driver, which stops everything in order
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - this driver runs no threads
            )
        self.procs.append((name, proc, stop_timeout))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int | None:
        for i, (_name, p, timeout) in enumerate(self.procs):
            if p is proc:
                del self.procs[i]
                return _stop(p, timeout)
        return proc.poll()

    def stop_all(self) -> None:
        while self.procs:
            _name, p, timeout = self.procs.pop()
            _stop(p, timeout)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    children = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    for pid in children:  # e.g. the nginx worker, should its master have been killed
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return proc.returncode


# -- small helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seconds(text: str) -> int:
    """'20s', '2m', '20' -> whole seconds (wrk takes whole seconds)."""
    m = re.fullmatch(r"\s*(\d+)\s*(s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 20s or 2m)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    try:
        with _NO_PROXY.open(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def chat_body(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 32,
    }


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def rss_mib(pid: int) -> float:
    return int(proc_status(pid)["VmRSS"].split()[0]) / 1024.0


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_sample(pid: int) -> tuple[float, float, float]:
    """(CPU seconds of the whole process, CPU seconds of its main thread - the event loop -, seconds the
    main thread was ready to run but waiting for its core). See ``stolen``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15 of proc(5))
    main_cpu, main_wait = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[:2]
    return cpu, int(main_cpu) / 1e9, int(main_wait) / 1e9


def stolen(before: tuple[float, float, float], after: tuple[float, float, float]) -> tuple[float, float]:
    """(the gateway's CPU seconds, seconds other processes held its core while its event loop was ready to
    run) between two samples. The event loop also waits while the gateway's own threads (the trace
    writer) run; their CPU time is taken off, so the second figure estimates the noise from outside."""
    cpu, main_cpu, wait = (b - a for a, b in zip(before, after))
    return cpu, max(0.0, wait - max(0.0, cpu - main_cpu))


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def span(values: list[float], fmt: str = "{:.2f}") -> str:
    """'median (min–max)' over the runs, or just the value for one run."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def sh(argv: list[str], env: dict[str, str] | None = None) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return (prefix + " " if prefix else "") + shlex.join(argv)


# -- wrk -----------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    label: str
    target: str  # "direct" | "gateway"
    upstream: str  # "instant" | "50ms"
    concurrency: int
    duration_s: int
    command: str
    total: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    mean: float = 0.0
    max: float = 0.0
    status_ge_400: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    gateway_cpu_s: float | None = None  # the gateway's own CPU time during this run (gateway runs only)
    gateway_cpu_us_per_request: float | None = None
    gateway_core_busy_pct: float | None = None
    gateway_stolen_pct: float | None = None  # % of the run other processes held its core while it was ready
    output: str = ""

    @property
    def errors(self) -> int:
        return self.status_ge_400 + sum(self.socket_errors.values())

    def brief(self) -> str:
        err = (
            f"{self.errors} errors"
            if not self.errors
            else (f"ERRORS: status>=400 {self.status_ge_400}, socket {self.socket_errors}")
        )
        text = (
            f"{self.rps:,.1f} req/s; latency p50 {self.p50:.2f} ms, p90 {self.p90:.2f} ms, p99 {self.p99:.2f} ms, "
            f"mean {self.mean:.2f} ms; {self.total:,} requests in {self.seconds:.1f} s; {err}"
        )
        if self.gateway_cpu_s is not None:
            text += (
                f"\n      gateway: {self.gateway_cpu_us_per_request:,.0f} µs CPU/request, its core "
                f"{self.gateway_core_busy_pct:.0f}% busy with it; other processes held that core "
                f"{self.gateway_stolen_pct:.1f}% of the time while the gateway was ready to run"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "output"}
        d["errors"] = self.errors
        return d


class Wrk:
    def __init__(self, workdir: Path, procs: Processes, paths: dict[str, str]) -> None:
        self.paths = paths
        self.workdir = workdir
        self.procs = procs
        self.n = 0
        self.results: list[WrkResult] = []

    def run(
        self,
        label: str,
        target: str,
        upstream: str,
        url: str,
        model: str,
        concurrency: int,
        duration_s: int,
        *,
        quiet: bool = False,
        gateway_pid: int | None = None,
        max_requests: int | None = None,
    ) -> WrkResult:
        argv = [
            self.paths["taskset"],
            "-c",
            str(LOAD_CPU),
            self.paths["wrk"],
            "-t1",
            f"-c{concurrency}",
            f"-d{duration_s}s",
            "--timeout",
            WRK_TIMEOUT,
            "--latency",
            "-s",
            str(WRK_SCRIPT),
            url,
        ]
        env = {"MODEL": model, "API_KEY": API_KEY}
        if max_requests:
            env["MAX_REQUESTS"] = str(max_requests)  # wrk_chat.lua stops wrk after this many replies
        res = WrkResult(label, target, upstream, concurrency, duration_s, sh(argv, env))
        self.n += 1
        out_path = self.workdir / f"wrk_{self.n:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.txt"
        before = cpu_sample(gateway_pid) if gateway_pid else None
        taken = 0.0
        proc = self.procs.start(f"wrk {label}", argv, out_path, env={**os.environ, **env}, stop_timeout=2)
        try:
            proc.wait(duration_s + 60)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
            raise BenchError(f"wrk did not finish within {duration_s + 60} s: {res.command}") from None
        self.procs.stop(proc)
        if gateway_pid and before:
            try:
                after = cpu_sample(gateway_pid)
            except OSError:
                raise BenchError(f"the gateway (pid {gateway_pid}) exited during: {res.command}") from None
            cpu, taken = stolen(before, after)
            res.gateway_cpu_s = round(cpu, 3)
        res.output = out_path.read_text(errors="replace")
        lat = re.search(r"^BENCH_LATENCY_MS (.*)$", res.output, re.MULTILINE)
        req = re.search(r"^BENCH_REQUESTS (.*)$", res.output, re.MULTILINE)
        if proc.returncode != 0 or not lat or not req:
            raise BenchError(f"wrk failed (exit {proc.returncode}): {res.command}\n{res.output[-2000:]}")
        lv = dict(kv.split("=") for kv in lat.group(1).split())
        rv = dict(kv.split("=") for kv in req.group(1).split())
        res.p50, res.p90, res.p99, res.mean, res.max = (
            float(lv[k]) for k in ("p50", "p90", "p99", "mean", "max")
        )
        res.total, res.seconds, res.rps = int(rv["total"]), float(rv["seconds"]), float(rv["rps"])
        res.status_ge_400 = int(rv["status_ge_400"])
        res.socket_errors = {k: int(rv[k]) for k in ("connect", "read", "write", "timeout") if int(rv[k])}
        if res.gateway_cpu_s is not None:
            res.gateway_cpu_us_per_request = round(res.gateway_cpu_s / max(res.total, 1) * 1e6, 1)
            res.gateway_core_busy_pct = round(res.gateway_cpu_s / res.seconds * 100, 1)
            res.gateway_stolen_pct = round(taken / res.seconds * 100, 1)
        self.results.append(res)
        if not quiet:
            log(f"  [{label}] {res.brief()}")
            log(f"      $ {res.command}")
        return res


# -- the benchmark -------------------------------------------------------------------------------------


def check_tools(args: argparse.Namespace) -> dict[str, str]:
    missing = []
    paths = {}
    for tool in ("nginx", "wrk", "taskset"):
        found = shutil.which(tool) or next(
            (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)), None
        )
        if found:
            paths[tool] = found
        else:
            missing.append(tool)
    if missing:
        raise BenchError(
            f"missing tool(s): {', '.join(missing)}. Install them with:\n    {APT_HINT}\n"
            "(taskset is in util-linux). This script installs nothing itself."
        )
    cpus = os.sched_getaffinity(0)
    if not {GATEWAY_CPU, LOAD_CPU} <= cpus:
        raise BenchError(f"needs CPUs {GATEWAY_CPU} and {LOAD_CPU}; this process may run on {sorted(cpus)}")
    shipyard = args.shipyard or str(Path(sys.executable).parent / "shipyard")
    if not os.access(shipyard, os.X_OK):
        shipyard = shutil.which("shipyard") or ""
    if not shipyard:
        raise BenchError(
            "cannot find the shipyard command; run with the venv's python or pass --shipyard PATH"
        )
    paths["shipyard"] = shipyard
    return paths


def environment(paths: dict[str, str]) -> dict[str, Any]:
    def run(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""

    model = ""
    with contextlib.suppress(OSError):
        model = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "",
        )
    version = run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('shipyard'))"])
    commit = run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "shipyard": f"{version} (git {commit}{', uncommitted changes' if dirty else ''})",
        "python": platform.python_version(),
        "nginx": run([paths["nginx"], "-v"]),
        "wrk": run([paths["wrk"], "-v"]),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def wait_until(
    what: str,
    check: Any,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(
                f"{what}: the process exited with {proc.returncode}\n{tail(log_path) if log_path else ''}"
            )
        try:
            last = check()
            if last:
                return last
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise BenchError(
        f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})"
        + (f"\n{tail(log_path)}" if log_path else "")
    )


def gateway_config(db: Path, port: int, fast_port: int, slow_port: int) -> str:
    owners = "{incidents: bench, changes: bench, evaluation: bench, risk: bench}"
    return f"""# Written by bench/overhead.py. Production defaults except the ports: SQLite traces for every call.
storage: "sqlite:///{db}"
server: {{host: 127.0.0.1, port: {port}}}
providers:
  upstream-instant: {{kind: openai, base_url: "http://127.0.0.1:{fast_port}/v1", api_key: sk-bench-upstream}}
  upstream-50ms: {{kind: openai, base_url: "http://127.0.0.1:{slow_port}/v1", api_key: sk-bench-upstream}}
features:
  {FAST}:
    description: benchmark feature, instant fake upstream (nginx)
    owners: {owners}
    route:
      - {{provider: upstream-instant, model: gpt-4o-mini}}
  {SLOW}:
    description: benchmark feature, fake upstream answering after 50 ms
    owners: {owners}
    route:
      - {{provider: upstream-50ms, model: gpt-4o-mini}}
"""


def count_traces(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT COUNT(*) FROM traces").fetchone()[0]
        by_status = {
            f"{s}/{h}": n
            for s, h, n in con.execute(
                "SELECT status, http_status, COUNT(*) FROM traces GROUP BY status, http_status ORDER BY 3 DESC"
            )
        }
        by_feature = dict(con.execute("SELECT feature, COUNT(*) FROM traces GROUP BY feature"))
        errors = [
            list(r)
            for r in con.execute(
                "SELECT error_type, substr(error_message, 1, 160), COUNT(*) FROM traces WHERE status != 'ok' "
                "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5"
            )
        ]
        attempts = con.execute("SELECT COUNT(*) FROM trace_attempts").fetchone()[0]
        multi = con.execute("SELECT COUNT(*) FROM traces WHERE attempt_count != 1").fetchone()[0]
        lat = con.execute("SELECT AVG(latency_ms) FROM traces WHERE feature = ?", (FAST,)).fetchone()[0]
    finally:
        con.close()
    return {
        "rows": rows,
        "by_status": by_status,
        "by_feature": by_feature,
        "errors": errors,
        "attempt_rows": attempts,
        "traces_without_exactly_one_attempt": multi,
        "mean_recorded_latency_ms_instant": lat,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=seconds, default=None, help="each measured wrk run [20s; --quick: 5s]"
    )
    parser.add_argument("--runs", type=int, default=None, help="measured rounds [2; --quick: 1]")
    parser.add_argument("--warmup", type=seconds, default=None, help="warm-up per scenario [5s; --quick: 2s]")
    parser.add_argument(
        "--quick", action="store_true", help="short validation run: 5s runs, 1 round, 2s warm-ups"
    )
    parser.add_argument(
        "--mem-checkpoints",
        default="10000,100000",
        help="request counts at which to read the gateway's RSS [10000,100000]",
    )
    parser.add_argument(
        "--mem-timeout",
        type=seconds,
        default=seconds("15m"),
        help="give up the memory phase after this long [15m]",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (config, logs, SQLite file, wrk output)"
    )
    parser.add_argument("--shipyard", help="the shipyard command [the one next to this python]")
    args = parser.parse_args(argv)
    duration = args.duration or (5 if args.quick else 20)
    runs = args.runs or (1 if args.quick else 2)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    checkpoints = sorted(int(x) for x in args.mem_checkpoints.split(","))
    if runs < 1 or duration < 1 or len(checkpoints) != 2:
        parser.error("--runs and --duration must be >= 1, --mem-checkpoints two counts")

    signal.signal(
        signal.SIGINT, signal.default_int_handler
    )  # even when started with SIGINT ignored (e.g. `cmd &`)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-bench-"))
    try:
        return _bench(args, duration, runs, warmup, checkpoints, procs, workdir)
    except BenchError as exc:
        log(f"\nerror: {exc}")
        return 1
    except KeyboardInterrupt:
        log("\ninterrupted; stopping everything this script started")
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            log(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(
    args: argparse.Namespace,
    duration: int,
    runs: int,
    warmup: int,
    checkpoints: list[int],
    procs: Processes,
    workdir: Path,
) -> int:
    paths = check_tools(args)
    env = environment(paths)
    results: dict[str, Any] = {
        "environment": env,
        "settings": {
            "duration_s": duration,
            "runs": runs,
            "warmup_s": warmup,
            "mem_checkpoints": checkpoints,
            "gateway_cpu": GATEWAY_CPU,
            "load_cpu": LOAD_CPU,
            "wrk_threads": 1,
            "wrk_timeout": WRK_TIMEOUT,
        },
    }
    log("# Shipyard overhead benchmark")
    for k, v in env.items():
        log(f"{k}: {v}")
    log(
        f"settings: duration {duration}s, runs {runs}, warm-up {warmup}s, memory checkpoints {checkpoints}; "
        f"gateway on CPU {GATEWAY_CPU}, wrk + upstreams on CPU {LOAD_CPU}"
    )
    log(f"work folder: {workdir}")

    # -- upstreams ---------------------------------------------------------------------------------------
    fast_port, slow_port, gw_port = free_port(), free_port(), free_port()
    while len({fast_port, slow_port, gw_port}) < 3:
        slow_port, gw_port = free_port(), free_port()
    nginx_dir = workdir / "nginx"
    nginx_dir.mkdir()
    conf = re.sub(r"listen 127\.0\.0\.1:\d+", f"listen 127.0.0.1:{fast_port}", NGINX_CONF.read_text())
    (nginx_dir / "nginx.conf").write_text(conf)
    nginx_argv = [
        paths["taskset"],
        "-c",
        str(LOAD_CPU),
        paths["nginx"],
        "-p",
        f"{nginx_dir}/",
        "-e",
        "stderr",
        "-c",
        str(nginx_dir / "nginx.conf"),
    ]
    slow_argv = [
        paths["taskset"],
        "-c",
        str(LOAD_CPU),
        sys.executable,
        str(FAKE_UPSTREAM),
        "--port",
        str(slow_port),
        "--delay-ms",
        "50",
    ]
    log("\n## Starting")
    log(f"  instant upstream: $ {sh(nginx_argv)}   (bench/upstream_nginx.conf with port {fast_port})")
    nginx = procs.start("nginx", nginx_argv, workdir / "nginx.log")
    log(f"  50 ms upstream:   $ {sh(slow_argv)}")
    slow = procs.start("fake upstream", slow_argv, workdir / "fake_upstream.log")
    fast_url = f"http://127.0.0.1:{fast_port}/v1/chat/completions"
    slow_url = f"http://127.0.0.1:{slow_port}/v1/chat/completions"
    for name, url, proc, lp in (
        ("the nginx upstream", fast_url, nginx, workdir / "nginx.log"),
        ("the 50 ms upstream", slow_url, slow, workdir / "fake_upstream.log"),
    ):
        wait_until(name, lambda url=url: http("POST", url, chat_body("probe"))[0] == 200, 15, proc, lp)

    # -- gateway -----------------------------------------------------------------------------------------
    db = workdir / "traces.db"
    cfg = workdir / "shipyard.yaml"
    cfg.write_text(gateway_config(db, gw_port, fast_port, slow_port))
    gw_argv = [
        paths["taskset"],
        "-c",
        str(GATEWAY_CPU),
        paths["shipyard"],
        "serve",
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(gw_port),
    ]
    gw_log = workdir / "gateway.log"
    log(f"  gateway:          $ {sh(gw_argv)}")
    t0 = time.monotonic()
    gw_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    gateway = procs.start("gateway", gw_argv, gw_log, env=gw_env, stop_timeout=40)
    base = f"http://127.0.0.1:{gw_port}"

    def ready() -> bool:
        status, _, body = http("GET", base + "/readyz", timeout=2)
        return status == 200 and json.loads(body).get("status") == "ready"

    wait_until("the gateway's /readyz", ready, 60, gateway, gw_log)
    ready_s = time.monotonic() - t0
    affinity = sorted(os.sched_getaffinity(gateway.pid))
    st = proc_status(gateway.pid)
    rss_start = rss_mib(gateway.pid)
    results["gateway"] = {
        "pid": gateway.pid,
        "command": sh(gw_argv),
        "ready_after_s": round(ready_s, 2),
        "cpu_affinity": affinity,
        "threads_at_start": int(st["Threads"]),
        "config": cfg.read_text(),
    }
    log(
        f"  gateway pid {gateway.pid} ready after {ready_s:.1f} s, pinned to CPUs {affinity}, {st['Threads']} threads"
    )
    log(f"\n## Memory (gateway VmRSS from /proc/{gateway.pid}/status)")
    log(f"  after start (ready, before any request): {rss_start:.1f} MiB")

    gw_sent = 0  # requests the gateway answered to us (wrk totals + sanity calls)
    gw_runs: list[WrkResult] = []
    sanity = {}
    for feature, upstream_url in ((FAST, fast_url), (SLOW, slow_url)):
        status, headers, body = http("POST", base + "/v1/chat/completions", chat_body(feature), timeout=10)
        gw_sent += 1
        direct = http("POST", upstream_url, chat_body(feature))[2]
        ok = (
            status == 200
            and json.loads(body).get("object") == "chat.completion"
            and "x-shipyard-trace-id" in headers
        )
        sanity[feature] = {
            "status": status,
            "trace_id": headers.get("x-shipyard-trace-id"),
            "route": headers.get("x-shipyard-route"),
            "body": body.decode(errors="replace")[:600],
        }
        log(
            f"  sanity {feature}: HTTP {status}, route {headers.get('x-shipyard-route')}, "
            f"trace {headers.get('x-shipyard-trace-id')}, {len(body)} bytes (direct: {len(direct)} bytes)"
        )
        if not ok:
            raise BenchError(
                f"the gateway's answer for {feature} is not a 200 chat.completion: {body[:500]!r}"
                f"\n{tail(gw_log)}"
            )
    results["sanity"] = sanity

    wrk = Wrk(workdir, procs, paths)
    gw_url = base + "/v1/chat/completions"

    # -- memory: RSS after N requests ------------------------------------------------------------------------
    mem = {"rss_start_mib": round(rss_start, 1), "checkpoints": []}
    sent = 0
    deadline = time.monotonic() + args.mem_timeout
    log(
        f"  driving the instant upstream through the gateway at c{MEM_CONC}; wrk stops itself after the requests "
        "needed to reach each checkpoint (MAX_REQUESTS; -d is only an upper bound):"
    )
    for checkpoint in checkpoints:
        for _ in range(5):  # bounded: another pass only if wrk hit its -d bound before the count
            remaining = checkpoint - sent
            if remaining <= 0:
                break
            left = deadline - time.monotonic()
            if left < 2:
                raise BenchError(
                    f"memory phase: only {sent:,} requests after {args.mem_timeout} s (--mem-timeout)"
                )
            bound = int(max(1, min(left, remaining / 100.0 + 30)))  # as if the gateway did only 100 req/s
            r = wrk.run(
                f"memory to {checkpoint}",
                "gateway",
                "instant",
                gw_url,
                FAST,
                MEM_CONC,
                bound,
                quiet=True,
                gateway_pid=gateway.pid,
                max_requests=remaining,
            )
            gw_runs.append(r)
            sent += r.total
            log(
                f"    {r.total:>7,} requests in {r.seconds:.1f} s ({r.rps:,.0f} req/s, {r.errors} errors; "
                f"{r.gateway_cpu_us_per_request:,.0f} µs CPU/request, core taken by others {r.gateway_stolen_pct:.0f}%) "
                f"-> {sent:,} so far\n        $ {r.command}"
            )
        else:
            raise BenchError(f"memory phase: checkpoint {checkpoint} not reached in 5 wrk runs")
        time.sleep(1.0)  # let the trace writer flush its batch, so every checkpoint is read the same way
        value = rss_mib(gateway.pid)
        mem["checkpoints"].append(
            {"requests": sent, "requests_incl_sanity": sent + gw_sent, "rss_mib": round(value, 1)}
        )
        log(f"  after {sent:,} requests (checkpoint {checkpoint:,}): {value:.1f} MiB")
    gw_sent += sent
    (a, b) = mem["checkpoints"]
    mem["growth_pct"] = round((b["rss_mib"] - a["rss_mib"]) / a["rss_mib"] * 100.0, 2)
    log(
        f"  growth {a['requests']:,} -> {b['requests']:,} requests: {b['rss_mib'] - a['rss_mib']:+.1f} MiB "
        f"({mem['growth_pct']:+.1f}%)"
    )
    results["memory"] = mem

    # -- warm-up ---------------------------------------------------------------------------------------------
    scen = {
        ("direct", "instant"): (fast_url, FAST),
        ("gateway", "instant"): (gw_url, FAST),
        ("direct", "50ms"): (slow_url, SLOW),
        ("gateway", "50ms"): (gw_url, SLOW),
    }
    if warmup:
        log(f"\n## Warm-up ({warmup}s at c{TP_CONC} per scenario)")
        for (target, upstream), (url, model) in scen.items():
            r = wrk.run(
                f"warm-up {target} {upstream}",
                target,
                upstream,
                url,
                model,
                TP_CONC,
                warmup,
                gateway_pid=gateway.pid if target == "gateway" else None,
            )
            if target == "gateway":
                gw_sent += r.total
                gw_runs.append(r)

    # -- measured runs ---------------------------------------------------------------------------------------
    per_run: list[dict[str, Any]] = []
    measured: list[WrkResult] = []  # the gateway's measured runs (not memory, not warm-up)
    for run in range(1, runs + 1):
        log(f"\n## Run {run}/{runs}")
        row: dict[str, Any] = {"run": run}
        for mode, conc, upstream in (
            ("throughput", TP_CONC, "instant"),
            ("latency", LAT_CONC, "50ms"),
            ("latency", 1, "50ms"),
        ):
            pair = {}
            for target in ("direct", "gateway"):
                url, model = scen[(target, upstream)]
                r = wrk.run(
                    f"{mode} c{conc} {upstream} {target} run{run}",
                    target,
                    upstream,
                    url,
                    model,
                    conc,
                    duration,
                    gateway_pid=gateway.pid if target == "gateway" else None,
                )
                pair[target] = r
                if target == "gateway":
                    gw_sent += r.total
                    gw_runs.append(r)
                    measured.append(r)
            d, g = pair["direct"], pair["gateway"]
            row[f"gateway_stolen_pct_{mode}_c{conc}"] = g.gateway_stolen_pct
            if mode == "throughput":
                row["rps_direct_c32"], row["rps_gateway_c32"] = d.rps, g.rps
                row["gateway_cpu_us_per_request_c32"] = g.gateway_cpu_us_per_request
                row["gateway_core_busy_pct_c32"] = g.gateway_core_busy_pct
                log(
                    f"  => throughput c{conc}: direct {d.rps:,.0f} req/s, gateway {g.rps:,.0f} req/s "
                    f"({g.rps / d.rps * 100:.1f}% of direct)"
                )
            else:
                key = f"c{conc}"
                for q in ("p50", "p90", "p99", "mean"):
                    row[f"added_{q}_ms_{key}"] = round(getattr(g, q) - getattr(d, q), 3)
                    row[f"{q}_ms_{key}_direct"], row[f"{q}_ms_{key}_gateway"] = getattr(d, q), getattr(g, q)
                log(
                    f"  => added latency c{conc} (50 ms upstream): p50 {g.p50 - d.p50:+.2f} ms "
                    f"({d.p50:.2f} -> {g.p50:.2f}), p99 {g.p99 - d.p99:+.2f} ms ({d.p99:.2f} -> {g.p99:.2f})"
                )
        row["rss_mib_after_run"] = round(rss_mib(gateway.pid), 1)
        per_run.append(row)
    results["runs"] = per_run
    rss_after_load = rss_mib(gateway.pid)
    st = proc_status(gateway.pid)
    results["gateway"].update(
        {
            "rss_after_load_mib": round(rss_after_load, 1),
            "vmhwm_mib": round(int(st["VmHWM"].split()[0]) / 1024, 1),
            "threads_after_load": int(st["Threads"]),
        }
    )

    # -- traces ----------------------------------------------------------------------------------------------
    log("\n## Trace store")
    inflight_bound = sum(r.concurrency for r in gw_runs)  # wrk stops with up to c calls still in the gateway
    t1 = time.monotonic()
    last = -1
    stable_since = time.monotonic()
    while time.monotonic() - t1 < 30:  # wait for the writer to catch up: count stops moving for 2 s
        n = count_traces(db)["rows"]
        if n != last:
            last, stable_since = n, time.monotonic()
        elif time.monotonic() - stable_since >= 2 and n >= gw_sent:
            break
        time.sleep(0.5)
    live = count_traces(db)
    log(
        f"  while running: {live['rows']:,} rows in traces (waited {time.monotonic() - t1:.1f} s for the writer)"
    )
    log(f"  stopping the gateway (SIGTERM, it flushes pending traces): $ kill -TERM {gateway.pid}")
    code = procs.stop(gateway)
    final = count_traces(db)
    gw_errors = {
        "status_ge_400": sum(r.status_ge_400 for r in gw_runs),
        "socket": sum(sum(r.socket_errors.values()) for r in gw_runs),
    }
    log_text = gw_log.read_text(errors="replace")
    problems = [ln for ln in log_text.splitlines() if re.search(r"ERROR|CRITICAL|Traceback|WARNING", ln)]
    traces = {
        "requests_sent": gw_sent,
        "rows_while_running": live["rows"],
        "rows_after_stop": final["rows"],
        "max_extra_rows_from_calls_in_flight_when_wrk_stopped": inflight_bound,
        "complete": gw_sent <= final["rows"] <= gw_sent + inflight_bound,
        "gateway_exit_code": code,
        "gateway_log_problem_lines": len(problems),
        "gateway_log_first_problems": problems[:10],
        "gateway_wrk_errors": gw_errors,
        **final,
    }
    results["traces"] = traces
    log(f"  requests answered by the gateway (wrk totals + {2} sanity calls): {gw_sent:,}")
    log(
        f"  rows in traces after stop: {final['rows']:,} (expected {gw_sent:,} .. {gw_sent + inflight_bound:,}: "
        f"wrk does not count the calls it abandons when it stops)   by status/http: {final['by_status']}"
    )
    log(
        f"  trace_attempts rows: {final['attempt_rows']:,}; traces with != 1 attempt: "
        f"{final['traces_without_exactly_one_attempt']:,}; gateway exit code {code}"
    )
    if final["errors"]:
        log(f"  non-ok traces: {final['errors']}")
    log(
        f"  wrk saw from the gateway: {gw_errors['status_ge_400']} replies >= 400, {gw_errors['socket']} socket errors"
    )
    log(
        f"  gateway log: {len(problems)} warning/error line(s)"
        + ("".join(f"\n    {p}" for p in problems[:10]))
    )
    env["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]

    # -- summary ---------------------------------------------------------------------------------------------
    def col(key: str) -> list[float]:
        return [r[key] for r in per_run]

    s = {
        key: median(col(key))
        for key in (
            "rps_direct_c32",
            "rps_gateway_c32",
            "added_p50_ms_c8",
            "added_p99_ms_c8",
            "added_p50_ms_c1",
            "added_p99_ms_c1",
            "gateway_cpu_us_per_request_c32",
        )
    }
    s.update(rss_start_mib=mem["rss_start_mib"], rss_growth_pct=mem["growth_pct"])
    s["worst_gateway_stolen_pct"] = worst = max(r.gateway_stolen_pct or 0.0 for r in measured)
    verdict = {
        "added_p50_ms_c8": s["added_p50_ms_c8"] < TARGETS["added_p50_ms_c8"],
        "added_p99_ms_c8": s["added_p99_ms_c8"] < TARGETS["added_p99_ms_c8"],
        "gateway_rps_c32": s["rps_gateway_c32"] >= TARGETS["gateway_rps_c32"],
        "rss_start_mib": s["rss_start_mib"] < TARGETS["rss_start_mib"],
        "rss_growth_pct": abs(s["rss_growth_pct"]) <= TARGETS["rss_growth_pct"],
        "traces_complete": traces["complete"],
        "no_gateway_errors": gw_errors["status_ge_400"] == 0 and gw_errors["socket"] == 0,
    }
    results["summary"], results["verdict"], results["targets"] = s, verdict, TARGETS
    results["wrk_runs"] = [r.to_dict() for r in wrk.results]

    def row(*cells: str) -> str:
        return "| " + " | ".join(cells) + " |"

    def ok(key: str) -> str:
        return "PASS" if verdict[key] else "FAIL"

    t = TARGETS
    a, b = mem["checkpoints"]
    ms, added, n0 = "{:.2f}", "{:+.2f}", "{:,.0f}"
    how = f"median of {runs} runs (min–max)" if runs > 1 else "1 run"
    load = f"loadavg {' '.join(env['loadavg_start'])} at start, {' '.join(env['loadavg_end'])} at end"
    busy = median(col("gateway_core_busy_pct_c32"))
    lines = [
        "",
        f"## Summary ({how}; {duration}s per wrk run; {load})",
        "",
        row("Figure", "Direct", "Through Shipyard", "Added", "Target", "Verdict"),
        row(*["---"] * 6),
        row(
            "req/s @c32, instant upstream, gateway on 1 core",
            span(col("rps_direct_c32"), n0),
            span(col("rps_gateway_c32"), n0),
            "",
            f">= {t['gateway_rps_c32']:,.0f}",
            ok("gateway_rps_c32"),
        ),
    ]
    for q, conc in (("p50", 8), ("p99", 8), ("p50", 1), ("p99", 1)):
        key = f"added_{q}_ms_c{conc}"
        target, verdict_cell = (f"< {t[key]:g} ms added", ok(key)) if key in t else ("(none)", "")
        lines.append(
            row(
                f"{q} ms @c{conc}, 50 ms upstream",
                span(col(f"{q}_ms_c{conc}_direct"), ms),
                span(col(f"{q}_ms_c{conc}_gateway"), ms),
                span(col(key), added),
                target,
                verdict_cell,
            )
        )
    lines += [
        row(
            f"gateway CPU µs per request @c32 (its core {busy:.0f}% busy)",
            "",
            span(col("gateway_cpu_us_per_request_c32"), n0),
            "",
            "(1e6 / this = req/s on a free core)",
            "",
        ),
        row(
            "RSS after start, MiB",
            "",
            f"{rss_start:.1f}",
            "",
            f"< {t['rss_start_mib']:g}",
            ok("rss_start_mib"),
        ),
        row(
            f"RSS after {a['requests']:,} / {b['requests']:,} requests, MiB",
            "",
            f"{a['rss_mib']:.1f} / {b['rss_mib']:.1f}",
            f"{mem['growth_pct']:+.1f}%",
            f"within ±{t['rss_growth_pct']:g}%",
            ok("rss_growth_pct"),
        ),
        row(
            "RSS after all load, MiB (VmHWM)",
            "",
            f"{rss_after_load:.1f} ({results['gateway']['vmhwm_mib']:.1f})",
            "",
            "",
            "",
        ),
        row(
            "traces recorded / requests sent",
            "",
            f"{final['rows']:,} / {gw_sent:,}",
            "",
            f"all (+ <= {inflight_bound:,} in flight)",
            ok("traces_complete"),
        ),
        row(
            "gateway replies >= 400 / socket errors (wrk)",
            "",
            f"{gw_errors['status_ge_400']} / {gw_errors['socket']}",
            "",
            "0 / 0",
            ok("no_gateway_errors"),
        ),
        "",
        f"Other processes held the gateway's core while it was ready to run {worst:.1f}% of the time in the worst "
        "measured run"
        + (" -- the machine was not quiet: take these figures as indicative only." if worst > 2 else "."),
        "",
        "In the anchors' format (../shared/anchors/README.md):",
        "",
        row(
            "", "req/s @c32, instant upstream", "added p50 / p99 @c8, 50 ms upstream", "added p50 @c1", "RSS"
        ),
        row(*["---"] * 5),
        row(
            "Shipyard",
            span(col("rps_gateway_c32"), n0),
            f"{span(col('added_p50_ms_c8'), added)} / {span(col('added_p99_ms_c8'), added)} ms",
            f"{span(col('added_p50_ms_c1'), added)} ms",
            f"{rss_start:.0f} MiB idle, {rss_after_load:.0f} MiB after load",
        ),
    ]
    log("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
