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
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
    # The message quotes what the user typed: it is text, never rich markup ("[/x]" would crash the print).
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
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
    if gateway.config.model.auth == "none":
        err.print(
            "[bold yellow]WARNING: auth is none: this gateway is OPEN. Anyone who can reach "
            f"{host}:{port} can call every feature and read every trace, with no key and no per-key limits. "
            "Set `auth: keys` and create keys with `shipyard keys create` before exposing it.[/]",
            highlight=False,
        )
    state = gateway.config.model.state
    if state.url != "memory":
        err.print(f"shared state: {_redact(state.url)} (on failure: {state.on_failure})", highlight=False)
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
    return _open(config)[1]


def _open(config: Path | None) -> tuple[Any, Any]:
    """The config and its storage (migrated), or a clear one-line failure."""
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
    model = cfg.model
    store.use_key_envs({n: model.retention_of(n).key_env for n in model.features})
    return cfg, store


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _redact(url: str) -> str:
    """A URL as it may be printed: without its password."""
    import re

    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def _duration(option: str, text: str) -> float:
    """``parse_duration`` for an option's value: a bad one is a one-line usage error naming the option."""
    from ..units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _actor() -> str:
    """Who the audit log names for a command: the user running it."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (some containers)
        return f"cli:uid-{os.getuid()}"


keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="The tenant the key's calls are counted for")],
    config: ConfigOption = None,
    features: Annotated[str | None, typer.Option("--features", help="Comma-separated features [default: all]")] = None,
    role: Annotated[str, typer.Option("--role", help="app (calls), owner (+ its tenant's traces), admin")] = "app",
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime, e.g. 30d or 12h [default: never]")] = None,
    name: Annotated[str | None, typer.Option("--name", help="A note: who or what holds the key")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute for this key")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", min=1, help="Tokens per minute for this key")] = None,
    usd_per_day: Annotated[float | None, typer.Option("--usd-per-day", min=0, help="Hard daily budget (USD)")] = None,
    usd_per_month: Annotated[float | None, typer.Option("--usd-per-month", min=0, help="Hard monthly budget")] = None,
) -> None:
    """Create a key and print it once: only a salted hash is stored."""
    from ..access import ROLES, KeyRing

    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)} (got {role!r})")
    # Every option is checked before the storage is touched: a refused command creates nothing.
    lifetime = _duration("--expires", expires) if expires is not None else None
    store = _store(config)
    cfg = load_config(default_config_path(config))  # _store has reported a config that does not load
    wanted = None
    if features is not None:
        from ..units import feature_list

        try:
            wanted = feature_list(features, set(cfg.features))
        except ValueError as exc:
            fail(f"--features: {exc}")
    try:
        key, row = KeyRing(store).create(
            tenant, role=role, features=wanted, expires_in_s=lifetime, name=name,
            rpm=rpm, tpm=tpm, usd_per_day=usd_per_day, usd_per_month=usd_per_month, actor=_actor(),
        )
    except ValueError as exc:
        fail(str(exc))
    sys.stdout.write(key + "\n")
    err.print(
        f"created key {row['key_id']} for tenant {tenant} (role {role}"
        + (f", expires {_when(row['expires_at'])}" if row["expires_at"] else "")
        + "). Store it now: it is not shown again.",
        highlight=False,
        markup=False,
    )
    declared = cfg.model.tenants
    if declared and tenant not in declared:
        # Most likely a typo: the key's calls escape the limits and budgets the config sets per tenant.
        err.print(
            f"note: tenant {tenant!r} is not under tenants: in the config ({', '.join(sorted(declared))}), "
            "so no tenant limits or budget apply to this key",
            highlight=False,
            markup=False,
        )


@keys_app.command("list")
def keys_list(
    config: ConfigOption = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant's keys")] = None,
    json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table")] = False,
) -> None:
    """List keys (never their secrets), with their state and limits."""
    import time

    rows = _store(config).list_keys(tenant=tenant)
    now = time.time()
    for r in rows:
        r["state"] = (
            "revoked" if r["revoked_at"] is not None
            else "expired" if r["expires_at"] is not None and r["expires_at"] <= now
            else "active"
        )
    if json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    table = Table("key id", "tenant", "role", "features", "state", "created", "expires", "limits", "name")
    for r in rows:
        state = r["state"]
        limits = ", ".join(
            f"{label} {r[col]:g}" for col, label in
            (("rpm", "rpm"), ("tpm", "tpm"), ("usd_per_day", "$/day"), ("usd_per_month", "$/month"))
            if r[col] is not None
        )
        # Tenants and names are free text: Text cells, so that "[x]" in them is shown, not parsed as markup.
        table.add_row(
            r["key_id"], Text(r["tenant"]), r["role"],
            Text(",".join(r["features"])) if r["features"] is not None else "all",
            state, _when(r["created_at"]), _when(r["expires_at"]) if r["expires_at"] else "never", limits or "-",
            Text(r["name"] or ""),
        )
    out.print(table)
    if not rows:
        out.print("no keys yet: create one with `shipyard keys create --tenant NAME`")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (from `shipyard keys list`), or the whole key")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: refused everywhere within seconds (each replica re-checks keys every 10 s)."""
    from ..access import PREFIX, KeyRing

    if key_id.startswith(PREFIX):
        key_id = key_id.split("_", 2)[1] if key_id.count("_") >= 2 else key_id
    if not KeyRing(_store(config)).revoke(key_id, actor=_actor()):
        fail(f"no key {key_id!r}; `shipyard keys list` shows the key ids", code=1)
    out.print(f"revoked key {key_id}", highlight=False)


