"""The demo plant: what `sunpm run` starts when it is given no configuration.

Everything is on loopback or a pseudo-terminal, in this process (the gateway's loop serves it):

    <data>/                     `./sunpm-data` or `--data`
      demo.lock                 flock'ed while a demo runs (a second one is refused)
      demo.json                 marks the folder as a demo (ports change at every start)
      config/                   the demo configuration (uid SUNPMDEMO); later starts change only
                                what the run changes (paths, inverter ports, the meter's pty, the
                                MQTT broker's port) and keep the user's edits
      server/                   the `dir` server 1 (DATA, ALARM, LOG ... as an IS receives them)
      store/                    the store (resumed by the next run)
      mosquitto/                the broker's configuration and log, when mosquitto is installed
      ...                       and what any gateway keeps in its data folder: status.json,
                                sunpm.sock, config-in-force.tar, initial-password, web-password,
                                api-token, archives/

- three SunSpec inverters (models 1 and 103 at 40000), one lean Modbus TCP simulator each on an
  ephemeral port; their values follow a day curve compressed to 24 minutes (16 min of sun, 8 of
  night) so a session's files show it moving; power has a little noise so it changes every
  second, the energy counter (WH) is the exact integral of the curve and only grows;
- a Linky meter (TIC historic) writing a frame every second on a pty;
- the gateway's I/O on the simulator backend, DI2 an S0 counter;
- server 1 a `dir` server with a session every minute, server 2 MQTT (data and alarm topics) on a
  mosquitto started on a free port, when a `mosquitto` binary is on PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import logging
import math
import os
import pty
import pwd
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, TypeVar

from config import ConfigError, Parsed, parse_config_ini, parse_daq, render_config_ini, render_daq
from config.defaults import default_files
from config.model import Daq, Device
from exporters.session import Trigger
from fsio import write_file_durably
from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator
from pipeline.drivers.tic import TicMode, encode_frame
from pipeline.service.gateway import Gateway, GatewayRefused, Started
from pipeline.service.maintenance import DEMO_MARK
from pipeline.service.scripts import ScriptsPlugin
from pipeline.web import WebPlugin

log = logging.getLogger("sunpm.system")
T = TypeVar("T")
_PR_SET_PDEATHSIG: Final = 1     # <linux/prctl.h>

UID: Final = "SUNPMDEMO"
#: Demo time starts here so the counters stay far from their 32-bit limits.
DEMO_EPOCH_S: Final = 1_704_067_200          # 2024-01-01T00:00:00Z
DAY_S: Final = 1440.0
SUN_S: Final = 960.0
INVERTER_MAX_W: Final = (3000.0, 4500.0, 6000.0)
ADCO: Final = "041676011381"
SERVER_TREE: Final = ("CONFIG", "DEF", "SCRIPT", "CERT", "DATA", "CMD", "ALARM", "LOG", "BIN")

INVERTER_DEF: Final = (
    b"modbusTCP;Inverter;sunpm;Demo inverter\n"
    b"1;3;40004_32;String;;Mn;;1;0;;1\n"
    b"2;3;40020_32;String;;Md;;1;0;;1\n"
    b"3;3;40052_32;String;;SN;;1;0;;1\n"
    b"4;3;40072;U16;A_SF;A;;1;0;A;4\n"
    b"5;3;40076;I16;;A_SF;;1;0;;0\n"
    b"6;3;40080;U16;V_SF;PhVphA;;1;0;V;4\n"
    b"7;3;40083;I16;;V_SF;;1;0;;0\n"
    b"8;3;40084;I16;W_SF;W;;1;0;W;2\n"
    b"9;3;40085;I16;;W_SF;;1;0;;0\n"
    b"10;3;40086;U16;Hz_SF;Hz;;1;0;Hz;4\n"
    b"11;3;40087;I16;;Hz_SF;;1;0;;0\n"
    b"12;3;40094;U32;WH_SF;WH;;1;0;Wh;4\n"
    b"13;3;40096;I16;;WH_SF;;1;0;;0\n"
    b"14;3;40103;I16;Tmp_SF;TmpCab;;1;0;C;4\n"
    b"15;3;40107;I16;;Tmp_SF;;1;0;;0\n"
    b"16;3;40108;U16;;St;;1;0;;8\n")
IO_DEF: Final = (
    b"io;WebdynSunPM;Webdyn;ioSunPM\n"
    b"1;1;1;1;;AI1;;1;0;mA;2\n"
    b"2;1;2;2;;AI2;;1;0;V;4\n"
    b"5;2;1;1;;DI1;;1;0;;8\n"
    b"6;2;2;2;;DI2;;1;0;;4\n"
    b"9;3;1;;;Relay;;1;0;;4\n")
TIC_DEF: Final = (
    b"tic;Meter;Enedis;Linky\n"
    b"1;ADCO;;;;ADCO;;1;0;;1\n"
    b"2;BASE;;;;BASE;;1;0;Wh;4\n"
    b"3;PTEC;;;;PTEC;;1;0;;4\n"
    b"4;IINST;;;;IINST;;1;0;A;4\n"
    b"5;PAPP;;;;PAPP;;1;0;VA;2\n")
INVERTER_FILE: Final = "demo_inverter.csv"
IO_FILE: Final = f"{UID}_IO.csv"
TIC_FILE: Final = f"{UID}_TIC_LINKY.csv"


# ----------------------------------------------------------------------------- the plant


def sunlight(t_s: float) -> float:
    """0..1: a sine over the 16 sunny minutes of each 24-minute demo day, 0 at night."""
    x = (t_s - DEMO_EPOCH_S) % DAY_S
    return math.sin(math.pi * x / SUN_S) if x < SUN_S else 0.0


def energy_wh(t_s: float, max_w: float) -> float:
    """The exact integral of `max_w * sunlight` since the demo epoch, in Wh."""
    elapsed = t_s - DEMO_EPOCH_S
    days, x = divmod(elapsed, DAY_S)
    per_day = max_w * SUN_S * 2 / math.pi
    partial = max_w * SUN_S / math.pi * (1 - math.cos(math.pi * min(x, SUN_S) / SUN_S))
    return (days * per_day + partial) / 3600


def _noise(second: int, k: int) -> float:
    """A repeatable ±1 % wobble per second and inverter."""
    return ((second * 7919 + k * 104_729) % 1000) / 50_000 - 0.01


def _text(text: str, registers: int) -> list[int]:
    raw = text.encode().ljust(2 * registers, b"\x00")
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 2 * registers, 2)]


@dataclass(slots=True)
class DemoInverter(SimulatedDevice):
    """A SunSpec inverter (models 1 and 103) whose registers follow the wall clock."""

    number: int = 1

    def __post_init__(self) -> None:
        common = (_text("sunpm", 16) + _text(f"Demo {INVERTER_MAX_W[self.number - 1] / 1000:g}k",
                                              16)
                  + _text("", 8) + _text("1.0", 8) + _text(f"DEMO-{self.number:04d}", 16)
                  + [1, 0x8000])
        words = [0x5375, 0x6E53, 1, 66] + common + [103, 50] + [0] * 50 + [0xFFFF, 0]
        self.set_words(40000, words)
        # Scale factors: A -2, V -1, W 0, Hz -2, WH 0, Tmp -1.
        for address, sf in ((40076, -2), (40083, -1), (40085, 0), (40087, -2), (40096, 0),
                            (40107, -1)):
            self.holding[address] = sf & 0xFFFF

    def answer(self, pdu: bytes) -> bytes:
        self.refresh(time.time())
        return SimulatedDevice.answer(self, pdu)

    def refresh(self, t_s: float) -> None:
        second = int(t_s)
        max_w = INVERTER_MAX_W[self.number - 1]
        light = sunlight(t_s)
        power = max_w * light * (1 + _noise(second, self.number)) if light > 0 else 0.0
        wh = int(energy_wh(t_s, max_w)) & 0xFFFFFFFF
        volts = 230 + 2 * math.sin(t_s / 37 + self.number)
        state = 4 if light > 0.02 else 2
        # Inverter 3 is throttled for two minutes of every eight while the sun shines.
        if self.number == 3 and state == 4 and ((t_s - DEMO_EPOCH_S) // 120) % 4 == 3:
            state = 5
        h = self.holding
        h[40072] = round(power / volts * 100) & 0xFFFF
        h[40080] = round(volts * 10)
        h[40084] = round(power) & 0xFFFF
        h[40086] = round((50 + 0.05 * math.sin(t_s / 53)) * 100)
        h[40094], h[40095] = wh >> 16, wh & 0xFFFF
        h[40103] = round((25 + 15 * light) * 10) & 0xFFFF
        h[40108] = state


def tic_frame(t_s: float) -> bytes:
    """A historic Linky frame: a household load, its Wh index the load's exact integral."""
    elapsed = t_s - DEMO_EPOCH_S
    period = 600.0
    papp = 400 + 300 * math.sin(2 * math.pi * elapsed / period)
    base = 5_000_000 + (400 * elapsed - 300 * period / (2 * math.pi)
                        * math.cos(2 * math.pi * elapsed / period)) / 3600
    groups = [("ADCO", ADCO), ("OPTARIF", "BASE"), ("ISOUSC", "30"),
              ("BASE", f"{int(base) % 10**9:09d}"), ("PTEC", "TH.."),
              ("IINST", f"{round(papp / 230):03d}"), ("IMAX", "090"),
              ("PAPP", f"{round(papp):05d}"), ("HHPHC", "A"), ("MOTDETAT", "000000")]
    return encode_frame(groups, TicMode.HISTORIC)


