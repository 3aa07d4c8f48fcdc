"""Error codes of the ack envelope (PROTOCOL §3) and the exception that carries them."""
from __future__ import annotations

AUTH_INVALID = "auth_invalid"
AUTH_EXPIRED = "auth_expired"
AUTH_REVOKED = "auth_revoked"
UNAUTHENTICATED = "unauthenticated"
FORBIDDEN = "forbidden"
INVALID_PAYLOAD = "invalid_payload"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"


class ApiError(Exception):
    """A refusal with a contract error code; becomes `{ok: false, error: {code, message}}`."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_ack(self) -> dict:
        return {"ok": False, "error": {"code": self.code, "message": self.message}}


def invalid(message: str) -> ApiError:
    return ApiError(INVALID_PAYLOAD, message)
