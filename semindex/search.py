"""Search: lexical, semantic and hybrid, over one embedding version, within a scope.

The semantic planner chooses per source (connector_instance_id, stream), using the retained-size
projection as a cheap cardinality estimate:

  exact    small or unknown sources (<= exact_threshold vectors), record keys given, or a source too
           small a share of the version for the filtered graph walk to stay accurate: an exact
           scoped scan in exact distance order;
  partial  a source with a hot partial HNSW index: that index;
  ann      otherwise the version's HNSW, with hnsw.ef_search from the candidate window and
           iterative scans in strict order, the scope applied in the database;
  global   no scope at all: one walk of the version's graph.

In JSONB mode (no pgvector, so no vector type and no HNSW) every source, and the unscoped case, takes
one plan, "jsonb_exact": the scoped rows stream through a server-side cursor in batches, numpy ranks
them with the version's metric (pgvector's definitions), and a bounded top-`limit` is kept, so
everything is ranked before anything is cut and memory stays at one batch.

Guarantee: when at least k rows match, k hits come back, in exact distance order among
themselves. An ANN path that returns short is retried with a wider window, then exactly.
Per-source queries run through the bounded fan-out; the query vector comes from the cache.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from semindex.database import JSONB_MODE, Database
from semindex.embeddings import EmbeddingVersion, active_version, get_version, storage_mode
from semindex.encoders import load_encoder
from semindex.evaluation import distance_operator
from semindex.fanout import SearchFanOut, default_fanout
from semindex.query_cache import QueryVectorCache
from semindex.sql_files import statement

MAX_K = 100
MODES = ("lexical", "semantic", "hybrid")
FUSIONS = ("rrf", "interleave")
RRF_K = 60
JSONB_PLAN = "jsonb_exact"
# Rows per fetch of the JSONB brute force: 2,000 x 384 float64 is 6 MB of matrix.
JSONB_FETCH_ROWS = 2000


@dataclass(frozen=True)
class Scope:
    connector_instance_ids: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    record_keys: tuple[str, ...] = ()

    @property
    def unrestricted(self) -> bool:
        return not (self.connector_instance_ids or self.streams or self.fields or self.record_keys)


@dataclass(frozen=True)
class PlannerSettings:
    candidate_window: int = 200
    exact_threshold: int = 10_000
    # Below this share of the version, a filtered walk of the version's graph loses recall (0.79 at
    # 2% measured with iterative scans); such sources go exact unless they have a partial index.
    min_ann_share: float = 0.05
    max_ef_search: int = 1000


@dataclass(frozen=True)
class SearchRequest:
    query: str
    mode: str = "hybrid"
    k: int = 25
    scope: Scope = Scope()
    version_key: str | None = None
    lexical_window: int = 200
    fusion: str = "rrf"
    lexical_weight: float = 1.0
    semantic_weight: float = 1.0

    def validated(self) -> SearchRequest:
        if not self.query.strip():
            raise ValueError("the query is empty")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"k={self.k} must be between 1 and {MAX_K}")
        if not 100 <= self.lexical_window <= 10_000:
            raise ValueError(f"lexical window {self.lexical_window} must be between 100 and 10000")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion {self.fusion!r} is not one of {', '.join(FUSIONS)}")
        if self.lexical_weight < 0 or self.semantic_weight < 0:
            raise ValueError(f"fusion weights must not be negative, got {self.lexical_weight}, {self.semantic_weight}")
        return self


@dataclass
class Hit:
    connector_id: str
    connector_instance_id: str
    stream: str
    record_key: str
    field: str
    chunk_no: int
    snippet: str
    scores: dict = field(default_factory=dict)
    ranks: dict = field(default_factory=dict)
    chunk_id: int = 0

    @property
    def distance(self) -> float:
        return self.scores.get("distance", math.inf)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "chunk_id"}


@dataclass
class SearchResponse:
    hits: list[Hit]
    meta: dict

    def as_dict(self) -> dict:
        return {"hits": [hit.as_dict() for hit in self.hits], "meta": self.meta}


@dataclass(frozen=True)
class Source:
    connector_instance_id: str
    stream: str
    vector_estimate: int | None
    partial_index: str | None
    version_total: int


def semantic_overscan(k: int) -> int:
    """Per-source hits to ask for: enough to fill the page after merging, capped at the maximum."""
    return min(MAX_K, max(25, math.ceil(1.5 * k), k + 10))


class Searcher:
    """The search API. One per process is enough; it holds the query-vector cache."""

    def __init__(
        self,
        db: Database,
        *,
        planner: PlannerSettings = PlannerSettings(),
        fanout: SearchFanOut | None = None,
        cache: QueryVectorCache | None = None,
    ) -> None:
        self.db = db
        self.planner = planner
        self.fanout = fanout or default_fanout()
        self.cache = cache or QueryVectorCache()

    # ---- entry point -------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> SearchResponse:
        request = request.validated()
        started = time.perf_counter()
        meta: dict = {"mode": request.mode, "k": request.k, "timings_ms": {}}
        if request.mode == "lexical":
            hits = self._lexical(request, meta)
        elif request.mode == "semantic":
            hits = self._semantic(request, meta)
        else:
            hits = self._hybrid(request, meta)
        meta["timings_ms"]["total"] = round(1000 * (time.perf_counter() - started), 2)
        return SearchResponse(hits, meta)

    # ---- semantic ----------------------------------------------------------------------------
    def resolve_version(self, version_key: str | None) -> EmbeddingVersion:
        current = active_version(self.db)
        self.cache.clear_if_active_version_changed(current.version_key if current else None)
        if version_key:
            return get_version(self.db, version_key)
        if current is None:
            raise LookupError("no embedding version is active yet: run `semindex run` first")
        return current

    def query_vector(self, version: EmbeddingVersion, text: str) -> np.ndarray:
        encoder = load_encoder(version.encoder_spec)
        return self.cache.get(version.version_key, text, lambda: encoder.encode([text])[0])

    def sources(self, scope: Scope, version: EmbeddingVersion | None) -> list[Source]:
        """The sources the scope can see; with a version, its vector counts and partial indexes."""
        with self.db.connection() as conn:
            rows = conn.execute(
                statement("search", "sources_in_scope"),
                {
                    "version_key": version.version_key if version else None,
                    "version_id": version.version_id if version else None,
                    "instances": list(scope.connector_instance_ids),
                    "streams": list(scope.streams),
                },
            ).fetchall()
        return [Source(*row) for row in rows]

    def plan(self, source: Source, scope: Scope) -> str:
        if storage_mode(self.db) == JSONB_MODE:
            return JSONB_PLAN
        if scope.record_keys or source.vector_estimate is None:
            return "exact"
        if source.vector_estimate <= self.planner.exact_threshold:
            return "exact"
        if source.partial_index:
            return "partial"
        if source.version_total and source.vector_estimate / source.version_total < self.planner.min_ann_share:
            return "exact"
        return "ann"

    def _semantic(self, request: SearchRequest, meta: dict) -> list[Hit]:
        version = self.resolve_version(request.version_key)
        meta["version"] = version.version_key
        started = time.perf_counter()
        query = self.query_vector(version, request.query)
        meta["timings_ms"]["encode"] = round(1000 * (time.perf_counter() - started), 2)
        started = time.perf_counter()
        hits = self.semantic_hits(version, query, request.scope, request.k, meta)
        meta["timings_ms"]["semantic"] = round(1000 * (time.perf_counter() - started), 2)
        return hits

    def semantic_hits(
        self, version: EmbeddingVersion, query: np.ndarray, scope: Scope, k: int, meta: dict
    ) -> list[Hit]:
        limit = semantic_overscan(k)
        plans: dict[str, str] = {}
        if scope.unrestricted:
            rows, plan = self._run_global(version, query, limit)
            plans["*"] = plan
        else:
            planned = [(source, self.plan(source, scope)) for source in self.sources(scope, version)]
            # Sources planned "ann" share one walk of the version's graph; the others run one by one.
            ann_group = [source for source, plan in planned if plan == "ann"]
            tasks: list = [(source, plan) for source, plan in planned if plan != "ann"]
            if ann_group:
                tasks.append((tuple(ann_group), "ann"))
            results = self.fanout.map(lambda task: self._run_task(version, query, scope, limit, *task), tasks)
            rows, seen = [], set()
            for (target, _), (task_rows, plan) in zip(tasks, results, strict=True):
                for source in target if isinstance(target, tuple) else (target,):
                    plans[f"{source.connector_instance_id}/{source.stream}"] = plan
                for row in task_rows:
                    if row[0] not in seen:
                        seen.add(row[0])
                        rows.append(row)
        meta["semantic_plans"] = plans
        rows.sort(key=lambda row: (_finite(row[3]), row[1], row[0]))
        # Hydrate before trimming, so a chunk deleted between the two reads does not shorten the page.
        hits = self._hydrate_semantic(rows[:limit])
        floor = version.thresholds.get("min_similarity")
        if floor is not None:
            # The version's own cutoff: similarity scales differ between encoders, so none is shared.
            kept = [hit for hit in hits if hit.scores["semantic"] >= floor]
            meta["below_min_similarity"] = len(hits) - len(kept)
            hits = kept
        return hits[:k]

    def _query_params(self, query, source: Source, scope: Scope, limit: int) -> dict:
        return {
            "query": query,
            "instance": source.connector_instance_id,
            "stream": source.stream,
            "fields": list(scope.fields),
            "record_keys": list(scope.record_keys),
            "limit": limit,
        }

    def _run_task(self, version, query, scope: Scope, limit: int, target, plan: str):
        """One source (exact, partial or jsonb_exact plan), or a group of sources sharing one graph walk."""
        if plan == JSONB_PLAN:
            params = {
                "instance": target.connector_instance_id,
                "stream": target.stream,
                "fields": list(scope.fields),
                "record_keys": list(scope.record_keys),
            }
            return self._jsonb_scan(version, query, "semantic_jsonb_source", params, limit), plan
        operator = distance_operator(version)
        if plan in ("ann", "partial"):
            if isinstance(target, tuple):
                name = "semantic_ann_group"
                params = {
                    "query": query,
                    "instances": sorted({source.connector_instance_id for source in target}),
                    "streams": sorted({source.stream for source in target}),
                    "fields": list(scope.fields),
                    "limit": limit,
                }
            else:
                name = "semantic_ann"
                params = self._query_params(query, target, scope, limit)
            first_window = max(self.planner.candidate_window, limit)
            for ef_search in sorted({first_window, max(first_window, self.planner.max_ef_search)}):
                with self.db.connection() as conn:
                    conn.execute(statement("search", "ann_settings"), (str(ef_search), str(max(20_000, 100 * ef_search))))
                    rows = conn.execute(
                        statement("search", name, vectors=version.vectors_table, operator=operator), params
                    ).fetchall()
                if len(rows) >= limit:
                    return rows, plan
            # Still short: the filter is too selective for the graph, and only an exact scan can
            # tell whether more rows match. Never return short.
            plan = f"{plan}->exact"
        rows = []
        for source in target if isinstance(target, tuple) else (target,):
            with self.db.connection() as conn:
                rows.extend(conn.execute(
                    statement("search", "semantic_exact", vectors=version.vectors_table, operator=operator),
                    self._query_params(query, source, scope, limit),
                ).fetchall())
        return rows, plan

    def _run_global(self, version, query, limit: int):
        if storage_mode(self.db) == JSONB_MODE:
            return self._jsonb_scan(version, query, "semantic_jsonb_all", None, limit), JSONB_PLAN
        operator = distance_operator(version)
        with self.db.connection() as conn:
            conn.execute(statement("search", "ann_settings"), (str(max(self.planner.candidate_window, limit)), "20000"))
            rows = conn.execute(
                statement("search", "semantic_global_ann", vectors=version.vectors_table, operator=operator),
                {"query": query, "limit": limit},
            ).fetchall()
        return rows, "global_ann"

    def _jsonb_scan(self, version: EmbeddingVersion, query, name: str, params: dict | None, limit: int) -> list[tuple]:
        """Rank every row statement `name` yields, batch by batch, keeping the best `limit` in the
        planner's total order (distance, record key, chunk id); rows shaped like the other plans'."""
        query = np.asarray(query, dtype=np.float64)
        best: list[tuple[float, str, int, str]] = []  # (distance, record_key, chunk_id, field), sorted
        with self.db.connection() as conn:
            cursor = conn.cursor(name="semindex_jsonb_scan")
            try:
                cursor.execute(statement("search", name, vectors=version.vectors_table), params)
                while rows := cursor.fetchmany(JSONB_FETCH_ROWS):
                    matrix = _parse_jsonb_vectors([row[3] for row in rows], version)
                    distances = jsonb_distances(matrix, query, version.distance_metric)
                    candidates = range(len(rows))
                    if len(rows) > limit:
                        # Only rows that can still enter the top `limit` (ties at the cut included).
                        cut = np.partition(distances, limit - 1)[limit - 1]
                        if len(best) == limit:
                            cut = min(cut, best[-1][0])
                        candidates = np.flatnonzero(distances <= cut)
                    best.extend((float(distances[i]), rows[i][1], rows[i][0], rows[i][2]) for i in candidates)
                    best.sort(key=lambda item: item[:3])
                    del best[limit:]
            finally:
                cursor.close()
        return [(chunk_id, record_key, field, distance) for distance, record_key, chunk_id, field in best]

    def _hydrate_semantic(self, rows) -> list[Hit]:
        details = self._chunk_details([row[0] for row in rows])
        alive = [row for row in rows if row[0] in details]  # a chunk may be deleted between the reads
        hits = []
        for rank, (chunk_id, _, _, distance) in enumerate(alive, start=1):
            detail = details[chunk_id]
            distance = _finite(distance)
            hit = _hit_from_detail(detail, _snippet(detail[7]))
            hit.scores = {"distance": distance, "semantic": 1.0 - distance}
            hit.ranks = {"semantic": rank}
            hits.append(hit)
        return hits

    def _chunk_details(self, chunk_ids: list[int]) -> dict[int, tuple]:
        if not chunk_ids:
            return {}
        with self.db.connection() as conn:
            return {row[0]: row for row in conn.execute(statement("search", "chunk_details"), (chunk_ids,))}

    # ---- lexical -----------------------------------------------------------------------------
    def _lexical(self, request: SearchRequest, meta: dict) -> list[Hit]:
        started = time.perf_counter()
        scope = request.scope
        window = None if scope.record_keys else request.lexical_window
        limit = semantic_overscan(request.k)
        # No instance or stream in the scope: one query over every source; otherwise one per source.
        sources = (
            [(source.connector_instance_id, source.stream) for source in self.sources(scope, None)]
            if scope.connector_instance_ids or scope.streams
            else [None]
        )

        def run(source: tuple[str, str] | None):
            params = {
                "query": request.query,
                "fields": list(scope.fields),
                "record_keys": list(scope.record_keys),
                "window": window,
                "limit": limit,
            }
            name = "lexical_global"
            if source is not None:
                params.update(instance=source[0], stream=source[1])
                name = "lexical_source"
            with self.db.connection() as conn:
                conn.execute(statement("search", "lexical_settings"))
                if source is not None:
                    conn.execute(statement("search", "lexical_source_settings"))
                return conn.execute(statement("search", name), params).fetchall()

        results = self.fanout.map(run, sources)
        rows = []
        windowed = []
        for source, source_rows in zip(sources, results, strict=True):
            if window is not None and source_rows and source_rows[0][2] >= window:
                windowed.append("*" if source is None else f"{source[0]}/{source[1]}")
            rows.extend(source_rows)
        meta["lexical"] = {
            "windowed": bool(windowed),
            "windowed_sources": windowed,
            "candidate_window": window,
            "path": "exact" if window is None else "windowed",
        }
        details = self._chunk_details([row[0] for row in rows])
        ranked = sorted(
            (row for row in rows if row[0] in details),
            key=lambda row: (-row[1], details[row[0]][4], row[0]),
        )[: request.k]
        with self.db.connection() as conn:
            snippets = dict(conn.execute(
                statement("search", "lexical_snippets"), (request.query, [row[0] for row in ranked])
            ).fetchall())
        hits = []
        for rank, (chunk_id, score, _) in enumerate(ranked, start=1):
            hit = _hit_from_detail(details[chunk_id], snippets.get(chunk_id) or _snippet(details[chunk_id][7]))
            hit.scores = {"lexical": float(score)}
            hit.ranks = {"lexical": rank}
            hits.append(hit)
        meta["timings_ms"]["lexical"] = round(1000 * (time.perf_counter() - started), 2)
        return hits

    # ---- hybrid ------------------------------------------------------------------------------
    def _hybrid(self, request: SearchRequest, meta: dict) -> list[Hit]:
        # Each mode returns chunks, and fusion keeps one per record: ask each for more than a page
        # (the public maximum) so records with several matching chunks do not shorten it.
        deep = replace(request, k=MAX_K)
        lexical_result: dict = {}
        lexical_meta = {"timings_ms": meta["timings_ms"]}

        def run_lexical():
            try:
                lexical_result["hits"] = self._lexical(deep, lexical_meta)
            except BaseException as error:  # surfaced in the caller's thread
                lexical_result["error"] = error

        # Lexical and semantic run concurrently; each fans out through the bounded queue.
        worker = threading.Thread(target=run_lexical, name="semindex-hybrid-lexical")
        worker.start()
        semantic_hits = self._semantic(deep, meta)
        worker.join()
        if "error" in lexical_result:
            raise lexical_result["error"]
        meta["lexical"] = lexical_meta.get("lexical")
        meta["fusion"] = request.fusion
        lexical_hits = _best_per_record(lexical_result["hits"])
        semantic_hits = _best_per_record(semantic_hits)
        if request.fusion == "interleave":
            fused = _interleave(lexical_hits, semantic_hits)
        else:
            fused = _reciprocal_rank_fusion(lexical_hits, semantic_hits, request.lexical_weight, request.semantic_weight)
        return fused[: request.k]


def _record(hit: Hit) -> tuple[str, str, str]:
    return (hit.connector_instance_id, hit.stream, hit.record_key)


def _best_per_record(hits: list[Hit]) -> list[Hit]:
    """Keep each record's best chunk, in rank order, and re-rank 1..n."""
    seen: set = set()
    best = []
    for hit in hits:
        if _record(hit) not in seen:
            seen.add(_record(hit))
            best.append(hit)
    for rank, hit in enumerate(best, start=1):
        hit.ranks = {mode: rank for mode in hit.ranks}
    return best


