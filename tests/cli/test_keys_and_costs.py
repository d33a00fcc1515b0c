"""``shipyard keys create|list|revoke``, ``shipyard costs`` and the ``serve`` warning for ``auth: none``.

The commands run in-process through typer's CliRunner (fast); ``serve`` runs as a real subprocess.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from shipyard.access import KeyRing
from shipyard.cli import app
from shipyard.errors import Unauthenticated
from shipyard.store import Store
from tests.conftest import OWNERS, free_port

KEY = re.compile(r"shp_([0-9a-f]{12})_[A-Za-z0-9_-]{40,}")
MSG = [{"role": "user", "content": "my invoice is wrong"}]


def config_text(primary, backup, auth: str = "keys") -> str:
    return f"""
    auth: {auth}
    pricing:
      primary/gpt-4o-mini: {{input: 0.15, output: 0.60}}
      small-model: {{input: 1.0, output: 2.0}}
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: sk-primary}}
      backup: {{kind: openai, base_url: "{backup.url}", api_key: none}}
    features:
      triage:
        owners: {OWNERS}
        route:
          - {{provider: primary, model: gpt-4o-mini, timeout_s: 2}}
      summarize:
        owners: {OWNERS}
        route:
          - {{provider: backup, model: small-model, timeout_s: 2}}
      draft:
        owners: {OWNERS}
        route:
          - {{provider: backup, model: unpriced-model, timeout_s: 2}}
    tenants:
      acme: {{limits: {{rpm: 1000}}}}
      globex: {{limits: {{rpm: 1000}}}}
    """


@pytest.fixture
def config_path(primary, backup, write_config):
    return write_config(config_text(primary, backup))


@pytest.fixture
def storage(config_path):
    store = Store(config_path.read_text().splitlines()[0].split(" ", 1)[1])
    store.migrate()
    yield store
    store.close()


def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def create(config_path, *args: str) -> tuple[str, str]:
    """``keys create``: the key (stdout) and its id."""
    result = cli("keys", "create", "--config", config_path, *args)
    match = KEY.fullmatch(result.stdout.strip())
    assert match, result.stdout
    return match.group(0), match.group(1)


def listed(config_path, *args: str) -> dict[str, dict]:
    result = cli("keys", "list", "--config", config_path, "--json", *args)
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    return {r["key_id"]: r for r in rows}


# -- keys create ------------------------------------------------------------------------------------


def test_create_prints_the_key_once_and_stores_only_a_salted_hash(config_path, storage):
    result = cli("keys", "create", "--config", config_path, "--tenant", "acme", "--features", "triage",
                 "--role", "owner", "--name", "billing bot", "--rpm", "60", "--tpm", "5000",
                 "--usd-per-day", "1.5", "--usd-per-month", "20")
    assert result.stdout.count("\n") == 1  # the key and nothing else: `KEY=$(shipyard keys create ...)` works
    match = KEY.fullmatch(result.stdout.strip())
    assert match
    key, key_id = match.group(0), match.group(1)
    secret = key.split("_", 2)[2]
    assert f"created key {key_id} for tenant acme (role owner)" in result.stderr
    assert "it is not shown again" in result.stderr and secret not in result.stderr

    with storage.engine.connect() as conn:
        row = dict(conn.execute(sa.text("SELECT * FROM api_keys WHERE key_id = :k"), {"k": key_id}).mappings().one())
    assert len(row["salt"]) == 32 and len(row["secret_hash"]) == 64
    assert not any(secret in str(value) for value in row.values())
    assert (row["tenant"], row["role"], row["name"], row["rpm"], row["tpm"]) == ("acme", "owner", "billing bot", 60, 5000)
    assert (row["usd_per_day"], row["usd_per_month"]) == (1.5, 20.0)
    assert orjson.loads(row["features"]) == ["triage"]
    storage.close()  # nothing anywhere in the database file holds the secret (not the WAL either)
    db = Path(storage.engine.url.database)
    blob = b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    assert secret.encode() not in blob and key_id.encode() in blob

    who = asyncio.run(KeyRing(storage).verify(key))
    assert who.tenant == "acme" and who.role == "owner" and who.features == {"triage"}


def test_create_refuses_bad_options_clearly(config_path):
    r = cli("keys", "create", "--config", config_path, "--tenant", "acme", "--features", "triage,nope", code=2)
    assert "unknown feature(s) nope; the config has: draft, summarize, triage" in r.stderr
    r = cli("keys", "create", "--config", config_path, "--tenant", "acme", "--role", "root", code=2)
    assert "--role must be one of app, owner, admin (got 'root')" in r.stderr
    r = cli("keys", "create", "--config", config_path, "--tenant", "acme", "--expires", "soon", code=2)
    assert "--expires: 'soon' is not a duration; use a number and a unit: 90s, 15m, 12h, 30d, 2w" in r.stderr
    r = cli("keys", "create", "--config", config_path, "--tenant", "acme", "--rpm", "0", code=2)
    assert "--rpm" in r.stderr
    r = cli("keys", "create", "--config", config_path, "--tenant", "", code=2)
    assert "tenant must be 1-128 characters" in r.stderr
    r = cli("keys", "create", "--config", config_path, "--tenant", "acme", "--features", " , ", code=2)
    assert "--features: no feature named (got ' , ')" in r.stderr  # not a key that may call nothing
    assert r.stdout == ""
    assert listed(config_path) == {}  # nothing was created by any of them


# -- keys list ----------------------------------------------------------------------------------------


def test_list_shows_each_keys_state_and_never_a_secret(config_path, storage):
    active, active_id = create(config_path, "--tenant", "acme", "--features", "triage", "--rpm", "60")
    revoked, revoked_id = create(config_path, "--tenant", "acme", "--role", "admin")
    short, short_id = create(config_path, "--tenant", "globex", "--expires", "0.2s", "--name", "temp")
    long_, long_id = create(config_path, "--tenant", "globex", "--expires", "30d")
    cli("keys", "revoke", revoked_id, "--config", config_path)
    time.sleep(0.25)  # the 0.2 s key has expired

    table = cli("keys", "list", "--config", config_path).stdout
    lines = {key_id: next(line for line in table.splitlines() if key_id in line)
             for key_id in (active_id, revoked_id, short_id, long_id)}
    assert "active" in lines[active_id] and "triage" in lines[active_id] and "rpm 60" in lines[active_id]
    assert "revoked" in lines[revoked_id] and "admin" in lines[revoked_id] and "all" in lines[revoked_id]
    assert "expired" in lines[short_id] and "temp" in lines[short_id]
    assert "active" in lines[long_id] and "never" not in lines[long_id]
    for key in (active, revoked, short, long_):
        assert key.split("_", 2)[2] not in table

    rows = listed(config_path)
    assert {k: r["state"] for k, r in rows.items()} == {
        active_id: "active", revoked_id: "revoked", short_id: "expired", long_id: "active",
    }
    for row in rows.values():
        assert "salt" not in row and "secret_hash" not in row
    assert rows[active_id]["features"] == ["triage"] and rows[revoked_id]["features"] is None
    assert rows[revoked_id]["revoked_at"] is not None

    assert set(listed(config_path, "--tenant", "globex")) == {short_id, long_id}
    assert "globex" not in cli("keys", "list", "--config", config_path, "--tenant", "acme").stdout


def test_free_text_is_shown_as_typed_and_an_undeclared_tenant_is_noted(config_path):
    r = cli("keys", "create", "--config", config_path, "--tenant", "[b]acme[/b]", "--name", "bot [prod] [/]")
    assert "for tenant [b]acme[/b] (role app)" in r.stderr
    assert "note: tenant '[b]acme[/b]' is not under tenants: in the config (acme, globex)" in r.stderr
    table = cli("keys", "list", "--config", config_path).stdout
    assert "[b]acme[/b]" in table and "bot [prod] [/]" in table
    assert "note:" not in cli("keys", "create", "--config", config_path, "--tenant", "acme").stderr


def test_list_with_no_keys_says_how_to_create_one(config_path):
    assert "no keys yet: create one with `shipyard keys create --tenant NAME`" in cli(
        "keys", "list", "--config", config_path).stdout


# -- keys revoke --------------------------------------------------------------------------------------


def test_revoke_by_id_or_by_whole_key(config_path, storage):
    first, first_id = create(config_path, "--tenant", "acme")
    second, second_id = create(config_path, "--tenant", "acme")
    assert f"revoked key {first_id}" in cli("keys", "revoke", first_id, "--config", config_path).stdout
    assert f"revoked key {second_id}" in cli("keys", "revoke", second, "--config", config_path).stdout
    assert second.split("_", 2)[2] not in cli("keys", "revoke", second, "--config", config_path).stdout
    assert {r["state"] for r in listed(config_path).values()} == {"revoked"}
    ring = KeyRing(storage)
    for key in (first, second):
        with pytest.raises(Unauthenticated, match="was revoked"):
            asyncio.run(ring.verify(key))


def test_revoke_of_an_unknown_key_exits_1(config_path):
    r = cli("keys", "revoke", "0123456789ab", "--config", config_path, code=1)
    assert "no key '0123456789ab'; `shipyard keys list` shows the key ids" in r.stderr
    r = cli("keys", "revoke", "shp_0123456789ab_secret", "--config", config_path, code=1)
    assert "no key '0123456789ab'" in r.stderr and "secret" not in r.stderr


# -- costs --------------------------------------------------------------------------------------------


def costs(config_path, *args: str) -> dict:
    result = cli("costs", "--config", config_path, "--json", *args)
    return {r["group"]: r for r in map(orjson.loads, result.stdout.splitlines())}


def test_costs_add_up_by_tenant_key_feature_and_model(config_path, primary, serve, storage):
    from tests.fakes import Reply

    acme, acme_id = create(config_path, "--tenant", "acme")
    globex, globex_id = create(config_path, "--tenant", "globex")
    served = serve(config_path)

    def call(key: str, feature: str) -> None:
        with openai.OpenAI(base_url=served.base_url + "/v1", api_key=key, max_retries=0) as client:
            client.chat.completions.create(model=feature, messages=MSG)

    # usage is 5 prompt + 3 completion tokens unless scripted
    primary_cost = 5 * 0.15e-6 + 3 * 0.60e-6  # triage, primary/gpt-4o-mini (by provider/model)
    backup_cost = 5 * 1.0e-6 + 3 * 2.0e-6  # summarize, backup/small-model (by model)
    call(acme, "triage")
    call(acme, "triage")
    call(acme, "summarize")
    primary.script(Reply(usage={"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}))
    call(globex, "triage")
    big_cost = 1000 * 0.15e-6 + 500 * 0.60e-6
    call(globex, "draft")  # backup/unpriced-model: tokens, but no price
    served.__exit__(None, None, None)  # every trace written

    by_tenant = costs(config_path, "--by", "tenant")
    assert set(by_tenant) == {"acme", "globex"}
    assert by_tenant["acme"]["calls"] == 3
    assert by_tenant["acme"]["cost_usd"] == pytest.approx(2 * primary_cost + backup_cost, rel=1e-9)
    assert (by_tenant["acme"]["prompt_tokens"], by_tenant["acme"]["completion_tokens"]) == (15, 9)
    assert by_tenant["globex"]["cost_usd"] == pytest.approx(big_cost, rel=1e-9)
    assert by_tenant["globex"]["calls"] == 2 and by_tenant["globex"]["unpriced"] == 1
    assert by_tenant["acme"]["unpriced"] == 0
    assert by_tenant["globex"]["estimated"] == 0 and by_tenant["globex"]["cache_hits"] == 0

    by_key = costs(config_path, "--by", "key")
    assert set(by_key) == {acme_id, globex_id} and by_key[acme_id]["calls"] == 3
    assert by_key[globex_id]["cost_usd"] == by_tenant["globex"]["cost_usd"]

    by_feature = costs(config_path, "--by", "feature")
    assert by_feature["triage"]["calls"] == 3
    assert by_feature["triage"]["cost_usd"] == pytest.approx(2 * primary_cost + big_cost, rel=1e-9)
    assert by_feature["summarize"]["cost_usd"] == pytest.approx(backup_cost, rel=1e-9)
    assert (by_feature["draft"]["cost_usd"], by_feature["draft"]["unpriced"]) == (0.0, 1)
    assert costs(config_path) == by_feature  # the default grouping

    by_model = costs(config_path, "--by", "model")
    assert set(by_model) == {"primary/gpt-4o-mini", "backup/small-model", "backup/unpriced-model"}
    assert by_model["backup/small-model"]["calls"] == 1

    rows = cli("costs", "--config", config_path, "--by", "tenant").stdout  # the table, largest first
    assert rows.index("globex") < rows.index("acme")
    globex_row = next(line for line in rows.splitlines() if "globex" in line)
    assert f"{big_cost:.6f} (+1 unpriced call)" in globex_row  # not read as free
    total = 2 * primary_cost + backup_cost + big_cost
    assert f"${total:.6f}" in rows.splitlines()[-1] and rows.splitlines()[-1].startswith("total since ")


def test_costs_since_leaves_out_older_calls(config_path, storage):
    def trace(trace_id: str, days_ago: float, cost: float, estimated: bool = False) -> dict:
        return {"trace_id": trace_id, "feature": "triage", "op": "chat", "stream": False, "status": "ok",
                "route": "primary/gpt-4o-mini", "started_at": time.time() - days_ago * 86400, "latency_ms": 1.0,
                "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "tenant": "acme",
                "key_id": "k1", "cost_usd": cost, "cost_estimated": estimated, "attempts": []}

    storage.insert_traces([trace("a" * 32, 0.5, 0.25), trace("b" * 32, 3, 0.5, estimated=True),
                           trace("c" * 32, 10, 1.0)])
    assert costs(config_path, "--by", "tenant", "--since", "7d")["acme"]["cost_usd"] == pytest.approx(0.75)
    assert costs(config_path, "--by", "tenant", "--since", "30d")["acme"]["calls"] == 3
    day = costs(config_path, "--by", "tenant", "--since", "24h")["acme"]
    assert (day["calls"], day["cost_usd"], day["estimated"]) == (1, 0.25, 0)
    table = cli("costs", "--config", config_path, "--since", "7d").stdout
    assert "0.750000 (part estimated)" in table
    assert costs(config_path, "--since", "1s") == {}


def test_costs_refuses_a_bad_grouping_or_period(config_path):
    r = cli("costs", "--config", config_path, "--by", "user", code=2)
    assert "--by must be one of feature, tenant, key, model (got 'user')" in r.stderr
    r = cli("costs", "--config", config_path, "--by", "[/user]", code=2)  # shown as typed, not as markup
    assert "(got '[/user]')" in r.stderr
    for bad in ("7", "week", "-3d", "0d"):
        r = cli("costs", "--config", config_path, "--since", bad, code=2)
        assert f"--since: {bad!r} is not a duration" in r.stderr, r.stderr


# -- serve and auth: none -----------------------------------------------------------------------------


def test_serve_warns_loudly_when_auth_is_none(primary, backup, write_config):
    config = write_config(config_text(primary, backup, auth="none"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shipyard", "serve", "--config", str(config), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "triage", "messages": MSG})
        assert r.status_code == 200, r.text  # no key needed
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    assert "WARNING: auth is none: this gateway is OPEN" in stderr
    assert f"127.0.0.1:{port} can call every feature and read every trace" in stderr
    assert "Set `auth: keys`" in stderr


def test_serve_does_not_warn_when_keys_are_required(config_path, monkeypatch):
    import shipyard.server

    served: list[int] = []
    monkeypatch.setattr(shipyard.server, "serve", lambda gateway, host, port: served.append(port))
    result = cli("serve", "--config", config_path, "--port", "9")
    assert served == [9]
    assert "shipyard serving 3 feature(s)" in result.stderr and "WARNING" not in result.stderr
