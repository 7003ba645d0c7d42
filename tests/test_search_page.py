"""The search page at `/` of `semindex serve`, in headless Chromium: a person pastes a token and a
query, and sees the lexical, semantic and hybrid results side by side, as the API answers them,
with the lexical matches highlighted and nothing in a record ever run as markup."""

from __future__ import annotations

import json

import pytest

from tests.browser import (
    screenshot_on_failure,
    wait_until,
)
from tests.http_service import (
    drop_database,
    indexed_database,
    owner_token,
    running_service,
)

QUERY = "film"  # in headlines and bodies of several sample records (entertainment, business)
LIMIT = 10
ROUTES = {"lexical": "/v1/search", "semantic": "/v1/search/semantic", "hybrid": "/v1/search/hybrid"}
COLUMNS = tuple(ROUTES)


@pytest.fixture
def service(server_url, tmp_path):
    """`semindex serve` over a freshly indexed sample database, with an owner token."""
    url, db = indexed_database(server_url, tmp_path)
    try:
        token = owner_token(db)
        with running_service(url, tmp_path / "home") as running:
            yield running, token
    finally:
        drop_database(server_url, url)


def _search(driver, token: str, query: str) -> None:
    from selenium.webdriver.common.by import By

    for element_id, value in (("token", token), ("q", query)):
        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.ID, "search").click()


def _settled(driver) -> bool:
    """Every column answered (results or an error) for the latest search."""
    return driver.execute_script(
        "return document.getElementById('results').dataset.state === 'done' && "
        "['lexical', 'semantic', 'hybrid'].every(id => ['done', 'error'].includes(document.getElementById(id).dataset.state));"
    )


def _wait_for_answers(driver) -> None:
    wait_until(driver, _settled, "the three columns' answers")


def _displayed(driver, column: str) -> list[dict]:
    """What the column shows for each hit: its rank, its key as text, and the other modes' ranks."""
    return driver.execute_script(
        """
        return Array.from(document.querySelectorAll('#' + arguments[0] + ' .hit')).map(hit => ({
            rank: hit.querySelector('.rank').textContent,
            key: hit.querySelector('.key').textContent,
            record_key: hit.querySelector('.record-key').textContent,
            others: Object.fromEntries(Array.from(hit.querySelectorAll('.other-rank'))
                .map(part => [part.dataset.mode, part.querySelector('b').textContent])),
            text: hit.innerText,
        }));
        """,
        column,
    )


def _results_markup(driver) -> dict:
    return driver.execute_script(
        """
        const results = document.getElementById('results');
        return {
            scripts_in_results: results.querySelectorAll('script').length,
            scripts_in_page: document.scripts.length,
            elements: Array.from(new Set(Array.from(results.querySelectorAll('*')).map(node => node.localName))).sort(),
            handlers: Array.from(results.querySelectorAll('*')).filter(node =>
                Array.from(node.attributes).some(attribute => attribute.name.startsWith('on'))).length,
        };
        """
    )


def _rank_text(keys: list[str], key: str) -> str:
    return f"#{keys.index(key) + 1}" if key in keys else "—"


