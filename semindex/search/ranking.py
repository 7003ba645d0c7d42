"""A ranked list kept for paging: what a cursor's snapshot holds (the HTTP service pages through it
instead of searching again, so page two is the same ranking as page one).

Plain data that round-trips through JSON, so any worker process of a service can page a ranking
another one made. Lexical rankings hold records not yet hydrated and the query's tsqueries to
hydrate a page with (Searcher.page)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime

from semindex.search.lexical import QueryTexts
from semindex.search.response import Hit, LexicalMeta, ResponseMeta

# The deepest a ranking goes (the reference server's cursors page 1,000 results deep).
RANKING_DEPTH = 1000
_HIT_FIELDS = tuple(field.name for field in fields(Hit))


@dataclass
class Ranking:
    hits: list[Hit]
    meta: ResponseMeta
    texts: QueryTexts | None = None

    def to_json(self) -> dict:
        # A row per hit in _HIT_FIELDS order, not asdict (which deep-copies every hit: 39 ms for a
        # 1,000-deep lexical ranking, as long as the search itself).
        return {
            "hits": [[getattr(hit, name) if name != "updated_at" else (hit.updated_at.isoformat() if hit.updated_at else None)
                      for name in _HIT_FIELDS] for hit in self.hits],
            "meta": asdict(self.meta),
            "texts": asdict(self.texts) if self.texts else None,
        }

    @classmethod
    def from_json(cls, values: dict) -> Ranking:
        hits = []
        for row in values["hits"]:
            hit = dict(zip(_HIT_FIELDS, row, strict=True))
            hit["updated_at"] = datetime.fromisoformat(hit["updated_at"]) if hit["updated_at"] else None
            hits.append(Hit(**hit))
        meta = dict(values["meta"])
        if meta.get("lexical") is not None:
            meta["lexical"] = LexicalMeta(**meta["lexical"])
        return cls(hits, ResponseMeta(**meta), QueryTexts(**values["texts"]) if values["texts"] else None)
