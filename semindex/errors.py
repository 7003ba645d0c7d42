"""semindex's errors: one base class, and the four kinds a caller acts on differently.

Every error semindex raises on purpose is a SemindexError, and (where one fits) one of:

  InvalidInput  the caller's input is wrong: a bad value, a malformed request (HTTP 400, CLI exit 2)
  NotFound      what was named does not exist: a version key, a file (404)
  Conflict      the request is valid but the current state refuses it: a failed verdict, a serving
                version that cannot be retired, another run holding the same work (409)
  Unauthenticated  no credentials, or ones nobody issued (401)
  Forbidden     the caller is known but may not do or see this: a revoked or expired token, a
                stream outside its grant (403)
  Unavailable   the server or a dependency cannot do it now: PostgreSQL unreachable, pgvector or an
                encoder package missing (503)

Each also subclasses the built-in exception callers caught before it existed (ValueError,
LookupError, PermissionError, RuntimeError), so `except ValueError` keeps working. Messages name the
bad value; `code` (a stable name for clients, e.g. "grant_stream_not_allowed") and `param` (the
request parameter at fault) are set where one applies.
"""

from __future__ import annotations


class SemindexError(Exception):
    """Base of every error semindex raises on purpose."""

    # Class defaults too: a subclass that also derives from another library's exception (psycopg's)
    # may be built through that one's __init__.
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str = "", *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class InvalidInput(SemindexError, ValueError):
    """The input is wrong; the message names the value and what would be right."""


class NotFound(SemindexError, LookupError):
    """The named thing (a version, a file, a table) does not exist."""


class Conflict(SemindexError, RuntimeError):
    """Refused by the current state: promote a failed version, retire the serving one, ..."""


class Unauthenticated(SemindexError, PermissionError):
    """No bearer token, or a token that was never issued."""


class Forbidden(SemindexError, PermissionError):
    """The caller may not: its token is revoked or expired, or it asks beyond its grant."""


class Unavailable(SemindexError, RuntimeError):
    """The server or a dependency cannot serve this now (unreachable, not installed)."""
