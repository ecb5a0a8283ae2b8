"""The route that serves the desk's web page (`index.html` beside this module) at `/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

WEB_PAGE = Path(__file__).with_name("index.html")

router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> HTMLResponse:
    """The desk's web page for people who are not engineers."""
    return HTMLResponse(WEB_PAGE.read_text())
