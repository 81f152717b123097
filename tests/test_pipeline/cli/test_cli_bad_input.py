"""Every `sunpm` command given bad arguments, paths and files: a clear message naming what is
wrong, a non-zero exit, never a Python traceback.

Each case runs the installed command as a child process. Placeholders filled in per test:
`{missing}`, `{file}` (a text file), `{random}` (random bytes), `{dir}`, `{site}` (a valid
configuration, no server), `{nul_site}` (a script name holding a NUL byte), `{serial_site}`
(SERIAL1 on a device that does not exist), `{closed}` (a TCP port nobody listens on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser

SUNPM = str(Path(sys.executable).parent / "sunpm")

#: (arguments, exit code, text the message must hold)
CASES: list[tuple[list[str], int, str]] = [
    ([], 2, "the following arguments are required: COMMAND"),
    (["nope"], 2, "invalid choice: 'nope'"),
    # config
    (["config", "init", "{file}"], 2, "sunpm config init: {file}: exists and is not a directory"),
    (["config", "init", "{file}/site"], 2, "sunpm config init: {file}/site/CONFIG: Not a directory"),
    (["config", "init", "{dir}/site", "--uid", "bad uid"], 2,
     "uid 'bad uid' is not 1..32 of A-Z a-z 0-9 -"),
    (["config", "init"], 2, "the following arguments are required: DIR"),
    (["config", "validate", "{missing}"], 2, "sunpm config validate: {missing}: no such directory"),
    (["config", "validate", "{file}"], 2, "sunpm config validate: {file}: not a directory"),
    (["config", "show", "{missing}"], 2, "sunpm config show: {missing}: no such directory"),
    (["config", "show", "{random}", "--json"], 2, "sunpm config show: {random}: not a directory"),
    # A directory that is no configuration tree is a configuration rejected (docs/cli.md).
    (["config", "validate", "{dir}"], 1, "{dir}: no CONFIG/ folder (not a configuration directory)"),
    (["config", "show", "{dir}"], 1, "{dir}: no CONFIG/ folder (not a configuration directory)"),
    (["config", "validate", "{site}", "--uid", "../x"], 2,
     "sunpm config validate: uid '../x' is not 1..32 of A-Z a-z 0-9 -"),
    (["config", "show", "{site}", "--uid", "U_1", "--json"], 2,
     "sunpm config show: uid 'U_1' is not 1..32 of A-Z a-z 0-9 -"),
    (["config", "validate", "{nul_site}"], 1,
     "U1_scl.ini:1: SCRIPT_File[0]: '\\x00est.lua' holds a control character"),
    (["config", "show", "{nul_site}"], 1,
     "U1_scl.ini:1: SCRIPT_File[0]: '\\x00est.lua' holds a control character"),
    # export
    (["export", "--server", "1", "--from", "yesterday", "--to", "2021-01-02", "--out", "{dir}"], 2,
     "'yesterday' is not an ISO 8601 date or time"),
    (["export", "--server", "3", "--from", "2021-01-01", "--to", "2021-01-02", "--out", "{dir}"], 2,
     "argument --server: invalid choice: 3"),
    (["export", "--server", "1", "--from", "2021-01-02", "--to", "2021-01-01", "--out", "{dir}",
      "--config", "{site}"], 2, "sunpm export: --to must be after --from"),
    (["export", "--server", "1", "--from", "2021-01-01", "--to", "2021-01-02", "--out", "{dir}",
      "--config", "{missing}"], 2, "sunpm export: {missing}: no such directory"),
    (["export", "--server", "1", "--from", "2021-01-01", "--to", "2021-01-02", "--out", "{dir}",
      "--config", "{file}"], 2, "sunpm export: {file}: not a directory"),
    (["export", "--server", "1", "--from", "2021-01-01", "--to", "2021-01-02", "--out", "{dir}",
      "--config", "{dir}"], 1, "sunpm export: {dir}: no CONFIG/ folder"),
    (["export", "--server", "1", "--from", "2021-01-01", "--to", "2021-01-02", "--out", "{dir}",
      "--config", "{site}"], 1, "sunpm export: server 1 is not configured (SERVER_Type=none)"),
    # discover
    (["discover"], 2, "sunpm discover: nothing to scan: give --ip"),
    (["discover", "--ip", "127.0.0.1", "--first", "0"], 2, "--first 0 is outside 1..240"),
    (["discover", "--ip", "127.0.0.1", "--port", "0"], 2, "--port 0 is outside 1..65535"),
    (["discover", "--ip", "127.0.0.1", "--timeout", "-5"], 2, "--timeout -5 is below 1 ms"),
    (["discover", "--ip", "127.0.0.1", "--last", "x"], 2, "argument --last: invalid int value"),
    (["discover", "--ip", "127.0.0.1", "--config", "{site}", "--import", "--write-defs",
      "{dir}/defs"], 2,
     "sunpm discover: --write-defs cannot go with --import, which writes the files to --config's "
     "DEF/"),
    (["discover", "--protocol", "tic", "--tic-port", "/dev/ttyNOPE0", "--config", "{site}",
      "--import", "--write-defs", "{dir}/defs"], 2,
     "sunpm discover: --write-defs cannot go with --import"),
    (["discover", "--ip", "localhost", "--config", "{site}", "--import"], 2,
     "sunpm discover: --ip 'localhost' is not an IPv4 address"),
    (["discover", "--ip", "127.0.0.1", "--uid", "../x", "--write-defs", "{dir}"], 2,
     "sunpm discover: uid '../x' is not 1..32 of A-Z a-z 0-9 -"),
    (["discover", "--ip", "127.0.0.1", "--config", "{missing}"], 2,
     "{missing}: directory: no such directory"),
    (["discover", "--ip", "127.0.0.1", "--write-defs", "{file}"], 2,
     "--write-defs {file}: exists and is not a directory"),
    (["discover", "--ip", "127.0.0.1", "--write-defs", "{file}/defs"], 2,
     "--write-defs {file}/defs: Not a directory"),
    (["discover", "--interface", "serial1", "--config", "{site}"], 2,
     "sunpm discover: serial1 has no path"),
    (["discover", "--ip", "127.0.0.1", "--port", "{closed}", "--last", "3", "--timeout", "50"], 1,
     "sunpm discover: nothing could be reached on ethernet1: 127.0.0.1:{closed}: cannot connect "
     "(Connection refused)\n"),
    (["discover", "--interface", "serial1", "--config", "{serial_site}", "--last", "3",
      "--timeout", "50"], 1,
     "sunpm discover: nothing could be reached on serial1: serial1: cannot open /dev/ttyNOPE0"),
    (["discover", "--protocol", "tic"], 2, "sunpm discover: TIC_Port is not set"),
    (["discover", "--protocol", "tic", "--tic-port", "{file}"], 1,
     "sunpm discover: nothing could be reached: {file}: cannot open: not a serial device"),
    # tic decode
    (["tic", "decode"], 2, "sunpm tic decode: give either FILE or --port DEV"),
    (["tic", "decode", "{missing}"], 1, "sunpm tic decode: {missing}: No such file or directory"),
    (["tic", "decode", "{dir}"], 1, "sunpm tic decode: {dir}: Is a directory"),
    (["tic", "decode", "{random}"], 1, "sunpm tic decode: {random}: no TIC frame found"),
    (["tic", "decode", "{file}", "--json"], 1, "sunpm tic decode: {file}: no TIC frame found"),
    (["tic", "decode", "{file}", "--frames", "1", "--speed", "9600"], 2,
     "sunpm tic decode: --speed, --frames: for --port only, not a FILE"),
    (["tic", "decode", "--port", "{file}"], 2, "{file}: cannot open: not a serial device"),
    (["tic", "decode", "--port", "{missing}"], 2, "{missing}: cannot open: No such file"),
    (["tic", "decode", "{file}", "--frames", "-1"], 2, "cannot be negative"),
    (["tic", "decode", "--port", "{file}", "--speed", "300"], 2, "argument --speed: invalid choice"),
    # run
    (["run", "--config", "{missing}", "--data", "{dir}/run"], 2,
     "sunpm run: {missing}: configuration rejected"),
    (["run", "--data", "{file}"], 2, "sunpm run: --data {file}: exists and is not a directory"),
    (["run", "--log-level", "loud"], 2, "argument --log-level: invalid choice: 'loud'"),
    (["run", "--web-port", "70000"], 2, "argument --web-port: '70000' is not a port (0..65535)"),
    (["run", "--web-port", "http"], 2, "argument --web-port: 'http' is not a port (0..65535)"),
    # cmd
    (["cmd"], 2, "the following arguments are required: NAME\n"),   # KEY=VALUE is optional
    (["cmd", "status", "--data", "{missing}"], 2,
     "sunpm cmd: {missing}/sunpm.sock: cannot reach the gateway"),
    (["cmd", "status", "--data", "{file}"], 2, "cannot reach the gateway (Not a directory)"),
    # An unknown built-in is named as typed, not as the gateway runs it (`sunpm.nosuch`), and
    # before any gateway is needed.
    (["cmd", "nosuch", "--data", "{missing}"], 2,
     "sunpm cmd: unknown command 'nosuch' (built-ins: connect, status, factory, reboot, "
     "updateFirmware, apn, ftp, log, setRelay, discoverDevices, getParameters, writeVariable)"),
    (["cmd", "stauts", "--data", "{missing}"], 2,
     "sunpm cmd: unknown command 'stauts' (did you mean status?)"),
    (["cmd", "sunpm.getparameter", "--data", "{missing}"], 2,
     "sunpm cmd: unknown command 'sunpm.getparameter' (did you mean getParameters?)"),
    (["archive", "--data", "{missing}"], 2,
     "sunpm archive: {missing}/sunpm.sock: cannot reach the gateway"),
    (["archive", "--data", "{file}"], 2, "cannot reach the gateway (Not a directory)"),
    (["archive", "extra"], 2, "unrecognized arguments: extra"),
    # sd, ingest
    (["sd", "inspect", "{missing}"], 2, "sunpm sd inspect: {missing}: no such directory"),
    (["sd", "inspect", "{dir}"], 2, "sunpm sd inspect: {dir}: not a sunpm store"),
    (["sd", "fsck", "{file}"], 2, "sunpm sd fsck: {file}: not a directory"),
    (["sd", "fsck", "{dir}"], 2, "sunpm sd fsck: {dir}: not a sunpm store"),
    (["sd", "sql", "{missing}", "SELECT 1"], 2, "sunpm sd sql: {missing}: no such directory"),
    (["sd", "serve", "{missing}"], 2, "sunpm sd serve: {missing}: no such directory"),
    (["sd", "serve", "{file}"], 2, "sunpm sd serve: {file}: not a directory"),
    (["sd", "serve", "{dir}", "--memory-mb", "-1"], 2, "sunpm sd serve: --memory-mb must be 0"),
    (["sd", "serve", "{dir}", "--idle-minutes", "soon"], 2,
     "argument --idle-minutes: soon: minutes from above 0 to 10080 (a week)"),
    (["sd", "sql", "{dir}", "SELECT 1"], 2, "sunpm sd sql: {dir}: not a sunpm store"),
    (["sd", "reexport", "{missing}", "--from", "2021-01-01", "--to", "2021-01-02", "--server",
      "1", "--out", "{dir}/re"], 2, "sunpm sd reexport: {missing}: no such directory"),
    (["sd", "reexport", "{dir}", "--from", "yesterday", "--to", "2021-01-02", "--server", "1",
      "--out", "{dir}/re"], 2, "'yesterday' is not an ISO 8601 date or time"),
    (["sd", "export-parquet", "{file}", "{dir}/pq"], 2,
     "sunpm sd export-parquet: {file}: not a directory"),
    (["sd", "export-parquet", "{missing}", "{dir}/pq"], 2,
     "sunpm sd export-parquet: {missing}: no such directory"),
    (["ingest", "{missing}", "{dir}/pq"], 1, "sunpm ingest: {missing}: no such directory"),
    (["ingest", "{file}", "{dir}/pq"], 1, "sunpm ingest: {file}: not a directory"),
    # modbus read
    (["modbus", "read", "127.0.0.1"], 2, "the following arguments are required: --def"),
    (["modbus", "read", "127.0.0.1", "--def", "{missing}"], 2,
     "sunpm modbus read: {missing}: No such file or directory"),
    (["modbus", "read", "127.0.0.1", "--def", "{dir}"], 2, "sunpm modbus read: {dir}: Is a directory"),
    (["modbus", "read", "127.0.0.1", "--def", "{random}"], 2, "random.bin:1: encoding: not valid UTF-8"),
    (["modbus", "read", "127.0.0.1", "--def", "{file}"], 2,
     "notes.txt:1: Protocol: 'hello' is not modbusRTU, modbusTCP, io or tic"),
    (["modbus", "read", "127.0.0.1", "--def", "{site}/DEF/U1_IO.csv"], 2,
     "U1_IO.csv: protocol 'io' is not Modbus"),
    (["modbus", "read", "127.0.0.1:99999", "--def", "{modbus_def}"], 2,
     "'99999' is not a TCP port (1..65535)"),
    (["modbus", "read", "127.0.0.1:\u00b2", "--def", "{modbus_def}"], 2,
     "'\u00b2' is not a TCP port (1..65535)"),
    (["modbus", "read", "127.0.0.1:\uff15\uff10\uff12", "--def", "{modbus_def}"], 2,
     "'\uff15\uff10\uff12' is not a TCP port (1..65535)"),
    (["modbus", "read", "127.0.0.1:" + "0" * 5000 + "65536", "--def", "{modbus_def}"], 2,
     "'0000000000000000000000000000000000000000' is not a TCP port (1..65535)"),
    (["modbus", "read", ":502", "--def", "{modbus_def}"], 2, "':502' names no host"),
    (["modbus", "read", "127.0.0.1", "--def", "{modbus_def}", "--unit", "300"], 2,
     "--unit 300 is outside 1..240"),
    (["modbus", "read", "127.0.0.1", "--def", "{modbus_def}", "--unit", "0"], 2,
     "--unit 0 is outside 1..240"),
    (["modbus", "read", "127.0.0.1", "--def", "{modbus_def}", "--max-gap", "125"], 2,
     "--max-gap 125 is outside 0..124"),
    (["modbus", "read", "127.0.0.1", "--def", "{modbus_def}", "--timeout", "0"], 2,
     "--timeout 0 is below 1 ms"),
    (["modbus", "read", "127.0.0.1", "--def", "{modbus_def}", "--watch", "0"], 2,
     "--watch 0 is not a positive number of seconds"),
    (["modbus", "read", "127.0.0.1:{closed}", "--def", "{modbus_def}", "--timeout", "50"], 1,
     "sunpm modbus read: connection to 127.0.0.1:{closed} failed (Connection refused)"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad")
    (root / "notes.txt").write_text("hello\n")
    (root / "random.bin").write_bytes(bytes.fromhex("02b3ff0a0d03") + os.urandom(600))
    (root / "dir").mkdir()
    (root / "T1.csv").write_text("modbusTCP;Inverter;Test;T1\n1;3;40000;U16;;Power;;1;0;W;4\n")
    site = root / "site"
    from pipeline.cli import main

    assert main(["config", "init", str(site), "--uid", "U1"]) == 0
    nul_site = root / "nul_site"
    assert main(["config", "init", str(nul_site), "--uid", "U1"]) == 0
    with (nul_site / "CONFIG" / "U1_scl.ini").open("ab") as scl:
        scl.write(b"SCRIPT_File[0]=\x00est.lua\n")       # a name no file can have
    serial_site = root / "serial_site"
    assert main(["config", "init", str(serial_site), "--uid", "U1"]) == 0
    daq = serial_site / "CONFIG" / "U1_daq.csv"
    daq.write_text("port;speed;dataBits;parity;stopBits;wires;protocol;interFrameMs;"
                   "forwardTcpPort;path\nSERIAL1;9600;8;N;1;2;modbusRTU;0;;/dev/ttyNOPE0\n"
                   + daq.read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = str(sock.getsockname()[1])
    return {"missing": str(root / "missing"), "file": str(root / "notes.txt"),
            "random": str(root / "random.bin"), "dir": str(root / "dir"), "site": str(site),
            "closed": closed, "modbus_def": str(root / "T1.csv"), "nul_site": str(nul_site),
            "serial_site": str(serial_site)}


def _commands(parser: argparse.ArgumentParser) -> set[tuple[str, ...]]:
    """Every leaf command of the parser (`config init`, `discover` …)."""
    found: set[tuple[str, ...]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                inner = _commands(sub)
                found |= {(name, *rest) for rest in inner} if inner else {(name,)}
    return found


def test_every_command_has_bad_input_cases() -> None:
    covered = {tuple(args[:2]) for args, _, _ in CASES} | {tuple(args[:1]) for args, _, _ in CASES}
    missing = sorted(" ".join(c) for c in _commands(build_parser()) if c not in covered)
    assert missing == [], f"add bad-input cases for: {missing}"


@pytest.mark.parametrize(("args", "code", "message"), CASES,
                         ids=[" ".join(c[0])[:100] or "(nothing)" for c in CASES])
async def test_bad_input_gets_a_message_and_an_exit_code_never_a_traceback(
        places: dict[str, str], args: list[str], code: int, message: str) -> None:
    argv = [a.format(**places) for a in args]
    proc = await asyncio.create_subprocess_exec(SUNPM, *argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(60):
            out_b, err_b = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out, err = out_b.decode(), err_b.decode()
    assert "Traceback" not in out + err, err
    assert proc.returncode == code, (out, err)
    # Problems found in files are the command's output (`config validate`, `modbus read`'s
    # summary); everything else is on stderr.
    assert message.format(**places) in out + err, (out, err)
    assert err.strip(), "a failure always says something on stderr"
