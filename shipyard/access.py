"""API keys and who is calling: a key resolves to a :class:`Principal` (tenant, role, features, limits).

A key is ``shp_<key id>_<secret>``. It is shown once, at creation; the store keeps the key id, a random
salt and HMAC-SHA256(salt, secret). The secret is 256 random bits, so a fast keyed hash is as safe as a
slow password hash here and keeps verification off the request path's budget. Verified keys (and
refusals) are remembered for ``ttl_s`` seconds per process: a revoked key stops working on every replica
within that time, and at once on the replica that revoked it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import Forbidden, Unauthenticated
from .store.audit import digest as audit_digest

ROLES = ("app", "owner", "admin")
PREFIX = "shp_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call is for. ``features`` None means every feature."""

    tenant: str
    key_id: str | None = None
    role: str = "app"
    features: frozenset[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    expires_at: float | None = None

    def may_use(self, feature: str) -> bool:
        return self.features is None or feature in self.features

    def check_feature(self, feature: str) -> None:
        if not self.may_use(feature):
            allowed = ", ".join(sorted(self.features or ())) or "none"
            raise Forbidden(
                f"API key {self.key_id} (tenant {self.tenant}) may not use feature {feature!r}; it may use: "
                f"{allowed}. Create a key with --features including it.",
                param="model",
            )

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(
                f"this needs a key with role {' or '.join(roles)}; key {self.key_id} has role {self.role}"
            )


OPEN = Principal(tenant="default", role="admin")
"""The principal of every call when the config says ``auth: none``."""


def _hash(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A key's row without what could help guess its secret: what the audit log digests."""
    return {k: v for k, v in row.items() if k not in ("salt", "secret_hash")}


def principal_from_row(row: dict[str, Any]) -> Principal:
    features = row.get("features")
    return Principal(
        tenant=row["tenant"],
        key_id=row["key_id"],
        role=row["role"],
        features=None if features is None else frozenset(features),
        rpm=row.get("rpm"),
        tpm=row.get("tpm"),
        usd_per_day=row.get("usd_per_day"),
        usd_per_month=row.get("usd_per_month"),
        expires_at=row.get("expires_at"),
    )


class KeyRing:
    """Creates, verifies and revokes keys over a :class:`~shipyard.store.Store`."""

    def __init__(self, store: Any, *, ttl_s: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self._seen: dict[str, tuple[float, Principal | Unauthenticated]] = {}

    def create(
        self,
        tenant: str,
        *,
        role: str = "app",
        features: Iterable[str] | None = None,
        expires_in_s: float | None = None,
        name: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        usd_per_day: float | None = None,
        usd_per_month: float | None = None,
        actor: str = "local",
    ) -> tuple[str, dict[str, Any]]:
        """A new key (the only time its secret exists in clear) and the row stored for it.

        ``actor`` (who asked: ``cli:<user>``, an admin key id) goes to the audit log with the key's id."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
        for field, usd in (("usd_per_day", usd_per_day), ("usd_per_month", usd_per_month)):
            if usd is not None and not (0 <= usd <= 1e9):  # also refuses inf and nan
                raise ValueError(f"{field} must be a number of USD from 0 to 1e9 (got {usd!r})")
        if not tenant or len(tenant) > 128 or tenant != tenant.strip():
            raise ValueError("tenant must be 1-128 characters, without leading or trailing spaces")
        if name is not None and len(name) > 200:
            raise ValueError(f"name must be at most 200 characters (got {len(name)})")
        if expires_in_s is not None and expires_in_s <= 0:
            raise ValueError(f"expires_in_s must be positive (got {expires_in_s})")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        now = self.clock()
        row = {
            "key_id": key_id,
            "tenant": tenant,
            "role": role,
            "features": sorted(set(features)) if features is not None else None,
            "name": name,
            "salt": salt,
            "secret_hash": _hash(salt, secret),
            "created_at": now,
            "expires_at": now + expires_in_s if expires_in_s is not None else None,
            "revoked_at": None,
            "rpm": rpm,
            "tpm": tpm,
            "usd_per_day": usd_per_day,
            "usd_per_month": usd_per_month,
        }
        self.store.insert_key(row)
        public = _public(row)
        self.store.audit.append(
            actor, "key.created", key_id, {"tenant": tenant, "role": role}, after=audit_digest(public)
        )
        return f"{PREFIX}{key_id}_{secret}", row

    def revoke(self, key_id: str, *, actor: str = "local") -> bool:
        before = self.store.get_key(key_id)
        found = bool(self.store.revoke_key(key_id, self.clock()))
        self._seen.clear()
        if found and before is not None:
            after = self.store.get_key(key_id) or before
            self.store.audit.append(
                actor, "key.revoked", key_id, {"tenant": before["tenant"], "role": before["role"]},
                before=audit_digest(_public(before)), after=audit_digest(_public(after)),
            )
        return found

    async def verify(self, token: str | None) -> Principal:
        """The principal of a bearer token, or Unauthenticated saying what is wrong with it."""
        if not token:
            raise Unauthenticated(
                "no API key: send the header 'Authorization: Bearer <key>' "
                "(an admin creates keys with `shipyard keys create --tenant NAME`)"
            )
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        seen = self._seen.get(digest)
        if seen is None or seen[0] <= now:
            result = await asyncio.to_thread(self._lookup, token, now)
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[digest] = (now + self.ttl_s, result)
        else:
            result = seen[1]
        if isinstance(result, Unauthenticated):
            raise result
        if result.expires_at is not None and result.expires_at <= now:
            raise Unauthenticated(f"API key {result.key_id} expired at {_when(result.expires_at)}; create a new one")
        return result

    def _lookup(self, token: str, now: float) -> Principal | Unauthenticated:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] + "_" != PREFIX or not parts[1] or not parts[2]:
            return Unauthenticated("the API key is not a Shipyard key (they look like shp_<id>_<secret>)")
        row = self.store.get_key(parts[1])
        if row is None or not hmac.compare_digest(row["secret_hash"], _hash(row["salt"], parts[2])):
            return Unauthenticated("the API key is not valid (unknown key, or a wrong secret)")
        if row["revoked_at"] is not None:
            return Unauthenticated(f"API key {row['key_id']} was revoked at {_when(row['revoked_at'])}")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            return Unauthenticated(f"API key {row['key_id']} expired at {_when(row['expires_at'])}; create a new one")
        return principal_from_row(row)
