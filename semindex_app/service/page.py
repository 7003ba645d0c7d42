"""The search page at `/`: a query box, lexical, semantic and hybrid side by side, for people. It is
one static file (search.html) calling the public API with the token the person pastes, which stays
in the page (never stored, never sent anywhere but this server)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["page"])


@router.get("/", response_class=HTMLResponse, summary="The search page", include_in_schema=False)
async def search_page() -> HTMLResponse:
    return HTMLResponse(resources.files("semindex_app.service").joinpath("search.html").read_text(encoding="utf-8"))
