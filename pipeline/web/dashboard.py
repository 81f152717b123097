"""Dashboard (docs/behaviour.md §10.2): uid, version, clock and NTP state, each server's last
connection and backlog, store use per device, the last 24 h of alarms."""

from __future__ import annotations

from aiohttp import web

from pipeline.web.common import facade, json_ok, page

routes = web.RouteTableDef()


@routes.get("/")
async def dashboard_page(request: web.Request) -> web.StreamResponse:
    return page(request, "dashboard.html", await facade(request).dashboard())


@routes.get("/api/status")
async def api_status(request: web.Request) -> web.StreamResponse:
    return json_ok(await facade(request).status())


@routes.get("/api/dashboard")
async def api_dashboard(request: web.Request) -> web.StreamResponse:
    return json_ok(await facade(request).dashboard())


@routes.get("/api/alarms")
async def api_alarms(request: web.Request) -> web.StreamResponse:
    return json_ok({"alarms": await facade(request).alarms()})
