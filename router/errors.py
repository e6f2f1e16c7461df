"""The router's error tree. Each error maps to one HTTP status and one WebSocket error code.

Raised at the boundary for bad input and when a request cannot be served at all; the WebSocket
API turns them into ``{"type": "error"}`` frames and the HTTP API into OpenAI-style error bodies.
"""

from __future__ import annotations


class SwitchyardError(Exception):
    code = "internal_error"
    http_status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadRequest(SwitchyardError):
    code = "bad_request"
    http_status = 400
    openai_type = "invalid_request_error"


class MalformedJSON(BadRequest):
    code = "malformed_json"


class UnknownMessageType(BadRequest):
    code = "unknown_type"


class InvalidParams(BadRequest):
    code = "invalid_params"


class FrameTooLarge(BadRequest):
    code = "frame_too_large"
    http_status = 413


class UnknownSession(SwitchyardError):
    code = "unknown_session"
    http_status = 404
    openai_type = "invalid_request_error"


class DuplicateRequestId(BadRequest):
    code = "duplicate_id"


class Unauthorized(SwitchyardError):
    code = "unauthorized"
    http_status = 401
    openai_type = "authentication_error"


class RetryLater(SwitchyardError):
    """Refused for now; ``retry_after_s`` goes into the Retry-After header / error frame."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(RetryLater):
    code = "rate_limited"
    http_status = 429
    openai_type = "rate_limit_error"


class Overloaded(RetryLater):
    code = "overloaded"
    http_status = 503


class NoBackendAvailable(SwitchyardError):
    code = "no_backend"
    http_status = 503


class UpstreamFailed(SwitchyardError):
    code = "upstream_error"
    http_status = 502
