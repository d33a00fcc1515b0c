"""Loading and validating the YAML config: every problem is reported at start with file:line and field."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import jinja2
import jsonschema
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

from ..errors import ConfigError
from ._model import (
    DUTIES,
    BackoffSpec,
    BreakerSpec,
    BudgetSpec,
    CacheSpec,
    ConcurrencySpec,
    ConfigModel,
    FeatureSpec,
    GuardSpec,
    HedgeSpec,
    InjectionSpec,
    LimitSpec,
    Owners,
    PiiSpec,
    PolicyRule,
    PriceSpec,
    PromptMessage,
    ProviderSpec,
    RetentionSpec,
    RouteSpec,
    ServerSpec,
    StateSpec,
    TenantSpec,
    TraceSpec,
    _ErrorBelow,
    _LocatedError,
)
from ._yaml import Path, YamlProblem, line_for, load_yaml

__all__ = [
    "DUTIES",
    "BackoffSpec",
    "BreakerSpec",
    "BudgetSpec",
    "CacheSpec",
    "ConcurrencySpec",
    "Config",
    "ConfigError",
    "FeatureSpec",
    "GuardSpec",
    "HedgeSpec",
    "InjectionSpec",
    "LimitSpec",
    "Owners",
    "PiiSpec",
    "PolicyRule",
    "PriceSpec",
    "PromptMessage",
    "ProviderSpec",
    "RetentionSpec",
    "RouteSpec",
    "ServerSpec",
    "StateSpec",
    "TenantSpec",
    "TraceSpec",
    "default_config_path",
    "load_config",
    "parse_config",
    "template_environment",
]


class _PromptUndefined(jinja2.StrictUndefined):
    """Printing a missing input field is an error (it catches typos), but testing one is not, so
    optional fields work: ``{% if lang %} (lang={{ lang }}){% endif %}``."""

    def __bool__(self) -> bool:
        return False


def template_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox prompt templates render in: no attribute tricks, printing an undefined name is an error."""
    return ImmutableSandboxedEnvironment(undefined=_PromptUndefined, autoescape=False)


@dataclass(frozen=True)
class Config:
    """A validated config, with where each value came from (for errors found after loading)."""

    model: ConfigModel
    file: str = "<config>"
    lines: Mapping[Path, int] = field(default_factory=dict)

    @property
    def base_dir(self) -> FsPath:
        """The folder relative paths in the config are resolved against: the config file's own."""
        return FsPath(self.file).resolve().parent if self.file != "<config>" else FsPath.cwd()

    @property
    def providers(self) -> dict[str, ProviderSpec]:
        return self.model.providers

    @property
    def features(self) -> dict[str, FeatureSpec]:
        return self.model.features

    def problem(self, loc: Path, message: str) -> ConfigError:
        """A ConfigError pointing at ``loc`` (a path of keys and indexes) in this file."""
        return ConfigError([(self.file, line_for(self.lines, loc), _dotted(loc), message)])

    def invalid(self, exc: ValidationError, prefix: Path) -> ConfigError:
        """A ConfigError for a pydantic error about the value found at ``prefix`` in this file."""
        return ConfigError(_problems(exc, self.file, self.lines, prefix))


