"""`sunpm run` on the box's bad days, as systemd runs it (docs/sunpm.service): a data folder it
may not write, a second instance, a full disk, SIGHUP. Each failure exits with the code the unit
restarts or not on (1: restarted; 2: a person must act; 3: another instance), in one line naming
the path, never a traceback.

The permission cases drop the capabilities of root when the tests run as root (`setpriv`), so
that file modes apply as they do to the `sunpm` user. The full disk is a 2 MiB tmpfs (root only,
as tests/test_store/test_disk_full.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import free_ports, syn_dropping_port
from small_disks import fill, mounted_tmpfs
from waiting import wait_until

from store.lockfile import take_lock

SUNPM = str(Path(sys.executable).parent / "sunpm")


def _site(root: Path) -> Path:
    site = root / "site"
    subprocess.run([SUNPM, "config", "init", "--uid", "WPM000001", str(site)], check=True,
                   capture_output=True)
    with open(site / "CONFIG" / "WPM000001_config.ini", "a") as fh:
        fh.write(f"WEB_Port={free_ports(1)[0]}\n")
    os.chmod(root, 0o755)
    for path in [site, *site.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return site


def _as_a_user() -> list[str]:
    """The command prefix under which file modes apply (root keeps its uid, not its bypass)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes do not apply")
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def _run(args: list[str], prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), SUNPM, "run", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize(("case", "code", "message"), [
    ("parent not writable", 2, "sunpm run: --data {data}: cannot create it: {data}: "
                               "Permission denied; sunpm runs as "),
    ("folder not writable", 2, "sunpm run: --data {data}: not writable (owner "),
    ("store lock not writable", 2, "{data}/store/lock: Permission denied; sunpm runs as "),
])
def test_a_data_folder_the_service_may_not_write_exits_2_naming_it(
        tmp_path: Path, case: str, code: int, message: str) -> None:
    site = _site(tmp_path)
    data = tmp_path / "data"
    if case == "parent not writable":
        data = tmp_path / "locked" / "data"
        data.parent.mkdir(mode=0o555)
    elif case == "folder not writable":
        data.mkdir(mode=0o555)
    else:   # a first run by another user left its files (`sunpm run` tried by hand as root)
        (data / "store").mkdir(parents=True)
        (data / "store" / "lock").touch(mode=0o444)
    done = _run(["--config", str(site), "--data", str(data)], _as_a_user())
    assert done.returncode == code, done.stderr
    assert message.format(data=data) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_instance_on_the_same_data_exits_3(tmp_path: Path) -> None:
    site = _site(tmp_path)
    store = tmp_path / "data" / "store"
    store.mkdir(parents=True)
    fd = take_lock(store / "lock", store)
    try:
        done = _run(["--config", str(site), "--data", str(tmp_path / "data")])
    finally:
        os.close(fd)
    assert done.returncode == 3, done.stderr
    assert f"{store}: another sunpm is already running on this data (pid {os.getpid()}); " \
           "stop it first" in done.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "mnt", "2m") as mount:
        yield mount


class _Service:
    def __init__(self, args: list[str], err: Path) -> None:
        self.args = args
        self.err = err
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> _Service:
        fd = os.open(self.err, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                SUNPM, "run", *self.args, stdout=subprocess.DEVNULL, stderr=fd,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        finally:
            os.close(fd)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    async def logged(self, text: str, within_s: float = 30) -> None:
        assert self.proc is not None
        proc = self.proc
        try:
            await wait_until(lambda: text in self.stderr or proc.returncode is not None,
                             within_s, what=text)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.stderr}") from None
        assert text in self.stderr, self.stderr

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(30):
            return await self.proc.wait()


