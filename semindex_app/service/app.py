"""The application factory of `semindex serve` (uvicorn imports `create_app` in every worker).

The service runs as the database's reader role: it never bootstraps nor writes. In its lifespan it
opens the library's Database (a synchronous pool: searches run in worker threads, off the event
loop), an async pool for what the event loop reads itself (token lookups, readiness), one Searcher
per process (so the query-vector cache is shared by every request of the worker), and warms the
serving version's encoder in the background (/readyz says when it is loaded).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import AsyncConnectionPool
from starlette.concurrency import run_in_threadpool

from semindex import settings
from semindex.database import Database, redact, resolve_database_url
from semindex.encoders import load_encoder
from semindex.errors import SemindexError
from semindex.search import Searcher
from semindex.shadow_traffic import ShadowMirror, ShadowSettings
from semindex.vectors.version import active_version
from semindex_app.service import compatible, metrics, native, page
from semindex_app.service.cursors import CursorCodec, SnapshotStore
from semindex_app.service.errors import ApiError

log = logging.getLogger("semindex.serve")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_STRING_BYTES = 16 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NATIVE_PREFIX = "/v1/query"


@dataclass(frozen=True)
class ServiceConfig:
    database_url: str
    cursor_secret: bytes
    snapshot_dir: Path
    max_connections: int = 16
    shadow_database_url: str | None = None  # None: no shadow traffic
    shadow_sample_rate: float = 0.1

    @classmethod
    def from_environment(cls) -> ServiceConfig:
        secret = settings.cursor_secret()
        folder = settings.snapshot_dir()
        if secret is None or folder is None:
            # One process alone (tests, `uvicorn --factory`): its own secret and folder. `semindex
            # serve` sets both before starting workers, so every worker shares them.
            secret = secret or secrets.token_bytes(32)
            folder = folder or settings.semindex_home() / "run" / f"snapshots-{secrets.token_hex(4)}"
        return cls(resolve_database_url(), secret, folder, shadow_database_url=settings.shadow_database_url(),
                   shadow_sample_rate=settings.shadow_sample_rate())


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    config = config or ServiceConfig.from_environment()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.db = Database(config.database_url, bootstrap=False, max_connections=config.max_connections,
                            pool_timeout=5.0, check_connections=True)
        state.async_pool = AsyncConnectionPool(config.database_url, min_size=1, max_size=4, timeout=5.0,
                                               check=AsyncConnectionPool.check_connection, open=False, name="semindex-async")
        await state.async_pool.open(wait=False)
        state.searcher = Searcher(state.db)
        state.searcher.cache.on_lookup = lambda hit: metrics.CACHE.labels("hit" if hit else "miss").inc()
        state.snapshots = SnapshotStore(config.snapshot_dir)
        state.cursors = CursorCodec(config.cursor_secret)
        state.mirror = None
        if config.shadow_database_url:
            state.shadow_db = Database(config.shadow_database_url, bootstrap=False, max_connections=2, pool_timeout=5.0,
                                       check_connections=True)
            state.mirror = ShadowMirror(lambda search_request: state.searcher.search(search_request).hits, state.db,
                                        state.shadow_db, ShadowSettings(sample_rate=config.shadow_sample_rate),
                                        on_event=lambda event: metrics.SHADOW.labels(event).inc())
            log.info("shadow traffic: %.0f%% of semantic and hybrid queries mirrored to candidate versions, stored through %s",
                     100 * config.shadow_sample_rate, redact(config.shadow_database_url))
        state.encoder_ready = threading.Event()
        threading.Thread(target=_warm_encoder, args=(state,), name="semindex-encoder-warmup", daemon=True).start()
        log.info("serving %s", redact(config.database_url))
        try:
            yield
        finally:
            if state.mirror is not None:
                state.mirror.close()
                state.shadow_db.close()
            await state.async_pool.close()
            state.db.close()

    app = FastAPI(
        title="semindex",
        version="0.1.0",
        summary="Keyword, semantic and hybrid search over personal and company records",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.include_router(compatible.router)
    app.include_router(native.router)
    app.include_router(page.router)

    @app.middleware("http")
    async def frame(request: Request, call_next):
        """Request id, size limits, metrics and one log line for every request; no stack trace ever
        leaves the process."""
        given = request.headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else f"req_{secrets.token_hex(8)}"
        request_id_var.set(request_id)
        request.state.request_id = request_id
        started = time.perf_counter()
        try:
            if len(request.url.query.encode()) > MAX_QUERY_STRING_BYTES:
                raise ApiError(413, "request_entity_too_large", f"the query string is over {MAX_QUERY_STRING_BYTES} bytes")
            if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
                raise ApiError(413, "request_entity_too_large", f"the request body is over {MAX_BODY_BYTES} bytes")
            response = await call_next(request)
        except ApiError as error:
            response = _error_response(request, error)
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.url.path)
            response = _error_response(request, ApiError(500, "internal_error", "the server failed to answer; "
                                                         f"the log has the details under request id {request_id}"))
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        elapsed = time.perf_counter() - started
        metrics.REQUESTS.labels(template, request.method, str(response.status_code)).inc()
        metrics.LATENCY.labels(template, request.method).observe(elapsed)
        metrics.record_pool(request.app.state.db.pool_stats())
        response.headers["X-Request-Id"] = request_id
        log.info("%s %s %s %.1fms", request.method, request.url.path, response.status_code, elapsed * 1000)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return _error_response(request, error)

    @app.exception_handler(SemindexError)
    async def semindex_error(request: Request, error: SemindexError):
        return _error_response(request, ApiError.from_error(error))

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(request: Request, error: psycopg.OperationalError):
        log.warning("database unavailable: %s", " ".join(str(error).split()))
        return _error_response(request, ApiError(503, "database_unavailable", "the database is unavailable; retry shortly"))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
        param = ".".join(where) or None
        return _error_response(request, ApiError(400, "invalid_request", f"{param or 'request'}: {first.get('msg', 'invalid')}", param))

    @app.get("/livez", tags=["operations"], summary="The process is up")
    async def livez() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Ready to search: database, serving version, encoder",
             responses={503: {"description": "Not ready; `checks` says what is missing"}})
    async def readyz(request: Request):
        state = request.app.state
        checks = {"database": False, "serving_version": None, "encoder_loaded": state.encoder_ready.is_set()}
        with contextlib.suppress(psycopg.Error, OSError):
            async with state.async_pool.connection(timeout=2.0) as conn:
                row = await (await conn.execute("SELECT version_key FROM semindex.embedding_versions WHERE active")).fetchone()
                checks["database"] = True
                checks["serving_version"] = row[0] if row else None
        ready = checks["database"] and checks["serving_version"] is not None and checks["encoder_loaded"]
        return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (every worker's)")
    async def prometheus() -> Response:
        return Response(await run_in_threadpool(metrics.exposition), media_type=metrics.CONTENT_TYPE)

    return app


def _error_response(request: Request, error: ApiError) -> JSONResponse:
    request_id = getattr(request.state, "request_id", request_id_var.get())
    if request.url.path.startswith(NATIVE_PREFIX):
        return error.problem(request_id, request.url.path)
    return error.envelope(request_id)


def _warm_encoder(state) -> None:
    """Load the serving version's encoder once, so the first semantic query does not pay for it;
    retried every 5 s while the database or a serving version is missing."""
    while not state.encoder_ready.is_set():
        try:
            version = active_version(state.db)
            if version is not None:
                load_encoder(version.encoder_spec)
                state.encoder_ready.set()
                _say_if_read_only(state.db)
                return
        except (SemindexError, psycopg.Error) as error:
            log.warning("encoder warm-up waits: %s", " ".join(str(error).split()))
        except RuntimeError:  # the pool closed: the service is stopping
            return
        time.sleep(5)


def _say_if_read_only(db: Database) -> None:
    """A service on a replica says so once: its answers are what the replica has replayed (behind
    the primary by the replication lag), and it writes nothing, so nothing is lost to that."""
    with contextlib.suppress(SemindexError, psycopg.Error):
        reason = db.read_only_reason()
        if reason:
            log.info("the database is %s: searches answer from what it has replayed from the primary (its "
                     "replication lag behind it); tokens, the pipeline and shadow observations are written on the primary",
                     reason)


_DESCRIPTION = """
Search over records (mail, chat, documents) by keyword, by meaning, or both.

* **Reference-compatible routes**: `GET /v1/search` (lexical, BM25), `/v1/search/semantic`,
  `/v1/search/hybrid`, the parameters, envelopes, cursors and error codes of the reference server.
  Hybrid uses semindex's fusion (a z-score blend by default), not the reference's round-robin
  interleave, so its order differs.
* **Native route**: `POST /v1/query` with every option (mode, fusion, weights, version, fields,
  record keys, passages); errors as RFC 9457 problem+json.
* **Auth**: `Authorization: Bearer <token>` from `semindex tokens create --owner` or `--grant '{...}'`.
  A grant (connections, streams, fields per stream, a time range, record keys) is applied before
  any matching: nothing outside it is ranked, counted or shown.
* **Operations**: `/livez`, `/readyz`, `/metrics`; every response carries `X-Request-Id`.
"""
