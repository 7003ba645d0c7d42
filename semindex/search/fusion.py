"""Fusing ranked lists of hits into one list, one hit per record (or per chunk), over any number of lists.

  blend       (the default) a weighted sum of each list's scores, z-normalised over the list's top
              `depth` (BM25 and cosine similarity live on different scales); a record missing from a
              list gets that list's lowest normalised score
  rrf         reciprocal rank fusion: sum(weight / (k + rank)) over the lists a record is in
  interleave  the reference server's round-robin: first of each list in turn, then the seconds, ...,
              skipping records already taken

Ties go by record key, then chunk id. The default was chosen on the judged sets (bench/relevance.py):
fitted on either set, the blend held on the other; RRF fitted on Semanlink did not hold on BBC.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from semindex.errors import InvalidInput
from semindex.search.response import Hit

RRF_K = 60


@dataclass(frozen=True)
class FusionSettings:
    """How hybrid search fuses its lexical and semantic lists; a version declares its own
    (`fusion = { method = ..., k = ..., lexical_weight = ..., semantic_weight = ... }` in the versions
    file), and a request may override the method and the weights."""

    method: str = "blend"
    k: int = RRF_K  # rrf: the rank constant
    lexical_weight: float = 0.45
    semantic_weight: float = 0.55
    depth: int = 20  # blend: each list's top `depth` (at least the page) set the normalisation

    def __post_init__(self) -> None:
        if self.method not in FUSERS:
            raise InvalidInput(f"fusion method {self.method!r} is not one of {', '.join(FUSERS)}")
        for name in ("k", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
                raise InvalidInput(f"fusion {name}={value!r} must be a whole number from 1 to 1000")
        for name in ("lexical_weight", "semantic_weight"):
            weight = getattr(self, name)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 100:
                raise InvalidInput(f"fusion {name}={weight!r} must be a number from 0 to 100")

    @classmethod
    def from_mapping(cls, values: Mapping | None, where: str = "fusion") -> FusionSettings:
        values = dict(values or {})
        known = ("method", "k", "lexical_weight", "semantic_weight", "depth")
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidInput(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RankedList:
    mode: str  # the key of each hit's rank and score in this list ("lexical", "semantic", ...)
    hits: list[Hit]
    weight: float = 1.0


def by_record(hit: Hit):
    return hit.record


def by_chunk(hit: Hit):
    return hit.chunk_id


def reciprocal_rank_fusion(lists: Sequence[RankedList], k: int = RRF_K, key=by_record) -> list[Hit]:
    merged: dict[object, Hit] = {}
    for ranked in lists:
        for hit in ranked.hits:
            target = merged.setdefault(key(hit), hit)
            if target is not hit:
                target.scores.update(hit.scores)
                target.ranks.update(hit.ranks)
                target.matched_fields = list(dict.fromkeys([*target.matched_fields, *hit.matched_fields]))
            target.scores["fused"] = target.scores.get("fused", 0.0) + ranked.weight / (k + hit.ranks[ranked.mode])
    fused = sorted(merged.values(), key=lambda hit: (-hit.scores["fused"], hit.record_key, hit.chunk_id))
    for rank, hit in enumerate(fused, start=1):
        hit.ranks["fused"] = rank
    return fused


def score_blend(lists: Sequence[RankedList], depth: int, key=by_record) -> list[Hit]:
    merged: dict[object, Hit] = {}
    normalised: list[tuple[float, dict[object, float]]] = []
    for ranked in lists:
        window = ranked.hits[:depth]
        scores = [hit.scores[ranked.mode] for hit in window]
        mean = statistics.fmean(scores) if scores else 0.0
        spread = statistics.pstdev(scores) if len(scores) > 1 else 0.0
        z = {key(hit): (hit.scores[ranked.mode] - mean) / spread if spread else 0.0 for hit in window}
        normalised.append((ranked.weight, z))
        for hit in window:
            target = merged.setdefault(key(hit), hit)
            if target is not hit:
                target.scores.update(hit.scores)
                target.ranks.update(hit.ranks)
                target.matched_fields = list(dict.fromkeys([*target.matched_fields, *hit.matched_fields]))
    for record, hit in merged.items():
        hit.scores["fused"] = sum(weight * z.get(record, min(z.values(), default=0.0)) for weight, z in normalised)
    fused = sorted(merged.values(), key=lambda hit: (-hit.scores["fused"], hit.record_key, hit.chunk_id))
    for rank, hit in enumerate(fused, start=1):
        hit.ranks["fused"] = rank
    return fused


def interleave(lists: Sequence[RankedList], key=by_record) -> list[Hit]:
    out: list[Hit] = []
    seen: set = set()
    depth = max((len(ranked.hits) for ranked in lists), default=0)
    for position in range(depth):
        for ranked in lists:
            if position < len(ranked.hits) and key(ranked.hits[position]) not in seen:
                hit = ranked.hits[position]
                seen.add(key(hit))
                out.append(hit)
    for rank, hit in enumerate(out, start=1):
        hit.ranks["fused"] = rank
        hit.scores["fused"] = 1.0 / rank
    return out


FUSERS = ("blend", "rrf", "interleave")


def fuse(settings: FusionSettings, lexical: list[Hit], semantic: list[Hit], *, page: int,
         chunks: bool = False) -> list[Hit]:
    """One list from the two, one hit per record (per chunk with `chunks`), fused as `settings` say."""
    lists = [RankedList("lexical", lexical, settings.lexical_weight), RankedList("semantic", semantic, settings.semantic_weight)]
    key = by_chunk if chunks else by_record
    if settings.method == "blend":
        return score_blend(lists, max(settings.depth, page), key)
    if settings.method == "rrf":
        return reciprocal_rank_fusion(lists, settings.k, key)
    return interleave(lists, key=key)