async def test_a_full_disk_neither_stops_nor_crash_loops_the_service(
        tmp_path: Path, small_disk: Path) -> None:
    """docs/behaviour.md §6: on a full disk the gateway runs on (commits fail and wait), its web
    UI answers, and its configuration, changed while the disk is full, is stored once there is
    room again."""
    site = _site(tmp_path)
    data = small_disk / "data"
    args = ["--config", str(site), "--data", str(data)]
    async with _Service(args, tmp_path / "first.err") as first:
        await first.logged("Web UI listening")
        assert await first.stop() == 0, first.stderr
    ini = site / "CONFIG" / "WPM000001_config.ini"
    ini.write_text(ini.read_text() + "LOG_Level=debug\n")  # another configuration: copies to write
    fill(small_disk / "fill")
    async with _Service(args, tmp_path / "second.err") as second:
        await second.logged("Web UI listening")
        await second.logged("commit failed: [Errno 28] No space left on device")
        assert "last configuration in force not kept (No space left on device)" in second.stderr
        assert "Configuration snapshot not stored: [Errno 28] No space left on device" \
            in second.stderr
        assert await second.stop() == 0, second.stderr
    # The clean stop's Power OFF could not be committed within its 2 s: said so, in words.
    assert "Power OFF not published before the stop: not done within 2 s" in second.stderr
    # The previous run's unclean-looking stop (its Power OFF never committed) and another
    # configuration: the start queues the inferred Power OFF, cannot store the snapshot, and
    # starts the acquisition all the same.
    ini.write_text(ini.read_text().replace("LOG_Level=debug", "LOG_Level=info"))
    (small_disk / "fill").unlink()
    fill(small_disk / "fill")
    async with _Service(args, tmp_path / "third.err") as third:
        await third.logged("Configuration snapshot not stored")
        await third.logged("Web UI listening")
        (small_disk / "fill").unlink()
        await third.logged("Configuration snapshot stored")
        assert await third.stop() == 0, third.stderr
    for run in (second, third):
        assert "Traceback" not in run.stderr
        assert "Web UI stopped" not in run.stderr


async def test_a_first_start_on_a_full_disk_runs(tmp_path: Path, small_disk: Path) -> None:
    """No store, no password, no snapshot can be written: the gateway starts, its web UI
    answers with the password shown on the console, and it stores its configuration once
    there is room."""
    site = _site(tmp_path)
    fill(small_disk / "fill")
    args = ["--config", str(site), "--data", str(small_disk / "data")]
    async with _Service(args, tmp_path / "service.err") as service:
        await service.logged("Web UI listening")
        assert "one-time password holds for this run only" in service.stderr
        assert "definition snapshot not stored (No space left on device)" in service.stderr
        (small_disk / "fill").unlink()
        await service.logged("Configuration snapshot stored")
        assert await service.stop() == 0, service.stderr
    assert "Traceback" not in service.stderr
    assert "Web UI stopped" not in service.stderr


async def test_sighup_checks_the_configuration_folder_at_once(tmp_path: Path) -> None:
    """SIGHUP (`systemctl reload`) applies a changed folder now, not at the next 5 s check,
    and never ends the service (its default action would, without a clean stop)."""
    site = _site(tmp_path)
    args = ["--config", str(site), "--data", str(tmp_path / "data")]
    async with _Service(args, tmp_path / "service.err") as service:
        await service.logged("Web UI listening")
        ini = site / "CONFIG" / "WPM000001_config.ini"
        ini.write_text(ini.read_text() + "LOG_Level=debug\n")
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)
        await service.logged("SIGHUP received; checking the configuration folder", 10)
        await service.logged("Configuration reloaded", 10)
        assert service.proc.returncode is None
        assert await service.stop() == 0, service.stderr


