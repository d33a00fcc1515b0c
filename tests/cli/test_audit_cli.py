"""``shipyard audit verify|export``, and the entries that key commands, the admin API and gateway starts add."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import time

import httpx
import orjson
import sqlalchemy as sa

from shipyard import Gateway, load_config
from shipyard.store import AuditLog, Store
from tests.cli.test_keys_and_costs import cli, config_path, create, storage  # noqa: F401 - fixtures
from tests.conftest import two_route_config


def entries(store: Store) -> list[dict]:
    return list(store.audit.export())


def test_key_commands_are_audited_and_verify_passes(config_path, storage):  # noqa: F811
    key, key_id = create(config_path, "--tenant", "acme", "--role", "owner")
    cli("keys", "revoke", "--config", config_path, key_id)
    cli("keys", "revoke", "--config", config_path, "nosuchkey", code=1)
    log = [(e["actor"], e["action"], e["target"], e["details"]) for e in entries(storage)]
    me = f"cli:{getpass.getuser()}"
    assert log == [
        (me, "key.created", key_id, {"tenant": "acme", "role": "owner"}),
        (me, "key.revoked", key_id, {"tenant": "acme", "role": "owner"}),
    ]
    assert key.split("_", 2)[2] not in orjson.dumps(entries(storage)).decode()
    result = cli("audit", "verify", "--config", config_path)
    assert result.stdout.strip() == "ok: 2 entries, chain intact"


def test_verify_exits_1_naming_the_tampered_entry(config_path, storage):  # noqa: F811
    for tenant in ("a", "b", "c"):
        create(config_path, "--tenant", tenant)
    with storage.engine.begin() as conn:
        conn.execute(sa.text("""UPDATE audit_log SET actor = 'nobody' WHERE seq = 2"""))
    result = cli("audit", "verify", "--config", config_path, code=1)
    assert result.stderr.startswith("broken at entry 2: edited"), result.stderr
    with storage.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq = 2"))
    result = cli("audit", "verify", "--config", config_path, code=1)
    assert result.stderr.startswith("broken at entry 2: removed"), result.stderr


def test_export_writes_json_lines_since(config_path, storage):  # noqa: F811
    now = time.time()
    for at in (now - 10 * 86400, now - 3 * 86400, now - 60):
        AuditLog(storage.engine, clock=lambda at=at: at).append("cli:ana", "policy.changed", "triage", {"at": at})
    lines = cli("audit", "export", "--config", config_path, "--since", "7d").stdout.splitlines()
    rows = [orjson.loads(line) for line in lines]
    assert [r["seq"] for r in rows] == [2, 3]
    assert set(rows[0]) == {"seq", "at", "actor", "action", "target", "details", "before_digest", "after_digest",
                            "prev_hash", "hash"}
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert len(cli("audit", "export", "--config", config_path).stdout.splitlines()) == 3
    assert cli("audit", "export", "--config", config_path, "--since", "1h").stdout.count("\n") == 1
    r = cli("audit", "export", "--config", config_path, "--since", "soon", code=2)
    assert "--since: 'soon' is not a duration" in r.stderr
    assert cli("audit", "verify", "--config", config_path).stdout.strip() == "ok: 3 entries, chain intact"


def test_admin_api_key_changes_name_the_admin_key(primary, backup, write_config, serve):
    extra = "auth: keys"
    served = serve(write_config(two_route_config(primary, backup, extra=extra)))
    admin_key, admin_row = served.gateway.keys.create("ops", role="admin")
    base, auth = served.base_url + "/v1/admin/keys", {"Authorization": f"Bearer {admin_key}"}
    created = httpx.post(base, json={"tenant": "acme"}, headers=auth).json()
    assert httpx.delete(f"{base}/{created['key_id']}", headers=auth).status_code == 200
    assert httpx.delete(f"{base}/nosuchkey", headers=auth).status_code == 404
    log = [(e["actor"], e["action"], e["target"]) for e in entries(served.gateway.store)]
    actor = f"key:{admin_row['key_id']}"
    assert log[-3:] == [("local", "key.created", admin_row["key_id"]), (actor, "key.created", created["key_id"]),
                        (actor, "key.revoked", created["key_id"])]
    assert created["key"].split("_", 2)[2] not in orjson.dumps(entries(served.gateway.store)).decode()


def test_gateway_start_records_config_loaded_then_changed(primary, backup, write_config):
    path = write_config(two_route_config(primary, backup))

    async def start() -> None:
        async with Gateway(load_config(path)):
            pass

    def digest() -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    first = digest()
    asyncio.run(start())
    asyncio.run(start())
    path.write_text(path.read_text().replace("deadline_s: 5", "deadline_s: 6"))
    asyncio.run(start())
    store = Store(load_config(path).model.storage)
    got = [(e["action"], e["before_digest"], e["after_digest"]) for e in entries(store)]
    assert got == [("config.loaded", None, first), ("config.loaded", first, first),
                   ("config.changed", first, digest())]
    assert first != digest() and entries(store)[0]["actor"].startswith("gateway:")
    assert store.audit.verify() is None
    store.close()


def test_verify_and_export_on_an_empty_log(config_path):  # noqa: F811
    assert cli("audit", "verify", "--config", config_path).stdout.strip() == "ok: 0 entries, chain intact"
    assert cli("audit", "export", "--config", config_path).stdout == ""
