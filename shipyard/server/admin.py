"""The admin API: keys and costs over HTTP, for an ``admin`` key (or anyone while ``auth: none``).

    GET    /v1/admin/keys[?tenant=T]          the keys, never their secrets
    POST   /v1/admin/keys                     {"tenant", "features"?, "role"?, "expires"?: "30d", "name"?,
                                               "rpm"?, "tpm"?, "usd_per_day"?, "usd_per_month"?}
                                              -> 201 {"key": "shp_...", ...}: the only time the key is shown
    DELETE /v1/admin/keys/{key_id}            revoke
    GET    /v1/admin/costs[?by=feature|tenant|key|model&since=7d]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..access import ROLES
from ..errors import InvalidJSON, NotFound, RequestError, ShipyardError
from ..runtime import Gateway
from ..units import feature_list, parse_duration
from .app import json_response, read_json


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(min_length=1, max_length=128)
    features: list[str] | None = None
    role: str = "app"
    expires: str | None = None
    name: str | None = Field(None, max_length=200)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    usd_per_day: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    usd_per_month: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)


class Admin:
    def __init__(self, gateway: Gateway, api: Any) -> None:
        self.gateway = gateway
        self.api = api

    async def _admin(self, request: Request) -> None:
        who = await self.api.principal(request)
        who.require("admin")
        request.state.principal = who

    @staticmethod
    def _actor(request: Request) -> str:
        """Who the audit log names: the admin key's id (``open`` while ``auth: none``)."""
        who = request.state.principal
        return f"key:{who.key_id}" if who.key_id else "open"

    async def _guard(self, request: Request, handler: Any) -> Response:
        try:
            await self._admin(request)
            return await handler(request)
        except ShipyardError as exc:
            return json_response(exc.to_dict(), exc.status)

    async def list_keys(self, request: Request) -> Response:
        async def run(request: Request) -> Response:
            rows = await asyncio.to_thread(self.gateway.store.list_keys, tenant=request.query_params.get("tenant"))
            return json_response({"object": "list", "data": rows})

        return await self._guard(request, run)

    async def create_key(self, request: Request) -> Response:
        async def run(request: Request) -> Response:
            body = await read_json(request, 64 * 1024)
            try:
                spec = NewKey.model_validate(body)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"]) or "body"
                raise InvalidJSON(f"{where}: {first['msg']}", param=where) from None
            try:
                if spec.role not in ROLES:
                    raise ValueError(f"role must be one of {', '.join(ROLES)} (got {spec.role!r})")
                features = None
                if spec.features is not None:
                    features = feature_list(spec.features, frozenset(self.gateway.features))
                lifetime = parse_duration(spec.expires) if spec.expires is not None else None
                key, row = await asyncio.to_thread(
                    self.gateway.keys.create, spec.tenant, role=spec.role, features=features,
                    expires_in_s=lifetime, name=spec.name, rpm=spec.rpm, tpm=spec.tpm,
                    usd_per_day=spec.usd_per_day, usd_per_month=spec.usd_per_month, actor=self._actor(request),
                )
            except ValueError as exc:
                raise RequestError(str(exc)) from None
            shown = {k: v for k, v in row.items() if k not in ("salt", "secret_hash")}
            return json_response({"key": key, **shown}, 201)

        return await self._guard(request, run)

    async def revoke_key(self, request: Request) -> Response:
        async def run(request: Request) -> Response:
            key_id = request.path_params["key_id"]
            if not await asyncio.to_thread(self.gateway.keys.revoke, key_id, actor=self._actor(request)):
                raise NotFound(f"no key {key_id!r}; GET /v1/admin/keys lists them")
            return json_response({"revoked": key_id})

        return await self._guard(request, run)

    async def costs(self, request: Request) -> Response:
        async def run(request: Request) -> Response:
            by = request.query_params.get("by", "feature")
            if by not in self.gateway.store.COST_GROUPS:
                raise RequestError(f"by must be one of {', '.join(self.gateway.store.COST_GROUPS)} (got {by!r})")
            try:
                since = time.time() - parse_duration(request.query_params.get("since", "7d"))
            except ValueError as exc:
                raise RequestError(f"since: {exc}") from None
            await self.gateway.writer.flush()
            rows = await asyncio.to_thread(self.gateway.store.cost_totals, by=by, since=since)
            return json_response({"object": "list", "by": by, "since": since, "data": rows})

        return await self._guard(request, run)

    async def forget(self, request: Request) -> Response:
        """Erase every trace about a subject (``shipyard forget`` over HTTP); audited."""

        async def run(request: Request) -> Response:
            return json_response(await self.gateway.forget(request.path_params["subject"], self._actor(request)))

        return await self._guard(request, run)

    async def purge(self, request: Request) -> Response:
        """Purge expired traces now instead of at the next scheduled run."""

        async def run(request: Request) -> Response:
            deleted = await self.gateway.purge_expired(self._actor(request))
            return json_response({"deleted": deleted, "total": sum(deleted.values())})

        return await self._guard(request, run)
