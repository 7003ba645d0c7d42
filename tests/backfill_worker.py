"""Runs one embedding backfill in its own process, so a test can SIGKILL it part-way."""

import sys

from semindex.database import open_database
from semindex.embeddings import backfill
from semindex.vectors.version import get_version

if __name__ == "__main__":
    database_url, version_key, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = open_database(database_url)
    backfill(db, get_version(db, version_key), batch_size=batch_size)
