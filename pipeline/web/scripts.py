"""Scripts (docs/behaviour.md §10.2): the page and its `/api/` twin."""

from __future__ import annotations

from aiohttp import web

from pipeline.web.common import page

routes = web.RouteTableDef()


@routes.get("/scripts")
async def scripts_page(request: web.Request) -> web.StreamResponse:
    return page(request, "coming.html", {"title": "Scripts"})
