"""The typed shape of a Shipyard config file. Unknown keys are errors everywhere."""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..eval.checks import CheckSpec
from ..eval.gate import GateSpec
from ..guard.policy import CHECKS, LANGUAGES, OUTPUT_ONLY, compile_pattern, fold

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


class Contact(Strict):
    """Who owns a duty, and where their alerts go."""

    name: str = Field(min_length=1, max_length=200)
    webhook: str | None = None
    """An http(s) URL that gets each incident as a JSON POST (retried with backoff; recorded)."""
    format: Literal["generic", "slack"] | None = None
    """The payload: generic JSON, or Slack's ``{"text": ...}``; default: slack for hooks.slack.com URLs."""

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("a webhook is an http:// or https:// URL")
        return value

    @property
    def payload_format(self) -> str:
        if self.format is not None:
            return self.format
        return "slack" if self.webhook and "hooks.slack.com" in self.webhook else "generic"


DUTIES = ("incidents", "changes", "evaluation", "risk")


class Owners(Strict):
    """The four duties of a feature, each owned by a name (no alerts sent) or a contact with a webhook:
    SLO, drift, budget and data-quality alerts go to ``incidents``, evaluation regressions to
    ``evaluation``, guard and policy alerts to ``risk``; ``changes`` approves prompt and config changes."""

    incidents: str | Contact
    changes: str | Contact
    evaluation: str | Contact
    risk: str | Contact

    @field_validator(*DUTIES)
    @classmethod
    def _named(cls, value: str | Contact) -> str | Contact:
        name = value if isinstance(value, str) else value.name
        if not name.strip():
            raise ValueError("an empty name owns nothing: name the person or team that owns this duty")
        return value

    def contact(self, duty: str) -> Contact:
        owner = getattr(self, duty)
        return owner if isinstance(owner, Contact) else Contact(name=owner)


def _duration(value: str) -> str:
    from ..units import parse_duration

    parse_duration(value)  # ValueError saying how to write one
    return value


class BurnAlert(Strict):
    """Alert when the error budget burns ``factor`` times too fast over both windows (multiwindow)."""

    long: str
    short: str
    factor: float = Field(gt=0, le=1000)

    _check = field_validator("long", "short")(classmethod(lambda cls, v: _duration(v)))


class LatencySlo(Strict):
    threshold_ms: float = Field(gt=0)
    target: float = Field(gt=0, lt=1)
    """The share of calls that must answer within threshold_ms."""


class SloSpec(Strict):
    availability: float | None = Field(None, gt=0, lt=1)
    """The share of calls that must not fail with a server error (5xx)."""
    latency: LatencySlo | None = None
    period: str = "28d"
    """The error budget's period."""
    burn_alerts: list[BurnAlert] = Field(default_factory=lambda: [
        BurnAlert(long="1h", short="5m", factor=14.4), BurnAlert(long="6h", short="30m", factor=6.0)])
    min_calls: int = Field(10, ge=1)
    """Calls the short window needs before it may alert (one failed call of two is not an outage)."""

    _check = field_validator("period")(classmethod(lambda cls, v: _duration(v)))

    @model_validator(mode="after")
    def _some_objective(self) -> SloSpec:
        if self.availability is None and self.latency is None:
            raise ValueError("an slo needs availability, latency or both")
        return self


class QualityField(Strict):
    required: bool = False
    type: Literal["string", "number"] | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=1)
    min: float | None = None
    max: float | None = None
    values: list[str] | None = None
    """The values a categorical field is expected to take."""
    languages: list[str] | None = None
    """ISO 639-1 codes the text is expected in (py3langid, as the policy rules)."""


class QualitySpec(Strict):
    """Data quality of the inputs as they arrive (shipyard/monitor/quality.py): counted, never refused."""

    fields: dict[str, QualityField] = Field(min_length=1)
    max_problem_rate: float = Field(0.05, gt=0, le=1)
    """More calls than this share with a problem over ``window``: an alert for the incidents owner."""
    window: str = "15m"
    min_calls: int = Field(20, ge=1)

    _check = field_validator("window")(classmethod(lambda cls, v: _duration(v)))


