"""Fusing ranked lists of hits into one list with one hit per record, over any number of lists.

  rrf         reciprocal rank fusion: a record scores sum(weight / (k + rank)) over the lists it is in
              (k = 60), ties by record key then chunk id
  interleave  the reference server's round-robin: first of each list in turn, then the seconds, ...,
              skipping records already taken
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from semindex.search.response import Hit

RRF_K = 60


@dataclass(frozen=True)
class RankedList:
    mode: str  # the key of each hit's rank and score in this list ("lexical", "semantic", ...)
    hits: list[Hit]
    weight: float = 1.0


def best_per_record(hits: Sequence[Hit], mode: str) -> list[Hit]:
    """Each record's best hit, in rank order, re-ranked 1..n under `mode`."""
    seen: set = set()
    best = []
    for hit in hits:
        if hit.record not in seen:
            seen.add(hit.record)
            best.append(hit)
    for rank, hit in enumerate(best, start=1):
        hit.ranks[mode] = rank
    return best


def reciprocal_rank_fusion(lists: Sequence[RankedList], k: int = RRF_K) -> list[Hit]:
    merged: dict[tuple, Hit] = {}
    for ranked in lists:
        for hit in ranked.hits:
            target = merged.setdefault(hit.record, hit)
            if target is not hit:
                target.scores.update(hit.scores)
                target.ranks.update(hit.ranks)
            target.scores["fused"] = target.scores.get("fused", 0.0) + ranked.weight / (k + hit.ranks[ranked.mode])
    fused = sorted(merged.values(), key=lambda hit: (-hit.scores["fused"], hit.record_key, hit.chunk_id))
    for rank, hit in enumerate(fused, start=1):
        hit.ranks["fused"] = rank
    return fused


def interleave(lists: Sequence[RankedList]) -> list[Hit]:
    out: list[Hit] = []
    seen: set = set()
    depth = max((len(ranked.hits) for ranked in lists), default=0)
    for position in range(depth):
        for ranked in lists:
            if position < len(ranked.hits) and ranked.hits[position].record not in seen:
                hit = ranked.hits[position]
                seen.add(hit.record)
                out.append(hit)
    for rank, hit in enumerate(out, start=1):
        hit.ranks["fused"] = rank
        hit.scores["fused"] = 1.0 / rank
    return out


FUSERS = {"rrf": reciprocal_rank_fusion, "interleave": interleave}
