"""`semindex serve`: the search HTTP service, a thin FastAPI shell over the library.

  app.py        the application factory: lifespan (pools, searcher, encoder warm-up), middleware
                (request id, size limits, metrics), error handlers, health routes
  compatible.py the reference server's routes: GET /v1/search[/semantic|/hybrid], its well-known document
  native.py     POST /v1/query: every search option, errors as RFC 9457 problem+json
  auth.py       bearer tokens (semindex.access) as a dependency
  cursors.py    signed cursors over ranking snapshots shared by every worker
  errors.py     the error envelopes, and semindex.errors kinds to statuses
  metrics.py    Prometheus metrics (multi-process mode: correct with several workers)
  page.py       the search page at /
  serve.py      uvicorn, workers, the shared secrets and folders
"""
