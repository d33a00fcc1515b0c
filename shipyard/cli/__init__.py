"""The ``shipyard`` command: a thin layer over the library."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.table import Table

from ..config import default_config_path, load_config
from ..errors import ConfigError, ShipyardError

app = typer.Typer(
    name="shipyard",
    help="Shipyard: the production layer for AI features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, grep) is not cut at 80 columns: trace ids must stay whole.
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file [default: $SHIPYARD_CONFIG, then ./shipyard.yaml]", show_default=False),
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _gateway(config: Path | None) -> Any:
    from ..runtime import Gateway

    path = default_config_path(config)
    try:
        return Gateway(load_config(path))
    except ConfigError as exc:
        _config_failure(exc)


def _config_failure(exc: ConfigError, code: int = 2) -> NoReturn:
    err.print(f"[bold red]invalid config[/] ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):")
    for problem in exc.problems:
        err.print("  " + ConfigError.format_problem(*problem), highlight=False, markup=False)
    raise typer.Exit(code)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: server.host, 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: server.port, 8787]")] = None,
) -> None:
    """Run the gateway over HTTP (OpenAI-compatible API, feature API, health, traces)."""
    from ..server import serve as run_server

    gateway = _gateway(config)
    try:
        asyncio.run(gateway.check_providers())
    except ConfigError as exc:
        _config_failure(exc)
    spec = gateway.config.model.server
    host, port = host or spec.host, port or spec.port
    features = ", ".join(gateway.features)
    err.print(f"shipyard serving {len(gateway.features)} feature(s) ({features}) on http://{host}:{port}/v1", highlight=False)
    try:
        run_server(gateway, host, port)
    except ShipyardError as exc:
        fail(exc.message)


@app.command()
def check(config: ConfigOption = None) -> None:
    """Validate a config; exits 1 naming the file, line and field of each problem."""
    path = default_config_path(config)
    try:
        from ..runtime import Gateway

        gateway = Gateway(load_config(path))
        asyncio.run(gateway.check_providers())
    except ConfigError as exc:
        _config_failure(exc, code=1)
    routes = sum(len(f.spec.route) for f in gateway.features.values())
    out.print(
        f"[green]ok[/] {path}: {len(gateway.providers)} provider(s), {len(gateway.features)} feature(s), {routes} route(s)",
        highlight=False,
    )


def _store(config: Path | None) -> Any:
    from ..store import Store

    path = default_config_path(config)
    try:
        cfg = load_config(path)
        store = Store(cfg.model.storage)
        store.migrate()
    except ConfigError as exc:
        _config_failure(exc)
    except Exception as exc:  # noqa: BLE001 - a storage that cannot be reached is a clear, one-line error
        fail(f"cannot open storage: {exc}")
    return store


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def traces(
    config: ConfigOption = None,
    feature: Annotated[str | None, typer.Option("--feature", "-f", help="Only this feature")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="How many, newest first")] = 20,
    json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table")] = False,
) -> None:
    """List recent calls, newest first."""
    rows = _store(config).list_traces(feature=feature, limit=limit)
    if json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    table = Table()
    for name in ("trace id", "when", "feature", "op", "status", "route", "attempts", "latency ms", "error"):
        table.add_column(name, no_wrap=name in ("trace id", "when", "route"), overflow="fold")
    for r in rows:
        table.add_row(
            r["trace_id"], _when(r["started_at"]), r["feature"], r["op"] + (" (stream)" if r["stream"] else ""),
            r["status"], r["route"] or "-", str(r["attempt_count"]), f"{r['latency_ms']:.1f}", r["error_type"] or "",
        )
    out.print(table)
    if not rows:
        out.print("no traces yet" + (f" for feature {feature!r}" if feature else ""))


@app.command()
def trace(
    trace_id: Annotated[str, typer.Argument(help="The id from x-shipyard-trace-id or `shipyard traces`")],
    config: ConfigOption = None,
    json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
) -> None:
    """Show one call with all its attempts."""
    record = _store(config).get_trace(trace_id)
    if record is None:
        fail(f"no trace {trace_id!r} in this storage", code=1)
    if json:
        sys.stdout.write(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for key in ("trace_id", "feature", "op", "stream", "status", "route", "http_status", "latency_ms",
                "prompt_tokens", "completion_tokens", "error_type", "error_message"):
        value = record.get(key)
        if value is not None:
            out.print(f"[bold]{key:>18}[/] {value}", highlight=False)
    out.print(f"[bold]{'started':>18}[/] {_when(record['started_at'])}")
    table = Table("#", "at ms", "provider", "model", "outcome", "latency ms", "status", "error")
    for i, a in enumerate(record["attempts"]):
        table.add_row(
            str(i + 1), f"{a['offset_ms']:.1f}", a["provider"], a["model"], a["outcome"], f"{a['latency_ms']:.1f}",
            str(a["status_code"] or ""), f"{a['error_type'] or ''} {a['error_message'] or ''}".strip(),
        )
    out.print(table)
    for event in record.get("events") or []:
        out.print(f"  event {event}", highlight=False, markup=False)


def main() -> None:
    app()
