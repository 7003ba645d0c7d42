"""A stage's report as materialization metadata: row count, changes, duration and throughput, then
the stage's own details (Markdown as Markdown, lists and dicts as JSON)."""

from __future__ import annotations

import dagster as dg

from semindex.stage_report import Markdown, StageReport


def _value(value):
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(value.text)
    if isinstance(value, (dict, list, tuple)):
        return dg.MetadataValue.json(value)
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def materialization(report: StageReport) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(report.row_count),
        "rows_added": dg.MetadataValue.int(report.added),
        "rows_changed": dg.MetadataValue.int(report.changed),
        "rows_removed": dg.MetadataValue.int(report.removed),
        "duration_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "throughput_rows_per_second": dg.MetadataValue.float(report.throughput),
        **{key: _value(value) for key, value in report.details.items()},
    })