audit_app = typer.Typer(help="The tamper-evident audit log: verify, export.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None) -> None:
    """Walk the hash chain; exit 1 naming the first entry that was edited, removed or reordered."""
    log = _store(config).audit
    broken = log.verify()
    if broken is not None:
        err.print(f"[bold red]{escape(str(broken))}[/]", highlight=False)
        raise typer.Exit(1)
    out.print(f"ok: {log.count()} entries, chain intact", highlight=False)


@audit_app.command("export")
def audit_export(
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option("--since", help="How far back, e.g. 24h, 7d [default: all]")] = None,
) -> None:
    """Write the audit log as JSON Lines, oldest first, each entry with its hashes."""
    import time

    start = time.time() - _duration("--since", since) if since is not None else None
    for entry in _store(config).audit.export(since=start):
        sys.stdout.write(orjson.dumps(entry).decode() + "\n")


@app.command()
def costs(
    config: ConfigOption = None,
    by: Annotated[str, typer.Option("--by", help="feature, tenant, key or model")] = "feature",
    since: Annotated[str, typer.Option("--since", help="How far back, e.g. 24h, 7d, 30d")] = "7d",
    json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table")] = False,
) -> None:
    """Total calls, tokens and USD over a period, by feature, tenant, key or model."""
    import time

    from ..store import Store

    if by not in Store.COST_GROUPS:
        fail(f"--by must be one of {', '.join(Store.COST_GROUPS)} (got {by!r})")
    start = time.time() - _duration("--since", since)
    rows = _store(config).cost_totals(by=by, since=start)
    if json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    table = Table(by, "calls", "prompt tokens", "completion tokens", "cache hits", "USD")
    total = 0.0
    for r in rows:
        total += r["cost_usd"] or 0.0
        usd = f"{r['cost_usd']:.6f}" + (" (part estimated)" if r["estimated"] else "")
        if r["unpriced"]:
            usd += f" (+{r['unpriced']} unpriced call{'s' if r['unpriced'] != 1 else ''})"
        table.add_row(
            Text(str(r["group"] or "-")), str(r["calls"]), str(r["prompt_tokens"]), str(r["completion_tokens"]),
            str(r["cache_hits"]), usd,
        )
    out.print(table)
    out.print(f"total since {_when(start)}: ${total:.6f}", highlight=False)


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
    decrypt: Annotated[bool, typer.Option("--decrypt", help="Decrypt encrypted content (audited)")] = False,
) -> None:
    """Show one call with all its attempts, and its stored prompt and answer."""
    from ..store.content import ContentKeyError

    store = _store(config)
    try:
        record = store.get_trace(trace_id, decrypt=decrypt)
    except ContentKeyError as exc:
        fail(exc.message)
    if record is None:
        fail(f"no trace {trace_id!r} in this storage", code=1)
    if decrypt and record.get("content_mode") == "encrypted":
        store.audit.append(_actor(), "content.decrypted", trace_id, {"feature": record["feature"]})
    if json:
        sys.stdout.write(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for key in ("trace_id", "feature", "op", "stream", "status", "route", "http_status", "latency_ms",
                "prompt_tokens", "completion_tokens", "cost_usd", "cost_estimated", "cache", "tenant", "key_id",
                "error_type", "error_message"):
        value = record.get(key)
        if value is not None:
            out.print(f"[bold]{key:>18}[/] {escape(str(value))}", highlight=False)
    out.print(f"[bold]{'started':>18}[/] {_when(record['started_at'])}")
    table = Table("#", "at ms", "provider", "model", "outcome", "latency ms", "status", "error")
    for i, a in enumerate(record["attempts"]):
        table.add_row(
            str(i + 1), f"{a['offset_ms']:.1f}", escape(a["provider"]), escape(a["model"]), a["outcome"],
            f"{a['latency_ms']:.1f}", str(a["status_code"] or ""),
            escape(f"{a['error_type'] or ''} {a['error_message'] or ''}".strip()),
        )
    out.print(table)
    for event in record.get("events") or []:
        out.print(f"  event {event}", highlight=False, markup=False)
    if record.get("content") is not None:
        shown = orjson.dumps(record["content"], option=orjson.OPT_INDENT_2).decode()
        out.print(f"content ({record.get('content_mode')}):\n{shown}", highlight=False, markup=False)


retention_app = typer.Typer(help="Retention: purge expired traces, make a content key.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")


@retention_app.command("run")
def retention_run(config: ConfigOption = None) -> None:
    """Delete the traces older than their feature's retention.traces_days now (the server does it hourly)."""
    from ..store import retention

    cfg, store = _open(config)
    deleted = retention.purge(store, cfg.model, _actor())
    for feature, n in sorted(deleted.items()):
        out.print(f"{feature}: {n} trace(s) deleted", highlight=False, markup=False)
    out.print(f"purged {sum(deleted.values())} expired trace(s)", highlight=False)


@retention_app.command("keygen")
def retention_keygen() -> None:
    """Print a new random key for store_content: encrypted (export it as SHIPYARD_CONTENT_KEY)."""
    from ..store.content import new_key

    sys.stdout.write(new_key() + "\n")


@app.command()
def forget(
    subject: Annotated[str, typer.Option("--subject", "-s", help="The id sent as X-Shipyard-Subject or `user`")],
    config: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be erased, erase nothing")] = False,
) -> None:
    """Erase every trace about a subject (a right-to-erasure request); writes an audit entry."""
    from ..store import retention

    if not subject.strip():
        fail("--subject must not be empty")
    store = _store(config)
    if dry_run:
        out.print(f"{store.count_subject(subject)} trace(s) about this subject would be erased", highlight=False)
        return
    done = retention.forget(store, subject, _actor())
    out.print(f"erased {done['traces']} trace(s) about subject {done['subject'][:12]}… "
              f"(audit entry {done['audit_seq']})", highlight=False)


from .evals import eval_app  # noqa: E402 - it reads this module's helpers

app.add_typer(eval_app, name="eval")
from .drift import drift_command  # noqa: E402
app.command("drift")(drift_command)

from .monitor import incidents_app, owners_command  # noqa: E402

app.add_typer(incidents_app, name="incidents")
app.command("owners")(owners_command)


def main() -> None:
    app()
