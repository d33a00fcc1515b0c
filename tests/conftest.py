from __future__ import annotations

import os
import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from shipyard import Gateway, load_config
from shipyard.server import create_app
from tests.fakes import FakeUpstream

OWNERS = "{incidents: oncall, changes: ml-team, evaluation: ml-team, risk: ana}"


@pytest.fixture(scope="session")
def primary() -> Iterator[FakeUpstream]:
    up = FakeUpstream.start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def backup() -> Iterator[FakeUpstream]:
    up = FakeUpstream.start()
    yield up
    up.stop()


@pytest.fixture(autouse=True)
def _reset_fakes(request: pytest.FixtureRequest) -> None:
    from tests.fakes import Reply

    for name in ("primary", "backup"):
        if name in request.fixturenames:
            up = request.getfixturevalue(name)
            up.script()
            up.default = Reply()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a YAML config (dedented) into the test's folder; storage defaults to a SQLite file there,
    and auth to none (the tests of keys say ``auth: keys``)."""

    def write(text: str, name: str = "shipyard.yaml") -> Path:
        text = textwrap.dedent(text)
        if "storage:" not in text:
            text = f"storage: sqlite:///{tmp_path}/traces.db\n" + text
        if "\nauth:" not in "\n" + text:
            text = text.rstrip() + "\nauth: none\n"
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def two_route_config(primary: FakeUpstream, backup: FakeUpstream, extra: str = "", feature_extra: str = "") -> str:
    return f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: sk-primary}}
      backup: {{kind: openai, base_url: "{backup.url}", api_key: none}}
    features:
      triage:
        owners: {OWNERS}
        deadline_s: 5
        backoff: {{base_s: 0.01, max_s: 0.05}}
        route:
          - {{provider: primary, model: gpt-4o-mini, timeout_s: 1, retries: 2}}
          - {{provider: backup, model: small-model, timeout_s: 1, retries: 1}}
{textwrap.indent(textwrap.dedent(feature_extra), "        ")}
    {extra}
    """


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedGateway:
    """A real uvicorn server on 127.0.0.1, in a thread, serving a Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.port = free_port()
        config = uvicorn.Config(create_app(gateway), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.clients: list[Any] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedGateway:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(15)

    def client(self, **kwargs: Any) -> Any:
        """An OpenAI SDK client for this server, closed when the server stops (an SDK client left to the
        garbage collector leaks its pooled socket: a ResourceWarning, an error under -W error)."""
        import openai

        client = openai.OpenAI(base_url=self.base_url + "/v1", api_key="unused", max_retries=0, **kwargs)
        self.clients.append(client)
        return client


@pytest.fixture
def serve() -> Iterator[Callable[[Path], ServedGateway]]:
    started: list[ServedGateway] = []

    def run(config_path: Path, **gateway_kwargs: Any) -> ServedGateway:
        served = ServedGateway(Gateway(load_config(config_path), **gateway_kwargs)).__enter__()
        started.append(served)
        return served

    yield run
    for s in started:
        s.__exit__(None, None, None)


POSTGRES_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("SHIPYARD_TEST_REDIS_URL")


@pytest.fixture
def redis_url() -> str:
    """The Redis server of the machine (CI sets SHIPYARD_TEST_REDIS_URL). Tests isolate themselves with
    a unique key prefix (see ``state_prefix``), so they never flush the database."""
    if not REDIS_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must set SHIPYARD_TEST_REDIS_URL: the shared-state tests run on Redis too")
        pytest.skip("SHIPYARD_TEST_REDIS_URL is not set (CI sets it; .ci/run shows how)")
    return REDIS_URL


@pytest.fixture
def state_prefix() -> str:
    return f"shipyard-test:{uuid.uuid4().hex[:12]}:"