class DriftSpec(Strict):
    """Drift of the inputs against a reference, run by the server on a schedule (shipyard/monitor/drift.py):
    a drifted dataset is an alert for the incidents owner. Reads the recorded traffic, so the feature
    needs ``retention.store_content: redacted`` (or encrypted content is skipped)."""

    reference: str
    """A JSONL or CSV file of feature inputs (or the feature's eval dataset), relative to the config; or
    an approved window of recorded traffic, ``traffic:2026-11-01..2026-11-08`` (UTC dates or times) or
    ``traffic:14d..7d`` (durations ago, a window that moves along)."""
    window: str = "24h"
    """The current traffic compared: the calls of this last window."""
    every: str = "1h"
    """How often the server compares again."""
    min_rows: int = Field(100, ge=10)
    """Calls the window needs before it is judged."""
    embeddings: bool = False
    """Also compare text by sentence embeddings (needs the semantic extra; slow on large windows)."""

    _check = field_validator("window", "every")(classmethod(lambda cls, v: _duration(v)))

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str) -> str:
        from ..units import TRAFFIC, parse_window

        if v.startswith(TRAFFIC):
            parse_window(v[len(TRAFFIC):], time.time())  # ValueError saying how to write one
        elif not v.strip():
            raise ValueError("name a file of inputs, or a traffic window: traffic:2026-11-01..2026-11-08")
        return v


class MonitorSpec(Strict):
    interval_s: float = Field(10.0, gt=0, le=3600)
    """How often the server evaluates alerts."""
    guard_window: str = "5m"
    """A critical guard finding in this window is an alert for the risk owner."""
    budget_alert_at: float = Field(0.9, gt=0, le=1)
    """A feature that has spent this share of its daily or monthly budget alerts its incidents owner."""
    webhook_timeout_s: float = Field(5.0, gt=0, le=60)
    webhook_retries: int = Field(4, ge=0, le=10)

    _check = field_validator("guard_window")(classmethod(lambda cls, v: _duration(v)))


class LimitSpec(Strict):
    """Requests and tokens per minute. Tokens: the estimated prompt at admission, settled to the
    provider's count after the call."""

    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)


class BudgetSpec(Strict):
    usd_per_day: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    usd_per_month: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    mode: Literal["hard", "soft"] = "hard"
    """hard: refuse with 429 budget_exceeded; soft: serve, and raise a budget_soft_exceeded event."""
    downgrade_at: float | None = Field(None, gt=0, lt=1)
    """Once this share of a budget is spent, skip to the first route that is cheaper than the first."""

    @model_validator(mode="after")
    def _some_period(self) -> BudgetSpec:
        if self.usd_per_day is None and self.usd_per_month is None:
            raise ValueError("a budget needs usd_per_day, usd_per_month or both")
        return self


class ExactCacheSpec(Strict):
    ttl_s: float = Field(600.0, gt=0, le=90 * 86400)


class SemanticCacheSpec(Strict):
    threshold: float | None = Field(None, gt=0, le=1)
    """Cosine similarity a cached question must reach; the default is the measured one (see README)."""
    ttl_s: float = Field(3600.0, gt=0, le=90 * 86400)


class CacheSpec(Strict):
    exact: ExactCacheSpec | None = None
    semantic: SemanticCacheSpec | None = None


class ConcurrencySpec(Strict):
    max_in_flight: int = Field(ge=1)
    """Calls at once on each route of the feature, in this process."""
    queue_timeout_ms: float = Field(250.0, ge=0)
    """How long a call may wait for a slot before the route is skipped as overloaded."""
    max_queue: int | None = Field(None, ge=0)
    """Calls that may wait at once (default: max_in_flight); the rest are shed at once."""


class HedgeSpec(Strict):
    """Start the next route too when a route has not answered after a delay; the first answer wins."""

    after_ms: float | None = Field(None, gt=0)
    """A fixed delay; with ``percentile``, the delay used until enough latencies are known."""
    percentile: float | None = Field(None, gt=50, lt=100)
    """Hedge after this percentile of the route's recent latencies (its last 200 answers, this process)."""
    min_ms: float = Field(20.0, ge=0)
    """Never hedge sooner than this, however fast the route has been."""

    @model_validator(mode="after")
    def _some_delay(self) -> HedgeSpec:
        if self.after_ms is None and self.percentile is None:
            raise ValueError("hedge needs after_ms (a fixed delay), percentile (e.g. 95), or both")
        return self


