"""A script RPC through a command file, end to end (docs/behaviour.md §9.4, docs/formats.md §12):
`sunpm run` with a Lua script listed in scl.ini fetches `/CMD/<uid>_cmd.json` from a real FTP
server at a session, runs `test.testFunction` in the script, and the next session uploads the ACK
file with the script's answer and the standard errors of an unknown function and script. A debug
archive asked for with `sunpm archive` goes to `/LOG` with the session after it, and the newest
update package offered in `/BIN` is staged (its MD5 checked) and installed once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import tarfile
import time
from pathlib import Path

import pytest
from e2e_support import UID, edit_config, make_tree, sunpm
from peers import make_certs, run_peer
from service_support import STOP_LIMIT_S, start, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_task_left_behind")]

SCRIPT = b"""header = { version = "1.0", label = "RPC test", name = "test" }
local calls = 0
function testFunction(p)
  calls = calls + 1
  return { value = 42, question = p.text, calls = calls }
end
"""
CALLER = "3d9311ed-0076-4f28-ac59-a2debfa35b86"


async def test_script_rpc_through_a_command_file(tmp_path: Path) -> None:
    ftp_root = make_tree(tmp_path / "ftp")
    cfg, data = tmp_path / "cfg", tmp_path / "data"
    assert (await sunpm("config", "init", str(cfg), "--uid", UID)).code == 0
    (cfg / "SCRIPT" / "rpc test.lua").write_bytes(SCRIPT)
    (cfg / "CONFIG" / f"{UID}_scl.ini").write_bytes(b"SCRIPT_File[0]=rpc test.lua\n")
    (ftp_root / "CMD" / f"{UID}_cmd.json").write_text(json.dumps([
        {"rpcName": "test.testFunction", "parameters": {"text": "what is the answer ?"},
         "callerId": CALLER},
        {"rpcName": "test.nope", "callerId": "c-2"},
        {"rpcName": "foo.bar", "callerId": "c-3"},
        {"rpcName": "test.testFunction", "parameters": {"text": "again"}, "callerId": CALLER}]))
    # An update offered in /BIN (newer than any running version, with its MD5), and an older one.
    package = b"an update package\n" * 500
    (ftp_root / "BIN" / "wgapp_99.0.0.spm").write_bytes(package)
    (ftp_root / "BIN" / "wgapp_99.0.0.spm.md5").write_text(
        f"{hashlib.md5(package).hexdigest()}  wgapp_99.0.0.spm\n")
    (ftp_root / "BIN" / "wgapp_0.0.1.spm").write_bytes(b"old")
    installed = tmp_path / "installed.spm"
    with run_peer("ftp", ftp_root, make_certs(tmp_path / "certs")) as ftp:
        edit_config(cfg, {"SERVER_Type": "ftp", "FTP_Host": "127.0.0.1", "FTP_Port": str(ftp.port),
                          "FTP_User": "sunpm", "FTP_Password": "secret",
                          "STORE_Path": str(tmp_path / "store"), "NTP_Server1": "",
                          "NTP_Server2": "",
                          "SYSTEM_UpdateCommand": f"/bin/sh -c 'cp \"$0\" {installed}'"})
        check = await sunpm("config", "validate", str(cfg))
        assert check.code == 0, check.out + check.err
        service = await start(["--config", str(cfg), "--data", str(data)], tmp_path / "logs")
        try:
            await wait_until(service.logged("sunpm started"), 30, "start line", service)
            # The debug archive, asked for now, goes to /LOG with the next session.
            made = await sunpm("archive", "--data", str(data))
            assert made.code == 0, made.err
            archive = Path(made.out.strip())
            assert archive.parent == data / "archives" and archive.is_file()
            assert archive.name.startswith(f"{UID}_SYSTEME_") and archive.name.endswith(".tar.gz")
            assert (await sunpm("cmd", "connect", "--data", str(data))).code == 0
            await wait_until(service.logged("Command repeated; its stored answer is sent again"),
                             30, "the command file run", service)
            assert not (ftp_root / "CMD" / f"{UID}_cmd.json").exists()
            # A session's cut is its start truncated to the second: results journaled in this
            # second go with a session that starts in the next one.
            await asyncio.sleep(1.05 - time.time() % 1)
            assert (await sunpm("cmd", "connect", "--data", str(data))).code == 0
            await wait_until(lambda: any((ftp_root / "CMD").glob(f"{UID}_ACK_*.json")), 30,
                             "the ACK file", service)
            await wait_until(lambda: (ftp_root / "LOG" / archive.name).is_file(), 30,
                             "the debug archive on the server", service)
            assert not archive.exists()
            await wait_until(installed.exists, 20, "the /BIN update installed", service)
        finally:
            code, took = await service.stop(signal.SIGINT)
        assert code == 0 and took < STOP_LIMIT_S, service.stderr[-3000:]
    with tarfile.open(ftp_root / "LOG" / archive.name) as tar:
        names = tar.getnames()
        status = json.loads(tar.extractfile("status.json").read())  # type: ignore[union-attr]
        log_text = tar.extractfile("log.txt").read().decode()  # type: ignore[union-attr]
        script = tar.extractfile("config/SCRIPT/rpc test.lua").read()  # type: ignore[union-attr]
    assert f"config/CONFIG/{UID}_config.ini" in names and script == SCRIPT
    assert status["uid"] == UID
    assert " INFO system: sunpm started." in log_text
    # The newest package was staged and installed once (two sessions, one install).
    assert installed.read_bytes() == package
    assert service.stderr.count("update 99.0.0 staged from /BIN") == 1
    assert (data / "update" / "wgapp_99.0.0.spm").read_bytes() == package
    (ack,) = (ftp_root / "CMD").glob(f"{UID}_ACK_*.json")
    text = ack.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    # The repeated callerId is answered again from the journal, not run a second time.
    assert json.loads(text) == [
        {"result": {"value": 42, "question": "what is the answer ?", "calls": 1},
         "callerId": CALLER},
        {"error": "unknown function 'test.nope'", "callerId": "c-2"},
        {"error": "unknown script 'foo'", "callerId": "c-3"},
        {"result": {"value": 42, "question": "what is the answer ?", "calls": 1},
         "callerId": CALLER}]
