"""The one report every pipeline stage returns, whatever runs it (the Dagster code location turns it
into materialization metadata in one line; the CLI and tests read it directly)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Markdown:
    """A detail to show as Markdown (a table) rather than as text."""

    text: str


@dataclass(frozen=True)
class StageReport:
    row_count: int  # rows the stage's output holds after the run
    added: int = 0
    changed: int = 0
    removed: int = 0
    seconds: float = 0.0
    work_rows: int = 0  # rows this run worked on (for its throughput)
    # Stage-specific facts: numbers, text, booleans, lists and dicts (shown as JSON), Markdown.
    details: Mapping[str, object] = field(default_factory=dict)
    # Numbers to follow from run to run, under names that never change (the Dagster UI plots each
    # across materializations): scores, counts, seconds. Ids and keys belong in details, as text.
    metrics: Mapping[str, float | int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return round(self.work_rows / self.seconds, 1) if self.seconds > 0 else 0.0
