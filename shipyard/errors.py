"""Every error Shipyard raises, in one tree.

    ShipyardError                       500 internal_error
    ├── ConfigError                     (not an HTTP error: raised at load, names file:line:field)
    ├── RequestError                    400 invalid_request_error
    │   ├── InvalidJSON                 400 invalid_json
    │   ├── NotFound                    404 not_found
    │   │   └── UnknownFeature          404 feature_not_found
    │   ├── InputValidationError        422 input_validation_failed
    │   ├── PayloadTooLarge             413 payload_too_large
    │   ├── UnsupportedOperation        400 unsupported_operation
    │   ├── Unauthenticated             401 invalid_api_key             no key, unknown, expired or revoked
    │   ├── Forbidden                   403 forbidden                   a valid key, not for this
    │   ├── PolicyViolation             400 policy_violation            a guard blocked it; names the rule
    │   │   ├── PolicyFallback          (never sent: the Fallback stage answers with fallback_response)
    │   │   └── PIIBlocked              400 pii_blocked                 names the entity type, never the value
    │   └── TooManyRequests             429 (with retry_after)
    │       ├── RateLimited             429 rate_limited
    │       └── BudgetExceeded          429 budget_exceeded
    ├── ProviderError                   (one attempt at one route failed)
    │   ├── ProviderRejected            400 provider_rejected_request   the caller's fault: never retried
    │   ├── ProviderRouteError          502 provider_error              the route's fault: fail over, no retry
    │   │   └── MalformedResponse       502 malformed_provider_response
    │   └── TransientProviderError      502 provider_unavailable        retried with backoff, then fail over
    │       ├── ProviderTimeout         504 provider_timeout
    │       └── ProviderConnectError    502 provider_connect_error
    ├── OutputContractError             502 output_contract_failed      the answer broke the output schema
    ├── AllRoutesFailed                 503 all_routes_failed           and no fallback_response
    ├── DeadlineExceeded                504 deadline_exceeded
    ├── Overloaded                      503 overloaded
    └── StateUnavailable                503 state_unavailable           shared state down, fail_closed

Foreign exceptions (aiohttp, SDKs, drivers) are translated into this tree at the boundary where they
occur (see ``providers._http``), so that the rest of the code and every client sees only these.
The HTTP status and the OpenAI-style ``type``/``code`` of an error are class attributes.
"""

from __future__ import annotations

from typing import Any


class ShipyardError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details

    def to_dict(self, trace_id: str | None = None) -> dict[str, Any]:
        """The OpenAI-style error body: ``{"error": {"message", "type", "code", ...}}``."""
        body: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "param": self.param,
        }
        if self.details is not None:
            body["details"] = self.details
        if trace_id:
            body["trace_id"] = trace_id
        return {"error": body}


class ConfigError(ShipyardError):
    """A configuration that cannot run. ``problems`` lists (file, line, field, message)."""

    code = "config_error"

    def __init__(self, problems: list[tuple[str, int | None, str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(self.format_problem(*p) for p in problems))

    @staticmethod
    def format_problem(file: str, line: int | None, field: str, message: str) -> str:
        where = f"{file}:{line}" if line else file
        return f"{where}: {field}: {message}" if field else f"{where}: {message}"


class RequestError(ShipyardError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(RequestError):
    code = "invalid_json"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class UnknownFeature(NotFound):
    code = "feature_not_found"


class InputValidationError(RequestError):
    status = 422
    code = "input_validation_failed"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class UnsupportedOperation(RequestError):
    code = "unsupported_operation"


class Unauthenticated(RequestError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(RequestError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class PolicyViolation(RequestError):
    """A guard blocked the call. The message names the rule that caught it, never what it caught."""

    code = "policy_violation"


class PolicyFallback(PolicyViolation):
    """A guard rule whose action is ``fallback`` caught the call: the Fallback stage answers with the
    feature's fallback_response (a feature without one refuses with 400 policy_violation)."""


class PIIBlocked(PolicyViolation):
    """The text holds an entity whose action is ``block``. The message names the type, never the value."""

    code = "pii_blocked"

    def __init__(self, entity: str) -> None:
        super().__init__(f"the text contains a {entity} entity, which this feature blocks",
                         details={"rule": "pii", "entity": entity})
        self.entity = entity


class TooManyRequests(RequestError):
    """Refused for now; ``retry_after`` (seconds) becomes the Retry-After header."""

    status = 429
    type = "rate_limit_error"
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: float | None = None, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class RateLimited(TooManyRequests):
    code = "rate_limited"


class BudgetExceeded(TooManyRequests):
    type = "insufficient_quota"
    code = "budget_exceeded"


class ProviderError(ShipyardError):
    """One attempt at one route failed. ``status_code`` is the upstream HTTP status, if any."""

    status = 502
    type = "provider_error"
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.status_code = status_code
        self.retry_after = retry_after


class ProviderRejected(ProviderError):
    """The provider refused the request as malformed (400, 413, 422): the caller must fix it."""

    status = 400
    type = "invalid_request_error"
    code = "provider_rejected_request"


class ProviderRouteError(ProviderError):
    """The route cannot serve (bad key, unknown model, ...): try the next route, do not retry."""


class MalformedResponse(ProviderRouteError):
    code = "malformed_provider_response"


class TransientProviderError(ProviderError):
    """Worth another try after a pause: 408, 409, 429, 5xx, connection errors, timeouts."""

    code = "provider_unavailable"


class ProviderTimeout(TransientProviderError):
    status = 504
    code = "provider_timeout"


class ProviderConnectError(TransientProviderError):
    code = "provider_connect_error"


class OutputContractError(ShipyardError):
    status = 502
    type = "provider_error"
    code = "output_contract_failed"


class AllRoutesFailed(ShipyardError):
    status = 503
    type = "service_unavailable"
    code = "all_routes_failed"


class DeadlineExceeded(ShipyardError):
    status = 504
    type = "timeout"
    code = "deadline_exceeded"


class Overloaded(ShipyardError):
    status = 503
    type = "service_unavailable"
    code = "overloaded"


class StateUnavailable(ShipyardError):
    """The shared state (Redis) cannot be reached and the config says ``on_failure: fail_closed``."""

    status = 503
    type = "service_unavailable"
    code = "state_unavailable"


def error_class_name(exc: BaseException) -> str:
    """A short, stable name for an exception, as stored in traces."""
    if isinstance(exc, ShipyardError):
        return exc.code
    return type(exc).__name__
