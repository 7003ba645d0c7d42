"""Feature hashing: a tiny deterministic encoder for tests where the model does not matter."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from semindex.errors import InvalidInput


class HashingEncoder:
    """Feature hashing of lower-cased tokens with signed buckets: deterministic and fast, and texts
    that share words land near each other, so search tests still have real signal."""

    revision = "1"

    def __init__(self, dimensions: int) -> None:
        if dimensions < 2:
            raise InvalidInput(f"hashing encoder needs at least 2 dimensions, got {dimensions}")
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
