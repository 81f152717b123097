"""`discoverDevices`, `ftp`, `apn`, `updateFirmware` and `factory` against a running `sunpm run`,
through `sunpm cmd` (docs/formats.md §12.3, docs/behaviour.md §3, §6, §7.3).

A SunSpec inverter nobody configured answers on a simulated Modbus TCP port: discovery finds it
in the background (a `status` answers while it runs, a second discovery is refused by the lock),
adds it to daq.csv with its definition file, and the service starts polling it. `ftp` and `apn`
change config.ini or nothing; `updateFirmware` downloads from a real HTTP server, checks the MD5
and runs `SYSTEM_UpdateCommand`; the card mirror of `SD_MirrorPath` is a readable dump while the
service runs; `factory` wipes configuration and store, leaves the card, and restarts on defaults.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from e2e_support import UID, edit_config, sunpm, sunspec_image
from http_serving import serving_http
from service_support import STOP_LIMIT_S, Service, start, wait_until

from config import load_site
from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator
from store.log import Log

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_task_left_behind")]

INVERTER_UNIT = 3


@contextmanager
def http_server(root: Path) -> Iterator[int]:
    """A plain HTTP server of `root` on a free loopback port."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving_http(Quiet) as port:
        yield port


async def cmd(data: Path, name: str, *args: str) -> tuple[int, dict[str, object]]:
    run = await sunpm("cmd", name, *args, "--data", str(data), timeout_s=120)
    assert run.out, run.err
    return run.code, json.loads(run.out)


def config_ini(cfg: Path) -> bytes:
    return (cfg / "CONFIG" / f"{UID}_config.ini").read_bytes()


