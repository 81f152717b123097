"""The site's Lua scripts as a gateway plug-in (pipeline/scripts, docs/behaviour.md §9)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.scripts import PollerHost, ScriptError, ScriptRunner, site_scripts
from pipeline.service.commands import CommandError
from store.events import JsonValue

if TYPE_CHECKING:
    from pipeline.service.gateway import Gateway


class ScriptsPlugin:
    """Runs the scripts of scl.ini for as long as the gateway runs; answers their RPCs."""

    def __init__(self) -> None:
        self.runner: ScriptRunner | None = None
        #: Files disabled from the web UI or the API in this run: a disable lasts until the
        #: next restart of the service (docs/behaviour.md §9.1 step 4), not until the next
        #: configuration reload, which starts the scripts again.
        self.held_off: set[str] = set()

    async def run(self, gateway: Gateway) -> None:
        site, store, poller, alarms = gateway.site, gateway.store, gateway.poller, gateway.alarms
        assert site is not None and store is not None and poller is not None
        assert alarms is not None
        sources, problems = site_scripts(site.scripts, site.uid, site.loaded)
        sources = [s for s in sources if s.file not in self.held_off]
        host = PollerHost(
            devices=site.daq.devices, definitions=site.definitions, poller=poller, store=store,
            clock=gateway.clock, daq_poll_period_s=site.settings.daq_poll_period_s,
            alarm=lambda name, subject, text: alarms.gateway(name, subject=subject, text=text),
            set_relay=gateway.set_relay)
        self.runner = ScriptRunner(host, sources, problems)
        try:
            await self.runner.run()
        finally:
            self.runner = None

    async def call(self, rpc_name: str, parameters: Mapping[str, JsonValue]) -> JsonValue:
        if self.runner is None:
            raise CommandError(f"unknown script '{rpc_name.partition('.')[0]}'")
        try:
            return await self.runner.call(rpc_name, parameters)
        except ScriptError as err:
            raise CommandError(str(err)) from None
