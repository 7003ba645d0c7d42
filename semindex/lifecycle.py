"""The embedding version lifecycle: declare, register, promote, roll back, retire.

Versions are declared in a TOML file (SEMINDEX_VERSIONS_FILE, or the declarations shipped in the
package) and registered into semindex.embedding_versions. After its backfill a version is evaluated
(semindex.evaluation) and the verdict is stored. Serving changes only through flips:

  promote   one transaction: lock, re-read the newest stored verdict, refuse unless it passed under
            the version's current thresholds, then make it active; the replaced version keeps its
            storage and becomes the rollback target.
  rollback  one transaction: the rollback target becomes active again.
  retire    drops a version's vector table and indexes; refused for the active version and the
            rollback target.

Promotion reads the verdict itself, inside its own transaction, because a blocking Dagster check
gates only the run that executes it: re-executing a failed run "from failure" can run the promotion
step alone.
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from semindex import settings
from semindex.chunking import ChunkingParameters
from semindex.database import Database
from semindex.embeddings import check_encoder_dimensions
from semindex.encoders import ENCODER_KINDS, EncoderSpec, encoder_display_name, encoder_revision, load_encoder, spec_from_name
from semindex.errors import Conflict, InvalidInput, NotFound
from semindex.ann_substrate.builder import retire_substrate
from semindex.indexes import index_validity
from semindex.search.engines import require_engine
from semindex.search.fusion import FusionSettings
from semindex.sql_files import statement
from semindex.stage_report import StageReport
from semindex.vectors.metric import VERSION_METRIC_NAMES
from semindex.vectors.version import EmbeddingVersion, active_version, find_version, get_version

DEFAULT_VERSION_KEY = "minilm-l6-v2"
PROMOTION_MODES = ("auto", "manual")
# The same pattern as the table's CHECK: it is also a Dagster partition key, where commas break backfills.
VERSION_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,62}")
# Chunks are shared by every version (one chunk table, one lexical index), so a version may only
# declare the chunking this build cuts; a different chunking is a different corpus.
SHARED_CHUNKING = ChunkingParameters()


class PromotionRefused(Conflict):
    pass


class RollbackRefused(Conflict):
    pass


class RetireRefused(Conflict):
    pass


DECLARATION_KEYS = {"encoder", "dimensions", "metric", "revision", "chunking", "thresholds", "promotion", "description", "ann_engine"}


@dataclass(frozen=True)
class VersionDeclaration:
    version_key: str
    encoder: EncoderSpec
    dimensions: int
    metric: str = "cosine"
    revision: str | None = None
    chunking: ChunkingParameters = ChunkingParameters()
    thresholds: dict = field(default_factory=dict)
    promotion: str = "auto"
    description: str = ""
    ann_engine: str = "pgvector"


def load_declarations(path: Path | None = None) -> dict[str, VersionDeclaration]:
    """Every version the file declares, validated; errors name the file, the version and the field."""
    path = path or settings.versions_file()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no versions file at {path} (set SEMINDEX_VERSIONS_FILE)") from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidInput(f"{path}: {error}") from None
    declared = document.get("versions", {})
    if not isinstance(declared, dict):
        raise InvalidInput(f"{path}: [versions] must be a table of version keys")
    return {key: _declaration(path, key, body) for key, body in declared.items()}


def _declaration(path: Path, key: str, body) -> VersionDeclaration:
    where = f"{path}: version {key!r}"
    if not isinstance(body, dict):
        raise InvalidInput(f"{where} must be a table")
    unknown = sorted(set(body) - DECLARATION_KEYS)
    if unknown:
        raise InvalidInput(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(DECLARATION_KEYS))}")
    encoder = body.get("encoder")
    if not isinstance(encoder, dict) or set(encoder) != {"kind", "location"}:
        raise InvalidInput(f"{where}: encoder must be {{ kind = ..., location = ... }}, got {encoder!r}")
    if encoder["kind"] not in ENCODER_KINDS:
        raise InvalidInput(f"{where}: encoder kind {encoder['kind']!r} is not one of {', '.join(ENCODER_KINDS)}")
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 16000:
        raise InvalidInput(f"{where}: dimensions must be a whole number from 1 to 16000, got {dimensions!r}")
    metric = body.get("metric", "cosine")
    if metric not in VERSION_METRIC_NAMES:
        raise InvalidInput(f"{where}: metric {metric!r} is not one of {', '.join(VERSION_METRIC_NAMES)}")
    ann_engine = body.get("ann_engine", "pgvector")
    if not isinstance(ann_engine, str):
        raise InvalidInput(f"{where}: ann_engine must be an engine name, got {ann_engine!r}")
    promotion = body.get("promotion", "auto")
    if promotion not in PROMOTION_MODES:
        raise InvalidInput(f"{where}: promotion {promotion!r} is not one of {', '.join(PROMOTION_MODES)}")
    chunking = body.get("chunking", {})
    try:
        parameters = ChunkingParameters(**chunking)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"{where}: chunking {chunking!r}: {error}") from None
    thresholds = body.get("thresholds", {})
    validate_thresholds(thresholds, where)
    return VersionDeclaration(
        version_key=key,
        encoder=EncoderSpec(encoder["kind"], encoder["location"]),
        dimensions=dimensions,
        metric=metric,
        revision=body.get("revision"),
        chunking=parameters,
        thresholds=thresholds,
        promotion=promotion,
        description=body.get("description", ""),
        ann_engine=ann_engine,
    )


# Gate metrics a version may set a floor for, per judged set; the other keys are single numbers.
# Floors a version may set per judged set: the name in the versions file -> the ranking (the version's
# semantic or hybrid search; lexical ranking does not depend on the version) and the metric it bounds.
JUDGED_THRESHOLDS = {
    "ndcg_at_10": ("semantic", "ndcg@10"), "recall_at_10": ("semantic", "recall@10"),
    "precision_at_10": ("semantic", "precision@10"), "mrr": ("semantic", "mrr@10"),
    "hybrid_ndcg_at_10": ("hybrid", "ndcg@10"), "hybrid_recall_at_10": ("hybrid", "recall@10"),
}
JUDGED_METRICS = tuple(JUDGED_THRESHOLDS)
THRESHOLD_NUMBERS = ("max_regression", "hnsw_recall", "min_similarity")
THRESHOLD_COUNTS = ("shadow_queries",)


def validate_thresholds(thresholds, where: str) -> None:
    if not isinstance(thresholds, dict):
        raise InvalidInput(f"{where}: thresholds must be a table, got {thresholds!r}")
    for name, value in thresholds.items():
        if name == "judged":
            if not isinstance(value, dict):
                raise InvalidInput(f"{where}: thresholds.judged must be a table of judged sets")
            for set_name, floors in value.items():
                if not isinstance(floors, dict):
                    raise InvalidInput(f"{where}: thresholds.judged.{set_name} must be a table of metrics")
                for metric, floor in floors.items():
                    if metric not in JUDGED_METRICS:
                        raise InvalidInput(f"{where}: thresholds.judged.{set_name}.{metric} is not one of {', '.join(JUDGED_METRICS)}")
                    _check_unit_number(floor, f"{where}: thresholds.judged.{set_name}.{metric}")
        elif name in THRESHOLD_NUMBERS:
            _check_unit_number(value, f"{where}: thresholds.{name}", allow_negative=name == "min_similarity")
        elif name == "fusion":
            if not isinstance(value, dict):
                raise InvalidInput(f"{where}: thresholds.fusion must be a table (method, k, lexical_weight, semantic_weight)")
            FusionSettings.from_mapping(value, f"{where}: thresholds.fusion")
        elif name in THRESHOLD_COUNTS:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
                raise InvalidInput(f"{where}: thresholds.{name} must be a whole number from 0 to 1000, got {value!r}")
        else:
            known = ", ".join(("judged", "fusion", *THRESHOLD_NUMBERS, *THRESHOLD_COUNTS))
            raise InvalidInput(f"{where}: unknown threshold {name!r}; known: {known}")


def _check_unit_number(value, where: str, *, allow_negative: bool = False) -> None:
    low = -1.0 if allow_negative else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= 1:
        raise InvalidInput(f"{where} must be a number from {low:g} to 1, got {value!r}")


def register_declared(db: Database, declaration: VersionDeclaration) -> EmbeddingVersion:
    """Register (or update the thresholds of) a declared version; the encoder is probed first."""
    return register_version(
        db,
        declaration.version_key,
        declaration.encoder,
        declaration.dimensions,
        declaration.metric,
        thresholds=declaration.thresholds,
        promotion=declaration.promotion,
        chunking=declaration.chunking,
        declared_revision=declaration.revision,
        ann_engine=declaration.ann_engine,
    )


def register_version(
    db: Database,
    version_key: str = DEFAULT_VERSION_KEY,
    encoder_name: str | EncoderSpec = "sentence-transformers/all-MiniLM-L6-v2",
    dimensions: int = 384,
    distance_metric: str = "cosine",
    *,
    thresholds: dict | None = None,
    promotion: str = "auto",
    chunking: ChunkingParameters | None = None,
    declared_revision: str | None = None,
    ann_engine: str = "pgvector",
    probe: bool = True,
) -> EmbeddingVersion:
    """Register a version (idempotent), after checking that its encoder really produces `dimensions`.

    The encoder's identity (kind, location, revision, dimensions, metric) and the version's ANN
    engine are fixed for the life of a version key; its thresholds and promotion mode may be updated
    by registering again. Its vector table is created by the first backfill.
    """
    if not isinstance(version_key, str) or not VERSION_KEY_PATTERN.fullmatch(version_key):
        raise InvalidInput(
            f"version key {version_key!r} must be 1-63 characters: letters, digits and . _ @ -, starting with a letter or digit"
        )
    spec = encoder_name if isinstance(encoder_name, EncoderSpec) else spec_from_name(encoder_name)
    spec.validate()
    if distance_metric not in VERSION_METRIC_NAMES:
        raise InvalidInput(f"distance metric {distance_metric!r} is not one of {', '.join(VERSION_METRIC_NAMES)}")
    if promotion not in PROMOTION_MODES:
        raise InvalidInput(f"promotion mode {promotion!r} is not one of {', '.join(PROMOTION_MODES)}")
    require_engine(ann_engine)
    chunking = chunking or SHARED_CHUNKING
    if chunking != SHARED_CHUNKING:
        raise InvalidInput(
            f"embedding version {version_key!r} declares chunking {chunking}, but chunks are shared by "
            f"every version and this build cuts {SHARED_CHUNKING}"
        )
    name = encoder_display_name(spec)
    revision = encoder_revision(spec)
    if declared_revision is not None and declared_revision != revision:
        raise InvalidInput(
            f"embedding version {version_key!r} declares encoder revision {declared_revision!r}, "
            f"but the installed encoder {name!r} is {revision!r}"
        )
    existing = find_version(db, version_key)
    wanted = (name, revision, dimensions, distance_metric, ann_engine)
    if existing is not None:
        declared = (existing.encoder_name, existing.encoder_revision, existing.dimensions, existing.distance_metric,
                    existing.ann_engine)
        if declared != wanted:
            # A new model revision writes different vectors: mixing them into one version would make
            # its index answer with two encoders at once.
            raise Conflict(
                f"embedding version {version_key!r} is already registered as {declared}, "
                f"not {wanted}; register the change under a new version key"
            )
        if existing.state == "retired":
            raise Conflict(f"embedding version {version_key!r} is retired; register it under a new version key")
    elif probe:
        # Refused before anything is stored, so no backfill can ever start for it.
        check_encoder_dimensions(load_encoder(spec), version_key, name, dimensions)
    parameters = {
        "version_key": version_key,
        "encoder_name": name,
        "encoder_revision": revision,
        "dimensions": dimensions,
        "distance_metric": distance_metric,
        "chunking": Jsonb({"size_tokens": chunking.size_tokens, "overlap_tokens": chunking.overlap_tokens}),
        "thresholds": Jsonb(thresholds or {}),
        "promotion": promotion,
        "ann_engine": ann_engine,
    }
    with db.connection() as conn:
        conn.execute(statement("embedding_versions", "register"), parameters)
        if existing is not None:
            conn.execute(statement("embedding_versions", "update_evaluation_settings"), parameters)
    return get_version(db, version_key)


def ensure_registered(db: Database, version_key: str) -> EmbeddingVersion:
    """The version, registered from the versions file if it is declared there and not yet registered."""
    version = find_version(db, version_key)
    if version is not None:
        return version
    declared = load_declarations()
    if version_key not in declared:
        raise NotFound(
            f"embedding version {version_key!r} is neither registered nor declared in {settings.versions_file()} "
            f"(declared: {', '.join(declared) or 'none'})"
        )
    return register_declared(db, declared[version_key])


@dataclass(frozen=True)
class StoredEvaluation:
    evaluation_id: int
    version_id: int
    evaluated_at: datetime
    thresholds: dict
    judged: dict
    shadow: dict
    failures: list[str]
    passed: bool


def record_evaluation(
    db: Database, version: EmbeddingVersion, *, judged: dict, shadow: dict, failures: list[str]
) -> StoredEvaluation:
    """Store a verdict: passed exactly when there are no failures, judged under the current thresholds."""
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(StoredEvaluation)).execute(
            statement("versions", "insert_evaluation"),
            {
                "version_id": version.version_id,
                "thresholds": Jsonb(version.thresholds),
                "judged": Jsonb(judged),
                "shadow": Jsonb(shadow),
                "failures": failures,
                "passed": not failures,
            },
        ).fetchone()


def _latest_evaluation(conn, version_id: int) -> StoredEvaluation | None:
    return conn.cursor(row_factory=class_row(StoredEvaluation)).execute(
        statement("versions", "latest_evaluation"), (version_id,)
    ).fetchone()


def latest_evaluation(db: Database, version: EmbeddingVersion) -> StoredEvaluation | None:
    with db.connection() as conn:
        return _latest_evaluation(conn, version.version_id)


@dataclass(frozen=True)
class Flip:
    action: str
    version_key: str
    previous_version_key: str | None
    evaluation_id: int | None = None
    changed: bool = True


@dataclass(frozen=True)
class LockedVersion:
    version_id: int
    state: str
    active: bool
    rollback_target: bool
    thresholds: dict


@dataclass(frozen=True)
class VersionRef:
    version_id: int
    version_key: str


def _lock_for_flip(conn, version_key: str) -> LockedVersion:
    """Serialise with every other flip, then lock the version's row."""
    conn.execute(statement("versions", "lock_serving"))
    row = conn.cursor(row_factory=class_row(LockedVersion)).execute(
        statement("versions", "version_for_update"), (version_key,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no embedding version {version_key!r} is registered")
    return row


def _locked_ref(conn, name: str) -> VersionRef | None:
    return conn.cursor(row_factory=class_row(VersionRef)).execute(statement("versions", name)).fetchone()


def promote(db: Database, version_key: str) -> Flip:
    """Make `version_key` the serving version, if and only if its stored verdict passed."""
    with db.connection() as conn:
        locked = _lock_for_flip(conn, version_key)
        if locked.active:
            return Flip("promote", version_key, None, changed=False)
        if locked.state != "ready":
            raise PromotionRefused(f"embedding version {version_key!r} is {locked.state}, not ready: finish its backfill first")
        evaluation = _latest_evaluation(conn, locked.version_id)
        if evaluation is None:
            raise PromotionRefused(f"embedding version {version_key!r} has no stored evaluation: evaluate it first")
        if evaluation.thresholds != locked.thresholds:
            raise PromotionRefused(
                f"the newest evaluation of {version_key!r} (#{evaluation.evaluation_id}) was judged under other "
                "thresholds than the version's current ones: evaluate it again"
            )
        if not evaluation.passed:
            raise PromotionRefused(
                f"embedding version {version_key!r} failed evaluation #{evaluation.evaluation_id}: "
                + "; ".join(evaluation.failures)
            )
        previous = _locked_ref(conn, "active_for_update")
        conn.execute(statement("versions", "clear_rollback_target"))
        if previous:
            conn.execute(statement("versions", "demote"), {"version_id": previous.version_id, "keep_as_target": True})
        conn.execute(statement("versions", "activate"), (locked.version_id,))
        conn.execute(
            statement("versions", "record_event"),
            ("promote", locked.version_id, previous.version_id if previous else None, evaluation.evaluation_id),
        )
    return Flip("promote", version_key, previous.version_key if previous else None, evaluation.evaluation_id)


def serving_stage(db: Database, version_key: str, *, log=None) -> StageReport:
    """The serving decision for a version that passed its pipeline: promote it when it is declared
    promotion = "auto" (promote() re-reads the stored verdict and raises PromotionRefused when it
    failed, even when this step runs alone); a "manual" version waits for `semindex versions promote`."""
    started = time.monotonic()
    version = get_version(db, version_key)
    flip = None
    if version.promotion == "manual" and not version.active:
        message = f"{version_key} is promoted by hand: semindex versions promote {version_key}"
    else:
        flip = promote(db, version_key)
        message = f"{version_key} serves (was {flip.previous_version_key})" if flip.changed else f"{version_key} already serves"
    if log is not None:
        log(message)
    serving = flip is not None  # promote() returned: the version serves, newly or already
    return StageReport(
        row_count=1 if serving else 0,
        added=1 if flip and flip.changed else 0,
        seconds=time.monotonic() - started,
        details={
            "serving": serving,
            "previous_version": (flip.previous_version_key if flip else None) or "",
            "evaluation_id": (flip.evaluation_id if flip else None) or 0,
            "promotion": version.promotion,
        },
    )


def rollback(db: Database) -> Flip:
    """Serve the version the last promotion replaced again. The rolled-back version keeps its storage
    and its verdict, so it can be promoted again or retired."""
    with db.connection() as conn:
        conn.execute(statement("versions", "lock_serving"))
        target = _locked_ref(conn, "rollback_target_for_update")
        if target is None:
            raise RollbackRefused("there is no version to roll back to: no promotion has replaced one since the last rollback")
        current = _locked_ref(conn, "active_for_update")
        if current:
            conn.execute(statement("versions", "demote"), {"version_id": current.version_id, "keep_as_target": False})
        conn.execute(statement("versions", "activate"), (target.version_id,))
        conn.execute(statement("versions", "record_event"),
                     ("rollback", target.version_id, current.version_id if current else None, None))
    return Flip("rollback", target.version_key, current.version_key if current else None)


@dataclass(frozen=True)
class Retirement:
    version_key: str
    dropped_table: str
    changed: bool


def retire(db: Database, version_key: str) -> Retirement:
    """Drop a version's vectors and indexes. Refused for the active version and the rollback target."""
    version = get_version(db, version_key)
    with db.connection() as conn:
        locked = _lock_for_flip(conn, version_key)
        if locked.state == "retired":
            return Retirement(version_key, version.vectors_table, changed=False)
        if locked.active:
            raise RetireRefused(f"embedding version {version_key!r} is serving: promote another version first")
        if locked.rollback_target:
            raise RetireRefused(
                f"embedding version {version_key!r} is the rollback target: promote again or roll back first"
            )
        conn.execute(statement("versions", "drop_vectors", vectors=version.vectors_table))
        conn.execute(statement("versions", "forget_partial_indexes"), (locked.version_id,))
        conn.execute(statement("versions", "forget_field_indexes"), (locked.version_id,))
        conn.execute(statement("versions", "forget_watermark"), (locked.version_id,))
        conn.execute(statement("versions", "retire"), (locked.version_id,))
        conn.execute(statement("versions", "record_event"), ("retire", locked.version_id, None, None))
    retire_substrate(db, version)  # its zvec generations and change log, if it had any
    return Retirement(version_key, version.vectors_table, changed=True)


@dataclass(frozen=True)
class VersionListing:
    version_key: str
    encoder_name: str
    dimensions: int
    metric: str
    ann_engine: str
    state: str
    active: bool
    rollback_target: bool
    promotion: str
    verdict: bool | None
    evaluated_at: datetime | None
    failures: list[str] | None
    watermark: int | None

    @property
    def role(self) -> str:
        return "serving" if self.active else "rollback target" if self.rollback_target else ""


def list_versions(db: Database) -> list[VersionListing]:
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(VersionListing)).execute(statement("versions", "listing")).fetchall()


def serving_facts(db: Database) -> dict | None:
    """What a client may know of the serving version (the HTTP service's discovery document): its
    model, dimensions, metric and index state (`built`: its HNSW index is valid; `building`: an
    index build is under way; `stale`: no index, so searches scan exactly). None: nothing serves."""
    version = active_version(db)
    if version is None:
        return None
    valid = index_validity(db, [version.hnsw_index_name])[version.hnsw_index_name]
    return {
        "version": version.version_key, "model": encoder_display_name(version.encoder_spec),
        "dimensions": version.dimensions, "distance_metric": version.distance_metric,
        "index_state": {True: "built", False: "building", None: "stale"}[valid],
    }
