"""sentence-transformers models, from a folder (a packaged model's folder included), on the torch
device semindex.encoders.device resolves (the CPU unless given)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from semindex.encoders.base import once


class SentenceTransformerEncoder:
    def __init__(self, name: str, model_path: str, revision: str, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.name = name
        self.revision = revision
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device  # a torch device name: "cpu" or "cuda"

    @property
    def model(self):
        return _load_sentence_transformer(self.model_path, self.device)

    @property
    def dimensions(self) -> int:
        model = self.model
        # sentence-transformers 6 renamed the method and warns on the old name; >=3.0 is allowed.
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def _load_sentence_transformer(model_path: str, device: str = "cpu"):
    def build():
        # No hub access exists here or in CI: every model comes from a package or a folder.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model_path, device=device)

    return once(("sentence-transformers model", model_path, device), build)
