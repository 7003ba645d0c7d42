"""semindex's errors: one base class, and the four kinds a caller acts on differently.

Every error semindex raises on purpose is a SemindexError, and (where one fits) one of:

  InvalidInput  the caller's input is wrong: a bad value, a malformed request (HTTP 400, CLI exit 2)
  NotFound      what was named does not exist: a version key, a file (404)
  Conflict      the request is valid but the current state refuses it: a failed verdict, a serving
                version that cannot be retired, another run holding the same work (409)
  Unavailable   the server or a dependency cannot do it now: PostgreSQL unreachable, pgvector or an
                encoder package missing (503)

Each also subclasses the built-in exception callers caught before it existed (ValueError,
LookupError, RuntimeError), so `except ValueError` keeps working. Messages name the bad value.
"""

from __future__ import annotations


class SemindexError(Exception):
    """Base of every error semindex raises on purpose."""


class InvalidInput(SemindexError, ValueError):
    """The input is wrong; the message names the value and what would be right."""


class NotFound(SemindexError, LookupError):
    """The named thing (a version, a file, a table) does not exist."""


class Conflict(SemindexError, RuntimeError):
    """Refused by the current state: promote a failed version, retire the serving one, ..."""


class Unavailable(SemindexError, RuntimeError):
    """The server or a dependency cannot serve this now (unreachable, not installed)."""
