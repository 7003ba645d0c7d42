"""The Dagster UI of `semindex dev`, in headless Chromium: every embedding version shows as a
partition of `embeddings`, with its metrics and the asset's checks; the `judged_relevance` check
plots each judged set's nDCG@10 (and the other scores) across evaluations, and not the evaluation's id."""

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
    screenshot_on_failure,
    stop_process_group,
    wait_until,
    wait_visible,
    with_text,
    xpath_literal,
)
from tests.conftest import sample_records, write_jsonl
from semindex.judged_sets import judged_document_paths
from tests.dagster_helpers import (
    INDEX_STAGES,
    check_verdicts,
    materialize_graph,
    metadata,
    raw_records_config,
    register_tiny_version,
)

PROJECT = Path(__file__).resolve().parent.parent

# Two versions with different encoders, so each partition's own metadata can be told apart.
VERSION_DIMENSIONS = {"ui-hash-32": 32, "ui-hash-48": 48}
EMBEDDING_CHECKS = ("embedding_schema", "embedding_parity")
# Only the stages the UI test looks at, with their checks (AssetSelection.assets includes the checks
# on the selected assets): the rest of the graph grows (evaluation, promotion) and its gates are
# not what this test is about.
UPSTREAM_OF_EMBEDDINGS = dg.AssetSelection.assets("raw_records", "chunks", "embeddings")
SERVER_START_TIMEOUT = 120


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


# The version evaluated on the judged sets, twice: two points of every plotted series.
EVALUATED_VERSION = "ui-hash-48"
PLOTTED = "judged.bbc-headline-body.semantic.ndcg@10"


@pytest.fixture
def evaluated_twice(semindex_home, database_url, two_materialized_versions) -> list[dict]:
    """EVALUATED_VERSION's whole graph on the judged sets' documents, through retrieval_evaluation
    and its checks, then the evaluation and its checks once more; recorded in the same Dagster home
    as the versions' partitions. Returns the judged_relevance check's metadata of each evaluation."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", database_url)
        env.setenv("DAGSTER_HOME", "")
        dagster_home = prepare_dagster_home()
    evaluation_and_checks = dg.AssetSelection.assets("retrieval_evaluation")  # with its checks
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        first = materialize_graph(
            instance, database_url, EVALUATED_VERSION, run_config=raw_records_config(*judged_document_paths()),
            selection=dg.AssetSelection.assets(*INDEX_STAGES) | evaluation_and_checks,
        )
        second = materialize_graph(instance, database_url, EVALUATED_VERSION, selection=evaluation_and_checks)
    recorded = []
    for result in (first, second):
        facts = {e.check_name: {key: value.value for key, value in e.metadata.items()}
                 for e in result.get_asset_check_evaluations()}
        facts["retrieval_evaluation"] = metadata(result, "retrieval_evaluation")
        if result is first:
            facts["hnsw_index"] = metadata(result, "hnsw_index")
        recorded.append(facts)
    return recorded


def test_scores_recalls_counts_and_seconds_are_numbers_under_stable_names_and_ids_are_text(evaluated_twice):
    """What Dagster plots is numeric metadata: every metric of each judged set and mode, the recall
    checks, the parity counts (and the backfill's lag), build seconds and throughput are numbers under
    the same names at every run; an evaluation's id is text."""
    first, second = evaluated_twice
    for facts in (first, second):
        for where in ("judged_relevance", "retrieval_evaluation"):
            recorded = facts[where]
            for judged_set in ("bbc-headline-body", "semanlink-arxiv-tags"):
                for mode in ("semantic", "lexical", "hybrid"):
                    for metric in ("ndcg@10", "recall@10", "precision@10", "mrr@10"):
                        value = recorded[f"judged.{judged_set}.{mode}.{metric}"]
                        assert isinstance(value, float) and 0.0 <= value <= 1.0, (where, judged_set, mode, metric, value)
                assert isinstance(recorded[f"judged.{judged_set}.queries"], int)
            assert isinstance(recorded["index.recall"], float) and isinstance(recorded["parity.missing"], int)
            assert isinstance(recorded["evaluation_id"], str) and recorded["evaluation_id"].isdigit()
            assert isinstance(recorded["failure_count"], int)
        assert isinstance(facts["shadow_regression"]["failure_count"], int)
        assert isinstance(facts["retrieval_evaluation"]["duration_seconds"], float)
    assert int(second["judged_relevance"]["evaluation_id"]) > int(first["judged_relevance"]["evaluation_id"])
    recall = first["hnsw_recall"]
    assert isinstance(recall["recall@10"], float) and isinstance(recall["queries"], int) and recall["queries"] > 0
    parity = first["embedding_parity"]
    assert all(isinstance(parity[name], int) for name in ("chunks", "vectors", "missing", "orphaned", "backfill_pending"))
    assert parity["lag_chunks"] == 0 and parity["chunks"] == parity["vectors"] > 0
    schema = first["embedding_schema"]
    assert isinstance(schema["norm_min"], float) and isinstance(schema["sampled"], int)
    index = first["hnsw_index"]
    assert isinstance(index["duration_seconds"], float) and isinstance(index["throughput_rows_per_second"], float)


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


def test_asset_graph_shows_embedding_versions_as_partitions_with_checks_metrics_and_plots(
    browser, evaluated_twice, semindex_dev, two_materialized_versions, tmp_path
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

        # The judged_relevance check of retrieval_evaluation: its Plots section draws each score across
        # the two evaluations (a chart per numeric entry), and the evaluation id is not one of them.
        browser.get(f"{base_url}/assets/retrieval_evaluation")
        wait_visible(browser, "//a[normalize-space()='Checks']", "the Checks tab of retrieval_evaluation").click()
        wait_visible(browser, with_text("judged_relevance"), "the judged_relevance check").click()
        wait_visible(browser, with_text("Plots"), "the check's Plots section")
        chart = wait_visible(browser, _chart(PLOTTED), f"the plotted {PLOTTED} series")
        assert chart.size["width"] > 100 and chart.size["height"] > 50, chart.size
        for label in ("judged.semanlink-arxiv-tags.hybrid.mrr@10", "index.recall", "parity.missing"):
            wait_visible(browser, _chart(label), f"the plotted {label} series")
        from selenium.webdriver.common.by import By

        assert not browser.find_elements(By.XPATH, _chart("evaluation_id")), "the evaluation id is plotted"
        # ...it is text in the latest execution's metadata instead.
        wait_visible(browser, "//tr[td[normalize-space()='evaluation_id']]", "the evaluation id as text")


def _chart(label: str) -> str:
    """XPath of the chart the UI draws for numeric metadata `label` (its heading, then the canvas)."""
    return f"//*[normalize-space(text())={xpath_literal(label)}]/parent::div/following-sibling::div[1]//canvas"
