"""Who may search what: bearer tokens, and the grants that bound a client token's searches.

An owner token searches everything; a client token carries a Grant (connections, streams, fields
per stream, a time range, a record-key allowlist). `Grant.narrow` turns a request's scope into the
scope the search really runs with, so the grant is applied in the database before any matching:
nothing it excludes reaches ranking, snippets, scores or counts.

Tokens are 256 random bits shown once; only their SHA-256 is stored (sql/access.sql). Creating and
revoking write (the writer's database URL); checking a token only reads, so the search service runs
as the reader role. The lookup itself is one statement, `token_by_digest`, which a synchronous
caller runs through `authenticate` and an asynchronous one runs itself and hands to `caller_from`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from semindex.database import Database
from semindex.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from semindex.search.request import Scope
from semindex.sql_files import statement

TOKEN_PREFIX = "smx_"


@dataclass(frozen=True)
class Grant:
    """What a client token may see. Empty means every one (connections, streams, record keys);
    `fields` maps a stream to the fields visible in it (a stream it does not list: every field)."""

    connections: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    since: datetime | None = None  # the record's updated_at, inclusive
    until: datetime | None = None  # exclusive
    record_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("connections", "streams", "record_keys"):
            values = getattr(self, name)
            if any(not isinstance(value, str) or not value for value in values):
                raise InvalidInput(f"grant {name} must be non-empty names, got {list(values)!r}", param=name)
        for stream, names in self.fields:
            if not stream or any(not isinstance(name, str) or not name for name in names):
                raise InvalidInput(f"grant fields for stream {stream!r} must be non-empty names, got {list(names)!r}", param="fields")
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput(f"grant time range is empty: since {self.since.isoformat()} is not before until {self.until.isoformat()}")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise InvalidInput(f"grant {name}={moment.isoformat()} needs a time zone (e.g. 2026-01-01T00:00:00Z)", param=name)

    def narrow(self, scope: Scope) -> Scope | None:
        """The scope a request under this grant searches: `scope` intersected with the grant. None
        when nothing can match (no requested record key is in the allowlist). A stream outside the
        grant is refused (403 grant_stream_not_allowed); a connection outside it is reported like
        an unknown one (404 connection_not_found), so a grant does not reveal what else exists."""
        outside = [stream for stream in scope.streams if self.streams and stream not in self.streams]
        if outside:
            raise Forbidden(f"stream {outside[0]!r} is not in this token's grant (granted: {', '.join(self.streams)})",
                            code="grant_stream_not_allowed", param="streams")
        unknown = [name for name in scope.connector_instance_ids if self.connections and name not in self.connections]
        if unknown:
            raise NotFound(f"no connection {unknown[0]!r}", code="connection_not_found", param="connection_id")
        record_keys = scope.record_keys
        if self.record_keys:
            record_keys = tuple(key for key in record_keys if key in self.record_keys) if record_keys else self.record_keys
            if not record_keys:
                return None
        return replace(
            scope,
            connector_instance_ids=scope.connector_instance_ids or self.connections,
            streams=scope.streams or self.streams,
            record_keys=record_keys,
            stream_fields=tuple((stream, names) for stream, names in self.fields if names),
            updated_since=_later(scope.updated_since, self.since),
            updated_until=_earlier(scope.updated_until, self.until),
        )

    def as_json(self) -> dict:
        return {
            "connections": list(self.connections), "streams": list(self.streams),
            "fields": {stream: list(names) for stream, names in self.fields},
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "record_keys": list(self.record_keys),
        }

    @classmethod
    def from_json(cls, values: Mapping) -> Grant:
        unknown = sorted(set(values) - {"connections", "streams", "fields", "since", "until", "record_keys"})
        if unknown:
            raise InvalidInput(f"unknown grant key(s) {', '.join(map(repr, unknown))}")
        fields = values.get("fields") or {}
        if not isinstance(fields, Mapping):
            raise InvalidInput(f"grant fields must map a stream to a list of fields, got {fields!r}", param="fields")
        return cls(
            connections=_names(values.get("connections"), "connections"),
            streams=_names(values.get("streams"), "streams"),
            fields=tuple((stream, _names(names, f"fields[{stream}]")) for stream, names in sorted(fields.items())),
            since=_moment(values.get("since"), "since"),
            until=_moment(values.get("until"), "until"),
            record_keys=_names(values.get("record_keys"), "record_keys"),
        )


@dataclass(frozen=True)
class TokenRow:
    token_id: int
    label: str
    owner: bool
    grant_scope: dict | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    checked_at: datetime | None = None  # the database's clock at lookup (token_by_digest)

    @property
    def state(self) -> str:
        now = self.checked_at or datetime.now(self.created_at.tzinfo)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Caller:
    """An authenticated token: an owner, or a client bound to its grant."""

    token_id: int
    label: str
    grant: Grant | None = None  # None: the owner
    fingerprint: str = field(default="", repr=False)  # binds cursors to this token

    @property
    def owner(self) -> bool:
        return self.grant is None

    def scope(self, scope: Scope) -> Scope | None:
        """The scope this caller's search runs with (None: nothing can match)."""
        return scope if self.grant is None else self.grant.narrow(scope)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_token(db: Database, label: str, *, grant: Grant | None = None,
                 expires_at: datetime | None = None) -> tuple[str, TokenRow]:
    """A new token (returned once, never stored) and its row; an owner token when `grant` is None."""
    if not label or not label.strip():
        raise InvalidInput("a token needs a label (who or what it is for)", param="label")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput(f"expires_at={expires_at.isoformat()} needs a time zone", param="expires_at")
    token = new_token()
    with db.connection() as conn:
        row = conn.cursor(row_factory=class_row(TokenRow)).execute(statement("access", "insert_token"), {
            "digest": token_digest(token), "label": label.strip(), "owner": grant is None,
            "grant_scope": None if grant is None else Jsonb(grant.as_json()), "expires_at": expires_at,
        }).fetchone()
    return token, row


