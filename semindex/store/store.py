"""PgVectorStore: the seed's vector-store surface (dataknobs-data's pgvector backend), on semindex's
vectors, metrics and search planning, without the seed's failures (see README "Vector store").

Every method of the seed, with its names, arguments, defaults and return shapes. What differs:
filtered search returns k rows whenever k match (a plan per search: exact for small matching sets,
the ANN index with iterative scans otherwise, widened, then exact); a rich filter language with
bound keys and values; tenant isolation on every path; input checked before anything is written;
bulk writes by binary COPY and one merge; indexes built outside search, CONCURRENTLY on a table with
rows, once across processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from semindex.errors import Conflict, InvalidInput, NotFound, Unavailable
from semindex.indexes import HnswParameters
from semindex.sql_files import statement
from semindex.store.config import MAX_INDEX_DIMENSIONS, StoreConfig, check_index_params
from semindex.store.filters import compile_filter

log = logging.getLogger(__name__)

MAX_K = 10_000
# Matching rows up to which a search ranks every one exactly (cheaper than a filtered graph walk,
# and never short); counted with a LIMIT, so the estimate costs at most this many index entries.
EXACT_THRESHOLD = 10_000
MAX_EF_SEARCH = 1_000
INDEX_CACHE_SECONDS = 10.0
DEFAULT_HNSW = {"m": 16, "ef_construction": 64}


@dataclass(frozen=True)
class IndexResult:
    """What create_index did."""

    name: str
    index_type: str
    created: bool  # False: it already existed (another instance may have built it)
    concurrently: bool
    params: dict
    seconds: float


@dataclass(frozen=True)
class SearchPlan:
    """How the last search was answered (`store.last_plan`): exact or the ANN index, how many rows
    it could match (a lower bound past the cap), the settings used and how often it widened."""

    kind: str  # "exact", "hnsw", "ivfflat", or "<ann>->exact" when the ANN answer stayed short
    matching: int | None
    settings: dict
    widenings: int = 0


class PgVectorStore:
    """The async store. `PgVectorStore(config)` with a dict or a StoreConfig; `initialize()` opens
    the pool (and creates the table and indexes as configured); `close()` or `async with`."""

    def __init__(self, config: Mapping | StoreConfig) -> None:
        self.config = StoreConfig.from_mapping(config)
        self._pool: AsyncConnectionPool | None = None
        self._owns_pool = True
        self._registered: weakref.WeakSet = weakref.WeakSet()
        self._ann: tuple[float, list] = (0.0, [])
        self._initialized = False
        self.last_plan: SearchPlan | None = None
        columns = self.config.column_map
        self._c = {name: sql.Identifier(column) for name, column in columns.items()}
        self._table = sql.Identifier(self.config.schema, self.config.table_name)
        self._qualified = f"{_quoted(self.config.schema)}.{_quoted(self.config.table_name)}"
        self._metric = self.config.metric_spec

    @classmethod
    def from_components(cls, config: Mapping | StoreConfig, *, pool: AsyncConnectionPool) -> PgVectorStore:
        """A store on an injected pool (opened by its owner); close() leaves it open."""
        store = cls(config)
        store._pool = pool
        store._owns_pool = False
        return store

    # ---- lifecycle -------------------------------------------------------------------------------
    async def initialize(self) -> None:
        try:
            await self._initialize()
        except BaseException:
            await self.close()  # a pool this store opened does not outlive a failed start
            raise

    async def _initialize(self) -> None:
        if self._pool is None:
            self._pool = AsyncConnectionPool(self.config.url(), min_size=self.config.pool_min_size,
                                             max_size=self.config.pool_max_size, open=False, name="semindex-store")
        if self._owns_pool:
            await self._pool.open(wait=True, timeout=30)
        async with self._connection(register=False) as conn:
            installed = await (await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).fetchone()
            if installed is None:
                raise Unavailable("the pgvector extension is not installed in this database: a superuser runs "
                                  "CREATE EXTENSION vector (pgvector 0.8 or later)")
            if self.config.auto_create_table:
                await conn.execute(self._statement("create_schema"))
                await conn.execute(self._statement(
                    "create_table", id_type=sql.SQL(self.config.id_type),
                    id_default=sql.SQL("DEFAULT gen_random_uuid()" if self.config.id_type == "uuid" else ""),
                    dimensions=self.config.dimensions))
                for kind in ("domain", "metadata"):
                    name = self._index_name(kind)
                    exists = await (await conn.execute(statement("store", "relation_exists"), {
                        "name": f"{_quoted(self.config.schema)}.{_quoted(name)}"})).fetchone()
                    if not exists[0]:
                        await conn.execute(self._statement(f"create_{kind}_index", index=sql.Identifier(name)))
            found = await (await conn.execute(statement("store", "column_type"), {
                "table": self._qualified, "column": self.config.column_map["embedding"]})).fetchone()
        if found is None:
            raise NotFound(f"table {self._qualified} has no column {self.config.column_map['embedding']!r} "
                           "(auto_create_table is off, or the column mapping names another column)")
        expected = f"vector({self.config.dimensions})"
        if found[0] != expected:
            raise Conflict(f"table {self._qualified} holds {found[0]} in {self.config.column_map['embedding']!r}, "
                           f"not {expected}: use a table of its own for {self.config.dimensions}-d vectors")
        self._initialized = True
        if self.config.auto_create_index and self.config.index_type == "hnsw":
            await self.create_index()  # HNSW builds on an empty table, then grows with it

    async def close(self) -> None:
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
        self._pool = None if self._owns_pool else self._pool
        self._initialized = False

    async def __aenter__(self) -> PgVectorStore:
        await self.initialize()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---- writes ----------------------------------------------------------------------------------
    async def add_vectors(self, vectors, ids: Sequence | None = None, metadata: Sequence[Mapping] | None = None) -> list[str]:
        """Upsert: new ids are inserted, existing ones replaced. Ids are generated when absent.
        Every row is checked first; a bad one fails the batch and nothing is written."""
        matrix = self._matrix(vectors)
        n = len(matrix)
        ids = [str(uuid.uuid4()) for _ in range(n)] if ids is None else [self._id(value) for value in ids]
        if len(ids) != n:
            raise InvalidInput(f"{len(ids)} ids for {n} vectors")
        duplicate = _first_duplicate(ids)
        if duplicate is not None:
            raise InvalidInput(f"id {duplicate!r} appears twice in one batch")
        metadata = [{} for _ in range(n)] if metadata is None else list(metadata)
        if len(metadata) != n:
            raise InvalidInput(f"{len(metadata)} metadata entries for {n} vectors")
        rows = [self._row(row_id, vector, meta, number) for number, (row_id, vector, meta) in enumerate(zip(ids, matrix, metadata))]
        if not rows:
            return []
        staging = sql.Identifier(f"store_staging_{uuid.uuid4().hex[:12]}")
        async with self._connection() as conn, conn.transaction():
            await conn.execute(self._statement("create_staging", staging=staging, dimensions=self.config.dimensions))
            async with conn.cursor().copy(self._statement("copy_staging", staging=staging)) as copy:
                copy.set_types(["text", "text", "text", "int4", "text", "vector", "jsonb"])
                for row in rows:
                    await copy.write_row(row)
            foreign = await (await conn.execute(self._statement("foreign_ids", staging=staging,
                                                                id_type=sql.SQL(self.config.id_type)))).fetchone()
            if foreign is not None:
                raise Conflict(f"id {foreign[0]!r} belongs to domain {foreign[1]!r}; this store writes domain "
                               f"{self.config.domain_id!r}: nothing was written")
            await conn.execute(self._statement("merge_staging", staging=staging, id_type=sql.SQL(self.config.id_type)))
        if self.config.auto_create_index and self.config.index_type == "ivfflat" and not await self._ann_indexes():
            if await self.count() >= self.config.min_rows_for_index:
                # After the write, never inside search(): IVFFlat needs rows to cluster.
                await self.create_index()
        return ids

    async def update_metadata(self, ids: Sequence, metadata: Sequence[Mapping]) -> int:
        """Replace the metadata of each id (one entry per id); returns the rows updated."""
        ids = [self._id(value) for value in ids]
        metadata = list(metadata)
        if len(ids) != len(metadata):
            raise InvalidInput(f"{len(metadata)} metadata entries for {len(ids)} ids: give one per id")
        for number, meta in enumerate(metadata):
            self._check_metadata(meta, number)
        async with self._connection() as conn:
            cursor = await conn.execute(self._statement("update_metadata", id_type=sql.SQL(self.config.id_type)),
                                        {"ids": ids, "metadata": [Jsonb(dict(meta)) for meta in metadata], **self._domain()})
            return cursor.rowcount

    async def update_metadata_where(self, filter: Mapping, set_: Mapping) -> int:  # noqa: A002 - the seed's name
        """Merge `set_` into the metadata of every row the filter matches; returns the rows updated."""
        if not isinstance(set_, Mapping) or not set_:
            raise InvalidInput(f"set_ must be a non-empty object of metadata keys, got {set_!r}")
        self._check_metadata(set_, 0, what="set_")
        compiled = self._filter(filter)
        async with self._connection() as conn:
            cursor = await conn.execute(self._statement("update_metadata_where", filter=compiled.condition),
                                        {"patch": Jsonb(dict(set_)), **compiled.params, **self._domain()})
            return cursor.rowcount

    async def delete_vectors(self, ids: Sequence) -> int:
        ids = [self._id(value) for value in ids]
        async with self._connection() as conn:
            cursor = await conn.execute(self._statement("delete", id_type=sql.SQL(self.config.id_type)), {"ids": ids, **self._domain()})
            return cursor.rowcount

    async def clear(self, filter: Mapping | None = None, *, all_domains: bool = False) -> int:  # noqa: A002
        """Delete the rows the filter matches (every row of this store's domain without one). An
        unscoped store clears every tenant only when asked with `all_domains=True`."""
        if self.config.domain_id is None and filter is None and not all_domains:
            raise InvalidInput("clear() on a store without domain_id would delete every tenant's rows: pass a filter, "
                               "or all_domains=True to mean it")
        compiled = self._filter(filter)
        async with self._connection() as conn:
            cursor = await conn.execute(self._statement("clear", filter=compiled.condition), {**compiled.params, **self._domain()})
            return cursor.rowcount

    # ---- reads -----------------------------------------------------------------------------------
    async def get_vectors(self, ids: Sequence, include_metadata: bool = True) -> list[tuple[np.ndarray | None, dict | None]]:
        """(vector, metadata) per id in input order; (None, None) for an id not stored."""
        ids = [self._id(value) for value in ids]
        async with self._connection() as conn:
            rows = await (await conn.execute(self._statement("get", id_type=sql.SQL(self.config.id_type)),
                                             {"ids": ids, **self._domain()})).fetchall()
        found = {row[0]: (_array(row[1]) if row[1] is not None else None,
                          (row[2] if row[2] is not None else {}) if include_metadata else None) for row in rows}
        return [found.get(row_id, (None, None)) for row_id in ids]

    async def count(self, filter: Mapping | None = None) -> int:  # noqa: A002
        compiled = self._filter(filter)
        async with self._connection() as conn:
            row = await (await conn.execute(self._statement("count", filter=compiled.condition),
                                            {**compiled.params, **self._domain()})).fetchone()
        return row[0]

    async def metadata_fields(self) -> list[str]:
        """The metadata keys in use (top level), sorted."""
        async with self._connection() as conn:
            rows = await (await conn.execute(self._statement("metadata_fields"), self._domain())).fetchall()
        return [row[0] for row in rows]

    async def search(self, query, k: int = 10, filter: Mapping | None = None,  # noqa: A002
                     include_metadata: bool = True) -> list[tuple[str, float, dict | None]]:
        """The k rows nearest to `query` (k whenever k match the filter and domain), best first, as
        (id, score, metadata); the score is the seed's: cosine 1 - distance, euclidean 1 / (1 +
        distance), inner product the product itself (l1 like euclidean)."""
        vector = self._matrix([query], what="query")[0]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInput(f"k={k!r} must be a whole number from 1 to {MAX_K:,}")
        compiled = self._filter(filter)
        params = {"query": vector, "k": k, **compiled.params, **self._domain()}
        indexes = await self._ann_indexes()
        ann = indexes[0] if indexes else None
        async with self._connection() as conn:
            if ann is None:
                rows = await self._exact(conn, compiled, params)
                self.last_plan = SearchPlan("exact", None, {})
            elif filter is None and self.config.domain_id is None:
                rows, self.last_plan = await self._walk(conn, ann, compiled, params, k, None)
            else:
                rows, self.last_plan = await self._filtered(conn, ann, compiled, params, k)
        return [(row_id, self._metric.similarity(float(distance)), (metadata or {}) if include_metadata else None)
                for row_id, distance, metadata in rows]

    async def _filtered(self, conn, ann: dict, compiled, params, k: int) -> tuple[list, SearchPlan]:
        """A filter (or a domain) with an ANN index: the planner's estimate of the matching rows
        sends a clearly large set to the index; otherwise up to EXACT_THRESHOLD matching rows are
        ranked exactly in one read, and only a set found larger goes to the index. Either way a
        short index answer is answered exactly (see _walk)."""
        plan = (await (await conn.execute(self._statement("estimate", filter=compiled.condition), params)).fetchone())[0]
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        if estimate > 4 * EXACT_THRESHOLD:
            rows, chosen = await self._walk(conn, ann, compiled, params, k, None)
            return rows, SearchPlan(chosen.kind, None, {**chosen.settings, "estimated_rows": estimate}, chosen.widenings)
        async with conn.transaction():
            capped = await (await conn.execute(self._statement("search_exact_capped", filter=compiled.condition),
                                               {**params, "cap": EXACT_THRESHOLD + 1})).fetchall()
        matched = capped[0][3] if capped else 0
        if matched <= EXACT_THRESHOLD:
            return [row[:3] for row in capped], SearchPlan("exact", matched, {"estimated_rows": estimate})
        rows, chosen = await self._walk(conn, ann, compiled, params, k, matched)
        return rows, SearchPlan(chosen.kind, matched, {**chosen.settings, "estimated_rows": estimate}, chosen.widenings)

    async def _exact(self, conn, compiled, params) -> list:
        async with conn.transaction():
            return await (await conn.execute(self._statement("search_exact", filter=compiled.condition), params)).fetchall()

    async def _walk(self, conn, ann: dict, compiled, params, k: int, matching: int | None) -> tuple[list, SearchPlan]:
        """The ANN index with iterative scans, widened until k rows come back, else exact."""
        kind = ann["kind"]
        if kind == "hnsw":
            knob = max(100, 2 * k)
        else:
            lists = _option(ann["options"], "lists", 100)
            knob = max(1, math.ceil(lists / 4))
        widenings = 0
        while True:
            settings = ({"ef_search": min(knob, MAX_EF_SEARCH), "max_scan_tuples": max(20_000, 50 * k)} if kind == "hnsw"
                        else {"probes": knob, "max_probes": max(knob, _option(ann["options"], "lists", 100))})
            async with conn.transaction():
                await conn.execute(statement("store", f"{kind}_settings"), {key: str(value) for key, value in settings.items()})
                rows = await (await conn.execute(self._statement("search_ann", filter=compiled.condition), params)).fetchall()
            if len(rows) >= k:
                return rows, SearchPlan(kind, matching, settings, widenings)
            limit = MAX_EF_SEARCH if kind == "hnsw" else _option(ann["options"], "lists", 100)
            if knob >= limit:
                break
            knob, widenings = min(limit, knob * 4), widenings + 1
        # Still short: the ANN walk cannot prove there are fewer than k rows; the exact answer can.
        rows = await self._exact(conn, compiled, params)
        return rows, SearchPlan(f"{kind}->exact", matching, settings, widenings)

    # ---- indexes ---------------------------------------------------------------------------------
    async def create_index(self, index_type: str | None = None, params: Mapping | None = None) -> IndexResult:
        """Build the ANN index (the config's type and params unless given) unless it exists: once
        across processes (an advisory lock, then the catalog), CONCURRENTLY when the table has rows."""
        index_type = index_type or self.config.index_type
        if index_type not in ("hnsw", "ivfflat"):
            raise InvalidInput(f"index_type {index_type!r}: create_index builds hnsw or ivfflat")
        params = dict(params if params is not None else self.config.index_params)
        check_index_params(index_type, params)
        if self.config.dimensions > MAX_INDEX_DIMENSIONS:
            raise InvalidInput(f"pgvector indexes vectors of up to {MAX_INDEX_DIMENSIONS:,} dimensions; this store has "
                               f"{self.config.dimensions:,} (search stays exact)")
        if index_type == "ivfflat" and self._metric.name == "l1":
            raise InvalidInput("IVFFlat has no l1 operator class: use index_type='hnsw' for metric l1")
        name = self._index_name(index_type)
        qualified = f"{_quoted(self.config.schema)}.{_quoted(name)}"
        started = time.monotonic()
        async with await psycopg.AsyncConnection.connect(self.config.url() if self._owns_pool else self._pool.conninfo,
                                                         autocommit=True) as conn:
            key = {"key": f"semindex.store:{self._qualified}:{name}"}
            while not (await (await conn.execute(statement("store", "index_lock"), key)).fetchone())[0]:
                await asyncio.sleep(0.25)  # another process is building it
            try:
                state = await (await conn.execute(statement("store", "index_state"), {"index": qualified})).fetchone()
                if state is not None and state[0]:
                    return IndexResult(name, index_type, False, False, params, round(time.monotonic() - started, 3))
                if state is not None:  # an interrupted concurrent build left it invalid
                    await conn.execute(self._statement("drop_index", index=sql.Identifier(self.config.schema, name)))
                rows = (await (await conn.execute(self._statement("count_all"))).fetchone())[0]
                # semindex's build settings: raised memory, and serial (parallel builds die on a small /dev/shm).
                await conn.execute(statement("indexes", "raise_build_memory"), (HnswParameters().maintenance_work_mem, "0"))
                concurrently = rows > 0
                where = {"index": sql.Identifier(name), "concurrently": sql.SQL("CONCURRENTLY" if concurrently else "")}
                if index_type == "hnsw":
                    chosen = {**DEFAULT_HNSW, **params}
                    ddl = self._statement("create_hnsw", m=sql.Literal(chosen["m"]),
                                          ef_construction=sql.Literal(chosen["ef_construction"]), **where)
                else:
                    # pgvector's guidance: rows / 1000 lists up to a million rows, sqrt(rows) beyond.
                    chosen = {"lists": params.get("lists") or max(1, rows // 1000 if rows <= 1_000_000 else int(math.sqrt(rows)))}
                    ddl = self._statement("create_ivfflat", lists=sql.Literal(chosen["lists"]), **where)
                await conn.execute(ddl)
            finally:
                await conn.execute(statement("store", "index_unlock"), key)
        self._ann = (0.0, [])
        return IndexResult(name, index_type, True, concurrently, chosen, round(time.monotonic() - started, 3))

    # ---- helpers ---------------------------------------------------------------------------------
    def _statement(self, name: str, **parts) -> sql.Composed:
        return statement("store", name, schema=sql.Identifier(self.config.schema), table=self._table,
                         domain=self._domain_condition(), operator=self._metric.sql_operator,
                         opclass=self._metric.sql_opclass, **self._c, **parts)

    def _domain_condition(self) -> sql.Composable:
        if self.config.domain_id is None:
            return sql.SQL("true")
        return sql.SQL("{} = %(domain)s").format(self._c["domain_id"])

    def _domain(self) -> dict:
        return {} if self.config.domain_id is None else {"domain": self.config.domain_id}

    def _index_name(self, kind: str) -> str:
        base = f"{self.config.table_name}_{self.config.column_map['embedding'] if kind in ('hnsw', 'ivfflat') else kind}_{kind}_idx"
        if len(base.encode()) <= 63:
            return base
        # A long table name: a prefix and a hash, so two long names never truncate to one index.
        return f"{base.encode()[:40].decode(errors='ignore')}_{hashlib.sha256(base.encode()).hexdigest()[:12]}_idx"

    def _filter(self, spec):
        if spec is not None and not isinstance(spec, Mapping):
            raise InvalidInput(f"filter must be an object (e.g. {{'category': 'science'}}), got {spec!r}")
        return compile_filter(spec, self._c["metadata"])

    async def _ann_indexes(self) -> list[dict]:
        read_at, indexes = self._ann
        if time.monotonic() - read_at < INDEX_CACHE_SECONDS:
            return indexes
        async with self._connection(register=False) as conn:
            rows = await (await conn.execute(statement("store", "ann_indexes"), {
                "table": self._qualified, "column": self.config.column_map["embedding"]})).fetchall()
        indexes = [{"name": r[0], "kind": r[1], "options": r[3]} for r in rows if r[2]]
        # The configured type first when both exist.
        indexes.sort(key=lambda index: index["kind"] != self.config.index_type)
        self._ann = (time.monotonic(), indexes)
        return indexes

    def _connection(self, register: bool = True):
        if self._pool is None:
            raise Conflict("the store is not initialized: await store.initialize() first (or use `async with`)")
        return _PooledConnection(self, register)

    def _matrix(self, vectors, what: str = "vectors") -> np.ndarray:
        d = self.config.dimensions
        if isinstance(vectors, np.ndarray):
            matrix = vectors
        else:
            rows = list(vectors)
            lengths = {len(row) for row in rows if hasattr(row, "__len__")}
            if len(lengths) > 1:
                raise InvalidInput(f"{what} have mixed lengths {sorted(lengths)}; every vector needs {d}")
            try:
                matrix = np.asarray(rows, dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise InvalidInput(f"{what} are not numbers: {error}") from None
        if matrix.ndim == 1 and matrix.size:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2:
            raise InvalidInput(f"{what} must be a list of vectors (2-D), got shape {matrix.shape}")
        if matrix.shape[0] and matrix.shape[1] != d:
            raise InvalidInput(f"{what}: expected {d} dimensions, got {matrix.shape[1]}")
        if not np.issubdtype(matrix.dtype, np.number):
            raise InvalidInput(f"{what} are not numbers (dtype {matrix.dtype})")
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            raise InvalidInput(f"{what}: row {int(np.argmin(finite))} holds NaN or infinite values")
        if np.abs(matrix).max(initial=0) > np.finfo(np.float32).max:
            raise InvalidInput(f"{what}: values beyond float4's range")
        if self._metric.name == "cosine":
            zero = ~np.any(matrix != 0, axis=1)
            if zero.any():
                raise InvalidInput(f"{what}: row {int(np.argmax(zero))} is a zero vector, which has no cosine distance")
        return matrix.astype(np.float32)

    def _id(self, value) -> str:
        if self.config.id_type == "uuid":
            try:
                return str(uuid.UUID(str(value)))
            except (ValueError, AttributeError, TypeError):
                raise InvalidInput(f"id {value!r} is not a UUID (id_type='uuid'; use id_type='text' for other ids)") from None
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "" or "\x00" in str(value):
            raise InvalidInput(f"id {value!r} must be non-empty text")
        return str(value)

    def _check_metadata(self, meta, number: int, what: str = "metadata") -> None:
        if not isinstance(meta, Mapping):
            raise InvalidInput(f"{what}[{number}] must be an object, got {meta!r}")
        domain = meta.get("domain_id")
        if self.config.domain_id is not None and domain is not None and domain != self.config.domain_id:
            raise Conflict(f"{what}[{number}] names domain {domain!r}, but this store is scoped to domain "
                           f"{self.config.domain_id!r}: a store never writes another tenant's rows")

    def _row(self, row_id: str, vector: np.ndarray, meta, number: int) -> tuple:
        self._check_metadata(meta, number)
        domain = self.config.domain_id if self.config.domain_id is not None else meta.get("domain_id")
        chunk_index = meta.get("chunk_index")
        if chunk_index is not None and (isinstance(chunk_index, bool) or not isinstance(chunk_index, int)):
            raise InvalidInput(f"metadata[{number}].chunk_index={chunk_index!r} must be a whole number")
        text = {name: (None if meta.get(name) is None else str(meta.get(name))) for name in ("document_id", "content")}
        if domain is not None:
            domain = str(domain)
        return (row_id, domain, text["document_id"], chunk_index, text["content"], vector, Jsonb(dict(meta)))


class _PooledConnection:
    """A pooled connection with pgvector's types registered once per connection."""

    def __init__(self, store: PgVectorStore, register: bool) -> None:
        self._store = store
        self._register = register
        self._context = None

    async def __aenter__(self):
        self._context = self._store._pool.connection()
        try:
            conn = await self._context.__aenter__()
        except psycopg.OperationalError as error:
            raise Unavailable(f"cannot reach the store's database: {' '.join(str(error).split())}") from error
        if self._register and conn not in self._store._registered:
            await register_vector_async(conn)
            self._store._registered.add(conn)
        return conn

    async def __aexit__(self, *exc):
        return await self._context.__aexit__(*exc)


def _quoted(name: str) -> str:
    """PostgreSQL's quoting of an identifier, for to_regclass() (which reads a name as text)."""
    return '"' + name.replace('"', '""') + '"'


def _array(value) -> np.ndarray:
    """pgvector's loader gives a numpy array (text) or a Vector (binary results)."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)


def _option(options: Sequence[str] | None, name: str, default: int) -> int:
    for option in options or ():
        key, _, value = option.partition("=")
        if key == name:
            return int(value)
    return default


def _first_duplicate(values: Sequence[str]) -> str | None:
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


class VectorStoreFactory:
    """The seed's factory: `VectorStoreFactory().create(backend="pgvector", **config)`."""

    BACKENDS = ("pgvector",)

    def create(self, backend: str = "pgvector", **config) -> PgVectorStore:
        if backend not in self.BACKENDS:
            raise InvalidInput(f"backend {backend!r} is not one of {', '.join(self.BACKENDS)}")
        return PgVectorStore(config)
