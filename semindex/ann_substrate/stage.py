"""The ann_substrate pipeline stage: build and publish the next zvec generation of a version whose
ANN engine is zvec (nothing for the others)."""

from __future__ import annotations

from collections.abc import Callable

from semindex.ann_substrate.builder import build
from semindex.ann_substrate.recall import substrate_status
from semindex.database import Database
from semindex.search.engines import ZVEC
from semindex.stage_report import StageReport
from semindex.vectors.version import get_version


def substrate_stage(db: Database, version_key: str, *, full: bool = False,
                    progress_emit: Callable[[str], None] | None = None) -> StageReport:
    version = get_version(db, version_key)
    if version.ann_engine != ZVEC.name:
        return StageReport(row_count=0, details={"skipped": f"version {version_key!r} searches with {version.ann_engine}, not zvec"})
    report = build(db, version, full=full, progress=progress_emit)
    status = substrate_status(db, version)
    return StageReport(
        row_count=report.documents, added=report.upserted, removed=report.deleted, seconds=report.build_seconds,
        work_rows=report.upserted + report.deleted,
        details={"generation": f"g{report.generation}", "horizon": report.horizon, "full_build": report.full,
                 "cleaned": report.cleaned, "change_capture": report.capture},
        metrics={"documents": report.documents, "pending_changes": status.get("pending_changes", 0),
                 "build_seconds": report.build_seconds, "disk_bytes": report.disk_bytes},
    )
