"""`sunpm discover` as an installer meets it: progress, exit codes, Ctrl-C, wording.

The command runs as a child process against the lean TCP simulator on loopback; unit ids it does
not serve get no answer at all, as an empty bus address.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import signal
import struct
import sys
import termios
from pathlib import Path

import pytest

from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator

SUNPM = str(Path(sys.executable).parent / "sunpm")
pytestmark = pytest.mark.usefixtures("no_task_left_behind")


async def _sunpm(*args: str, stderr: int = asyncio.subprocess.PIPE
                 ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(SUNPM, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=stderr)
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), (err or b"").decode()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_address_exits_1_saying_nothing_could_be_reached() -> None:
    port = _closed_port()
    code, out, err = await _sunpm("discover", "--ip", "127.0.0.1", "--port", str(port),
                                  "--first", "1", "--last", "10", "--timeout", "100")
    assert (code, out) == (1, "")
    assert f"sunpm discover: nothing could be reached on ethernet1: 127.0.0.1:{port}: cannot " \
           "connect" in err
    assert "connection lost" not in err and "discoverDevices" not in err


async def test_an_empty_bus_completes_with_exit_0_and_plain_progress_lines() -> None:
    async with TcpSimulator({}) as sim:
        code, out, err = await _sunpm("discover", "--ip", "127.0.0.1", "--port", str(sim.port),
                                      "--first", "1", "--last", "20", "--timeout", "50")
    assert (code, out) == (0, "")
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert progress[0].startswith("progress: 2 of 20 ids, at id 2 on ethernet1, 0 found, about ")
    assert progress[-1].startswith("progress: 20 of 20 ids, at id 20 on ethernet1, 0 found")
    assert len(progress) == 10
    # Absent units time out without ever closing the connection (docs/behaviour.md §2.3).
    assert "connection lost" not in err and "timeouts in a row" not in err
    assert err.splitlines()[-1].endswith(":End of SunSpec detection on ethernet1. 0 devices found.")


async def test_ctrl_c_exits_130_saying_how_far_the_scan_went() -> None:
    async with TcpSimulator({}) as sim:
        proc = await asyncio.create_subprocess_exec(
            SUNPM, "discover", "--ip", "127.0.0.1", "--port", str(sim.port), "--first", "1",
            "--last", "200", "--timeout", "100", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(30):
                while b"progress: " not in await proc.stderr.readline():
                    pass
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                out, rest = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    err = rest.decode()
    assert (proc.returncode, out) == (130, b"")
    assert ":Error: detection aborted by user" in err
    last = err.splitlines()[-1]
    assert last.startswith("sunpm discover: interrupted after ") and " of 200 ids (0 devices " \
        "found, nothing written)" in last
    done = int(last.split()[4])
    assert 20 <= done < 200


async def test_a_terminal_gets_a_progress_bar_with_the_current_id_and_devices_found() -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        async with TcpSimulator({3: SimulatedDevice(holding={40000: 1})}) as sim:
            code, out, _ = await _sunpm("discover", "--ip", "127.0.0.1", "--port", str(sim.port),
                                        "--first", "1", "--last", "8", "--timeout", "50",
                                        stderr=slave)
        os.close(slave)
        slave = -1
        screen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:             # EIO: every writer is gone
                break
            if not chunk:
                break
            screen += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = screen.decode()
    assert (code, out) == (0, "")
    assert "8/8 ids" in text and "id 8, 0 found" in text
    assert "NON SUNSPEC device found at @3" in text
    assert "progress: " not in text          # plain lines are for logs, not terminals


@pytest.mark.parametrize(("args", "message"), [
    (["--ip", "127.0.0.1", "--first", "30", "--last", "20"], "--first 30 is above --last 20"),
    (["--ip", "127.0.0.1", "--first", "0"], "--first 0 is outside 1..240"),
    (["--interface", "ethernet1"], "--ip is required for ethernet1"),
    (["--ip", "127.0.0.1", "--port", "70000"], "--port 70000 is outside 1..65535"),
    (["--ip", "127.0.0.1", "--timeout", "0"], "--timeout 0 is below 1 ms"),
    (["--ip", "127.0.0.1", "--max-devices", "0"], "--max-devices 0 is below 1"),
    (["--ip", "127.0.0.1", "--import"], "--import needs --config DIR"),
    ([], "nothing to scan: give --ip, or --config with a serial port that has a path"),
])
async def test_refusals_name_the_flags_not_internal_names(args: list[str], message: str) -> None:
    code, out, err = await _sunpm("discover", *args)
    assert (code, out, err) == (2, "", f"sunpm discover: {message}\n")


def _plain_lines(seconds_per_id: list[float]) -> list[str]:
    """The plain progress lines of a scan whose ids took these times, on a stepped clock."""
    from pipeline.cli.discover import _Progress
    from pipeline.drivers.sunspec import UnitScanned

    clock = [100.0]
    stream = io.StringIO()
    progress = _Progress(len(seconds_per_id), lambda: "now", stream, monotonic=lambda: clock[0])
    for unit_id, took in enumerate(seconds_per_id, start=1):
        clock[0] += took
        progress.unit(UnitScanned(interface="ethernet1", unit_id=unit_id, found=0, reached=True,
                                  link_error=None))
    return [m[0] for m in re.finditer(r"progress: (\d+) of (\d+) .* about (\d+) s left",
                                      stream.getvalue())]


def test_time_left_is_never_0_while_ids_remain_and_falls_with_a_steady_pace() -> None:
    # 50 ms an id (an empty bus at --timeout 50): 0.9 s left after the second id, 0.5 s after
    # the tenth, which said "about 0 s left" with ten ids to go.
    lines = _plain_lines([0.05] * 20)
    lefts = []
    for line in lines:
        match = re.search(r"progress: (\d+) of (\d+) .* about (\d+) s left", line)
        assert match is not None
        done, total, left = (int(g) for g in match.groups())
        assert left >= 1 or done == total, lines
        lefts.append(left)
    assert lefts == sorted(lefts, reverse=True), lines
    assert lefts[-1] == 0 and len(lefts) == 10
    # A slower pace is said (2.5 s an id, 5 ids: 10 s, 7.5 s ... rounded up).
    assert [re.sub(r".* about ", "", x) for x in _plain_lines([2.5] * 5)] == [
        "10 s left", "8 s left", "5 s left", "3 s left", "0 s left"]
