"""Data shipped inside the package: the sample corpus, the judged query sets and the default
embedding version declarations. Read through importlib.resources, so a wheel install finds them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(*parts: str) -> Path:
    """A file or folder shipped in semindex/data (installed as package data, on the file system)."""
    return Path(str(resources.files(__name__).joinpath(*parts)))


SAMPLE_CORPUS_PATH = data_path("sample_corpus.jsonl")
JUDGED_DIR = data_path("judged")
DEFAULT_VERSIONS_FILE = data_path("embedding_versions.toml")
