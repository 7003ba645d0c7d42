"""Text normalisation and token-aware, overlapping chunking. Pure functions, no database.

Tokens are words and single punctuation marks (`\\w+|[^\\w\\s]`). all-MiniLM-L6-v2 reads at most 256
word pieces and English averages about 1.3 pieces a word, so the default of 128 tokens a chunk stays
inside the model's window without truncation; 32 tokens of overlap keep a sentence that straddles a
boundary findable from both sides.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

from semindex.errors import InvalidInput

_WHITESPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class ChunkingParameters:
    size_tokens: int = 128
    overlap_tokens: int = 32

    def __post_init__(self) -> None:
        if self.size_tokens < 8:
            raise InvalidInput(f"chunk size {self.size_tokens} is too small: use at least 8 tokens")
        if not 0 <= self.overlap_tokens < self.size_tokens:
            raise InvalidInput(
                f"chunk overlap {self.overlap_tokens} must be at least 0 and below the chunk size {self.size_tokens}"
            )


@dataclass(frozen=True)
class Chunk:
    field: str
    chunk_no: int
    content: str
    content_sha256: bytes
    semantic_key: bytes


def normalize_text(text: str) -> str:
    """Unicode NFC with every run of whitespace folded to one space, trimmed."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def split_into_chunks(text: str, parameters: ChunkingParameters) -> list[str]:
    """Overlapping windows of `size_tokens` tokens over already normalised text.

    Each chunk is a slice of the text, so the original spacing and punctuation survive.
    """
    spans = [match.span() for match in _TOKEN.finditer(text)]
    if not spans:
        return [text] if text else []
    step = parameters.size_tokens - parameters.overlap_tokens
    chunks = []
    for first in range(0, len(spans), step):
        last = min(first + parameters.size_tokens, len(spans)) - 1
        chunks.append(text[spans[first][0] : spans[last][1]])
        if last == len(spans) - 1:
            break
    return chunks


def document_id(connector_instance_id: str, stream: str, record_key: str, field: str) -> str:
    """One document per (record, field); JSON keeps the parts unambiguous whatever they contain."""
    return json.dumps([connector_instance_id, stream, record_key, field], ensure_ascii=False)


def chunk_record_fields(
    connector_instance_id: str,
    stream: str,
    record_key: str,
    fields: dict[str, str],
    parameters: ChunkingParameters,
) -> list[Chunk]:
    chunks = []
    for field in sorted(fields):
        normalized = normalize_text(fields[field])
        if not normalized:
            continue
        doc_id = document_id(connector_instance_id, stream, record_key, field)
        for chunk_no, content in enumerate(split_into_chunks(normalized, parameters)):
            encoded = content.encode("utf-8")
            chunks.append(
                Chunk(
                    field=field,
                    chunk_no=chunk_no,
                    content=content,
                    content_sha256=hashlib.sha256(encoded).digest(),
                    semantic_key=hashlib.sha256(f"{doc_id}:{chunk_no}:".encode() + encoded).digest(),
                )
            )
    return chunks
