"""Metadata every materialization records: row count, changes, duration and throughput."""

from __future__ import annotations

import dagster as dg


def stage_metadata(*, row_count: int, added: int, changed: int, removed: int, seconds: float, work_rows: int, **extra) -> dict:
    return {
        "dagster/row_count": dg.MetadataValue.int(row_count),
        "rows_added": dg.MetadataValue.int(added),
        "rows_changed": dg.MetadataValue.int(changed),
        "rows_removed": dg.MetadataValue.int(removed),
        "duration_seconds": dg.MetadataValue.float(round(seconds, 3)),
        "throughput_rows_per_second": dg.MetadataValue.float(round(work_rows / seconds, 1) if seconds > 0 else 0.0),
        **extra,
    }