Severity = Literal["critical", "major", "minor"]


class InjectionSpec(Strict):
    """Screen for prompt injection and jailbreaks (shipyard/guard/injection.py)."""

    action: Literal["flag", "block"] = "block"
    threshold: float | None = Field(None, gt=0, le=1)
    """Score at which a text is flagged or blocked; default: the screen's measured one (0.5)."""
    roles: list[Literal["user", "tool", "system", "assistant", "developer"]] = Field(
        default_factory=lambda: ["user", "tool"], min_length=1
    )
    """Messages whose text is screened: the user's and retrieved or tool content (untrusted by default)."""
    severity: Severity = "critical"
    """Of the finding a detection records (evaluation fails a case with a critical finding)."""


PiiEntity = Literal["email", "phone", "card", "iban", "ssn", "ip", "dob", "address", "secret", "person"]
PiiAction = Literal["redact", "mask", "hash", "pseudonymize", "block"]


class PiiSpec(Strict):
    """PII detection (shipyard/guard/pii.py): ``input`` before any provider sees the request, ``output``
    on the answer before the client sees it, streamed or not."""

    input: PiiAction | None = "redact"
    output: PiiAction | None = None
    entities: list[PiiEntity] = Field(
        default_factory=lambda: ["email", "phone", "card", "iban", "ssn", "ip", "dob", "address", "secret", "person"],
        min_length=1,
    )
    hash_key_env: str = "SHIPYARD_PII_HASH_KEY"
    """The environment variable holding the key of the ``hash`` action (never in the config file)."""
    severity: Severity = "minor"
    """Of the finding PII in a call records (handled PII is no failure; make it critical where any is)."""


