"""Cursors: opaque, signed tokens naming a snapshot of a ranked list and an offset into it.

A first page ranks the request RANKING_DEPTH deep once and keeps that ranking as a snapshot file,
so every later page comes from the same ranking (nothing re-searched, nothing skipped or repeated
while records change). Snapshots live in one folder shared by every worker process of the service
(a cursor may reach any of them), for SNAPSHOT_TTL seconds; past MAX_SNAPSHOTS or MAX_BYTES the
oldest go first, so memory and disk stay bounded.

A cursor is `base64url(payload).base64url(hmac)`: the payload names the snapshot, the offset and a
binding (a hash of the token, its grant, the route, q, streams, filters and connection), signed with
the service's secret. A page re-computes the binding from its own request: a cursor replayed by
another token, for another query, tampered with or expired is `invalid_cursor`, and the error says
nothing about what the snapshot holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from semindex.search.ranking import Ranking

SNAPSHOT_TTL = 300.0
MAX_SNAPSHOTS = 2000
MAX_BYTES = 512 * 1024 * 1024


class InvalidCursor(Exception):
    """Any cursor the service cannot page: the message is for logs, never for the client."""


@dataclass(frozen=True)
class CursorPosition:
    snapshot: str
    offset: int


def binding(*parts: object) -> str:
    """The hash a cursor is bound to, over the caller's identity and its request's scope."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, position: CursorPosition, bound_to: str) -> str:
        payload = _b64(json.dumps({"s": position.snapshot, "o": position.offset, "b": bound_to}, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def decode(self, cursor: str, bound_to: str) -> CursorPosition:
        payload, dot, signature = cursor.partition(".")
        if not dot or not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidCursor("bad signature")
        try:
            values = json.loads(_unb64(payload))
            position = CursorPosition(str(values["s"]), int(values["o"]))
            bound = str(values["b"])
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidCursor(f"malformed payload: {error}") from None
        if not hmac.compare_digest(bound, bound_to):
            raise InvalidCursor("bound to another caller or request")
        if position.offset < 1:
            raise InvalidCursor("bad offset")
        return position

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())


class SnapshotStore:
    """Rankings as files in a folder every worker shares, written atomically, read until they expire."""

    def __init__(self, folder: Path, ttl: float = SNAPSHOT_TTL, max_snapshots: int = MAX_SNAPSHOTS,
                 max_bytes: int = MAX_BYTES, eviction_interval: float = 1.0) -> None:
        self.folder = folder
        self.ttl = ttl
        self.max_snapshots = max_snapshots
        self.max_bytes = max_bytes
        self.eviction_interval = eviction_interval
        self._last_eviction = 0.0
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, ranking: Ranking) -> str:
        self._evict()
        name = secrets.token_urlsafe(18)
        staging = self.folder / f".{name}.tmp"
        staging.write_text(json.dumps(ranking.to_json(), ensure_ascii=False), encoding="utf-8")
        os.replace(staging, self.folder / f"{name}.json")
        return name

    def get(self, name: str) -> Ranking:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidCursor("bad snapshot name")
        path = self.folder / f"{name}.json"
        try:
            if time.time() - path.stat().st_mtime > self.ttl:
                raise InvalidCursor("snapshot expired")
            return Ranking.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise InvalidCursor("no such snapshot (expired or evicted)") from None

    def _evict(self) -> None:
        """Expired snapshots, then the oldest while over the count or byte bound; at most once a
        `eviction_interval` per process (a folder scan per first page would cost more than the page)."""
        now = time.time()
        if now - self._last_eviction < self.eviction_interval:
            return
        self._last_eviction = now
        entries = []
        for path in self.folder.glob("*.json"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # another worker evicted it
                continue
            if now - stat.st_mtime > self.ttl:
                path.unlink(missing_ok=True)
            else:
                entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        while entries and (len(entries) >= self.max_snapshots or total > self.max_bytes):
            _, size, path = entries.pop(0)
            path.unlink(missing_ok=True)
            total -= size


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
