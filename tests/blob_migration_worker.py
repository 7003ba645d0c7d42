"""Runs one semantic_search_blob migration in its own process, so a test can SIGKILL it anywhere.

Usage: blob_migration_worker.py DATABASE_URL TABLE HNSW_M HNSW_EF_CONSTRUCTION
The batch size comes from SEMINDEX_MIGRATION_BATCH_SIZE. Log lines go to stderr as they happen
(the test reads the "phase ..." lines to know where each kill landed).
"""

import logging
import sys

if __name__ == "__main__":
    database_url, table, hnsw_m, hnsw_ef_construction = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    print("worker: started", file=sys.stderr, flush=True)

    from semindex.database import Database
    from semindex.semantic_blob import migrate

    db = Database(database_url, max_connections=2)
    report = migrate(db, table=table, hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction)
    print(f"worker: finished {report.status}", file=sys.stderr, flush=True)
    db.close()
