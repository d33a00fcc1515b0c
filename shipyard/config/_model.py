"""The typed shape of a Shipyard config file. Unknown keys are errors everywhere."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSpec(BaseModel):
    """``kind`` picks the adapter; the adapter validates the rest of the keys (see providers/)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RouteSpec(Strict):
    provider: str
    model: str = Field(min_length=1, max_length=200)
    timeout_s: float = Field(30.0, gt=0, le=3600)
    retries: int = Field(1, ge=0, le=10)
    params: dict[str, Any] = Field(default_factory=dict)
    """Request fields forced for this route (they override the caller's), e.g. temperature."""

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


class BreakerSpec(Strict):
    failure_ratio: float = Field(0.5, gt=0, le=1)
    min_calls: int = Field(10, ge=1)
    window_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(15.0, gt=0)
    half_open_probes: int = Field(1, ge=1)
    enabled: bool = True


class BackoffSpec(Strict):
    base_s: float = Field(0.1, gt=0)
    max_s: float = Field(5.0, gt=0)
    max_retry_after_s: float = Field(30.0, ge=0)
    """A Retry-After longer than this (or than what is left of the deadline) moves on to the next route."""


class Owners(Strict):
    incidents: str
    changes: str
    evaluation: str
    risk: str


class PromptMessage(Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class FeatureSpec(Strict):
    description: str = ""
    owners: Owners
    deadline_s: float = Field(30.0, gt=0, le=3600)
    route: list[RouteSpec] = Field(min_length=1)
    circuit_breaker: BreakerSpec = BreakerSpec()
    backoff: BackoffSpec = BackoffSpec()
    fallback_response: dict[str, Any] | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    prompt: list[PromptMessage] | None = None
    repair: bool = True
    """On an answer that breaks output_schema, re-ask the same route once with the errors shown."""


class ServerSpec(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=1, le=65535)
    drain_timeout_s: float = Field(30.0, gt=0)
    max_body_mb: float = Field(16.0, gt=0)


class TraceSpec(Strict):
    flush_interval_s: float = Field(0.25, gt=0)
    batch_size: int = Field(500, ge=1)
    max_pending: int = Field(200_000, ge=1000)


class ConfigModel(Strict):
    storage: str = "sqlite:///shipyard.db"
    server: ServerSpec = ServerSpec()
    traces: TraceSpec = TraceSpec()
    providers: dict[str, ProviderSpec] = Field(min_length=1)
    features: dict[str, FeatureSpec] = Field(min_length=1)

    @field_validator("features", "providers")
    @classmethod
    def _names(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for name in value:
            if not _NAME.match(name):
                raise _LocatedError(
                    (str(info.field_name), name),
                    f"name {name!r} must be 1-128 characters of letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit",
                )
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgresql|postgres)(\+\w+)?://", value):
            raise ValueError("storage must be a sqlite:///PATH or postgresql://USER@HOST/DB URL")
        return value

    @model_validator(mode="after")
    def _routes_name_providers(self) -> ConfigModel:
        for fname, feature in self.features.items():
            for i, route in enumerate(feature.route):
                if route.provider not in self.providers:
                    known = ", ".join(sorted(self.providers))
                    raise _LocatedError(
                        ("features", fname, "route", i, "provider"),
                        f"names no provider: {route.provider!r} (known: {known})",
                    )
        return self


class _LocatedError(ValueError):
    """A cross-field error that knows which path it belongs to."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