def _reciprocal_rank_fusion(lexical: list[Hit], semantic: list[Hit], lexical_weight: float, semantic_weight: float) -> list[Hit]:
    merged: dict[tuple, Hit] = {}
    for weight, mode, hits in ((lexical_weight, "lexical", lexical), (semantic_weight, "semantic", semantic)):
        for hit in hits:
            rank = hit.ranks[mode]
            target = merged.setdefault(_record(hit), hit)
            if target is not hit:
                target.scores.update(hit.scores)
                target.ranks.update(hit.ranks)
            target.scores["fused"] = target.scores.get("fused", 0.0) + weight / (RRF_K + rank)
    fused = sorted(merged.values(), key=lambda hit: (-hit.scores["fused"], hit.record_key, hit.chunk_id))
    for rank, hit in enumerate(fused, start=1):
        hit.ranks["fused"] = rank
    return fused


def _interleave(lexical: list[Hit], semantic: list[Hit]) -> list[Hit]:
    """The reference server's round-robin: lexical, semantic, lexical, ... skipping records seen."""
    out: list[Hit] = []
    seen: set = set()
    for pair in zip(lexical + [None] * len(semantic), semantic + [None] * len(lexical)):
        for hit in pair:
            if hit is not None and _record(hit) not in seen:
                seen.add(_record(hit))
                out.append(hit)
    for rank, hit in enumerate(out, start=1):
        hit.ranks["fused"] = rank
        hit.scores["fused"] = 1.0 / rank
    return out