async def _linky(master: int) -> None:
    """A frame every second; a full pty buffer (nobody reading) drops the frame."""
    os.set_blocking(master, False)
    while True:
        with contextlib.suppress(BlockingIOError):
            os.write(master, tic_frame(time.time()))
        await asyncio.sleep(1.0)


# ----------------------------------------------------------------------------- MQTT broker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> Callable[[], None] | None:
    """For the broker's child process: SIGTERM when the gateway dies, so an exit that skips the
    clean stop (a second Ctrl-C, the stop guard, a kill) does not leave the broker running.
    `prctl` is looked up here, before the fork: the child of a threaded process only calls it
    (a lookup there could wait forever on a lock another thread held at the fork)."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return in_child


@contextlib.asynccontextmanager
async def mosquitto(folder: Path) -> AsyncIterator[int | None]:
    """A mosquitto on a free loopback port (None without the binary), stopped on exit."""
    binary = shutil.which("mosquitto")
    if binary is None:
        yield None
        return
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = folder / "mosquitto.conf"
    # `user`: the broker keeps the gateway's user. Started as root, it would switch to
    # `mosquitto`, and that change of credentials drops the parent-death signal.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                    f"log_dest file {folder / 'mosquitto.log'}\n")
    proc = await asyncio.create_subprocess_exec(
        binary, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_die_with_parent())
    try:
        for _ in range(50):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.1)
        else:
            log.warning("mosquitto did not listen within 5 s; the demo goes on without MQTT")
            yield None
            return
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(3):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


# ----------------------------------------------------------------------------- configuration


def write_config(config_dir: Path, server_dir: Path, store_dir: Path, ports: list[int],
                 tic_path: str, mqtt_port: int | None, *, first: bool = False) -> None:
    """The demo configuration. The first start writes it whole, over the demo's defaults
    with the keys of a config.ini written before it (`is_demo_seed`: a web port chosen for the
    very first start); later starts change only what the run changes (the data folder's paths,
    inverter ports, the meter's pty, the broker's port) and keep every other edit (a web port,
    a log level, a device added)."""
    for sub in ("CONFIG", "DEF", "SCRIPT", "CERT"):
        (config_dir / sub).mkdir(parents=True, exist_ok=True)
    files = default_files(UID)
    cfg_name = f"CONFIG/{UID}_config.ini"
    daq_name = f"CONFIG/{UID}_daq.csv"
    files[f"CONFIG/{UID}_var.ini"] = (b"SCHEDULE_Params[0]=1|everyday|00:00:00|1|1440\n"
                                      b"SCHEDULE2_Params[0]=1|everyday|00:00:00|1|1440\n")
    files[f"DEF/{IO_FILE}"] = IO_DEF
    files[f"DEF/{TIC_FILE}"] = TIC_DEF
    files[f"DEF/{INVERTER_FILE}"] = INVERTER_DEF
    kept_cfg = _kept(config_dir / cfg_name, cfg_name, parse_config_ini)
    fresh = kept_cfg is None or first
    if kept_cfg is None or first:
        cfg = parse_config_ini(files[cfg_name], cfg_name).value
        values = {"SERVER_Type": "dir", "DAQ_PollPeriod": "1", "NTP_Server1": "",
                  "NTP_Server2": ""}
        if mqtt_port is not None:
            values.update({"SERVER2_Type": "mqtt", "MQTT2_Host": "127.0.0.1",
                           "MQTT2_TopicData": f"sunpm/{UID}/data",
                           "MQTT2_TopicAlarm": f"sunpm/{UID}/alarm"})
        if kept_cfg is not None:
            values.update(kept_cfg.values)
    else:
        cfg, values = kept_cfg, {}
    values.update({"DIR_Path": str(server_dir), "STORE_Path": str(store_dir),
                   "TIC_Port": tic_path})
    if not fresh and cfg.get("SERVER2_Type") == "mqtt" and cfg.get("MQTT2_Host") == "127.0.0.1":
        # Server 2 is still the demo's broker, which listens on a new port at each start.
        values.update({"MQTT2_Port": str(mqtt_port)} if mqtt_port is not None
                      else {"SERVER2_Type": "none"})
    elif fresh and mqtt_port is not None:
        values["MQTT2_Port"] = str(mqtt_port)
    for key, value in values.items():
        cfg = cfg.with_value(key, value)
    files[cfg_name] = render_config_ini(cfg)
    kept_daq = _kept(config_dir / daq_name, daq_name, parse_daq)
    if kept_daq is None:
        files[daq_name] = render_daq(Daq(devices=tuple(_demo_devices(ports)),
                                         blocks=frozenset({"devices"})))
    else:
        files[daq_name] = render_daq(replace(kept_daq, devices=tuple(
            _moved_inverter(dev, ports) for dev in kept_daq.devices)))
    for rel, data in files.items():
        path = config_dir / rel
        # The schedules, definition and script list are the user's once written.
        if not path.is_file() or (rel in (cfg_name, daq_name) and path.read_bytes() != data):
            write_file_durably(path, data)


def _kept(path: Path, name: str, parse: Callable[[bytes, str], Parsed[T]]) -> T | None:
    """The file as an earlier start or the user left it, or None when it is absent or does not
    load (then the demo's own replaces it, as at the first start)."""
    try:
        return parse(path.read_bytes(), name).value
    except FileNotFoundError:
        return None
    except (ConfigError, OSError) as err:
        log.warning("Demo %s does not load (%s); the demo's own replaces it", name, err)
        return None


def _demo_devices(ports: list[int]) -> list[Device]:
    devices = [Device(line=2, index="IO", interface="", name="Io", address=None,
                      acq_period_s=10, category="WebdynSunPM", model="ioSunPM",
                      def_file=IO_FILE),
               # Its mode fixed (historic, 1200 Bd): detection would first listen 5 s at 9600,
               # and the first files, within seconds of the start, would show an empty row.
               Device(line=3, index="TIC1", interface="", name="Linky", address=None,
                      acq_period_s=10, serial_number=ADCO, parameters="1200", category="Meter",
                      model="Linky", def_file=TIC_FILE)]
    for k, port in enumerate(ports, start=1):
        devices.append(Device(line=3 + k, index=str(k), interface=f"127.0.0.1:{port}",
                              name=f"inverter_{k}", address=1, acq_period_s=10,
                              timeout_ms=1000, parameters="1", category="Inverter",
                              model=f"Demo_{INVERTER_MAX_W[k - 1] / 1000:g}k",
                              def_file=INVERTER_FILE))
    return devices


def _moved_inverter(dev: Device, ports: list[int]) -> Device:
    """The demo inverter `dev` at this start's port; any other device as it is."""
    for k, port in enumerate(ports, start=1):
        if dev.index == str(k) and dev.interface.startswith("127.0.0.1:"):
            return replace(dev, interface=f"127.0.0.1:{port}")
    return dev


# ----------------------------------------------------------------------------- the run


class DemoBusy(GatewayRefused):
    pass


@contextlib.contextmanager
def _demo_lock(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "demo.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DemoBusy(f"{data_dir}: another sunpm is already running on this data "
                           f"(pid {holder}); stop it first", 3) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def is_demo(data_dir: Path) -> bool:
    return (data_dir / DEMO_MARK).is_file()


def is_demo_seed(data_dir: Path) -> bool:
    """A data folder made ready for the demo's first start: its configuration folder holds
    the demo's own files only (a config.ini with the web port to use, written before the first
    start so that it never listens on 8080). It is the demo's, not a configuration of the
    user's."""
    try:
        names = [p.name for p in (data_dir / "config" / "CONFIG").iterdir()]
    except OSError:
        return False
    return bool(names) and all(name.startswith(f"{UID}_") for name in names)


@dataclass(slots=True)
class _Kickoff:
    """Asks every server for a first session once each device has a record acknowledged, so
    a new user sees files within seconds rather than at the next whole minute."""

    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, gateway: Gateway) -> None:
        if self.done.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                # The gateway signals no acknowledgement; a demo's start-up polls twice a second.
                while gateway.site is None or any(  # noqa: ASYNC110
                        gateway.acknowledged_end(d.index) is None
                        for d in gateway.site.polled_devices):
                    await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        for slot in (1, 2):
            gateway.request_session(slot, Trigger.STARTUP)
        self.done.set()