def list_tokens(db: Database) -> list[TokenRow]:
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(TokenRow)).execute(statement("access", "tokens")).fetchall()


def revoke_token(db: Database, token_id: int) -> TokenRow:
    """Revoke a token; the service refuses it from its next request on. Revoking twice is a no-op."""
    with db.connection() as conn:
        row = conn.cursor(row_factory=class_row(TokenRow)).execute(
            statement("access", "revoke_token"), {"token_id": token_id}).fetchone()
    if row is None:
        raise NotFound(f"no token with id {token_id} (see `semindex tokens list`)")
    return row


def authenticate(db: Database, token: str | None) -> Caller:
    """The caller a bearer token stands for (synchronous callers; see caller_from)."""
    if not token:
        return caller_from(None, token)
    with db.connection() as conn:
        row = conn.cursor(row_factory=class_row(TokenRow)).execute(
            statement("access", "token_by_digest"), {"digest": token_digest(token)}).fetchone()
    return caller_from(row, token)


def caller_from(row: TokenRow | None, token: str | None) -> Caller:
    """The caller from its token_by_digest row: Unauthenticated when there is no token or nobody
    issued it, Forbidden (grant_revoked, grant_expired, grant_invalid) when it no longer holds."""
    if not token:
        raise Unauthenticated("no bearer token: send `Authorization: Bearer <token>` (see `semindex tokens create`)",
                              code="authentication_error")
    if row is None:
        raise Unauthenticated("the bearer token is not one this server issued", code="authentication_error")
    state = row.state
    if state == "revoked":
        raise Forbidden(f"token {row.token_id} ({row.label}) was revoked at {row.revoked_at.isoformat()}", code="grant_revoked")
    if state == "expired":
        raise Forbidden(f"token {row.token_id} ({row.label}) expired at {row.expires_at.isoformat()}", code="grant_expired")
    fingerprint = hashlib.sha256(b"caller:" + token_digest(token)).hexdigest()
    if row.owner:
        return Caller(row.token_id, row.label, None, fingerprint)
    try:
        grant = Grant.from_json(row.grant_scope or {})
    except InvalidInput as error:
        raise Forbidden(f"token {row.token_id}'s stored grant is malformed: {error}", code="grant_invalid") from None
    return Caller(row.token_id, row.label, grant, fingerprint)


def parse_grant(text: str) -> Grant:
    """A grant from its JSON text (the CLI's --grant)."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"--grant is not JSON ({error.msg} at character {error.pos}): {text[:80]!r}") from None
    if not isinstance(values, Mapping):
        raise InvalidInput(f"--grant must be a JSON object, got {text[:80]!r}")
    return Grant.from_json(values)


def _names(value, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidInput(f"grant {name} must be a list of names, got {value!r}", param=name)
    return tuple(value)


def _moment(value, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"grant {name}={value!r} is not an ISO 8601 time", param=name) from None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(a, b) if a and b else a or b


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return min(a, b) if a and b else a or b
