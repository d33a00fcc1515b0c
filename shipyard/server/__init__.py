"""Serving the Gateway over HTTP with uvicorn."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from ..runtime import Gateway
from .app import create_app

__all__ = ["create_app", "serve"]


class _Server(uvicorn.Server):
    """uvicorn, but /readyz turns 503 the moment a stop signal arrives, while in-flight calls finish."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.gateway.draining = True
        super().handle_exit(sig, frame)
        # uvicorn re-raises a captured signal after shutdown, so the process would die "by SIGTERM".
        # A drained, flushed stop is a success: exit 0.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def serve(gateway: Gateway, host: str, port: int, *, log_level: str = "warning") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step is noise
    config = uvicorn.Config(
        create_app(gateway, freeze_heap=True),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=gateway.config.model.server.drain_timeout_s,  # type: ignore[arg-type]
        backlog=4096,
        proxy_headers=False,  # nothing reads the client address yet; saves a middleware per request
    )
    _Server(config, gateway).run()
