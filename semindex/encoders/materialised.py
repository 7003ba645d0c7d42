"""Model files made once under the models folder and reused by every later process: a packed model
extracted (all-mpnet-base-v2) or a model exported and quantised (all-MiniLM-L6-v2 as int8 ONNX).

The folder is made under an fcntl lock (a second process waits, then reuses the result), in a hidden
folder beside the target that is renamed into place, so the target is either absent or complete. A
marker file inside records who made it, when, in how long, and what the maker said about it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".semindex-extracted.json"


def materialised(target: Path, make: Callable[[Path], dict], *, what: str) -> Path:
    """`target`, made on first use by make(partial_folder) -> facts for the marker.

    make creates the folder it is given (inside a hidden scratch folder beside the target) and fills
    it; its facts (JSON-able) go into the marker beside the maker's pid, the time and the seconds it
    took. Later callers return at once on the marker.
    """
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if (target / MARKER).is_file():
                return target  # another process finished it while we waited
            # We hold the lock, so any partial folder left here is from a process that died.
            for stale in target.parent.glob(f".{target.name}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if target.exists():  # not made by us (no marker): replace it
                shutil.rmtree(target)
            _make(target, make, what)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return target


def _make(target: Path, make: Callable[[Path], dict], what: str) -> None:
    started = time.monotonic()
    log.info("%s: making %s once (later runs reuse it)", what, target)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        folder = partial / "model"
        facts = make(folder)
        seconds = round(time.monotonic() - started, 3)
        marker = {**facts, "made_at": time.time(), "pid": os.getpid(), "seconds": seconds}
        (folder / MARKER).write_text(json.dumps(marker), encoding="utf-8")
        os.rename(folder, target)
        log.info("%s: made %s in %.1fs", what, target, seconds)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