def test_search_page_shows_the_three_modes_side_by_side_as_the_api_answers(browser, service, tmp_path):
    from selenium.webdriver.common.by import By

    running, token = service
    with running.client(token) as client:
        answers = {mode: client.get(route, params={"q": QUERY, "limit": LIMIT}) for mode, route in ROUTES.items()}
    for mode, answer in answers.items():
        assert answer.status_code == 200, (mode, answer.text)
    answers = {mode: answer.json() for mode, answer in answers.items()}
    api_keys = {mode: [f"{hit['connection_id']} / {hit['stream']} / {hit['record_key']}" for hit in answer["data"]]
                for mode, answer in answers.items()}
    assert all(api_keys.values()), {mode: len(keys) for mode, keys in api_keys.items()}
    assert any("<mark>" in hit["snippet"]["text"] for hit in answers["lexical"]["data"]), answers["lexical"]

    screenshot = tmp_path / "search_page.png"
    with screenshot_on_failure(browser, tmp_path, "search-page"):
        browser.get(f"{running.base_url}/")
        assert browser.title == "semindex search"
        page_scripts = browser.execute_script("return document.scripts.length")
        headings = [browser.find_element(By.CSS_SELECTOR, f"#{column} h2").text.split()[0] for column in COLUMNS]
        assert headings == ["Lexical", "Semantic", "Hybrid"]
        assert browser.find_element(By.ID, "token").get_attribute("type") == "password"

        _search(browser, token, QUERY)
        _wait_for_answers(browser)

        for column in COLUMNS:
            shown = _displayed(browser, column)
            assert shown, f"no hit in the {column} column"
            assert not browser.find_elements(By.CSS_SELECTOR, f"#{column} .error")
            # The column is the API's answer for the same query and token, in its order.
            assert [hit["key"] for hit in shown] == api_keys[column], column
            assert [hit["rank"] for hit in shown] == [f"#{rank}" for rank in range(1, len(shown) + 1)]
            data = answers[column]["data"]
            assert shown[0]["record_key"] == data[0]["record_key"]
            assert data[0]["emitted_at"] in shown[0]["text"]
            assert ", ".join(data[0]["matched_fields"]) in shown[0]["text"]
            # Where the same record ranks in the two other columns.
            for hit in shown:
                expected = {other: _rank_text(api_keys[other], hit["key"]) for other in COLUMNS if other != column}
                assert hit["others"] == expected, (column, hit)

        # Scores as the API gave them.
        first_lexical = answers["lexical"]["data"][0]
        assert f"bm25 {first_lexical['score']['value']:.4f}" in _displayed(browser, "lexical")[0]["text"]
        first_hybrid = answers["hybrid"]["data"][0]
        hybrid_text = _displayed(browser, "hybrid")[0]["text"]
        for kind, score in first_hybrid["scores"].items():
            assert f"{kind} {score['kind']} {score['value']:.4f}" in hybrid_text

        # Lexical matches are highlighted: real <mark> elements inside the snippets, holding the word.
        marks = browser.find_elements(By.CSS_SELECTOR, "#lexical .snippet mark")
        assert marks, "no highlighted match in the lexical column"
        assert any(mark.text.lower() == QUERY for mark in marks), [mark.text for mark in marks]
        assert not browser.find_elements(By.CSS_SELECTOR, "#semantic .snippet mark")

        # The meta facts of the lexical answer, and has_more everywhere.
        lexical_meta = browser.find_element(By.CSS_SELECTOR, "#lexical .meta").text
        meta = answers["lexical"]["meta"]
        for expected in (f"count {meta['count']}", f"count_accuracy {meta['count_accuracy']}",
                         f"recall complete {'yes' if meta['recall']['complete'] else 'no'}",
                         f"ranking_scope {meta['recall']['ranking_scope']}",
                         f"truncated {'yes' if meta['recall']['truncated'] else 'no'}"):
            assert expected in lexical_meta, (expected, lexical_meta)
        for column in COLUMNS:
            column_meta = browser.find_element(By.CSS_SELECTOR, f"#{column} .meta").text
            assert f"has_more {'yes' if answers[column]['has_more'] else 'no'}" in column_meta, (column, column_meta)

        # Nothing but the page's own script, no event handler attribute in the results; the token
        # is neither stored nor in the address.
        markup = _results_markup(browser)
        assert markup["scripts_in_results"] == 0 and markup["handlers"] == 0, markup
        assert markup["scripts_in_page"] == page_scripts == 1, markup
        assert browser.execute_script("return window.localStorage.length + window.sessionStorage.length") == 0
        assert browser.execute_script("return document.cookie") == ""
        assert token not in browser.current_url

        # The whole page (three columns) in one picture.
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1600, min(max(height + 140, 1000), 4000))
        browser.save_screenshot(str(screenshot))
        print(f"search page screenshot: {screenshot}")
        browser.set_window_size(1600, 1000)

        # A wrong token: every column shows the API's error, with its code and request id.
        _search(browser, "not-a-token", QUERY)
        _wait_for_answers(browser)
        for column in COLUMNS:
            errors = browser.find_elements(By.CSS_SELECTOR, f"#{column} .error")
            assert errors, f"no error shown in the {column} column"
            assert "401 authentication_error" in errors[0].text, errors[0].text
            assert "request id: req_" in errors[0].text, errors[0].text
            assert not browser.find_elements(By.CSS_SELECTOR, f"#{column} .hit")
        browser.save_screenshot(str(tmp_path / "search_page_wrong_token.png"))

        # Hostile record text (served here by a stand-in fetch, nothing is ingested): it shows as
        # text, only the search's own <mark> becomes an element, and nothing runs.
        hostile = ('<script>window.__injected = 1</script><img src=x onerror="window.__injected = 2">'
                   '<mark>film</mark> &amp; <b onclick="x()">bold</b></mark>')
        hit = {"object": "search_result", "stream": "<i>s</i>", "record_key": "<script>k</script>",
               "connector_id": "c", "connection_id": "<b>c</b>", "emitted_at": "2020-01-01T00:00:00+00:00",
               "matched_fields": ["<u>body</u>"], "snippet": {"field": "<em>body</em>", "text": hostile},
               "score": {"kind": "bm25", "value": -1.0, "order": "lower_is_better"},
               "scores": {"lexical": {"kind": "bm25", "value": -1.0, "order": "lower_is_better"}}}
        body = json.dumps({"object": "list", "has_more": False, "data": [hit], "meta": {"warnings": [
            {"code": "limit_clamped", "message": "<img src=x onerror=\"window.__injected = 3\">"}]}})
        browser.execute_script(
            "const body = arguments[0];"
            "window.fetch = () => Promise.resolve(new Response(body, {status: 200, headers: {'Content-Type': 'application/json'}}));",
            body,
        )
        _search(browser, token, QUERY)
        _wait_for_answers(browser)
        markup = _results_markup(browser)
        assert markup["scripts_in_results"] == 0 and markup["handlers"] == 0, markup
        assert set(markup["elements"]) <= {"section", "h2", "span", "div", "p", "ol", "li", "time", "b", "mark"}, markup
        assert browser.execute_script("return window.__injected === undefined")
        lexical_hit = _displayed(browser, "lexical")[0]
        assert "<b>c</b> / <i>s</i> / <script>k</script>" == lexical_hit["key"]
        assert "<script>window.__injected = 1</script>" in lexical_hit["text"]
        assert [mark.text for mark in browser.find_elements(By.CSS_SELECTOR, "#lexical .snippet mark")] == ["film"]
        assert "<mark>film</mark>" in _displayed(browser, "semantic")[0]["text"]  # semantic text is verbatim
        assert 'onerror="window.__injected = 3"' in browser.find_element(By.CSS_SELECTOR, "#lexical .meta .warning").text
