"""What a search answers: hits, and a typed account of how they were found."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime

# Hits hydrated (and lexical records ranked) past a page: one deleted since it was ranked drops out
# at hydration and must not shorten the page.
SPARE_HITS = 10


@dataclass
class Hit:
    """One record (by default; one chunk when the request asks for chunks): its best chunk gives the
    place (field, chunk number), the snippet and the scores."""

    connector_id: str
    connector_instance_id: str
    stream: str
    record_key: str
    field: str
    chunk_no: int
    snippet: str
    # Per mode: "semantic" (a similarity, higher is better, for every metric) with "distance" (the
    # metric's own distance), "lexical", "fused". Ranks per mode, 1-based.
    scores: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)
    chunk_id: int = 0  # 0: not hydrated yet (a lexical record ranked but not on the page)
    matched_fields: list[str] = field(default_factory=list)  # the record's fields that matched, best first
    record_id: int = 0
    updated_at: datetime | None = None  # the record's, once hydrated

    @property
    def hydrated(self) -> bool:
        """Whether the hit has its chunk's place and snippet (a ranked hit may not yet)."""
        return self.updated_at is not None

    @property
    def distance(self) -> float:
        return self.scores.get("distance", math.inf)

    @property
    def record(self) -> tuple[str, str, str]:
        """The record this hit belongs to: (connector instance, stream, record key)."""
        return (self.connector_instance_id, self.stream, self.record_key)

    def as_dict(self) -> dict:
        values = {k: v for k, v in asdict(self).items() if k not in ("chunk_id", "record_id")}
        values["updated_at"] = self.updated_at.isoformat() if self.updated_at else None
        return values


@dataclass(frozen=True)
class LexicalMeta:
    windowed: bool  # some source's ranking did not see every match
    windowed_sources: list[str]
    candidate_window: int | None
    path: str  # "windowed" or "exact" (record keys given: every match ranked)
    # "complete" (every match ranked), "rarer_terms" (the matches of the query's rarer terms ranked),
    # "truncated" (the first matches ranked), "exact" (record keys given), "no terms" (nothing to search)
    ranking: str = "complete"
    matched: int = 0  # matching documents (record fields) seen
    matched_exact: bool = True  # whether `matched` is every match (else a lower bound)
    matched_records: int = 0  # the records those documents belong to (every matching record when matched_exact)
    sources_searched: int = 0  # sources of the scope holding documents, each searched


@dataclass
class ResponseMeta:
    mode: str
    k: int
    version: str | None = None
    # Per source ("instance/stream", or "*" for one unscoped plan): the plan that answered it.
    semantic_plans: dict[str, str] = field(default_factory=dict)
    lexical: LexicalMeta | None = None
    fusion: dict | None = None  # method and weights, as used
    unit: str = "records"  # what a hit is: "records" or "chunks"
    below_min_similarity: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class SearchResponse:
    hits: list[Hit]
    meta: ResponseMeta

    def as_dict(self) -> dict:
        return {"hits": [hit.as_dict() for hit in self.hits], "meta": self.meta.as_dict()}
