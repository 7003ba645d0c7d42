"""Lexical search: BM25 over lexical documents (one per record field), one hit per record.

The query is parsed (semindex.search.query): plain words are OR-ed and ranked, quoted phrases must
appear, `-terms` must not. Ranking is BM25 (Lucene's idf, k1 and b configurable) with statistics kept
per source as documents are written: a scoped search ranks with its scope's statistics (the sum over
its sources); a field or record-key scope uses its sources' statistics (a documented approximation).
A record scores its best field; `matched_fields` lists every field that matched.

Candidates, decided once for the scope from its statistics, then ranked per source when the scope
names sources (one query over every source when it names none):

  complete      the query's matches fit the candidate window (known from the statistics): every
                match is ranked
  rarer_terms   they do not: the query's rarer parts, whose matches fit the window, give the
                candidates (their postings are short), so a common term cannot flood the window;
                records matching only the common terms are not ranked
  truncated     even the rarest part matches more than the window: the first matches, in index
                order, are ranked (a window's worth in all, shared between the scope's sources)
  exact         record keys given: every match of those records is ranked

The response's meta says which, and how many documents matched (exactly only when complete).
Parallel workers are off for the transaction (they need /dev/shm and died on broad terms in small
containers); snippets are cut for the final page only.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime

from psycopg.rows import class_row

from semindex.database import Database
from semindex.errors import InvalidInput
from semindex.search.fanout import SearchFanOut
from semindex.search.hydration import hit_from
from semindex.search.query import ParsedQuery, parse_query
from semindex.search.request import SearchRequest
from semindex.search.response import SPARE_HITS, Hit, LexicalMeta
from semindex.sql_files import statement

COMPLETE, RARER_TERMS, TRUNCATED, EXACT = "complete", "rarer_terms", "truncated", "exact"
# How a ranking's completeness is reported when sources differ: the least complete wins.
_RANKING_ORDER = (EXACT, COMPLETE, RARER_TERMS, TRUNCATED)
# Record keys bound the candidates themselves; this only guards against a pathological list.
EXACT_CAP = 1_000_000
# A truncated ranking is a sample of a flood of matches (first in index order): this many is enough.
TRUNCATED_CANDIDATES = 200


@dataclass(frozen=True)
class Bm25:
    k1: float = 1.2
    b: float = 0.75

    def __post_init__(self) -> None:
        if not 0 <= self.k1 <= 10 or not 0 <= self.b <= 1:
            raise InvalidInput(f"BM25 k1={self.k1} must be within 0..10 and b={self.b} within 0..1")


@dataclass(frozen=True)
class TermCount:
    connector_instance_id: str
    stream: str
    source_documents: int
    source_tokens: int
    part_no: int
    lexeme: str
    documents: int


@dataclass
class SourceStatistics:
    documents: int = 0
    tokens: int = 0
    part_documents: dict[int, int] = field(default_factory=dict)  # at most this many documents match a part
    lexeme_documents: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryTexts:
    """The parsed query's tsqueries as PostgreSQL wrote them (semindex.search_tsquery)."""

    match: str
    highlight: str
    parts: list[str]  # one per positive part, in ParsedQuery.positive order ("" for a part with no lexeme)

    def window(self, parts: tuple[int, ...]) -> str:
        """The OR of the given parts' tsqueries."""
        return " | ".join(f"( {self.parts[part]} )" for part in parts if self.parts[part])


@dataclass(frozen=True)
class RankedRecord:
    """One of a ranking's best records (sql/search.sql: lexical_rank)."""

    record_id: int
    connector_instance_id: str
    stream: str
    record_key: str
    score: float  # its best field's
    fields: list[str]  # its matched fields, best first
    field_scores: list[float]
    candidates: int  # documents the ranking matched
    records: int  # records they belong to; only the best come back


@dataclass(frozen=True)
class PageRow:
    record_id: int
    chunk_id: int
    connector_id: str
    connector_instance_id: str
    stream: str
    record_key: str
    field: str
    chunk_no: int
    updated_at: datetime
    snippet: str


