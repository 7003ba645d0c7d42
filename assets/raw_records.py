import time
from pathlib import Path

import dagster as dg

from assets.metadata import stage_metadata
from resources import PostgresResource
from semindex import raw_records as stage
from semindex.sample_corpus import SAMPLE_CORPUS_PATH
from semindex.settings import semindex_home


class RawRecordsConfig(dg.Config):
    paths: list[str] = []
    """JSONL files to ingest. Empty means the bundled sample corpus plus every *.jsonl in SEMINDEX_HOME/inbox."""
    force: bool = False
    """Re-read files already ingested with the same content (the upsert keeps it idempotent anyway)."""


def default_sources() -> list[Path]:
    """The sample corpus, the judged sets' own documents (evaluation searches them) and the inbox."""
    from semindex.judged_sets import judged_document_paths

    inbox = semindex_home() / "inbox"
    bundled = [SAMPLE_CORPUS_PATH, *(path for path in judged_document_paths() if path != SAMPLE_CORPUS_PATH)]
    return [*bundled, *sorted(inbox.glob("*.jsonl"))] if inbox.is_dir() else bundled


@dg.asset(
    kinds={"postgres", "python"},
    group_name="index_pipeline",
    description="Raw records upserted by (connector_instance_id, stream, record_key) with a content hash; bad lines quarantined.",
)
def raw_records(context: dg.AssetExecutionContext, config: RawRecordsConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    paths = [Path(p) for p in config.paths] or default_sources()
    started = time.monotonic()
    report = stage.ingest_files(db, paths, force=config.force, progress_emit=context.log.info)
    seconds = time.monotonic() - started
    if report.quarantined:
        context.log.warning(f"{report.quarantined} lines quarantined: {report.quarantine_reasons}")
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=stage.live_record_count(db),
            added=report.inserted,
            changed=report.updated,
            removed=report.deleted,
            seconds=seconds,
            work_rows=report.lines,
            unchanged=report.unchanged,
            quarantined=report.quarantined,
            quarantine_reasons=dg.MetadataValue.json(report.quarantine_reasons),
            files=dg.MetadataValue.json([str(p) for p in paths]),
            files_skipped_unchanged=report.files_skipped_unchanged,
        )
    )
