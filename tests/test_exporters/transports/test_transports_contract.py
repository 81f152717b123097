"""The file-transport contract, run against every transport and a real peer on 127.0.0.1."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from transport_support import Target

from exporters.transports import Failure, FileTransport, TransportError
from exporters.transports._base import DownloadTooLarge

NAME = "WPM00C44F_IO_210202_084443.csv.gz"
PATH = f"/DATA/{NAME}"


@pytest.mark.parametrize("two_step", [True, False])
async def test_uploaded_bytes_land_under_the_final_name(target: Target,
                                                        connected: FileTransport,
                                                        two_step: bool) -> None:
    data = os.urandom(70_000)
    await connected.upload(PATH, data, two_step=two_step)
    assert (target.tree / "DATA" / NAME).read_bytes() == data
    assert sorted(p.name for p in (target.tree / "DATA").iterdir()) == [NAME]
    assert await connected.download(PATH) == data


@pytest.mark.parametrize("two_step", [True, False])
async def test_upload_replaces_an_existing_final_name(target: Target, connected: FileTransport,
                                                      two_step: bool) -> None:
    (target.tree / "DATA" / NAME).write_bytes(b"old content, longer than the new one" * 100)
    await connected.upload(PATH, b"new", two_step=two_step)
    assert (target.tree / "DATA" / NAME).read_bytes() == b"new"
    assert not (target.tree / "DATA" / (NAME + ".tmp")).exists()


async def test_a_stale_tmp_from_an_earlier_cut_upload_is_overwritten(
        target: Target, connected: FileTransport) -> None:
    (target.tree / "DATA" / (NAME + ".tmp")).write_bytes(b"partial" * 1000)
    await connected.upload(PATH, b"complete", two_step=True)
    assert (target.tree / "DATA" / NAME).read_bytes() == b"complete"
    assert not (target.tree / "DATA" / (NAME + ".tmp")).exists()


async def test_a_one_step_upload_after_a_cut_one_deletes_the_stale_tmp(
        target: Target, connected: FileTransport) -> None:
    (target.tree / "DATA" / (NAME + ".tmp")).write_bytes(b"partial" * 1000)
    await connected.upload(PATH, b"complete", two_step=False, after_cut=True)
    assert sorted(p.name for p in (target.tree / "DATA").iterdir()) == [NAME]
    assert (target.tree / "DATA" / NAME).read_bytes() == b"complete"


async def test_a_plain_one_step_upload_leaves_other_names_alone(
        target: Target, connected: FileTransport) -> None:
    # No delete is tried: the `.tmp` of another session's two-step upload stays untouched
    # (the `dir` transport is always two-step and always replaces its own `.tmp`).
    (target.tree / "DATA" / (NAME + ".tmp")).write_bytes(b"partial" * 1000)
    await connected.upload(PATH, b"complete", two_step=False)
    assert (target.tree / "DATA" / NAME).read_bytes() == b"complete"
    assert (target.tree / "DATA" / (NAME + ".tmp")).exists() == (target.kind != "dir")


async def test_size_is_the_byte_count_or_none_when_absent(target: Target,
                                                          connected: FileTransport) -> None:
    (target.tree / "DATA" / NAME).write_bytes(b"x" * 1234)
    (target.tree / "DATA" / "empty.csv.gz").write_bytes(b"")
    assert await connected.size(PATH) == 1234
    assert await connected.size("/DATA/empty.csv.gz") == 0
    assert await connected.size("/DATA/absent.csv.gz") is None
    assert await connected.size("/NOPE/absent.csv.gz") is None


async def test_list_gives_files_with_sizes_and_leaves_directories_out(
        target: Target, connected: FileTransport) -> None:
    (target.tree / "CONFIG" / "b_config.ini").write_bytes(b"KEY=1\n")
    (target.tree / "CONFIG" / "a_daq.csv").write_bytes(b"x" * 300)
    (target.tree / "CONFIG" / "sub").mkdir()
    listing = await connected.list("/CONFIG")
    assert [(f.name, f.size) for f in listing] == [("a_daq.csv", 300), ("b_config.ini", 6)]
    mtime = (target.tree / "CONFIG" / "a_daq.csv").stat().st_mtime
    assert listing[0].mtime_s is not None and abs(listing[0].mtime_s - mtime) < 2.0
    assert await connected.list("/DATA") == []


async def test_download_returns_the_whole_file(target: Target, connected: FileTransport) -> None:
    data = os.urandom(300_000)
    (target.tree / "CMD" / "WPM00C44F_cmd.json").write_bytes(data)
    assert await connected.download("/CMD/WPM00C44F_cmd.json") == data


async def test_download_to_writes_the_file_as_it_arrives_within_its_cap(
        target: Target, connected: FileTransport, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (target.tree / "BIN").mkdir(exist_ok=True)
    (target.tree / "BIN" / "wgapp_9.spm").write_bytes(data)
    with (tmp_path / "package").open("wb") as out:
        assert await connected.download_to("/BIN/wgapp_9.spm", out) == len(data)
    assert (tmp_path / "package").read_bytes() == data
    with (tmp_path / "cut").open("wb") as out, pytest.raises(DownloadTooLarge):
        await connected.download_to("/BIN/wgapp_9.spm", out, max_bytes=100_000)
    assert (tmp_path / "cut").stat().st_size <= 100_000
    assert await connected.download_to("/BIN/wgapp_9.spm", io.BytesIO()) == len(data)


async def test_names_with_spaces_and_percent_signs_round_trip(target: Target,
                                                               connected: FileTransport) -> None:
    await connected.upload("/SCRIPT/my script 100%.lua", b"-- lua\n", two_step=True)
    assert (target.tree / "SCRIPT" / "my script 100%.lua").read_bytes() == b"-- lua\n"
    assert [f.name for f in await connected.list("/SCRIPT")] == ["my script 100%.lua"]
    assert await connected.size("/SCRIPT/my script 100%.lua") == 7


async def test_delete_removes_the_file(target: Target, connected: FileTransport) -> None:
    (target.tree / "CMD" / "WPM00C44F_cmd.json").write_bytes(b"[]")
    await connected.delete("/CMD/WPM00C44F_cmd.json")
    assert not (target.tree / "CMD" / "WPM00C44F_cmd.json").exists()


async def test_deleting_an_absent_file_is_refused(connected: FileTransport) -> None:
    with pytest.raises(TransportError) as caught:
        await connected.delete("/CMD/absent.json")
    assert caught.value.failure is Failure.REFUSED and not caught.value.retriable


async def test_upload_into_a_missing_directory_is_refused_naming_it(
        target: Target, connected: FileTransport) -> None:
    with pytest.raises(TransportError) as caught:
        await connected.upload("/NOPE/" + NAME, b"data", two_step=True)
    err = caught.value
    assert str(err).startswith("server 1: /NOPE: upload refused (")
    assert err.failure is Failure.REFUSED and not err.retriable
    assert not (target.tree / "NOPE").exists()


async def test_missing_tree_root_is_refused_at_connect(target: Target) -> None:
    if target.kind == "dir":
        transport = target.transport(dir_path=str(target.tree / "absent"))
    elif target.kind == "webdav":
        transport = target.transport(http_url=target.settings.http_url + "/absent")
    else:
        transport = target.transport(root_dir=target.settings.root_dir + "/absent")
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    assert caught.value.failure is Failure.REFUSED and not caught.value.retriable
    assert str(caught.value).startswith("server 1: /: connect refused (")


async def test_directory_without_write_right_is_refused_not_retriable(target: Target) -> None:
    if target.kind == "dir":
        transport = target.transport()
        locked = _lock_directory(target.tree / "LOG")
    elif target.kind == "webdav":
        origin, tree_name = target.settings.http_url.rsplit("/", 1)
        transport = target.transport(http_url=f"{origin}/ro/{tree_name}")
        locked = None
    else:
        transport = target.transport(user="reader")
        locked = None
    await transport.connect()
    try:
        with pytest.raises(TransportError) as caught:
            await transport.upload("/LOG/WPM00C44F_LOG_210202_084443.log.gz", b"log",
                                   two_step=True)
    finally:
        await transport.close()
        if locked is not None:
            locked()
    err = caught.value
    assert str(err).startswith("server 1: /LOG: upload refused (")
    assert err.failure is Failure.REFUSED and not err.retriable
    assert list((target.tree / "LOG").iterdir()) == []


def _lock_directory(folder: os.PathLike[str]) -> Callable[[], object]:
    """Make `folder` unwritable even for root (the immutable attribute); returns the undo."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return lambda: os.chmod(folder, 0o755)
    done = subprocess.run(["chattr", "+i", os.fspath(folder)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot make a read-only directory as root: {done.stderr.strip()}")
    return lambda: subprocess.run(["chattr", "-i", os.fspath(folder)], check=True)


async def test_wrong_password_is_an_authentication_failure(network_target: Target) -> None:
    transport = network_target.transport(password="wrong")
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    assert caught.value.failure is Failure.AUTHENTICATION and not caught.value.retriable


async def test_operations_before_connect_fail_cleanly(network_target: Target) -> None:
    transport = network_target.transport()
    with pytest.raises(TransportError) as caught:
        await transport.size(PATH)
    assert caught.value.retriable


async def test_paths_leaving_the_tree_are_rejected(connected: FileTransport) -> None:
    for bad in ("DATA/x", "/DATA/../../etc/passwd", "/DATA//x"):
        with pytest.raises(TransportError) as caught:
            await connected.upload(bad, b"x", two_step=True)
        assert not caught.value.retriable


async def test_close_twice_and_reconnect_work(target: Target) -> None:
    transport = target.transport()
    await transport.connect()
    await transport.close()
    await transport.close()
    await transport.connect()
    await transport.upload(PATH, b"again", two_step=True)
    await transport.close()
    assert (target.tree / "DATA" / NAME).read_bytes() == b"again"


async def test_listing_a_missing_directory_is_refused_naming_it(connected: FileTransport) -> None:
    with pytest.raises(TransportError) as caught:
        await connected.list("/NOPE")
    assert caught.value.failure is Failure.REFUSED and not caught.value.retriable
    assert str(caught.value).startswith("server 1: /NOPE: list refused (")


async def test_downloading_an_absent_file_is_refused(connected: FileTransport) -> None:
    with pytest.raises(TransportError) as caught:
        await connected.download("/CMD/WPM00C44F_cmd.json")
    assert caught.value.failure is Failure.REFUSED and not caught.value.retriable
    assert str(caught.value).startswith("server 1: /CMD: download refused (")


@pytest.mark.parametrize("two_step", [True, False])
async def test_an_empty_file_uploads_as_an_empty_file(target: Target, connected: FileTransport,
                                                      two_step: bool) -> None:
    await connected.upload("/CMD/WPM00C44F_ACK_210202_084443.json", b"", two_step=two_step)
    assert (target.tree / "CMD" / "WPM00C44F_ACK_210202_084443.json").read_bytes() == b""
    assert await connected.size("/CMD/WPM00C44F_ACK_210202_084443.json") == 0