@dataclass(frozen=True)
class SourcePlan:
    source: tuple[str, str] | None  # None: every source in one query
    ranking: str
    window_parts: tuple[int, ...]  # the parts whose matches are the candidates
    cap: int
    # Record keys fewer than the matches of the query's terms: read the keys' documents through
    # their btree and test each, instead of a bitmap of every match (at 1M rows, 1,000 keys and a
    # query with "for" in it: 44 ms, 32 of them building the term's 92,000-match bitmap).
    by_keys: bool = False


@dataclass
class LexicalResult:
    hits: list[Hit]
    meta: LexicalMeta
    milliseconds: float
    texts: QueryTexts | None = None  # the query's tsqueries, to hydrate hits later


class LexicalSearch:
    def __init__(self, db: Database, fanout: SearchFanOut, bm25: Bm25 = Bm25()) -> None:
        self.db = db
        self.fanout = fanout
        self.bm25 = bm25

    def search(self, request: SearchRequest, k: int | None = None, *, chunks: bool = False,
               hydrate: bool = True) -> LexicalResult:
        """The k best records (or with `chunks`, the matching chunks of the best records). Without
        `hydrate`, the records come without their chunk and snippet (hybrid search hydrates only the
        records its fused page keeps: `hydrate` them then)."""
        started = time.perf_counter()
        k = k or request.k
        parsed = parse_query(request.query)
        scope = request.scope
        window = None if scope.record_keys else request.lexical_window
        if not parsed.searchable:
            meta = LexicalMeta(False, [], window, "exact" if window is None else "windowed", "no terms", 0, True)
            return LexicalResult([], meta, _ms(started))
        statistics, texts = self._statistics(parsed, scope.connector_instance_ids, scope.streams)
        total = SourceStatistics()
        for source in statistics.values():
            total.documents += source.documents
            total.tokens += source.tokens
            for lexeme, count in source.lexeme_documents.items():
                total.lexeme_documents[lexeme] = total.lexeme_documents.get(lexeme, 0) + count
            for part, count in source.part_documents.items():
                total.part_documents[part] = total.part_documents.get(part, 0) + count
        if not total.documents:
            meta = LexicalMeta(False, [], window, "exact" if window is None else "windowed", COMPLETE, 0, True)
            return LexicalResult([], meta, _ms(started))
        # One decision for the scope, on its statistics: the window bounds what a search ranks, not
        # what each of its sources does (three large sources each ranking their rarer terms' 1,000
        # matches made a 50% scope's lexical search ~40 ms for three-word queries at 1M rows). A
        # scope that names sources ranks each by its own statement (the scoped GIN serves one source
        # at a time), skipping a source without a candidate match.
        decision = self._plan(None, total, parsed, window, keys=len(scope.record_keys))
        plans = _per_source(decision, statistics) if scope.names_sources else [decision]
        idf = {
            lexeme: math.log(1 + (total.documents - count + 0.5) / (count + 0.5))
            for lexeme, count in total.lexeme_documents.items() if count > 0
        }
        base = {
            "lexemes": list(idf), "idfs": list(idf.values()), "match": texts.match,
            **scope.sql_params(),
            "k1": self.bm25.k1, "b": self.bm25.b, "average_length": total.tokens / total.documents,
            "limit": k + SPARE_HITS,
        }
        ranked = self.fanout.map(lambda plan: self._rank(plan, texts, base), plans)
        records = _records(record for rows in ranked for record in rows)
        if len(records) < k and any(plan.ranking == RARER_TERMS for plan in plans):
            # The rarer terms' matches hold fewer than k records: rank the first matches of the whole
            # query too, so the page is not short while records match.
            every_part = SourcePlan(None, TRUNCATED, tuple(range(len(parsed.positive))),
                                    min(decision.cap, TRUNCATED_CANDIDATES))
            widened = _per_source(every_part, statistics) if scope.names_sources else [every_part]
            more = self.fanout.map(lambda plan: self._rank(plan, texts, base), widened)
            ranked += more
            records = _records(record for rows in ranked for record in rows)
        rankings = [plan.ranking for plan in plans] or [decision.ranking]
        windowed = [_source_name(plan.source) for plan in plans if plan.ranking in (RARER_TERMS, TRUNCATED)]
        matched = sum(rows[0].candidates for rows in ranked if rows)
        meta = LexicalMeta(
            windowed=bool(windowed),
            windowed_sources=windowed,
            candidate_window=window,
            path="exact" if window is None else "windowed",
            ranking=max(rankings, key=_RANKING_ORDER.index),
            matched=matched,
            matched_exact=not windowed,
            # Those not returned (past a ranking's best) counted too; exact only when every record came back.
            matched_records=len(records) + sum(rows[0].records - len(rows) for rows in ranked if rows),
            sources_searched=len(statistics),
        )
        if chunks:
            hits = self._chunk_hits(records, texts, k)
        elif hydrate:
            hits = self.hydrate([record.hit() for record in records[: k + SPARE_HITS]], texts)[:k]
        else:
            hits = [record.hit() for record in records[:k]]
        for rank, hit in enumerate(hits, start=1):
            hit.ranks = {"lexical": rank}
        return LexicalResult(hits, meta, _ms(started), texts)

    # ---- statistics and plans --------------------------------------------------------------------
    def _statistics(self, parsed: ParsedQuery, instances, streams) -> tuple[dict[tuple[str, str], SourceStatistics], QueryTexts]:
        with self.db.connection() as conn:
            rows = conn.cursor(row_factory=class_row(TermCount)).execute(
                statement("search", "lexical_statistics"),
                {"parts": list(parsed.positive), "instances": list(instances), "streams": list(streams)},
            ).fetchall()
            texts = conn.cursor(row_factory=class_row(QueryTexts)).execute(statement("search", "lexical_queries"), {
                "words": list(parsed.words), "phrases": list(parsed.phrases),
                "required": list(parsed.required), "excluded": list(parsed.excluded),
            }).fetchone()
        sources: dict[tuple[str, str], SourceStatistics] = {}
        for row in rows:
            source = sources.setdefault((row.connector_instance_id, row.stream),
                                        SourceStatistics(row.source_documents, row.source_tokens))
            source.lexeme_documents[row.lexeme] = row.documents
            # A part matches no more documents than its rarest lexeme is in.
            source.part_documents[row.part_no] = min(source.part_documents.get(row.part_no, row.documents), row.documents)
        return sources, texts

    def _plan(self, source: tuple[str, str] | None, statistics: SourceStatistics, parsed: ParsedQuery,
              window: int | None, *, keys: int = 0) -> SourcePlan:
        parts = tuple(range(len(parsed.positive)))
        matches = sum(statistics.part_documents.get(part, 0) for part in parts)
        if window is None:
            return SourcePlan(source, EXACT, parts, EXACT_CAP, by_keys=0 < keys < matches)
        if matches <= window:
            return SourcePlan(source, COMPLETE, parts, window)
        rarer, taken = [], 0
        for part in sorted(parts, key=lambda part: (statistics.part_documents.get(part, 0), part)):
            taken += statistics.part_documents.get(part, 0)
            if taken > window:
                break
            rarer.append(part)
        if rarer:
            return SourcePlan(source, RARER_TERMS, tuple(sorted(rarer)), window)
        return SourcePlan(source, TRUNCATED, parts, min(window, TRUNCATED_CANDIDATES))

    def _rank(self, plan: SourcePlan, texts: QueryTexts, base: dict) -> list[RankedRecord]:
        window = texts.window(plan.window_parts)
        if not window:  # no part of the query holds a lexeme
            return []
        instance, stream = plan.source or (None, None)
        params = {**base, "cap": plan.cap, "window": window, "instance": instance, "stream": stream}
        with self.db.connection() as conn:
            conn.execute(statement("search", "lexical_settings"), {
                "bitmapscan": "off" if plan.ranking == TRUNCATED or plan.by_keys else None,
                "seqscan": "off" if plan.source is not None or base["fields"] or plan.by_keys else None,
            })
            # Never prepared, so planned for this query every time: the plan depends on how common its
            # terms are (a bitmap of a rare term's matches, or the first matches of a common one), and
            # the generic plan psycopg would prepare for a statement run often would serve every query alike.
            return conn.cursor(row_factory=class_row(RankedRecord)).execute(
                statement("search", "lexical_rank"), params, prepare=False).fetchall()

    # ---- pages -----------------------------------------------------------------------------------
    def _page_rows(self, name: str, texts: QueryTexts, params: dict) -> list[PageRow]:
        with self.db.connection() as conn:
            return conn.cursor(row_factory=class_row(PageRow)).execute(statement("search", name), {
                "match": texts.match, "highlight": texts.highlight, **params,
            }).fetchall()

    def hydrate(self, hits: list[Hit], texts: QueryTexts) -> list[Hit]:
        """The hits with their best field's best chunk and a highlighted snippet, in order; a record
        deleted since it was ranked drops out (callers ask for a few more than they show)."""
        pending = [hit for hit in hits if hit.record_id and not hit.chunk_id]
        rows = {row.record_id: row for row in self._page_rows("lexical_page", texts, {
            "records": [hit.record_id for hit in pending], "fields": [hit.field for hit in pending],
        })} if pending else {}
        hydrated = []
        for hit in hits:
            row = rows.get(hit.record_id)
            if row is not None:
                hit.connector_id, hit.field, hit.chunk_no, hit.chunk_id = row.connector_id, row.field, row.chunk_no, row.chunk_id
                hit.snippet, hit.updated_at = row.snippet, row.updated_at
            if hit.chunk_id:
                hydrated.append(hit)
        return hydrated

    def _chunk_hits(self, records: list[_Record], texts: QueryTexts, k: int) -> list[Hit]:
        page = records[:k]
        scores = {record.record_id: record for record in page}
        rows = self._page_rows("lexical_chunks", texts, {
            "records": list(scores), "fields": sorted({name for record in page for name, _ in record.fields}),
            "limit": k,
        })
        hits = []
        for row in rows:
            record = scores[row.record_id]
            hit = hit_from(row, row.snippet)
            hit.scores, hit.record_id = {"lexical": float(record.score)}, row.record_id
            hit.matched_fields = [name for name, _ in record.fields]
            hits.append(hit)
        return hits


