"""The shipyard command, run as a real subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from shipyard.store import Store
from tests.conftest import free_port, two_route_config
from tests.fakes import Fail, Reply

SHIPYARD = [sys.executable, "-m", "shipyard"]


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, **(env or {})}
    full_env.pop("SHIPYARD_CONFIG", None) if env is None or "SHIPYARD_CONFIG" not in env else None
    return subprocess.run([*SHIPYARD, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=full_env)


@pytest.fixture
def config_path(primary, backup, write_config):
    return write_config(two_route_config(primary, backup))


def test_check_accepts_a_good_config(config_path):
    result = run("check", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    assert "2 provider(s), 1 feature(s), 2 route(s)" in result.stdout


def test_check_names_file_line_and_field(config_path):
    text = config_path.read_text().replace("timeout_s: 1, retries: 2", "timeout_s: 1, retries: 2, retires: 3")
    config_path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "retires" in l)
    result = run("check", "--config", str(config_path))
    assert result.returncode == 1
    assert f"{config_path}:{line}: features.triage.route.0.retires: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_a_missing_env_var_and_a_missing_file(tmp_path, config_path):
    text = config_path.read_text().replace("api_key: sk-primary", "api_key: \"${SECRET_KEY_NOT_SET}\"")
    config_path.write_text(text)
    result = run("check", "--config", str(config_path))
    assert result.returncode == 1 and "SECRET_KEY_NOT_SET is not set" in result.stderr
    result = run("check", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "config file not found" in result.stderr


def test_config_defaults_to_env_then_cwd(config_path, tmp_path):
    assert run("check", env={"SHIPYARD_CONFIG": str(config_path)}).returncode == 0
    assert run("check", cwd=config_path.parent).returncode == 0  # ./shipyard.yaml
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("check", cwd=empty)
    assert result.returncode == 1 and "shipyard.yaml" in result.stderr


def test_traces_and_trace(config_path, primary, backup, serve):
    served = serve(config_path)
    primary.script(Fail(503), Reply("ok"))
    raw = served.client().chat.completions.with_raw_response.create(model="triage", messages=[{"role": "user", "content": "x"}])
    trace_id = raw.headers["x-shipyard-trace-id"]
    served.__exit__(None, None, None)
    listing = run("traces", "--config", str(config_path), "--feature", "triage", "--limit", "5")
    assert listing.returncode == 0 and trace_id in listing.stdout and "primary/gpt-4o-mini" in listing.stdout
    assert run("traces", "--config", str(config_path), "--feature", "other").stdout.count(trace_id) == 0
    shown = run("trace", trace_id, "--config", str(config_path))
    assert shown.returncode == 0
    assert "provider_unavailable" in shown.stdout and "503" in shown.stdout and "ok" in shown.stdout
    as_json = run("trace", trace_id, "--json", "--config", str(config_path))
    assert '"status_code": 503' in as_json.stdout
    missing = run("trace", "0" * 32, "--config", str(config_path))
    assert missing.returncode == 1 and "no trace" in missing.stderr


def test_serve_drains_in_flight_calls_and_flushes_every_trace_on_sigterm(config_path, primary):
    port = free_port()
    proc = subprocess.Popen([*SHIPYARD, "serve", "--config", str(config_path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "not ready"
            time.sleep(0.05)
        assert httpx.get(base + "/healthz").json() == {"status": "ok"}
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        for _ in range(20):
            client.chat.completions.create(model="triage", messages=[{"role": "user", "content": "quick"}])
        primary.default = Reply("slow but complete", delay_s=0.7)
        results: list[str] = []

        def slow() -> None:
            r = client.chat.completions.create(model="triage", messages=[{"role": "user", "content": "slow"}])
            results.append(r.choices[0].message.content)

        threads = [threading.Thread(target=slow) for _ in range(5)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the five calls are in flight
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(10)
        assert results == ["slow but complete"] * 5
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    storage = textwrap.dedent(config_path.read_text()).splitlines()[0].split(" ", 1)[1]
    store = Store(storage)
    assert store.count_traces() == 25
    store.close()


def test_serve_with_a_bad_config_fails_at_start(config_path):
    config_path.write_text(config_path.read_text().replace("provider: backup", "provider: nowhere"))
    result = run("serve", "--config", str(config_path), "--port", str(free_port()))
    assert result.returncode == 2
    assert "features.triage.route.1.provider: names no provider: 'nowhere'" in result.stderr


def test_check_and_serve_report_an_unimportable_python_target(config_path):
    text = config_path.read_text().replace(
        "providers:\n", "providers:\n  local: {kind: python, target: \"no_such_module_xyz:answer\"}\n", 1
    )
    config_path.write_text(text)
    for args in (("check",), ("serve", "--port", str(free_port()))):
        result = run(*args, "--config", str(config_path))
        assert result.returncode in (1, 2), result.stderr
        assert "providers.local: cannot import 'no_such_module_xyz'" in result.stderr
        assert "Traceback" not in result.stderr
