"""The registry of semantic engines, by name. A version's `ann_engine` names one of them; the
storage's exact engine is always available (pgvector's SQL, or the scan without pgvector)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from semindex.ann_substrate.capture import create_change_capture
from semindex.errors import InvalidInput
from semindex.search.engine import SemanticEngine
from semindex.search.pgvector_engine import PgvectorEngine
from semindex.search.planner import EngineChoice
from semindex.search.scan_engine import ScanEngine
from semindex.search.zvec_engine import ZvecEngine
from semindex.vectors.storage import VectorStorage
from semindex.vectors.version import EmbeddingVersion

PGVECTOR = PgvectorEngine()
SCAN = ScanEngine()
# zvec beside PostgreSQL (semindex.ann_substrate): the package is imported only when it is used, so
# the engine is listed with or without the `zvec` extra; `require_engine` says which extra it needs.
ZVEC = ZvecEngine(fallback=PGVECTOR)
_ENGINES: dict[str, SemanticEngine] = {PGVECTOR.name: PGVECTOR, SCAN.name: SCAN, ZVEC.name: ZVEC}


def register_engine(engine: SemanticEngine) -> SemanticEngine:
    """Make an engine available by its name (a version's ann_engine); replaces one of the same name."""
    _ENGINES[engine.name] = engine
    return engine


def engine_named(name: str) -> SemanticEngine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise InvalidInput(f"ANN engine {name!r} is not one of {', '.join(sorted(_ENGINES))}") from None


def require_engine(name: str) -> SemanticEngine:
    """The engine, checked usable here (Unavailable naming what to install otherwise)."""
    engine = engine_named(name)
    require = getattr(engine, "require", None)
    if require is not None:
        require()
    return engine


def captures_changes(name: str) -> bool:
    """Whether a version on this engine needs change capture on its vector table."""
    return bool(getattr(engine_named(name), "captures_changes", False))


def change_capture_for(version: EmbeddingVersion) -> Callable[[psycopg.Connection], None] | None:
    """What VectorStorage.create_table runs in its transaction for this version: the change-capture
    triggers when its ANN engine needs them, else nothing."""
    if not captures_changes(version.ann_engine):
        return None
    return lambda conn: create_change_capture(conn, version)


def exact_engine(storage: VectorStorage) -> SemanticEngine:
    """pgvector's exact SQL where the vector type exists, the scan otherwise."""
    return PGVECTOR if PGVECTOR.serves(storage) else SCAN


def engines_for(ann_engine: str, storage: VectorStorage) -> EngineChoice:
    """The exact engine of the storage, and the named ANN engine when it serves the storage."""
    ann = engine_named(ann_engine)
    return EngineChoice(exact=exact_engine(storage), ann=ann if ann.serves(storage) else None)