class _ErrorBelow(ValueError):
    """A validator's error about a key below the value it validates: ``below`` is the rest of its path."""

    def __init__(self, below: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.below = below
        self.message = message


class PolicyRule(Strict):
    """A risk boundary (shipyard/guard/policy.py): exactly one check, on the input (before any limit or
    provider), the output, or both. A breach is a finding in the trace; ``block`` refuses with 400
    ``policy_violation`` naming the rule, ``fallback`` answers with the feature's fallback_response,
    ``flag`` serves."""

    name: str
    where: Literal["input", "output", "both"] = Field(alias="on")
    severity: Severity = "major"
    action: Literal["block", "flag", "fallback"] = "block"
    match: str | None = Field(None, min_length=1)
    """A regular expression in RE2 syntax (time linear in the text: no lookaround, no backreferences);
    case-sensitive unless it says ``(?i)``."""
    deny_topics: list[str] | None = Field(None, min_length=1)
    """Words or phrases, found on word boundaries whatever the case, accents or hidden characters."""
    require: str | None = Field(None, min_length=1)
    """A phrase the answer must contain (a disclaimer), whatever the case and spacing."""
    max_chars: int | None = Field(None, ge=1)
    allowed_tools: list[str] | None = None
    """The function names the model may call in its answer ([]: none)."""
    languages: list[str] | None = Field(None, min_length=1)
    """ISO 639-1 codes the text may be in."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a rule name is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("match")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            compile_pattern(value)  # ValueError naming RE2's reason
        return value

    @field_validator("deny_topics")
    @classmethod
    def _topics(cls, value: list[str] | None) -> list[str] | None:
        for i, topic in enumerate(value or ()):
            if not fold(topic):
                raise _ErrorBelow((i,), "a topic needs some letters or digits")
        return value

    @field_validator("require")
    @classmethod
    def _phrase(cls, value: str | None) -> str | None:
        if value is not None and not fold(value):
            raise ValueError("the required phrase needs some letters or digits")
        return value

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str] | None) -> list[str] | None:
        for i, code in enumerate(value or ()):
            if code not in LANGUAGES:
                raise _ErrorBelow((i,), f"{code!r} is not an ISO 639-1 code the language identifier knows "
                                        "(two lowercase letters, e.g. en, de, pt)")
        return value

    @model_validator(mode="after")
    def _one_check(self) -> PolicyRule:
        given = [kind for kind in CHECKS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"a rule has exactly one check, one of {', '.join(CHECKS)} "
                             f"(got {', '.join(given) or 'none'})")
        if given[0] in OUTPUT_ONLY and self.where != "output":
            raise _ErrorBelow(("on",), f"{given[0]} judges the answer: it needs on: output")
        return self


class GuardSpec(Strict):
    injection: InjectionSpec | None = None
    pii: PiiSpec | None = None
    policy: list[PolicyRule] = Field(default_factory=list)
    """Risk boundaries: declarative rules on the input and the output (see PolicyRule)."""

    @field_validator("policy")
    @classmethod
    def _unique_names(cls, rules: list[PolicyRule]) -> list[PolicyRule]:
        first: dict[str, int] = {}
        for i, rule in enumerate(rules):
            if rule.name in first:
                raise _ErrorBelow((i, "name"), f"rule {first[rule.name]} is already named {rule.name!r}: "
                                               "names are unique within a feature")
            first[rule.name] = i
        return rules


class RetentionSpec(Strict):
    """How long a feature's traces are kept, and what of its prompts and answers is stored with them."""

    traces_days: float | None = Field(90.0, gt=0, le=36500)
    """Traces older than this are purged (by the server every hour, or ``shipyard retention run``);
    null keeps them forever."""
    store_content: Literal["none", "redacted", "encrypted"] = "none"
    """none (the default): no prompt or answer is stored; redacted: stored with every PII entity replaced
    by its type ([EMAIL]), at a measured ~0.2-0.4 ms of CPU per call; encrypted: stored whole,
    AES-256-GCM under the key in ``key_env``."""
    key_env: str = Field("SHIPYARD_CONTENT_KEY", min_length=1)
    """The environment variable holding the base64 key(s) of ``encrypted`` (never in the config file):
    ``NEW[,OLD...]``, the first encrypts, any decrypts (rotation)."""
    purge_unknown_features: bool = False
    """Top level only: also purge the traces of features this config does not name (by the top-level
    ``traces_days``). Off by default: services with different configs may share one database."""


class PriceSpec(Strict):
    input: float = Field(ge=0, le=1e6, allow_inf_nan=False)
    output: float = Field(ge=0, le=1e6, allow_inf_nan=False)


class TenantSpec(Strict):
    limits: LimitSpec | None = None
    budget: BudgetSpec | None = None


class StateSpec(Strict):
    url: str = "memory"
    on_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    """When Redis cannot be reached: serve without limits and budgets (open) or refuse with 503 (closed)."""
    prefix: str = Field("shipyard:", min_length=1, max_length=100)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value != "memory" and not re.match(r"^(redis|rediss|unix)://", value):
            raise ValueError("state must be memory or a redis://HOST:PORT/DB URL")
        return value


class PromptMessage(Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class OnlineEvalSpec(Strict):
    """Score a sampled share of production calls in the background (shipyard/eval/online.py)."""

    sample: float = Field(gt=0, le=1)
    """The share of calls scored, chosen by trace id (the same calls on every replica)."""
    usd_per_day: float = Field(1.0, ge=0, allow_inf_nan=False)
    """What judge checks may spend per UTC day (per process); past it they are skipped."""
    checks: list[str] | None = None
    """Names of the reference-free checks to run [default: all of them]."""
    alert_below: float | None = Field(None, gt=0, le=1)
    """An alert for the evaluation owner when the mean online score over ``alert_window`` falls below."""
    alert_window: str = "1h"
    alert_min_samples: int = Field(20, ge=1)

    _check = field_validator("alert_window")(classmethod(lambda cls, v: _duration(v)))


class EvalSpec(Strict):
    """How a feature is evaluated (``shipyard eval``, shipyard/eval/)."""

    dataset: str | None = None
    """The default dataset (JSONL or CSV), relative to the config file."""
    checks: list[CheckSpec] = Field(min_length=1)
    gate: GateSpec | None = None
    online: OnlineEvalSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EvalSpec:
        seen: dict[str, int] = {}
        for i, check in enumerate(self.checks):
            if check.name in seen:
                raise _ErrorBelow(("checks", i, "name"),
                                  f"{check.name!r} is also the name of checks[{seen[check.name]}]; names are unique")
            seen[check.name] = i
        if self.online is not None and self.online.checks is not None:
            by_name = {c.name: c for c in self.checks}
            for i, name in enumerate(self.online.checks):
                if name not in by_name:
                    raise _ErrorBelow(("online", "checks", i), f"no check named {name!r} (known: {', '.join(by_name)})")
                if not by_name[name].reference_free:
                    raise _ErrorBelow(("online", "checks", i),
                                      f"{name!r} compares with a reference, which production calls do not have")
        return self


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
    limits: LimitSpec | None = None
    budget: BudgetSpec | None = None
    cache: CacheSpec | None = None
    concurrency: ConcurrencySpec | None = None
    hedge: HedgeSpec | None = None
    max_input_tokens: int | None = Field(None, ge=1)
    """Refuse (413) a request whose estimated prompt is longer than this."""
    guard: GuardSpec | None = None
    eval: EvalSpec | None = None
    slo: SloSpec | None = None
    quality: QualitySpec | None = None
    drift: DriftSpec | None = None
    segments: list[str] = Field(default_factory=list, max_length=10)
    """Input fields (or ``X-Shipyard-Segment-<name>`` headers) that split scores and metrics by segment."""
    retention: RetentionSpec | None = None
    """What it sets overrides the top-level ``retention:`` for this feature (the rest is inherited)."""
    max_output_tokens: int = Field(1024, ge=1)
    """Used to reserve budget for a request that does not set max_tokens itself."""


class ServerSpec(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=1, le=65535)
    drain_timeout_s: float = Field(30.0, gt=0)
    max_body_mb: float = Field(16.0, gt=0)
    purge_interval_s: float = Field(3600.0, gt=0)
    """How often the server purges traces past their feature's retention."""


class TraceSpec(Strict):
    flush_interval_s: float = Field(0.25, gt=0)
    batch_size: int = Field(500, ge=1)
    max_pending: int = Field(200_000, ge=1000)


class TelemetrySpec(Strict):
    """Metrics (``GET /metrics``) and OpenTelemetry tracing (shipyard/monitor/)."""

    otlp_endpoint: str | None = None
    """An OTLP/HTTP collector's base URL (``http://127.0.0.1:4318``; ``/v1/traces`` is added): spans of every
    call and attempt are exported there. Without it, OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT)
    is honoured; with neither, no spans are built."""
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every export (a collector's API key: ``"${OTLP_TOKEN}"``); OTEL_EXPORTER_OTLP_HEADERS too."""
    service_name: str | None = Field(None, min_length=1)
    """The spans' service.name [default: $OTEL_SERVICE_NAME, else shipyard]."""
    sample: float = Field(1.0, ge=0, le=1)
    """The share of calls traced, chosen by trace id (the same calls on every replica)."""
    export_timeout_s: float = Field(10.0, gt=0, le=300)
    metrics_public: bool = False
    """With ``auth: keys``, ``GET /metrics`` needs an admin key unless this is true (a scraper without one)."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("otlp_endpoint is an http:// or https:// URL, e.g. http://127.0.0.1:4318")
        return value


class ConfigModel(Strict):
    storage: str = "sqlite:///shipyard.db"
    auth: Literal["keys", "none"] = "keys"
    """keys: every /v1 call needs an API key (``shipyard keys create``); none: open, for local use only."""
    state: StateSpec = StateSpec()
    pricing: dict[str, PriceSpec] = Field(default_factory=dict)
    """USD per million tokens, by ``provider/model`` or ``model``; overrides the built-in table."""
    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    retention: RetentionSpec = RetentionSpec()
    """The default of every feature: traces kept 90 days, prompts and answers not stored."""
    monitor: MonitorSpec = MonitorSpec()
    server: ServerSpec = ServerSpec()
    traces: TraceSpec = TraceSpec()
    telemetry: TelemetrySpec = TelemetrySpec()
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

    @field_validator("state", mode="before")
    @classmethod
    def _state_string(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgresql|postgres)(\+\w+)?://", value):
            raise ValueError("storage must be a sqlite:///PATH or postgresql://USER@HOST/DB URL")
        return value

    def retention_of(self, feature: str) -> RetentionSpec:
        """A feature's retention: the top-level one, with what the feature's own ``retention:`` sets."""
        own = self.features[feature].retention
        if own is None:
            return self.retention
        return self.retention.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})

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
