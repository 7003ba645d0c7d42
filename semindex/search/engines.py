"""The registry of semantic engines, by name. A version's `ann_engine` names one of them; the
storage's exact engine is always available (pgvector's SQL, or the scan without pgvector)."""

from __future__ import annotations

from semindex.errors import InvalidInput
from semindex.search.engine import SemanticEngine
from semindex.search.pgvector_engine import PgvectorEngine
from semindex.search.planner import EngineChoice
from semindex.search.scan_engine import ScanEngine
from semindex.vectors.storage import VectorStorage

PGVECTOR = PgvectorEngine()
SCAN = ScanEngine()
_ENGINES: dict[str, SemanticEngine] = {PGVECTOR.name: PGVECTOR, SCAN.name: SCAN}


def register_engine(engine: SemanticEngine) -> SemanticEngine:
    """Make an engine available by its name (a version's ann_engine); replaces one of the same name."""
    _ENGINES[engine.name] = engine
    return engine


def engine_named(name: str) -> SemanticEngine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise InvalidInput(f"ANN engine {name!r} is not one of {', '.join(sorted(_ENGINES))}") from None


def exact_engine(storage: VectorStorage) -> SemanticEngine:
    """pgvector's exact SQL where the vector type exists, the scan otherwise."""
    return PGVECTOR if PGVECTOR.serves(storage) else SCAN


def engines_for(ann_engine: str, storage: VectorStorage) -> EngineChoice:
    """The exact engine of the storage, and the named ANN engine when it serves the storage."""
    ann = engine_named(ann_engine)
    return EngineChoice(exact=exact_engine(storage), ann=ann if ann.serves(storage) else None)