def _parse_jsonb_vectors(texts: list[str], version: EmbeddingVersion) -> np.ndarray:
    """The batch's JSON arrays ("[0.1, -0.2, ...]", flat arrays of d numbers by the table's CHECK) as
    one float64 matrix, parsed in one pass in C (a third faster than json.loads plus np.array). The
    values go through float32: what the encoder produced and what pgvector would hold."""
    flat = np.fromstring(",".join(text[1:-1] for text in texts), sep=",", dtype=np.float32)
    if flat.size != len(texts) * version.dimensions:
        raise ValueError(
            f"a batch of {len(texts)} rows of {version.vectors_table} holds an embedding that is not a flat "
            f"array of {version.dimensions} numbers"
        )
    return flat.reshape(len(texts), version.dimensions).astype(np.float64)


def jsonb_distances(matrix: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """pgvector's distances of each row of `matrix` to `query`: cosine 1 - a.q/(|a||q|), l2 |a-q|,
    ip -a.q (negative inner product). NaN (a zero vector under cosine) becomes +inf: it sorts last."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "cosine":
            distances = 1.0 - (matrix @ query) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
        elif metric == "l2":
            distances = np.linalg.norm(matrix - query, axis=1)
        elif metric == "ip":
            distances = -(matrix @ query)
        else:
            raise ValueError(f"distance metric {metric!r} is not one of cosine, l2, ip")
    return np.where(np.isnan(distances), np.inf, distances)


def _finite(distance) -> float:
    """NaN distances sort last."""
    return math.inf if distance is None or math.isnan(distance) else float(distance)


def _hit_from_detail(detail: tuple, snippet: str) -> Hit:
    chunk_id, connector_id, instance, stream, record_key, field_name, chunk_no, _ = detail
    return Hit(connector_id, instance, stream, record_key, field_name, chunk_no, snippet, chunk_id=chunk_id)


def _snippet(content: str, length: int = 200) -> str:
    return content if len(content) <= length else content[: length - 1].rstrip() + "…"


_searchers: weakref.WeakKeyDictionary[Database, Searcher] = weakref.WeakKeyDictionary()
_searchers_lock = threading.Lock()


def searcher_for(db: Database) -> Searcher:
    """The process-wide Searcher of a Database (so its query-vector cache is shared)."""
    with _searchers_lock:
        searcher = _searchers.get(db)
        if searcher is None:
            searcher = _searchers[db] = Searcher(db)
        return searcher


def search(db: Database, request: SearchRequest) -> SearchResponse:
    return searcher_for(db).search(request)


def semantic_search(db: Database, query: str, *, k: int = 10, version_key: str | None = None, scope: Scope = Scope()) -> list[Hit]:
    return search(db, SearchRequest(query, mode="semantic", k=k, version_key=version_key, scope=scope)).hits
