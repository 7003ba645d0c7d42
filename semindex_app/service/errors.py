"""Errors as the two route families answer them.

The compatible routes answer the reference server's envelope, `{"error": {type, code, message,
request_id, param?}}` as application/json, `type` following the status; the native routes answer
RFC 9457 problem+json. Both come from one ApiError, built from semindex.errors kinds (one place maps
a kind to its status and default code). Nothing else reaches a client: no stack trace, ever.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.responses import JSONResponse

from semindex.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    SemindexError,
    Unauthenticated,
    Unavailable,
)

# kind -> (status, default code)
_KINDS: tuple[tuple[type[SemindexError], int, str], ...] = (
    (InvalidInput, 400, "invalid_request"),
    (Unauthenticated, 401, "authentication_error"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (Unavailable, 503, "unavailable"),
)
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          410: "gone_error", 413: "request_entity_too_large_error", 429: "rate_limit_error"}
PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://github.com/semindex/semindex/blob/main/README.md#errors"


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    param: str | None = None

    @classmethod
    def from_error(cls, error: SemindexError) -> ApiError:
        for kind, status, code in _KINDS:
            if isinstance(error, kind):
                return cls(status, error.code or code, _one_line(error), error.param)
        return cls(500, "internal_error", _one_line(error))

    @property
    def error_type(self) -> str:
        return _TYPES.get(self.status, "api_error")

    def headers(self) -> dict[str, str]:
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="semindex"'}
        if self.status == 503:
            return {"Retry-After": "5"}
        return {}

    def envelope(self, request_id: str) -> JSONResponse:
        body = {"type": self.error_type, "code": self.code, "message": self.message, "request_id": request_id}
        if self.param:
            body["param"] = self.param
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers())

    def problem(self, request_id: str, instance: str) -> JSONResponse:
        body = {"type": f"{PROBLEM_BASE}-{self.code}", "title": self.code.replace("_", " "), "status": self.status,
                "detail": self.message, "instance": instance, "code": self.code, "request_id": request_id}
        if self.param:
            body["param"] = self.param
        return JSONResponse(body, status_code=self.status, headers=self.headers(), media_type=PROBLEM_JSON)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:1000] or type(error).__name__
