"""What every encoder is (the Encoder protocol), the error for one that cannot load here, and the
once-per-process cache that loads each model a single time however many threads ask."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Protocol

import numpy as np

from semindex.errors import Unavailable


class EncoderUnavailable(Unavailable):
    """A declared encoder cannot be used here: its package is not installed or is incomplete."""


class Encoder(Protocol):
    name: str
    revision: str
    dimensions: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimensions), each row L2-normalised."""
        ...


_cached: dict[object, object] = {}
_key_locks: dict[object, threading.Lock] = {}
_cache_guard = threading.Lock()


def once(key: object, build: Callable[[], object]) -> object:
    """build() once per key per process. Callers of the same key wait for the first one; other
    keys are not held up (loading mpnet does not block a hashing encoder). A failed build is not
    cached, so the next caller tries again."""
    with _cache_guard:
        if key in _cached:
            return _cached[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _cache_guard:
            if key in _cached:
                return _cached[key]
        value = build()
        with _cache_guard:
            _cached[key] = value
        return value


def l2_normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


def distribution_version(distribution: str, needed_by: str, install: str | None = None) -> str:
    """An installed distribution's version, from metadata; EncoderUnavailable saying how to install it."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        raise EncoderUnavailable(
            f"{needed_by} needs the package {distribution!r}, which is not installed: {install or f'pip install {distribution}'}"
        ) from None
