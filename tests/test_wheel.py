"""The built distribution works on its own: a wheel installed (not editable) into a fresh virtual
environment outside the checkout runs the main job and a search."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

VERSIONS = """
[versions.hash-wheel]
description = "feature hashing, for the wheel test"
encoder = { kind = "hashing", location = "64" }
dimensions = 64
"""


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_installs_outside_the_checkout_and_runs_the_main_job(tmp_path, database_url):
    dist = tmp_path / "dist"
    # No build isolation: the test environment has setuptools, and nothing needs fetching.
    _run([sys.executable, "-m", "pip", "wheel", str(PROJECT), "--no-deps", "--no-build-isolation", "-w", str(dist)],
         timeout=600)
    (wheel,) = dist.glob("semindex-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "semindex/sql/search.sql" in names and "semindex/data/embedding_versions.toml" in names
    assert "semindex_app/assets/embeddings.py" in names and "semindex_app/sensors/__init__.py" in names
    # One package name each for the library and the application: nothing else at the top of site-packages.
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"semindex", "semindex_app"}

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # The dependencies (torch, dagster, ...) come from this environment's site-packages, added after
    # the new environment's own: only its path is added, so the editable semindex here stays unseen.
    Path(purelib, "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "versions.toml").write_text(VERSIONS)
    env = {
        **{key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "DAGSTER_HOME")},
        "DATABASE_URL": database_url,
        "SEMINDEX_HOME": str(tmp_path / "home"),
        "SEMINDEX_VERSIONS_FILE": str(elsewhere / "versions.toml"),
    }
    where = _run([str(python), "-c", "import semindex, semindex_app, semindex.sql; print(semindex.__file__); "
                  "print(semindex_app.__file__)"], cwd=elsewhere, env=env).stdout.split()
    assert all(path.startswith(purelib) for path in where), where

    semindex = str(venv / "bin" / "semindex")
    run = _run([semindex, "run", "--version", "hash-wheel", "--query", "football match"], cwd=elsewhere, env=env, timeout=900)
    assert "Sample search: 'football match'" in run.stdout and " 1. " in run.stdout, run.stdout[-2000:]
    search = _run([semindex, "search", "election", "--mode", "lexical", "--k", "3", "--json"],
                  cwd=elsewhere, env=env, timeout=300)
    assert '"record_key"' in search.stdout