def test_a_command_cut_by_the_gateway_stopping_says_so(tmp_path: Path) -> None:
    """`sunpm cmd` waiting for a long command (`discoverDevices`) while the gateway stops: the
    socket closes without an answer, which is no "unreadable answer"."""
    data = tmp_path / "data"
    data.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(data / "sunpm.sock"))
    server.listen(1)

    def gateway_stopping() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)     # the request, then closed unanswered as a stop closes it

    peer = threading.Thread(target=gateway_stopping)
    peer.start()
    try:
        done = subprocess.run([SUNPM, "cmd", "discoverDevices", "--data", str(data)],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        peer.join(30)
        server.close()
    assert done.returncode == 2
    assert f"{data}/sunpm.sock: the gateway closed the connection without an answer (it is " \
           "stopping or restarting?)" in done.stderr, done.stderr


async def test_the_status_file_is_this_runs_from_the_start(tmp_path: Path) -> None:
    """The previous run's `status.json` (a crash loop's last minute-long run, days old) is
    replaced as the gateway starts, not a minute later."""
    site = _site(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "status.json").write_text('{"uid": "WPM000001", "uptimeS": 123456}')
    async with _Service(["--config", str(site), "--data", str(data)],
                        tmp_path / "service.err") as service:
        await service.logged("sunpm started")
        await wait_until(lambda: json.loads((data / "status.json").read_bytes())["uptimeS"]
                         < 60, 30, what="status.json of this run")
        assert await service.stop() == 0, service.stderr


async def test_web_port_puts_a_first_demo_start_on_the_port_given(tmp_path: Path) -> None:
    """A first demo start, on a machine whose 8080 is someone else's to take: `--web-port`
    chooses the web UI's port before any configuration exists, and only for this run (the
    configuration written keeps its own `WEB_Port`)."""
    port = free_ports(1)[0]
    data = tmp_path / "sunpm-data"
    async with _Service(["--data", str(data), "--web-port", str(port)],
                        tmp_path / "service.err") as service:
        await service.logged(f"Web UI listening. url=http://127.0.0.1:{port}/", 60)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        assert await service.stop() == 0, service.stderr
    assert "WEB_Port" not in (data / "config" / "CONFIG" / "SUNPMDEMO_config.ini").read_text()


async def test_web_port_overrides_the_configured_one(tmp_path: Path) -> None:
    site = _site(tmp_path)
    port = free_ports(1)[0]
    args = ["--config", str(site), "--data", str(tmp_path / "data"), "--web-port", str(port)]
    async with _Service(args, tmp_path / "service.err") as service:
        await service.logged(f"Web UI listening. url=http://127.0.0.1:{port}/")
        assert await service.stop() == 0, service.stderr


async def test_a_demo_whose_web_port_is_taken_says_why_it_serves_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with _Service(["--data", str(tmp_path / "sunpm-data"), "--web-port", str(port)],
                            tmp_path / "service.err") as service:
            await service.logged("Web UI listening", 60)
            assert f"Web UI port {port} is in use; a free port is taken instead (WEB_Port or " \
                   "`sunpm run --web-port` chooses another)" in service.stderr
            assert f"url=http://127.0.0.1:{port}/" not in service.stderr
            assert await service.stop() == 0, service.stderr


async def test_a_stop_while_the_mqtt_broker_drops_syns_is_clean_and_prompt(
        tmp_path: Path) -> None:
    """The broker's host drops the SYNs (a listener whose queue is full), so the MQTT connect
    waits out its 30 s timeout: a stop meanwhile exits 0 at once, where it waited for the
    connect's thread until the 9 s stop guard ended it with exit 1."""
    with syn_dropping_port() as port:
        site = _site(tmp_path)
        ini = site / "CONFIG" / "WPM000001_config.ini"
        ini.write_text(ini.read_text() + f"SERVER_Type=mqtt\nMQTT_Host=127.0.0.1\nMQTT_Port="
                       f"{port}\nMQTT_TopicAlarm=plant/alarm\n")
        args = ["--config", str(site), "--data", str(tmp_path / "data")]
        async with _Service(args, tmp_path / "service.err") as service:
            await service.logged("Web UI listening")
            started = asyncio.get_running_loop().time()
            assert await service.stop() == 0, service.stderr
            assert asyncio.get_running_loop().time() - started < 8, service.stderr
    assert "sunpm stopped; store closed." in service.stderr
