"""Test setup for tests about something other than the gates: make a version serve through the real
promotion flip, with a verdict stored as if its evaluation had passed."""

from __future__ import annotations

from semindex.database import Database
from semindex.vectors.version import get_version
from semindex.lifecycle import Flip, promote, record_evaluation


def serve(db: Database, version_key: str) -> Flip:
    version = get_version(db, version_key)
    record_evaluation(db, version, judged={"setup": "test fixture, not evaluated"}, shadow={}, failures=[])
    return promote(db, version_key)
