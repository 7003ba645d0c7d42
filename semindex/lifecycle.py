"""The embedding version lifecycle: declare, register, promote, roll back, retire.

Versions are declared in a TOML file (embedding_versions.toml at the project root, or
SEMINDEX_VERSIONS_FILE) and registered into semindex.embedding_versions. After its backfill a version
is evaluated (semindex.evaluation) and the verdict is stored. Serving changes only through flips:

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

import os
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from psycopg.types.json import Jsonb

from semindex.chunking import ChunkingParameters
from semindex.database import Database
from semindex.embeddings import METRICS, PROMOTION_MODES, EmbeddingVersion, get_version, register_version
from semindex.encoders import ENCODER_KINDS, EncoderSpec
from semindex.settings import PROJECT_ROOT
from semindex.sql_files import statement

DECLARATION_KEYS = {"encoder", "dimensions", "metric", "revision", "chunking", "thresholds", "promotion", "description"}


class PromotionRefused(RuntimeError):
    pass


class RollbackRefused(RuntimeError):
    pass


class RetireRefused(RuntimeError):
    pass


def versions_file() -> Path:
    return Path(os.environ.get("SEMINDEX_VERSIONS_FILE") or PROJECT_ROOT / "embedding_versions.toml")


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


def load_declarations(path: Path | None = None) -> dict[str, VersionDeclaration]:
    """Every version the file declares, validated; errors name the file, the version and the field."""
    path = path or versions_file()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no versions file at {path} (set SEMINDEX_VERSIONS_FILE)") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: {error}") from None
    declared = document.get("versions", {})
    if not isinstance(declared, dict):
        raise ValueError(f"{path}: [versions] must be a table of version keys")
    return {key: _declaration(path, key, body) for key, body in declared.items()}


def _declaration(path: Path, key: str, body) -> VersionDeclaration:
    where = f"{path}: version {key!r}"
    if not isinstance(body, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(body) - DECLARATION_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(DECLARATION_KEYS))}")
    encoder = body.get("encoder")
    if not isinstance(encoder, dict) or set(encoder) != {"kind", "location"}:
        raise ValueError(f"{where}: encoder must be {{ kind = ..., location = ... }}, got {encoder!r}")
    if encoder["kind"] not in ENCODER_KINDS:
        raise ValueError(f"{where}: encoder kind {encoder['kind']!r} is not one of {', '.join(ENCODER_KINDS)}")
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 16000:
        raise ValueError(f"{where}: dimensions must be a whole number from 1 to 16000, got {dimensions!r}")
    metric = body.get("metric", "cosine")
    if metric not in METRICS:
        raise ValueError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
    promotion = body.get("promotion", "auto")
    if promotion not in PROMOTION_MODES:
        raise ValueError(f"{where}: promotion {promotion!r} is not one of {', '.join(PROMOTION_MODES)}")
    chunking = body.get("chunking", {})
    try:
        parameters = ChunkingParameters(**chunking)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: chunking {chunking!r}: {error}") from None
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
    )


# Gate metrics a version may set a floor for, per judged set; the other keys are single numbers.
JUDGED_METRICS = ("ndcg_at_10", "recall_at_10", "precision_at_10", "mrr")
THRESHOLD_NUMBERS = ("max_regression", "hnsw_recall", "min_similarity")
THRESHOLD_COUNTS = ("shadow_queries",)


def validate_thresholds(thresholds, where: str) -> None:
    if not isinstance(thresholds, dict):
        raise ValueError(f"{where}: thresholds must be a table, got {thresholds!r}")
    for name, value in thresholds.items():
        if name == "judged":
            if not isinstance(value, dict):
                raise ValueError(f"{where}: thresholds.judged must be a table of judged sets")
            for set_name, floors in value.items():
                if not isinstance(floors, dict):
                    raise ValueError(f"{where}: thresholds.judged.{set_name} must be a table of metrics")
                for metric, floor in floors.items():
                    if metric not in JUDGED_METRICS:
                        raise ValueError(f"{where}: thresholds.judged.{set_name}.{metric} is not one of {', '.join(JUDGED_METRICS)}")
                    _check_unit_number(floor, f"{where}: thresholds.judged.{set_name}.{metric}")
        elif name in THRESHOLD_NUMBERS:
            _check_unit_number(value, f"{where}: thresholds.{name}", allow_negative=name == "min_similarity")
        elif name in THRESHOLD_COUNTS:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
                raise ValueError(f"{where}: thresholds.{name} must be a whole number from 0 to 1000, got {value!r}")
        else:
            known = ", ".join(("judged", *THRESHOLD_NUMBERS, *THRESHOLD_COUNTS))
            raise ValueError(f"{where}: unknown threshold {name!r}; known: {known}")


def _check_unit_number(value, where: str, *, allow_negative: bool = False) -> None:
    low = -1.0 if allow_negative else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= 1:
        raise ValueError(f"{where} must be a number from {low:g} to 1, got {value!r}")


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
    )


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
        row = conn.execute(
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
    return StoredEvaluation(*row)


def latest_evaluation(db: Database, version: EmbeddingVersion) -> StoredEvaluation | None:
    with db.connection() as conn:
        row = conn.execute(statement("versions", "latest_evaluation"), (version.version_id,)).fetchone()
    return StoredEvaluation(*row) if row else None


@dataclass(frozen=True)
class Flip:
    action: str
    version_key: str
    previous_version_key: str | None
    evaluation_id: int | None = None
    changed: bool = True


def _lock_for_flip(conn, version_key: str) -> tuple:
    """Serialise with every other flip, then lock the version's row: (id, state, active, rollback_target, thresholds)."""
    conn.execute(statement("versions", "lock_serving"))
    row = conn.execute(statement("versions", "version_for_update"), (version_key,)).fetchone()
    if row is None:
        raise LookupError(f"no embedding version {version_key!r} is registered")
    return row


