"""Normalisation and chunking (pure functions)."""

import hashlib

import pytest

from semindex.chunking import ChunkingParameters, chunk_record_fields, document_id, normalize_text, split_into_chunks


def test_normalisation_is_nfc_with_whitespace_folded():
    assert normalize_text("  Cafe\u0301\t\n  au   lait \u00a0 ") == "Caf\u00e9 au lait"


def test_chunks_overlap_and_cover_the_text():
    text = " ".join(f"w{i}" for i in range(100))
    chunks = split_into_chunks(text, ChunkingParameters(size_tokens=30, overlap_tokens=10))
    assert chunks[0].split()[0] == "w0" and chunks[-1].split()[-1] == "w99"
    assert all(len(c.split()) <= 30 for c in chunks)
    assert chunks[0].split()[-10:] == chunks[1].split()[:10]


def test_semantic_key_is_sha256_of_doc_id_chunk_no_and_text():
    [chunk] = chunk_record_fields("inst", "stream", "key", {"body": "  hello   world "}, ChunkingParameters())
    doc = document_id("inst", "stream", "key", "body")
    assert chunk.content == "hello world"
    assert chunk.semantic_key == hashlib.sha256(f"{doc}:0:hello world".encode()).digest()
    assert chunk.content_sha256 == hashlib.sha256(b"hello world").digest()


@pytest.mark.parametrize("size, overlap", [(4, 0), (16, 16), (16, -1)])
def test_bad_chunking_parameters_name_the_value(size, overlap):
    with pytest.raises(ValueError, match=str(size) if size < 8 else str(overlap)):
        ChunkingParameters(size, overlap)
