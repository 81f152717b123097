"""The `status` command's object against a running gateway: every part of docs/formats.md
§12.4, in its order (clock, modem, ip, each server's mode, the scripts, the alarms of the last
24 h), and the SMS reply built from it (§13.3)."""

from __future__ import annotations

from pathlib import Path

from _service_plant import UID, running_gateway, wait_for

from exporters.session import Trigger
from pipeline.service.gateway import _server_identity
from pipeline.service.maintenance import change_config
from pipeline.service.sms import status_parts
from store.events import Channel, CommandReceived

SCRIPTS = {
    "SCRIPT/on.lua": b'header = {name = "on"}\nfunction ping() return 1 end\n',
    "SCRIPT/broken.lua": b"this is not lua\n",
    f"CONFIG/{UID}_scl.ini": b"SCRIPT_File[0]=on.lua\nSCRIPT_File[1]=broken.lua\n",
}


async def test_status_carries_every_part_of_the_object(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=1, extra_files=SCRIPTS) as plant:
        gateway = plant.gateway
        assert gateway.commands is not None and gateway.alarms is not None
        await wait_for(lambda: len(gateway._script_states()) == 2, 20, "the scripts loaded")
        await gateway.alarms.gateway("Script alarm", subject="on", text="from the test")
        result = await gateway.commands.call(CommandReceived(
            channel=Channel.LOCAL, rpc_name="sunpm.status", caller_id="s-1"))
    status = result.result
    assert isinstance(status, dict), result
    assert list(status) == ["uid", "version", "date", "timestamp", "timeZone", "uptimeS",
                            "clock", "modem", "ip", "servers", "devices", "scripts",
                            "alarms24h"]
    assert status["modem"] == {"state": "none", "rssiDbm": None}
    assert isinstance(status["ip"], str)
    (server,) = status["servers"]
    assert list(server) == ["srv", "status", "type", "mode", "addr", "port", "last", "backlog"]
    assert server["mode"] == "strategy_wsun1_compliant"
    assert sorted((s["name"], s["file"], s["enabled"]) for s in status["scripts"]) == [
        ("broken", "broken.lua", False), ("on", "on.lua", True)]
    # The script that does not load raised its Script failure; the test's alarm is the second.
    assert status["alarms24h"] >= 2
    parts = status_parts(status)
    assert "\nscripts=1/2" in parts[2] and "\ntic=none" in parts[2]
    assert "\nmodem=none\n" in parts[1]
    assert "\nmode=strategy_wsun1_compliant\n" in parts[4]


async def test_a_reload_keeps_each_server_last_session(tmp_path: Path) -> None:
    """A configuration reload makes new schedulers; `last` still tells the last session of the
    same server (it read "never" after every reload), and a server changed by the reload has
    none."""
    async with running_gateway(tmp_path, inverters=0) as plant:
        gateway = plant.gateway
        assert gateway.request_session(1, Trigger.COMMAND)
        await wait_for(lambda: gateway.schedulers[1].last_result is not None, 20, "a session")

        async def last() -> str:
            (server,) = (await gateway.status())["servers"]  # type: ignore[misc]
            return str(server["last"])

        before = await last()
        assert before.endswith(" OK")

        async def reload_with(values: dict[str, str | None]) -> None:
            loaded = gateway.site
            change_config(plant.config_dir, UID, values)
            gateway.config_written()
            await wait_for(lambda: gateway.site is not loaded and 1 in gateway.schedulers, 20,
                           "the reload")

        await reload_with({"LOG_Level": "debug"})
        assert await last() == before
        other = tmp_path / "other-server"
        other.mkdir()
        await reload_with({"DIR_Path": str(other)})
        assert await last() == ""


async def test_between_two_configurations_a_server_is_not_reported_disabled(
        tmp_path: Path) -> None:
    """At the start and during a reload the schedulers of the new configuration do not exist
    yet; a `status` (an SMS, the dashboard) then still shows each configured server, with its
    last session and backlog as last known (it showed `srv=1 status=disabled type=none`)."""
    async with running_gateway(tmp_path, inverters=0) as plant:
        gateway = plant.gateway
        assert gateway.request_session(1, Trigger.COMMAND)
        await wait_for(lambda: gateway.schedulers[1].last_result is not None, 20, "a session")
        (known,) = (await gateway.status())["servers"]  # type: ignore[misc]
        # What a reload leaves between the two configurations.
        schedulers, outboxes = gateway.schedulers, gateway._outboxes
        gateway._last_sessions = {1: (_server_identity(gateway.site.settings.servers[0]),
                                      schedulers[1].last_end_ns, schedulers[1].last_result)}
        gateway.schedulers, gateway._outboxes = {}, {}
        try:
            status = await gateway.status()
        finally:
            gateway.schedulers, gateway._outboxes = schedulers, outboxes
    (server,) = status["servers"]  # type: ignore[misc]
    assert server == {**known, "status": "idle"}
    assert status_parts(status)[4].startswith("5/6\nsrv=1\nstatus=idle\ntype=dir\n")
