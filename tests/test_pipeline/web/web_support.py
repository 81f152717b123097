"""A real gateway with its web UI for the web tests: simulated SunSpec inverters (the demo's,
on the lean Modbus TCP simulator, ephemeral loopback ports), a `dir` server, the store, and
`WebPlugin` on an ephemeral port; the gateway runs on its own event loop in a thread, so the
tests may block (selenium, httpx) while it polls and serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from config import parse_config_ini, render_config_ini, render_daq
from config.defaults import default_files
from config.model import Daq, Device
from fsio import write_file_durably
from pipeline.drivers.modbus.simulator import TcpSimulator
from pipeline.service.demo import INVERTER_DEF, INVERTER_FILE, IO_DEF, DemoInverter
from pipeline.service.gateway import Gateway
from pipeline.service.scripts import ScriptsPlugin
from pipeline.web import WebPlugin

UID = "WEBTEST01"
START_LIMIT_S = 30.0


def write_site(config_dir: Path, server_dir: Path, ports: list[int],
               extra: dict[str, str] | None = None) -> None:
    files = default_files(UID)
    name = f"CONFIG/{UID}_config.ini"
    cfg = parse_config_ini(files[name], name).value
    values = {"SERVER_Type": "dir", "DIR_Path": str(server_dir), "DAQ_PollPeriod": "1",
              "NTP_Server1": "", "NTP_Server2": "", **(extra or {})}
    for key, value in values.items():
        cfg = cfg.with_value(key, value)
    files[name] = render_config_ini(cfg)
    files[f"CONFIG/{UID}_var.ini"] = b"SCHEDULE_Params[0]=1|everyday|00:00:00|60|24\n"
    devices = [Device(line=1 + k, index=str(k), interface=f"127.0.0.1:{port}",
                      name=f"inverter_{k}", address=1, acq_period_s=10, timeout_ms=1000,
                      category="Inverter", model="Demo", def_file=INVERTER_FILE)
               for k, port in enumerate(ports, start=1)]
    files[f"CONFIG/{UID}_daq.csv"] = render_daq(Daq(devices=tuple(devices),
                                                    blocks=frozenset({"devices"})))
    files[f"DEF/{INVERTER_FILE}"] = INVERTER_DEF
    for rel, data in files.items():
        (config_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        write_file_durably(config_dir / rel, data)


@dataclass
class RunningGateway:
    """The gateway thread; `url` ends with `/`, `password` is the one-time password."""

    folder: Path
    url: str = ""
    password: str = ""
    announced: list[str] = field(default_factory=list)
    gateway: Gateway | None = None
    plugin: WebPlugin | None = None
    simulators: list[TcpSimulator] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    error: BaseException | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    @property
    def config_dir(self) -> Path:
        return self.folder / "config"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @contextlib.contextmanager
    def client(self, *, login: bool = True) -> Iterator[httpx.Client]:
        """An HTTP client; logged in through the API (`csrf` in its headers) when asked."""
        with httpx.Client(base_url=self.url, timeout=10.0, follow_redirects=False) as client:
            if login:
                answer = client.post("/api/login", json={"user": "admin",
                                                         "password": self.password})
                assert answer.status_code == 200, answer.text
                client.headers["X-CSRF-Token"] = answer.json()["csrf"]
            yield client

    def call(self, coro: object) -> object:
        """Run a coroutine on the gateway's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def reset_throttle(self) -> None:
        assert self.plugin is not None and self.plugin.context is not None
        self.plugin.context.sessions = type(self.plugin.context.sessions)()


def _run(running: RunningGateway, inverters: int, started: threading.Event,
         extra: dict[str, str] | None) -> None:
    async def main() -> None:
        running.loop = asyncio.get_running_loop()
        running._stop = asyncio.Event()
        sims = [TcpSimulator({1: DemoInverter(number=k)}) for k in range(1, inverters + 1)]
        running.simulators = sims
        ports = [await sim.start() for sim in sims]
        try:
            server_dir = running.folder / "server"
            server_dir.mkdir(parents=True, exist_ok=True)
            write_site(running.config_dir, server_dir, ports, extra)
            plugin = WebPlugin(port=0, announce=running.announced.append)
            running.plugin = plugin
            gateway = Gateway(running.config_dir, running.data_dir,
                              plugins=[ScriptsPlugin(), plugin])
            running.gateway = gateway
            task = asyncio.create_task(gateway.run(running._stop))
            listening = asyncio.create_task(plugin.listening.wait())
            await asyncio.wait([task, listening], return_when=asyncio.FIRST_COMPLETED)
            if listening.done():
                assert plugin.url is not None
                running.url = plugin.url
                running.password = (running.data_dir / "initial-password").read_text().strip()
            else:
                listening.cancel()
            started.set()
            await task
        finally:
            for sim in sims:
                await sim.stop()

    try:
        asyncio.run(main())
    except BaseException as err:  # noqa: BLE001 - reported to the test thread
        running.error = err
    finally:
        started.set()


@contextlib.contextmanager
def running_gateway(folder: Path, *, inverters: int = 2,
                    extra: dict[str, str] | None = None) -> Iterator[RunningGateway]:
    """`extra`: config.ini keys of the test (those the web UI may not set)."""
    running = RunningGateway(folder=folder)
    started = threading.Event()
    thread = threading.Thread(target=_run, args=(running, inverters, started, extra), daemon=True,
                              name="web-test-gateway")
    running._thread = thread
    thread.start()
    assert started.wait(START_LIMIT_S), "the gateway did not start"
    if running.error is not None or not running.url:
        raise AssertionError(f"the gateway did not start: {running.error!r}")
    try:
        yield running
    finally:
        assert running.loop is not None and running._stop is not None
        running.loop.call_soon_threadsafe(running._stop.set)
        thread.join(30)
        assert not thread.is_alive(), "the gateway did not stop"


def add_io(gateway: RunningGateway, client: httpx.Client, limit_s: float = 20.0) -> str:
    """The gateway's own I/O as a device, with the demo's definition file; its file name."""
    name = f"{UID}_IO.csv"
    (gateway.config_dir / "DEF" / name).write_bytes(IO_DEF)
    answer = client.post("/api/devices", json={
        "index": "IO", "interface": "", "name": "Io", "address": "", "acqPeriodS": "60",
        "timeoutMs": "", "serialNumber": "", "parameters": "", "category": "WebdynSunPM",
        "model": "ioSunPM", "defFile": name})
    assert answer.status_code == 201, answer.text
    # The list shows the row as soon as it is saved: the site in force says it is loaded.
    deadline = time.monotonic() + limit_s
    while not _loaded(gateway, "IO"):
        assert time.monotonic() < deadline, "the I/O device was not loaded"
        time.sleep(0.2)
    return name


def _loaded(gateway: RunningGateway, index: str) -> bool:
    site = gateway.gateway.site if gateway.gateway is not None else None
    return site is not None and any(d.index == index for d in site.daq.devices)
