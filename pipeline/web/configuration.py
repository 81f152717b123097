"""Configuration (docs/behaviour.md §10.2): servers, MQTT, schedules with their next connection
times, serial ports, network, time zone, storage, alarms; saved through `config`."""

from __future__ import annotations

from aiohttp import web

from pipeline.web.common import page

routes = web.RouteTableDef()


@routes.get("/configuration")
async def configuration_page(request: web.Request) -> web.StreamResponse:
    return page(request, "coming.html", {"title": "Configuration"})
