"""Revisions of model folders, computed without reading weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Folder revisions hash the content of files up to this size (configs, vocabularies, tokenizers)
# and only name, size and mtime of larger ones (weights), so computing it reads no weights.
CONTENT_HASHED_BYTES = 4 * 1024 * 1024


def folder_revision(folder: Path) -> str:
    """"sha256:<16 hex>" over the model folder, computed without reading weights.

    Every regular file counts except hidden ones (our marker, .gitattributes, caches) and *.md:
    its relative path, then its content hash when at most 4 MiB (configs, vocabularies,
    tokenizers), else its size and mtime in nanoseconds (weights). Hashing weights by mtime means a
    copied or touched folder gets a new revision: that errs on the safe side, since a revision
    change is refused rather than mixing vectors of two models in one version.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() == ".md":
            continue
        stat = path.stat()
        digest.update(relative.as_posix().encode("utf-8") + b"\0")
        if stat.st_size <= CONTENT_HASHED_BYTES:
            digest.update(b"sha256=" + hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}".encode())
        digest.update(b"\n")
    return f"sha256:{digest.hexdigest()[:16]}"