def default_config_path(explicit: str | os.PathLike[str] | None = None) -> FsPath:
    """``--config``, else ``$SHIPYARD_CONFIG``, else ``./shipyard.yaml``."""
    if explicit:
        return FsPath(explicit)
    return FsPath(os.environ.get("SHIPYARD_CONFIG") or "shipyard.yaml")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    p = FsPath(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [(str(p), None, "", "config file not found; pass --config FILE or set SHIPYARD_CONFIG")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([(str(p), None, "", f"cannot read config: {exc}")]) from None
    return parse_config(text, file=str(p), env=env)


def parse_config(text: str, *, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    try:
        raw, lines = load_yaml(text, env)
    except YamlProblem as exc:
        raise ConfigError([(file, exc.line, exc.field, exc.message)]) from None
    if not isinstance(raw, dict):
        raise ConfigError([(file, 1, "", "the config must be a mapping with providers: and features:")])
    try:
        model = ConfigModel.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, file, lines)) from None
    config = Config(model=model, file=file, lines=lines)
    problems = _semantic_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def _problems(
    exc: ValidationError, file: str, lines: Mapping[Path, int], prefix: Path = ()
) -> list[tuple[str, int | None, str, str]]:
    out = []
    for err in exc.errors(include_url=False):
        loc: Path = prefix + tuple(err["loc"])
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, _LocatedError):
            loc, message = located.loc, located.message
        elif isinstance(located, _ErrorBelow):
            loc, message = loc + located.below, located.message
        elif err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and indentation)"
        elif err["type"] == "missing":
            message = _missing(loc)
        else:
            message = err["msg"]
            message = message.removeprefix("Value error, ")
            shown = _shown_input(loc, err.get("input"))
            if shown:
                message += f" (got {shown})"
        out.append((file, line_for(lines, loc), _dotted(loc), message))
    return out


_DUTY_HELP = {
    "incidents": "SLO, drift, budget and data-quality alerts",
    "changes": "approves prompt and config changes",
    "evaluation": "evaluation regressions",
    "risk": "guard and policy alerts",
}


def _missing(loc: Path) -> str:
    """A missing key; an unowned duty says what the duty is and how an owner is written."""
    if len(loc) >= 3 and loc[0] == "features" and loc[-1] == "owners":
        return ("no owners: every feature names an owner for each of its four duties, e.g. owners: "
                "{incidents: oncall, changes: ml-team, evaluation: ml-team, risk: ana}")
    if len(loc) >= 4 and loc[0] == "features" and loc[-2] == "owners" and loc[-1] in _DUTY_HELP:
        return (f"the {loc[-1]} duty ({_DUTY_HELP[loc[-1]]}) has no owner: name one, or a contact "
                f"{{name: ..., webhook: https://...}} that gets its alerts")
    return "required key is missing"


_SECRET_HINTS = ("key", "secret", "token", "password", "storage", "url", "header", "auth")


def _shown_input(loc: Path, value: Any) -> str | None:
    """The offending value, echoed only where that is safe and useful: a short scalar, in a field
    whose name does not suggest a secret (a bad api_key or storage URL is not printed back to logs)."""
    if isinstance(value, (dict, list)) or value is None:
        return None
    if any(hint in str(part).lower() for part in loc for hint in _SECRET_HINTS):
        return None
    text = repr(value)
    return text if len(text) <= 80 else None


def _semantic_problems(config: Config) -> list[tuple[str, int | None, str, str]]:
    problems = []
    env = template_environment()
    for name, feature in config.features.items():
        base: Path = ("features", name)
        for key in ("input_schema", "output_schema"):
            schema = getattr(feature, key)
            if schema is None:
                continue
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                loc = base + (key, *exc.path)
                problems.append((config.file, line_for(config.lines, loc), _dotted(loc), f"not a valid JSON Schema: {exc.message}"))
        for i, message in enumerate(feature.prompt or []):
            try:
                env.parse(message.content)
            except jinja2.TemplateSyntaxError as exc:
                loc = base + ("prompt", i, "content")
                problems.append((config.file, line_for(config.lines, loc), _dotted(loc), f"template error: {exc.message}"))
        schema_ok = not any(p[2].startswith(_dotted(base + ("output_schema",))) for p in problems)
        if feature.fallback_response is not None and feature.output_schema is not None and schema_ok:
            try:
                jsonschema.validate(feature.fallback_response, feature.output_schema)
            except jsonschema.ValidationError as exc:
                loc = base + ("fallback_response",)
                problems.append((config.file, line_for(config.lines, loc), _dotted(loc), f"does not match output_schema: {exc.message}"))
    return problems


def _dotted(loc: Path) -> str:
    return ".".join(str(p) for p in loc)