async def test_maintenance_commands(tmp_path: Path) -> None:
    device = SimulatedDevice()
    for address, word in sunspec_image().items():
        device.set_words(address, [word])
    sim = TcpSimulator({INVERTER_UNIT: device})
    port = await sim.start()
    packages = tmp_path / "packages"
    packages.mkdir()
    package = b"sunpm update package\n" * 1000
    (packages / "wgapp_9.9.9.spm").write_bytes(package)
    installed = tmp_path / "installed.spm"
    cfg, data = tmp_path / "cfg", tmp_path / "data"
    card = tmp_path / "card"
    card.mkdir()
    assert (await sunpm("config", "init", str(cfg), "--uid", UID)).code == 0
    edit_config(cfg, {"STORE_Path": str(tmp_path / "store"), "DAQ_PollPeriod": "1",
                      "NTP_Server1": "", "NTP_Server2": "", "SD_MirrorPath": str(card),
                      # The package's path comes last: $0 of the shell.
                      "SYSTEM_UpdateCommand": f"/bin/sh -c 'cp \"$0\" {installed}'"})
    service: Service | None = None
    try:
        with http_server(packages) as http_port:
            service = await start(["--config", str(cfg), "--data", str(data)],
                                  tmp_path / "logs")
            await wait_until(service.logged("sunpm started"), 30, "start line", service)

            # discoverDevices in the background: unit 3 answers, 4..50 time out (47 x 0.5 s).
            scan = asyncio.create_task(cmd(
                data, "discoverDevices", "interface=ethernet1", "ip=127.0.0.1",
                f"port={port}", "firstAddress=1", "lastAddress=50", "timeout=500",
                "--caller-id", "scan-1"))
            await wait_until(service.logged("SunSpec device found at @3"), 30,
                             "the discovery's find", service)
            status, second = await asyncio.gather(
                cmd(data, "status"), cmd(data, "discoverDevices", "ip=127.0.0.1",
                                         f"port={port}"))
            assert not scan.done()
            assert status[0] == 0 and status[1]["result"]["uid"] == UID  # type: ignore[index]
            assert second == (1, {"error": "discoverDevices: a discovery is already running",
                                  "callerId": None})
            assert await scan == (0, {"result": 1, "callerId": "scan-1"})
            log_text = service.stderr
            assert log_text.index("Command done. name=sunpm.status") < \
                log_text.index("Command done. name=sunpm.discoverDevices callerId=scan-1")
            site = load_site(cfg)
            (added,) = [d for d in site.daq.devices if d.address == INVERTER_UNIT]
            assert added.interface == f"127.0.0.1:{port}" and (cfg / "DEF" / added.def_file).exists()
            await wait_until(service.logged("Local configuration change; applying it"), 20,
                             "the reload with the new device", service)
            await wait_until(lambda: service is not None and
                             service.stderr.count("Configuration reloaded") == 1, 20,
                             "the reload", service)
            code, answer = await cmd(data, "status")
            indexes = [d["index"] for d in answer["result"]["devices"]]  # type: ignore[index]
            assert added.index in indexes, answer

            # ftp: every key set together, or nothing.
            before = config_ini(cfg)
            code, answer = await cmd(data, "ftp", "server=2", "type=ftp", "host=127.0.0.1",
                                     "port=99999", "user=u")
            assert code == 1 and str(answer["error"]).startswith("ftp: FTP2_Port: "), answer
            assert config_ini(cfg) == before
            code, answer = await cmd(data, "ftp", "server=2", "type=sftp", "host=203.0.113.10",
                                     "port=2222", "user=plant42", "password=s3cr:et")
            assert (code, answer) == (0, {"result": "OK", "callerId": None})
            settings = load_site(cfg).settings.servers[1]
            assert (settings.type.value, settings.host, settings.port, settings.user,
                    settings.password) == ("sftp", "203.0.113.10", 2222, "plant42", "s3cr:et")

            # apn: stored without a modem, said so.
            code, answer = await cmd(data, "apn", "pin=12")
            assert code == 1 and str(answer["error"]).startswith("apn: MODEM_Pin: "), answer
            code, answer = await cmd(data, "apn", "apn=plant.m2m", "pin=1234")
            assert (code, answer) == (0, {"result": "OK", "callerId": None})
            assert load_site(cfg).settings.modem_apn == "plant.m2m"
            await wait_until(service.logged("nothing was sent to the modem"), 5, "the apn note",
                             service)

            # updateFirmware: the MD5 is checked before anything is installed.
            url = f"http://127.0.0.1:{http_port}/wgapp_9.9.9.spm"
            good = hashlib.md5(package).hexdigest()
            code, answer = await cmd(data, "updateFirmware", f"url={url}", "checksum=" + "0" * 32)
            assert (code, answer["error"]) == (
                1, f"updateFirmware: checksum mismatch (expected {'0' * 32}, got {good})")
            code, answer = await cmd(data, "updateFirmware",
                                     f"url=http://127.0.0.1:{http_port}/missing.spm",
                                     f"checksum={good}")
            assert code == 1 and str(answer["error"]).startswith("updateFirmware: download "
                                                                 "failed: "), answer
            code, answer = await cmd(data, "updateFirmware", f"url={url}", f"checksum={good}",
                                     "interface=modem")
            assert code == 1 and "cannot be chosen on this platform" in str(answer["error"])
            assert not installed.exists()
            code, answer = await cmd(data, "updateFirmware", f"url={url}", f"checksum={good}")
            assert (code, answer) == (0, {"result": "OK", "callerId": None})
            await wait_until(installed.exists, 20, "the installed package", service)
            assert installed.read_bytes() == package
            assert (data / "update" / "wgapp_9.9.9.spm").read_bytes() == package

            # The card mirror runs: configuration snapshots reach the card within its 10 s pass
            # (open segments only every 10 min), and the card opens as a store.
            await wait_until(lambda: any(card.glob(f"config/*/CONFIG/{UID}_config.ini")), 30,
                             "a configuration snapshot on the card", service)
            code, answer = await cmd(data, "status")
            assert answer["result"]["sd"] == {  # type: ignore[index]
                "path": str(card), "state": "ok", "error": None}
            mirrored = sorted(p.relative_to(card) for p in card.rglob("*") if p.is_file())
            await (Log.open_read_only(card)).close()

            # factory: configuration and store go, the service restarts on defaults.
            code, answer = await cmd(data, "factory")
            assert code == 1 and answer["error"] == "factory: confirm must be true"
            code, answer = await cmd(data, "factory", "confirm=true")
            assert (code, answer) == (0, {"result": "OK", "callerId": None})
            await wait_until(lambda: service is not None and
                             service.stderr.count("sunpm started") == 2, 60, "the restart",
                             service)
        assert "Factory reset done" in service.stderr
        site = load_site(cfg)
        assert site.uid == UID and site.settings.store_path == ""
        assert [d.index for d in site.daq.devices] == ["IO"]
        assert not (tmp_path / "store").exists() and (data / "store").is_dir()
        assert not (data / "update").exists()
        # An SD mirror is left alone (docs/behaviour.md §6).
        assert all((card / rel).is_file() for rel in mirrored)
        assert "an SD mirror is left as it was" in service.stderr
        assert list((cfg / "DEF").iterdir()) == [] or all(
            p.name.startswith(UID) for p in (cfg / "DEF").iterdir())
    finally:
        if service is not None:
            code, took = await service.stop(signal.SIGINT)
            assert code == 0 and took < STOP_LIMIT_S, service.stderr[-3000:]
        await sim.stop()
