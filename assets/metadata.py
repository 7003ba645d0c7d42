"""A stage's report as materialization metadata: row count, changes, duration and throughput, the
stage's metrics as numbers (the UI plots each across materializations), then its details (Markdown
as Markdown, lists and dicts as JSON, ids and keys as text: a number the UI would plot).

Numeric metadata is what Dagster plots, so a number that is not a measure is never one: every
`*_id`, `*_key` and `watermark` entry is text."""

from __future__ import annotations

import dagster as dg

from semindex.stage_report import Markdown, StageReport


def is_identifier(key: str) -> bool:
    return key.endswith(("_id", "_key", "_ids", "_keys")) or key in ("id", "watermark")


def number(value: float | int) -> dg.MetadataValue:
    """A metric as Dagster metadata: int stays int, everything else is a float (a series keeps one type)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.float(float(value))


def metric_entries(metrics) -> dict[str, dg.MetadataValue]:
    return {key: number(value) for key, value in metrics.items() if value is not None}


def _value(key: str, value):
    if is_identifier(key):
        return dg.MetadataValue.null() if value is None else dg.MetadataValue.text(str(value))
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
        **metric_entries(report.metrics),
        **{key: _value(key, value) for key, value in report.details.items()},
    })