async def run_demo(data_dir: Path, stop: asyncio.Event,
                   made: Callable[[Gateway], None] | None = None, *,
                   web_port: int | None = None) -> bool:
    """The demo plant and the gateway on it until `stop`; True when it stopped for a `reboot`.
    Raises `GatewayRefused` when the data directory is in use. `made` is given the gateway
    before it runs (`sunpm run`'s SIGHUP); `web_port` replaces `WEB_Port` (`--web-port`)."""
    with _demo_lock(data_dir):
        config_dir = data_dir / "config"
        server_dir = data_dir / "server"
        for sub in SERVER_TREE:
            (server_dir / sub).mkdir(parents=True, exist_ok=True)
        first = not is_demo(data_dir)
        if not (data_dir / "store").exists():
            # A new store (a `factory` reset, the store deleted) has no memory of the files the
            # demo synced with its server folder: an earlier run's CONFIG copies there, with
            # that run's ports, would be applied as a change from server 1.
            for stale in (server_dir / "CONFIG").glob(f"{UID}_*"):
                stale.unlink()
        inverters = [TcpSimulator({1: DemoInverter(number=k)}) for k in (1, 2, 3)]
        master, slave = pty.openpty()
        linky = asyncio.create_task(_linky(master), name="demo-linky")
        try:
            ports = [await sim.start() for sim in inverters]
            async with mosquitto(data_dir / "mosquitto") as mqtt_port:
                # The mark first: a configuration without it would be taken for the user's
                # (`sunpm run`) by every later start, had this one been cut in between.
                write_file_durably(data_dir / DEMO_MARK, json.dumps(
                    {"uid": UID, "inverterPorts": ports, "mqttPort": mqtt_port}).encode())
                write_config(config_dir, server_dir, data_dir / "store", ports,
                             os.ttyname(slave), mqtt_port, first=first)

                async def announce(started: Started) -> None:
                    where = "created" if first else "resumed"
                    print(f"sunpm demo {where} in {data_dir}\n"
                          f"  DATA, ALARM and LOG files land in {server_dir}/"
                          " (a session every minute)\n"
                          f"  inverters on 127.0.0.1:{', '.join(map(str, ports))}; "
                          f"Linky on {os.ttyname(slave)}\n"
                          + (f"  MQTT: mosquitto on 127.0.0.1:{mqtt_port}, topics "
                             f"sunpm/{UID}/data and sunpm/{UID}/alarm\n" if mqtt_port
                             else "  MQTT: no mosquitto on PATH; MQTT delivery is off\n")
                          + "  Ctrl-C stops everything", flush=True)

                gateway = Gateway(config_dir, data_dir, on_started=announce,
                                  plugins=[_Kickoff(), ScriptsPlugin(),
                                           WebPlugin(port=web_port,
                                                     free_port_fallback=True)])
                if made is not None:
                    made(gateway)
                await gateway.run(stop)
                return gateway.restart_requested
        finally:
            linky.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await linky
            for sim in inverters:
                await sim.stop()
            os.close(master)
            os.close(slave)
