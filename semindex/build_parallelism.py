"""How many parallel workers an index build may use, probed before going parallel.

A parallel build (pgvector's HNSW, PostgreSQL's GIN and btree) shares its work area between the
leader and its workers in dynamic shared memory, which on Linux is a file in /dev/shm as large as
maintenance_work_mem. Containers often mount a 64 MB /dev/shm: there a parallel build dies with
"could not resize shared memory segment" (SQLSTATE 53100) after running for minutes, where a serial
build would have finished. So a build goes parallel only when the probe can see the server's
/dev/shm (the server runs on this host: the embedded one, or any reached by a unix socket or loopback) and it
has room for maintenance_work_mem with a margin; otherwise it runs serially and says why.
SEMINDEX_INDEX_BUILD_WORKERS overrides the probe (0: always serial).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from semindex import settings
from semindex.database import Database
from semindex.sql_files import statement

log = logging.getLogger(__name__)

SHARED_MEMORY = Path("/dev/shm")
# The segment is maintenance_work_mem plus the build's own bookkeeping; leave room for other users.
MARGIN = 1.25
_KB = {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}


@dataclass(frozen=True)
class BuildParallelism:
    workers: int
    reason: str


def _kilobytes(size: str) -> int:
    number = size.rstrip("kMGTB")
    return int(number) * _KB[size[len(number):] or "kB"]


def build_parallelism(db: Database, maintenance_work_mem: str) -> BuildParallelism:
    """Workers for a build with `maintenance_work_mem`, and why (logged by the caller's build)."""
    forced = settings.index_build_workers()
    if forced is not None:
        return BuildParallelism(forced, f"SEMINDEX_INDEX_BUILD_WORKERS={forced}")
    with db.connection() as conn:
        local, shm_type, max_workers = conn.execute(statement("indexes", "parallel_build_settings")).fetchone()
    if shm_type not in ("posix", "sysv", "mmap") or max_workers < 1:
        return BuildParallelism(0, f"the server allows no parallel maintenance workers "
                                   f"(dynamic_shared_memory_type={shm_type}, max_parallel_maintenance_workers={max_workers})")
    if not local:
        return BuildParallelism(0, "the server runs on another host, whose /dev/shm cannot be checked from here "
                                   "(set SEMINDEX_INDEX_BUILD_WORKERS to build in parallel there)")
    try:
        stats = os.statvfs(SHARED_MEMORY)
    except OSError as error:
        return BuildParallelism(0, f"{SHARED_MEMORY} cannot be read ({error})")
    free_kb = stats.f_bavail * stats.f_frsize // 1024
    needed_kb = int(_kilobytes(maintenance_work_mem) * MARGIN)
    if shm_type == "posix" and free_kb < needed_kb:
        return BuildParallelism(0, f"{SHARED_MEMORY} has {free_kb // 1024} MB free and a parallel build with "
                                   f"maintenance_work_mem={maintenance_work_mem} needs about {needed_kb // 1024} MB")
    # The leader works too: one worker per other core, within the server's own cap.
    workers = max(0, min(max_workers, (os.cpu_count() or 1) - 1))
    if workers == 0:
        return BuildParallelism(0, "one core: a parallel build has no other core to use")
    return BuildParallelism(workers, f"{SHARED_MEMORY} has {free_kb // 1024} MB free for "
                                     f"maintenance_work_mem={maintenance_work_mem}")