def promote(db: Database, version_key: str) -> Flip:
    """Make `version_key` the serving version, if and only if its stored verdict passed."""
    with db.connection() as conn:
        version_id, state, active, _, thresholds = _lock_for_flip(conn, version_key)
        if active:
            return Flip("promote", version_key, None, changed=False)
        if state != "ready":
            raise PromotionRefused(f"embedding version {version_key!r} is {state}, not ready: finish its backfill first")
        verdict = conn.execute(statement("versions", "latest_evaluation"), (version_id,)).fetchone()
        if verdict is None:
            raise PromotionRefused(f"embedding version {version_key!r} has no stored evaluation: evaluate it first")
        evaluation = StoredEvaluation(*verdict)
        if evaluation.thresholds != thresholds:
            raise PromotionRefused(
                f"the newest evaluation of {version_key!r} (#{evaluation.evaluation_id}) was judged under other "
                "thresholds than the version's current ones: evaluate it again"
            )
        if not evaluation.passed:
            raise PromotionRefused(
                f"embedding version {version_key!r} failed evaluation #{evaluation.evaluation_id}: "
                + "; ".join(evaluation.failures)
            )
        previous = conn.execute(statement("versions", "active_for_update")).fetchone()
        conn.execute(statement("versions", "clear_rollback_target"))
        if previous:
            conn.execute(statement("versions", "demote"), {"version_id": previous[0], "keep_as_target": True})
        conn.execute(statement("versions", "activate"), (version_id,))
        conn.execute(
            statement("versions", "record_event"),
            ("promote", version_id, previous[0] if previous else None, evaluation.evaluation_id),
        )
    return Flip("promote", version_key, previous[1] if previous else None, evaluation.evaluation_id)


def rollback(db: Database) -> Flip:
    """Serve the version the last promotion replaced again. The rolled-back version keeps its storage
    and its verdict, so it can be promoted again or retired."""
    with db.connection() as conn:
        conn.execute(statement("versions", "lock_serving"))
        target = conn.execute(statement("versions", "rollback_target_for_update")).fetchone()
        if target is None:
            raise RollbackRefused("there is no version to roll back to: no promotion has replaced one since the last rollback")
        current = conn.execute(statement("versions", "active_for_update")).fetchone()
        if current:
            conn.execute(statement("versions", "demote"), {"version_id": current[0], "keep_as_target": False})
        conn.execute(statement("versions", "activate"), (target[0],))
        conn.execute(statement("versions", "record_event"), ("rollback", target[0], current[0] if current else None, None))
    return Flip("rollback", target[1], current[1] if current else None)


@dataclass(frozen=True)
class Retirement:
    version_key: str
    dropped_table: str
    changed: bool


def retire(db: Database, version_key: str) -> Retirement:
    """Drop a version's vectors and indexes. Refused for the active version and the rollback target."""
    version = get_version(db, version_key)
    with db.connection() as conn:
        version_id, state, active, rollback_target, _ = _lock_for_flip(conn, version_key)
        if state == "retired":
            return Retirement(version_key, version.vectors_table, changed=False)
        if active:
            raise RetireRefused(f"embedding version {version_key!r} is serving: promote another version first")
        if rollback_target:
            raise RetireRefused(
                f"embedding version {version_key!r} is the rollback target: promote again or roll back first"
            )
        conn.execute(statement("versions", "drop_vectors", vectors=version.vectors_table))
        conn.execute(statement("versions", "forget_partial_indexes"), (version_id,))
        conn.execute(statement("versions", "forget_watermark"), (version_id,))
        conn.execute(statement("versions", "retire"), (version_id,))
        conn.execute(statement("versions", "record_event"), ("retire", version_id, None, None))
    return Retirement(version_key, version.vectors_table, changed=True)


@dataclass(frozen=True)
class VersionListing:
    version_key: str
    encoder_name: str
    dimensions: int
    metric: str
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
        return [VersionListing(*row) for row in conn.execute(statement("versions", "listing"))]