@dataclass
class _Record:
    record_id: int
    identity: tuple[str, str, str]  # connector instance, stream, record key
    score: float
    fields: list[tuple[str, float]]  # matched fields, best first

    def hit(self) -> Hit:
        """The record as a hit not yet hydrated (no chunk, no snippet): enough to rank and fuse."""
        instance, stream, record_key = self.identity
        return Hit("", instance, stream, record_key, self.fields[0][0], 0, "", scores={"lexical": float(self.score)},
                   matched_fields=[name for name, _ in self.fields], record_id=self.record_id)


def _records(ranked) -> list[_Record]:
    """The rankings' records, each scored by its best field, best records first; a record ranked twice
    (by a widened ranking too) keeps each field's best score."""
    fields: dict[int, dict[str, float]] = defaultdict(dict)
    identities: dict[int, tuple[str, str, str]] = {}
    for record in ranked:
        identities[record.record_id] = (record.connector_instance_id, record.stream, record.record_key)
        scores = fields[record.record_id]
        for name, score in zip(record.fields, record.field_scores, strict=True):
            scores[name] = max(score, scores.get(name, 0.0))
    records = []
    for record_id, scores in fields.items():
        ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        records.append(_Record(record_id, identities[record_id], ordered[0][1], ordered))
    return sorted(records, key=lambda record: (-record.score, record.identity))


def _per_source(decision: SourcePlan, statistics: dict[tuple[str, str], SourceStatistics]) -> list[SourcePlan]:
    """The scope's decision as one plan per source with a candidate match. A truncated ranking is a
    sample of a flood of matches: its sources share one window's sample, split evenly, so fanning
    out over large sources costs what one source costs (the 50% scope at 1M rows, three sources,
    "a": p50 21.7 -> 11.1 ms and 22.2 -> 13.8 ms in two runs, each measured against the other)."""
    names = [name for name in statistics
             if any(statistics[name].part_documents.get(part, 0) for part in decision.window_parts)]
    cap = math.ceil(decision.cap / len(names)) if decision.ranking == TRUNCATED and names else decision.cap
    return [replace(decision, source=name, cap=cap) for name in names]


def _source_name(source: tuple[str, str] | None) -> str:
    return "*" if source is None else f"{source[0]}/{source[1]}"


def _ms(started: float) -> float:
    return round(1000 * (time.perf_counter() - started), 2)
