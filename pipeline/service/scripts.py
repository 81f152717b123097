"""The site's Lua scripts as a gateway plug-in (pipeline/scripts, docs/behaviour.md §9)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.scripts import PollerHost, ScriptError, ScriptRunner, site_scripts
from pipeline.service.commands import CommandError
from store.events import JsonValue

if TYPE_CHECKING:
    from pipeline.service.gateway import Gateway


class ScriptsPlugin:
    """Runs the scripts of scl.ini for as long as the gateway runs; answers their RPCs.

    One `ScriptRunner` spans every configuration reload, so a script whose file did not change
    keeps its Lua state and timers (docs/behaviour.md §9.1 steps 4, 5); each configuration
    attaches its own host (devices, poller) to it while it is in force."""

    spans_reloads = True

    def __init__(self) -> None:
        self.runner: ScriptRunner | None = None
        #: Files disabled from the web UI or the API in this run: a disable lasts until the
        #: next restart of the service (docs/behaviour.md §9.1 step 4), not until the next
        #: configuration reload.
        self.held_off: set[str] = set()
        #: The last configuration's host: its last good values carry over a reload.
        self._host: PollerHost | None = None

    def _runner(self) -> ScriptRunner:
        if self.runner is None:
            self.runner = ScriptRunner(None)
        return self.runner

    async def run(self, gateway: Gateway) -> None:
        runner = self._runner()
        try:
            await runner.run()
        finally:
            self.runner = None
            self._host = None

    async def configured(self, gateway: Gateway) -> None:
        """One configuration's part: attach its host and scripts until it ends."""
        site, store, poller, alarms = gateway.site, gateway.store, gateway.poller, gateway.alarms
        assert site is not None and store is not None and poller is not None
        assert alarms is not None
        sources, problems = site_scripts(site.scripts, site.uid, site.loaded)
        host = PollerHost(
            devices=site.daq.devices, definitions=site.definitions, poller=poller, store=store,
            clock=gateway.clock, daq_poll_period_s=site.settings.daq_poll_period_s,
            alarm=lambda name, subject, text: alarms.gateway(name, subject=subject, text=text),
            set_relay=gateway.set_relay)
        # A file taken out of scl.ini is no longer held off: listed again, it starts.
        self.held_off.intersection_update(s.file for s in sources)
        if self._host is not None:
            host.keep_values_of(self._host)
        self._host = host
        runner = self._runner()
        runner.attach(host, sources, problems, self.held_off)
        try:
            await asyncio.Event().wait()
        finally:
            if gateway.stopping:
                # Those `before_stop` did not get to (it is bounded): polling has stopped, so
                # their writes are not sent.
                await runner.stop_scripts()
            await runner.detach()

    async def before_stop(self, gateway: Gateway) -> None:
        """The service stops: `wsStop` while polling still runs, so its writes are sent."""
        if self.runner is not None:
            await self.runner.stop_scripts()

    async def call(self, rpc_name: str, parameters: Mapping[str, JsonValue]) -> JsonValue:
        if self.runner is None:
            raise CommandError(f"unknown script '{rpc_name.partition('.')[0]}'")
        try:
            return await self.runner.call(rpc_name, parameters)
        except ScriptError as err:
            raise CommandError(str(err)) from None
