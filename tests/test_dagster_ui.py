"""The Dagster UI of `semindex dev`, in headless Chromium: every embedding version shows as a
partition of `embeddings`, with its metrics and the asset's checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit
from pathlib import Path

import dagster as dg
import pytest

from semindex_app.runner import prepare_dagster_home
from tests.browser import (
    ChromiumUnavailable,
    ensure_chromium,
    headless_chromium,
    screenshot_on_failure,
    stop_process_group,
    wait_until,
    wait_visible,
    with_text,
    xpath_literal,
)
from tests.conftest import sample_records, write_jsonl
from tests.dagster_helpers import check_verdicts, materialize_graph, raw_records_config, register_tiny_version

PROJECT = Path(__file__).resolve().parent.parent

# Two versions with different encoders, so each partition's own metadata can be told apart.
VERSION_DIMENSIONS = {"ui-hash-32": 32, "ui-hash-48": 48}
EMBEDDING_CHECKS = ("embedding_schema", "embedding_parity")
# Only the stages the UI test looks at, with their checks (AssetSelection.assets includes the checks
# on the selected assets): the rest of the graph grows (evaluation, promotion) and its gates are
# not what this test is about.
UPSTREAM_OF_EMBEDDINGS = dg.AssetSelection.assets("raw_records", "chunks", "embeddings")
SERVER_START_TIMEOUT = 120


@pytest.fixture(scope="session")
def chromium() -> None:
    """Debian's chromium and chromium-driver, installed on first use: a skipped UI test would hide
    a broken UI, so a machine without them gets them (or the test fails saying why)."""
    try:
        ensure_chromium()
    except ChromiumUnavailable as error:
        pytest.fail(f"headless Chromium is required for the UI test: {error}")


@pytest.fixture
def browser(chromium, tmp_path):
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    driver = headless_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def two_materialized_versions(semindex_home, database_url, tmp_path) -> dict[str, int]:
    """Two embedding versions, each a partition of `embeddings` materialized (with raw_records,
    chunks and their checks) and recorded in the Dagster home that `semindex dev` will use, whose
    storage is this test's database."""
    with pytest.MonkeyPatch.context() as env:
        # prepare_dagster_home reads DATABASE_URL and sets DAGSTER_HOME; both are restored on exit
        # so later tests in the session see the environment they expect.
        env.setenv("DATABASE_URL", database_url)
        # setenv (not delenv) so the undo also removes a DAGSTER_HOME that was not set before.
        env.setenv("DAGSTER_HOME", "")
        dagster_home = prepare_dagster_home()
    corpus = write_jsonl(tmp_path / "corpus.jsonl", sample_records(per_stream=3))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for version_key, dimensions in VERSION_DIMENSIONS.items():
            register_tiny_version(database_url, version_key, dimensions)
            result = materialize_graph(
                instance, database_url, version_key,
                run_config=raw_records_config(corpus), selection=UPSTREAM_OF_EMBEDDINGS,
            )
            verdicts = check_verdicts(result)
            assert all(verdicts.get(name) is True for name in EMBEDDING_CHECKS), (version_key, verdicts)
    return VERSION_DIMENSIONS


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def semindex_dev(semindex_home, database_url, two_materialized_versions, tmp_path):
    """`semindex dev` on a free port with DATABASE_URL set, so Dagster reads this test's runs;
    yields the UI's base URL and stops the whole process group (dagster dev, webserver, daemon,
    code server) afterwards."""
    port = _free_port()
    log_path = tmp_path / "semindex-dev.log"
    env = {**os.environ, "SEMINDEX_HOME": str(semindex_home), "DATABASE_URL": database_url, "PYTHONPATH": str(PROJECT)}
    env.pop("DAGSTER_HOME", None)  # semindex dev derives it from SEMINDEX_HOME
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "semindex_app.cli", "dev", "--port", str(port)],
            cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(base_url, process, log_path)
        yield base_url
    finally:
        stop_process_group(process)


def _wait_for_server(base_url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"semindex dev exited with {process.returncode}:\n{log_path.read_text()[-5000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    pytest.fail(f"{base_url}/server_info did not answer within {SERVER_START_TIMEOUT} s; semindex dev said:\n"
                f"{log_path.read_text()[-5000:]}")


def _check_row(check: str, status: str):
    """A wait condition: the row of the checks list that reads exactly `check`, `status`.

    A row is the nearest ancestor of the visible check name that also holds a status; the check's
    detail panel repeats the name, but its nearest such ancestor is the whole tab, not a row.
    """
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def condition(driver):
        for name in driver.find_elements(By.XPATH, with_text(check)):
            try:
                if not name.is_displayed():
                    continue
                for row in name.find_elements(By.XPATH, f"./ancestor::*[{with_text(status, './/*')}][1]"):
                    if row.text.split("\n") == [check, status]:
                        return row
            except StaleElementReferenceException:
                continue  # re-rendered; the next poll looks again
        return False

    return condition


def _metadata_row(key: str, value: str) -> str:
    """XPath of the metadata table row `key` | `value`."""
    return f"//tr[td[normalize-space()={xpath_literal(key)}] and td[normalize-space()={xpath_literal(value)}]]"


def test_asset_graph_shows_embedding_versions_as_partitions_with_checks_and_metrics(
    browser, semindex_dev, two_materialized_versions, tmp_path
):
    base_url = semindex_dev
    with screenshot_on_failure(browser, tmp_path, "dagster-ui"):
        # The "join the community" dialog opens over the first page served from 127.0.0.1 and would
        # take the clicks; the UI skips it when its localStorage flag is set for the origin.
        browser.get(f"{base_url}/server_info")
        browser.execute_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")

        # The asset graph ("Lineage"): the embeddings node, and its sidebar listing the checks.
        browser.get(f"{base_url}/asset-groups")
        wait_visible(browser, with_text("Global asset lineage"), "the asset graph title")
        graph_node = wait_visible(
            browser, with_text("embeddings", "//*[local-name()='foreignObject']//div"), "the embeddings node in the graph"
        )
        graph_node.click()
        for check in EMBEDDING_CHECKS:
            wait_visible(browser, f"//a[contains(@href, 'checkDetail={check}')]", f"check {check} in the graph sidebar")
        wait_visible(browser, "//a[normalize-space()='View in Asset Catalog']", "the link to the asset page").click()
        wait_until(browser, lambda driver: urlsplit(driver.current_url).path == "/assets/embeddings", "the embeddings page")

        # The asset page, Partitions tab: one partition per version, each with its own metadata.
        wait_visible(browser, "//a[normalize-space()='Partitions']", "the Partitions tab").click()
        for version_key in two_materialized_versions:
            wait_visible(browser, with_text(version_key), f"partition {version_key}")
        wait_visible(browser, with_text(f"Materialized ({len(two_materialized_versions)})"), "the materialized count")
        for version_key, dimensions in two_materialized_versions.items():
            wait_visible(browser, with_text(version_key), f"partition {version_key}").click()
            wait_visible(browser, _metadata_row("encoder", f"hashing-{dimensions}"), f"the encoder of {version_key}")
            wait_visible(browser, _metadata_row("dimensions", str(dimensions)), f"the dimensions of {version_key}")
            wait_visible(browser, "//tr[td[normalize-space()='dagster/row_count']]", f"the row count of {version_key}")

        # Checks tab: both checks listed with their latest result.
        wait_visible(browser, "//a[normalize-space()='Checks']", "the Checks tab").click()
        for check in EMBEDDING_CHECKS:
            wait_until(browser, _check_row(check, "Succeeded"), f"check {check} listed as Succeeded")
