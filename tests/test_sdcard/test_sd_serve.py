"""`sunpm sd serve PATH`: a dump kept open for `sunpm sd sql`, whose answers through it are the
ones a process of its own gives, byte for byte (output, messages, exit code), however the dump
changes between questions; a server of another user, dump or code is never asked."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from plant import Plant, first_line_then_gone, hashes
from test_sd_damage import _sealed, flipped_byte

from store import _memo

ROOT = Path(__file__).resolve().parents[2]
COUNT = "SELECT device, count(*) AS n, sum(raw) AS s FROM records GROUP BY ALL ORDER BY ALL"


class _Server:
    def __init__(self, dump: Path, run: Path, *extra: str, cwd: Path = ROOT) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "sd", "serve", str(dump), *extra],
            stderr=subprocess.PIPE, text=True, cwd=cwd, env=_env(run))
        assert self.process.stderr is not None
        self.first_line = self.process.stderr.readline()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        assert self.process.stderr is not None
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()  # never left running by a failed test
            self.process.wait(timeout=30)
            raise
        self.rest = self.process.stderr.read()
        self.process.stderr.close()
        return code


def _env(run: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(run)}


@pytest.fixture
def runtime() -> Iterator[Path]:
    """An XDG_RUNTIME_DIR of the test's own, short enough for a socket path (107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="sd", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


#: Questions asked through a server, by runtime folder: each must be one it answered.
_ASKED: dict[Path, int] = {}


@pytest.fixture
def served(dump_copy: Path, runtime: Path) -> Iterator[tuple[Path, Path]]:
    run = runtime
    server = _Server(dump_copy, run)
    assert "open for `sunpm sd sql`" in server.first_line, server.first_line
    yield dump_copy, run
    assert server.stop() == 0
    assert server.process.stderr is not None
    said = server.rest
    assert said.count("sunpm sd serve: answered in") == _ASKED.pop(run, 0), said


def _sql(dump: Path, run: Path, query: str, *extra: str, cwd: Path = ROOT,
         served: bool = True) -> subprocess.CompletedProcess[str]:
    if served and "--no-server" not in extra:
        _ASKED[run] = _ASKED.get(run, 0) + 1
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "sd", "sql", str(dump), query,
                           "--format", "csv", *extra], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=_env(run), check=False)


def _same(dump: Path, run: Path, query: str, cwd: Path = ROOT,
          served: bool = True) -> subprocess.CompletedProcess[str]:
    """The question through the server and in a process of its own: the same in every byte."""
    through = _sql(dump, run, query, cwd=cwd, served=served)
    alone = _sql(dump, run, query, "--no-server", cwd=cwd)
    assert (through.returncode, through.stdout, through.stderr) == \
        (alone.returncode, alone.stdout, alone.stderr)
    return through


def _socket(run: Path) -> list[Path]:
    return list(run.glob("sunpm-sd-*/*.sock"))


def test_answers_through_the_server_are_those_of_a_process_of_its_own(
        served: tuple[Path, Path]) -> None:
    dump, run = served
    before = hashes(dump)
    for query in (COUNT, COUNT,  # the second from what the first kept
                  # Rounded: DuckDB's threads sum in any order, and a double's last digits
                  # differ from one process of its own to the next.
                  "SELECT name, unit, round(avg(scaled), 6) AS mean FROM records WHERE var = 2 "
                  "GROUP BY ALL ORDER BY ALL",
                  "SELECT kind, count(*) AS n FROM journal GROUP BY ALL ORDER BY ALL",
                  "SELECT no_such_column FROM records",
                  "COPY (SELECT 1) TO 'x.csv'",
                  "-- nothing"):
        _same(dump, run, query)
    assert _same(dump, run, COUNT).stdout.count("\n") == 3
    assert _same(dump, run, "SELECT no_such_column FROM records").returncode == 1
    assert hashes(dump) == before


def test_a_question_a_server_answers_is_asked_before_the_parser_loads(
        served: tuple[Path, Path]) -> None:
    dump, run = served
    # The console script's own process (`main()` of its argv), telling which of the parser's
    # and the command's modules it loaded.
    probe = ("import sys; from pipeline.cli import main; code = main(); "
             "print(sorted({'argparse', 'json', 'pipeline.cli.sd', 'pipeline.cli._sd_server'}"
             " & set(sys.modules)), file=sys.stderr); sys.exit(code)")
    _ASKED[run] = _ASKED.get(run, 0) + 1
    asked = subprocess.run([sys.executable, "-c", probe, "sd", "sql", str(dump), COUNT,
                            "--format", "csv"], capture_output=True, text=True, timeout=120,
                           cwd=ROOT, env=_env(run), check=False)
    alone = _sql(dump, run, COUNT, "--no-server")
    assert asked.returncode == 0 and asked.stderr == "[]\n", asked.stderr
    assert asked.stdout == alone.stdout and alone.stdout.count("\n") == 3


def test_a_setting_or_table_one_question_makes_is_gone_at_the_next(
        served: tuple[Path, Path]) -> None:
    dump, run = served
    paris = _sql(dump, run, "SET TimeZone = 'Europe/Paris'; "
                            "SELECT current_setting('TimeZone') AS zone")
    assert paris.stdout == "zone\nEurope/Paris\n", paris.stderr
    assert _same(dump, run, "SELECT current_setting('TimeZone') AS zone").stdout == "zone\nUTC\n"
    made = "CREATE TABLE kept AS SELECT 1 AS a; SELECT * FROM kept"
    assert _sql(dump, run, made).stdout == "a\n1\n"
    assert _sql(dump, run, made).stdout == "a\n1\n"  # not "already exists"


def test_a_dump_changed_between_questions_is_answered_as_it_is_now(
        served: tuple[Path, Path]) -> None:
    dump, run = served
    first = _same(dump, run, COUNT).stdout
    # A sealed file deleted (the quota), another damaged in place, a commit appended.
    _sealed(dump, "2", 5).unlink()
    after_delete = _same(dump, run, COUNT).stdout
    assert after_delete != first
    damaged = _sealed(dump, "1", 7)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x40
    with open(damaged, "r+b") as fh:  # in place: the same file, other bytes
        fh.write(data)
    after_damage = _same(dump, run, COUNT)
    assert str(damaged) in after_damage.stderr
    assert after_damage.stdout != after_delete
    place, message = flipped_byte(dump)
    flipped = _same(dump, run, COUNT)
    assert place in flipped.stderr and message in flipped.stderr


def test_a_relative_path_in_the_sql_is_the_askers(served: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    dump, run = served
    (tmp_path / "here.csv").write_text("a\n7\n")
    assert _same(dump, run, "SELECT a FROM 'here.csv'", cwd=tmp_path).stdout == "a\n7\n"


def test_a_client_gone_mid_answer_leaves_the_server_answering(
        served: tuple[Path, Path]) -> None:
    dump, run = served
    asker = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "sd", "sql", str(dump),
         "SELECT * FROM records, range(20)", "--format", "csv"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=_env(run))
    assert asker.stdout is not None
    assert asker.stdout.read(4096)
    asker.kill()
    asker.wait(timeout=30)
    asker.stdout.close()
    _same(dump, run, COUNT)


def test_one_server_a_dump_a_second_is_refused(served: tuple[Path, Path]) -> None:
    dump, run = served
    second = subprocess.run([sys.executable, "-m", "pipeline.cli", "sd", "serve", str(dump)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env=_env(run), check=False)
    assert second.returncode == 3
    assert "runs already" in second.stderr
    _same(dump, run, COUNT)


def test_an_idle_server_stops_and_removes_its_socket(month: Plant, runtime: Path) -> None:
    run = runtime
    server = _Server(month.dump, run, "--idle-minutes", "0.03")
    assert _socket(run)
    started = time.monotonic()
    assert server.process.wait(timeout=60) == 0
    assert time.monotonic() - started < 30
    assert server.stop() == 0
    assert not _socket(run)


def test_a_socket_folder_others_can_enter_is_never_used(month: Plant, runtime: Path) -> None:
    run = runtime
    (run / f"sunpm-sd-{os.getuid()}").mkdir(mode=0o755)
    os.chmod(run / f"sunpm-sd-{os.getuid()}", 0o755)
    refused = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "sd", "serve", str(month.dump)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_env(run), check=False)
    assert refused.returncode == 2
    assert "not a folder of this user's alone" in refused.stderr
    assert _same(month.dump, run, COUNT, served=False).returncode == 0


def test_a_dump_that_cannot_be_opened_is_said_at_start(tmp_path: Path, runtime: Path) -> None:
    run = runtime
    (tmp_path / "empty").mkdir()
    server = _Server(tmp_path / "empty", run)
    assert server.process.wait(timeout=60) == 2
    assert "sunpm sd serve:" in server.first_line
    server.stop()
    assert not _socket(run)


def test_the_memo_keeps_the_latest_within_its_budget() -> None:
    _memo.enable(1000)
    try:
        _memo.put("a", "A", 400)
        _memo.put("b", "B", 400)
        assert _memo.get("a") == "A"  # now the latest used
        _memo.put("c", "C", 400)
        assert (_memo.get("a"), _memo.get("b"), _memo.get("c")) == ("A", None, "C")
        _memo.put("huge", "H", 1001)
        assert _memo.get("huge") is None and _memo.held_bytes() == 800
    finally:
        _memo.enable(0)
    assert _memo.get("a") is None and _memo.held_bytes() == 0


def test_a_server_of_a_copy_is_not_asked_about_the_original(
        served: tuple[Path, Path], month: Plant, tmp_path: Path) -> None:
    dump, run = served
    shutil.rmtree(dump / "devices" / "2")
    # The original still has device 2: its answer is its own, not the served copy's.
    assert "\n2," in _sql(month.dump, run, COUNT, served=False).stdout
    assert "\n2," not in _sql(dump, run, COUNT).stdout


def test_a_reader_that_goes_away_ends_a_served_answer_quietly(
        served: tuple[Path, Path]) -> None:
    dump, run = served
    code, err = first_line_then_gone(dump, "SELECT * FROM records, range(5)",
                                     {"XDG_RUNTIME_DIR": str(run)})
    assert (code, err) == (0, b"")
    _same(dump, run, COUNT)


def _damaged(dump: Path) -> Path:
    damaged = _sealed(dump, "1", 7)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x40
    with open(damaged, "r+b") as fh:
        fh.write(data)
    return damaged


def test_a_dump_served_by_a_relative_path_is_answered_from_any_folder(
        dump_copy: Path, runtime: Path, tmp_path: Path) -> None:
    run = runtime
    _damaged(dump_copy)
    server = _Server(Path("dump"), run, cwd=dump_copy.parent)
    try:
        assert "open for `sunpm sd sql`" in server.first_line, server.first_line
        absolute = _same(dump_copy, run, COUNT)  # asked from another folder
        assert absolute.returncode == 0 and f"{dump_copy}/devices/1/" in absolute.stderr
        (tmp_path / "link").symlink_to(dump_copy)
        # The findings name the dump's files as the asker spells it, whatever the server's.
        for spelled, cwd in (("dump", dump_copy.parent), ("dump/", dump_copy.parent),
                             ("link", tmp_path), (str(tmp_path / "link"), ROOT)):
            alone = _same(Path(spelled), run, COUNT, cwd=cwd)
            named = spelled.rstrip("/") + "/devices/1/"
            assert alone.stdout == absolute.stdout and named in alone.stderr, alone.stderr
    finally:
        code = server.stop()
    assert code == 0
    assert server.rest.count("answered in") == 5 == _ASKED.pop(run), server.rest


def _asking(run: Path) -> socket.socket:
    (path,) = _socket(run)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(path))
    return client


def _request(query: str, dump: Path) -> bytes:
    """A question as `sd sql` asks it."""
    from pipeline.cli import _sd_client

    return _sd_client.request(query, "csv", str(ROOT), str(dump), ("utf-8", "strict"),
                              ("utf-8", "backslashreplace"))


def test_a_client_that_says_nothing_keeps_no_one_waiting(served: tuple[Path, Path]) -> None:
    dump, run = served
    stop = threading.Event()

    def dribble() -> None:  # half a question, a byte at a time, for a minute at most
        with _asking(run) as slow, contextlib.suppress(OSError):
            for byte in _request("SELECT 1", dump)[:30]:
                slow.sendall(bytes([byte]))
                if stop.wait(2):
                    return

    silent = _asking(run)  # connected, says nothing
    slow = threading.Thread(target=dribble)
    slow.start()
    try:
        started = time.monotonic()
        _same(dump, run, COUNT)
        assert time.monotonic() - started < 40
    finally:
        stop.set()
        slow.join(timeout=90)
        silent.close()


def test_a_client_gone_before_any_output_stops_its_question(served: tuple[Path, Path]) -> None:
    dump, run = served
    endless = "SELECT sum(hash(i)) AS s FROM range(10_000_000_000_000) t(i)"
    for _ in range(3):  # at once, and the next questions never see an interrupt of its
        with _asking(run) as gone:
            gone.sendall(_request(endless, dump))
        assert _same(dump, run, COUNT).returncode == 0
        assert _same(dump, run, "SELECT count(*) AS n FROM range(3000000)").stdout \
            == "n\n3000000\n"


def test_a_question_that_turns_logging_on_leaves_the_next_a_fresh_session(
        served: tuple[Path, Path]) -> None:
    dump, run = served
    assert _sql(dump, run, "SELECT * FROM enable_logging()").returncode == 0
    _same(dump, run, "SELECT current_setting('enable_logging') AS on")


def test_a_server_of_other_libraries_or_io_code_is_not_asked(
        month: Plant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import _sd_client

    before = _sd_client.socket_path(month.dump)
    assert "fsio/__init__.py:" in _sd_client.code_stamp()  # the store writes through it
    (tmp_path / "pyarrow").mkdir()
    (tmp_path / "pyarrow" / "__init__.py").write_text("")  # another version, found first
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _sd_client.socket_path(month.dump) != before


def test_answers_are_encoded_as_the_askers_streams(dump_copy: Path, runtime: Path) -> None:
    run = runtime
    # A dump whose name is no UTF-8: its findings name it as the asker's stderr writes it.
    odd = dump_copy.parent / os.fsdecode(b"d\xe9mp")
    dump_copy.rename(odd)
    _damaged(odd)
    server = _Server(odd, run)
    said = []
    try:
        for encoding, query in ((None, COUNT), (None, "SELECT 'é€' AS e"),
                                ("latin-1", "SELECT 'é' AS e"), ("ascii", "SELECT 'é' AS e")):
            env = _env(run) if encoding is None else {**_env(run), "PYTHONIOENCODING": encoding}
            through, alone = ((a.returncode, a.stdout, a.stderr) for a in (subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "sd", "sql", os.fsencode(odd), query,
                 "--format", "csv", *extra], capture_output=True, timeout=120, cwd=ROOT,
                env=env, check=False) for extra in ((), ("--no-server",))))
            assert through == alone
            said.append(through)
        assert [answer[0] for answer in said[:3]] == [0, 0, 0]
        assert b"d\\udce9mp/devices/1/" in said[0][2]
        assert said[2][1] == b"e\n\xe9\n"
        # What the asker's stream cannot encode fails as it fails alone (left to the asker).
        assert said[3][0] == 1 and b"UnicodeEncodeError" in said[3][2]
    finally:
        code = server.stop()
    assert code == 0 and server.rest.count("answered in") == 3, server.rest


def test_a_finding_is_said_by_the_questions_whose_reads_meet_it(
        served: tuple[Path, Path]) -> None:
    dump, run = served
    damaged = _damaged(dump)
    for query in (COUNT, "SELECT 1 AS one", COUNT, COUNT,
                  "SELECT kind, count(*) AS n FROM journal GROUP BY ALL ORDER BY ALL",
                  "SET TimeZone = 'Europe/Paris'; SELECT 2 AS two", COUNT, "SELECT 3 AS three"):
        said = _same(dump, run, query).stderr
        assert (str(damaged) in said) == (query == COUNT), (query, said)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_server_stopped_in_a_long_question_stops(month: Plant, runtime: Path) -> None:
    run = runtime
    server = _Server(month.dump, run)
    try:
        with _asking(run) as client:
            client.sendall(_request(
                "SELECT sum(hash(i)) AS s FROM range(10_000_000_000_000) t(i)", month.dump))
            busy = _cpu_s(server.process.pid) + 1
            deadline = time.monotonic() + 60
            while _cpu_s(server.process.pid) < busy and time.monotonic() < deadline:
                time.sleep(0.05)  # polls the server's CPU time: answering, not just started
            server.process.send_signal(signal.SIGTERM)
            # Nothing sent: its asker would answer the question itself.
            assert client.recv(1) == b""
        server.process.wait(timeout=60)
    finally:
        code = server.stop()
    assert code == 0
    assert "answered in" not in server.rest and not _socket(run)


def test_what_the_memo_keeps_holds_no_byte_of_the_file_it_was_decoded_from() -> None:
    import pyarrow as pa

    data = b"ab" + bytes(1 << 20)  # a file's bytes, the strings of its dictionary among them
    before = sys.getrefcount(data)
    names = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(
        memoryview(bytes(4) + (2).to_bytes(4, "little"))), pa.py_buffer(memoryview(data))])
    column = pa.DictionaryArray.from_arrays(pa.array([0, 0, 0], pa.int32()), names)
    plain = pa.Array.from_buffers(pa.int64(), 3, [None, pa.py_buffer(memoryview(data))])
    kept = _memo.owned(pa.record_batch([column, plain], names=["def", "raw"]))
    del names, column, plain
    assert sys.getrefcount(data) == before
    assert kept.column(0).to_pylist() == ["ab"] * 3
    assert kept.column(1).to_pylist() == [int.from_bytes(data[:8], "little"), 0, 0]


def test_a_file_a_writer_removes_while_the_dump_is_compared_is_no_error(
        month: Plant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import _sd_server

    live = tmp_path / "live"
    shutil.copytree(month.dump, live)
    (live / "journal" / "commit.tmp").write_bytes(b"x")
    (live / "devices" / "9").mkdir()
    listed = os.scandir

    class Listing(list[os.DirEntry[str]]):
        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def renamed_meanwhile(folder: str) -> Listing:
        # Listed, then gone before looked at: a gateway's temporary file renamed, a device
        # folder emptied by the quota.
        entries = Listing(listed(folder))
        for entry in entries:
            if entry.name == "commit.tmp":
                os.unlink(entry.path)
            if entry.name == "9":
                os.rmdir(entry.path)
        return entries

    monkeypatch.setattr(_sd_server.os, "scandir", renamed_meanwhile)
    signature = _sd_server._signature(live)
    monkeypatch.undo()
    assert str(live / "journal") in {name for name, *_ in signature}
    assert not {str(live / "journal" / "commit.tmp"), str(live / "devices" / "9")} \
        & {name for name, *_ in signature}


def test_of_two_servers_claiming_the_socket_at_once_exactly_one_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import _sd_server

    path = tmp_path / "x.sock"
    looked = threading.Barrier(2, timeout=5)
    connect = socket.socket.connect

    def look_together(self: socket.socket, address: object) -> None:
        # Both have found no one answering before either binds: the instant two start at.
        try:
            connect(self, address)  # type: ignore[arg-type]
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                looked.wait()

    monkeypatch.setattr(socket.socket, "connect", look_together)
    claims: list[object] = []
    failed: list[BaseException] = []

    def claim() -> None:
        try:
            claims.append(_sd_server._listen(path))
        except BaseException as error:  # noqa: BLE001  (said by the assertion below)
            failed.append(error)

    claiming = [threading.Thread(target=claim) for _ in range(2)]
    for thread in claiming:
        thread.start()
    for thread in claiming:
        thread.join(timeout=30)
    monkeypatch.undo()
    won = [c for c in claims if c is not None]
    try:
        assert not failed and len(claims) == 2 and len(won) == 1, (failed, claims)
        # The winner's socket is the one at `path`: a client reaches it.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
    finally:
        for claimed in won:
            with contextlib.suppress(Exception):
                claimed.release(path)  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                claimed.close()  # type: ignore[attr-defined]


def test_servers_started_at_the_same_instant_leave_one_serving(
        month: Plant, runtime: Path) -> None:
    run = runtime
    starting = [subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "sd", "serve", str(month.dump)],
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env(run)) for _ in range(3)]
    try:
        firsts = [p.stderr.readline() for p in starting if p.stderr is not None]
        serving = [p for p, line in zip(starting, firsts, strict=True)
                   if "open for `sunpm sd sql`" in line]
        assert len(serving) == 1, firsts
        for other in starting:
            if other is not serving[0]:
                assert other.wait(timeout=60) == 3
        assert len(_socket(run)) == 1
        assert _sql(month.dump, run, "SELECT 1 AS one", served=False).stdout == "one\n1\n"
    finally:
        for process in starting:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            if process.stderr is not None:
                process.stderr.close()
    assert not list(run.glob("sunpm-sd-*/*"))


def _read_bytes(pid: int) -> int:
    """What the process read so far, from files and sockets (cached or not)."""
    (line,) = (f for f in Path(f"/proc/{pid}/io").read_text().splitlines()
               if f.startswith("rchar:"))
    return int(line.split()[1])


def test_a_question_spelling_the_dump_otherwise_is_answered_from_the_memo(
        dump_copy: Path, runtime: Path, tmp_path: Path) -> None:
    run = runtime
    sealed = sum(p.stat().st_size for p in dump_copy.rglob("*.arrow"))
    (tmp_path / "link").symlink_to(dump_copy)
    server = _Server(dump_copy, run)
    try:
        assert "open for `sunpm sd sql`" in server.first_line, server.first_line
        read = []
        spellings = ((str(dump_copy), ROOT), ("dump", dump_copy.parent), ("link", tmp_path),
                     ("./dump/", dump_copy.parent))
        for spelled, cwd in spellings + spellings:
            before = _read_bytes(server.process.pid)
            assert _sql(Path(spelled), run, COUNT, cwd=cwd).returncode == 0
            read.append(_read_bytes(server.process.pid) - before)
        # The first question reads the sealed files; the others, however they spell the dump,
        # find what it kept (a new spelling's open reads its journal and open segments again).
        assert read[0] > sealed
        assert max(read[1:]) < sealed / 4, (read, sealed)
        # A spelling asked before finds its open too: nothing read again but the question.
        assert max(read[4:]) < min(read[1:3]) * 2 / 3, read
    finally:
        code = server.stop()
    assert code == 0 and server.rest.count("answered in") == 8 == _ASKED.pop(run), server.rest


def _frames(client: socket.socket) -> tuple[bytes, bytes, int | None]:
    """A served answer as its client takes it: standard output, standard error, exit code."""
    data = bytearray()
    while chunk := client.recv(1 << 20):
        data += chunk
    streams = {b"1": bytearray(), b"2": bytearray()}
    at = 0
    while at + 5 <= len(data):
        kind, size = data[at:at + 1], int.from_bytes(data[at + 1:at + 5], "big")
        body = bytes(data[at + 5:at + 5 + size])
        at += 5 + size
        if kind == b"x":
            return bytes(streams[b"1"]), bytes(streams[b"2"]), int(body)
        streams[bytes(kind)] += body
    return bytes(streams[b"1"]), bytes(streams[b"2"]), None


def test_a_client_reading_slowly_keeps_no_one_waiting(served: tuple[Path, Path]) -> None:
    dump, run = served
    damaged = _damaged(dump)  # its finding, said after the rows, reaches the slow reader too
    big = "SELECT * FROM records ORDER BY ALL"
    alone = subprocess.run([sys.executable, "-m", "pipeline.cli", "sd", "sql", str(dump), big,
                            "--format", "csv", "--no-server"], capture_output=True, timeout=300,
                           cwd=ROOT, env=_env(run), check=True)
    assert len(alone.stdout) > 4 << 20  # far more than a socket holds
    assert str(damaged).encode() in alone.stderr
    # `sunpm sd sql DUMP ... | (sleep 60; cat)`: asks, then takes nothing of its answer.
    with _asking(run) as slow:
        slow.sendall(_request(big, dump))
        _ASKED[run] = _ASKED.get(run, 0) + 1
        others = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "sd", "sql", str(dump), COUNT, "--format",
             "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=_env(run))
        _ASKED[run] += 1
        try:
            out, err = others.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            others.kill()
            others.communicate()
            raise
        by_itself = _sql(dump, run, COUNT, "--no-server")
        assert (others.returncode, out, err) == \
            (0, by_itself.stdout.encode(), by_itself.stderr.encode())
        # Its answer, taken at last, is the one it would have had alone, byte for byte.
        assert _frames(slow) == (alone.stdout, alone.stderr, 0)


@pytest.mark.parametrize("files_max", [1 << 30, 300_000, 0])
def test_an_answer_kept_for_a_slow_client_reaches_it_whole_and_in_order(
        monkeypatch: pytest.MonkeyPatch, files_max: int) -> None:
    """In memory, then in a file, then (no room left in files) as the client takes it."""
    from pipeline.cli import _sd_server

    monkeypatch.setattr(_sd_server, "_SPOOL_MEMORY", 100_000)
    monkeypatch.setattr(_sd_server, "_SPOOL_FILES_MAX", files_max)
    ours, theirs = socket.socketpair()
    senders = _sd_server._Senders()
    outbox = _sd_server._Outbox(ours, senders)
    pieces = [bytes([i % 251]) * (1 + i * 997 % 70_000) for i in range(120)]
    taken = bytearray()

    def take() -> None:
        with theirs:
            while chunk := theirs.recv(1 << 16):
                taken.extend(chunk)

    taker = threading.Thread(target=take)
    roomy = files_max > sum(map(len, pieces))
    if not roomy:
        taker.start()  # the writes wait for it once memory and files are full
    try:
        for piece in pieces:
            outbox.write(piece)
        outbox.finish()
        if roomy:
            # Everything written while nothing was taken: kept in memory, then in a file.
            assert senders.filed > 0 and senders.active
            taker.start()
    finally:
        if taker.ident is None:
            theirs.close()  # failed before taking: the sender ends at once
        else:
            taker.join(timeout=60)
        outbox.join(60)
    assert bytes(taken) == b"".join(pieces)
    assert senders.filed == 0 and not senders.active


def test_a_slow_client_gone_ends_the_sending_of_its_answer() -> None:
    from pipeline.cli import _sd_server

    ours, theirs = socket.socketpair()
    senders = _sd_server._Senders()
    outbox = _sd_server._Outbox(ours, senders)
    for _ in range(100):
        outbox.write(bytes(1 << 16))  # kept: nothing taken
    outbox.finish()
    assert senders.active and senders.filed > 0
    theirs.close()
    outbox.join(60)
    assert senders.filed == 0 and not senders.active


def _lines(server: _Server, n: int) -> list[str]:
    """The server's next `n` lines on standard error, each awaited 120 s at most."""
    stream = server.process.stderr
    assert stream is not None
    said: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [said.put(stream.readline()) for _ in range(n)],
                     daemon=True).start()
    try:
        return [said.get(timeout=120) for _ in range(n)]
    except queue.Empty:
        server.process.kill()  # the test fails, its server not left behind
        raise


def test_a_server_idle_meanwhile_still_sends_a_slow_reader_its_whole_answer(
        month: Plant, runtime: Path) -> None:
    run = runtime
    big = "SELECT * FROM records ORDER BY ALL"
    alone = subprocess.run([sys.executable, "-m", "pipeline.cli", "sd", "sql", str(month.dump),
                            big, "--format", "csv", "--no-server"], capture_output=True,
                           timeout=300, cwd=ROOT, env=_env(run), check=True)
    server = _Server(month.dump, run, "--idle-minutes", "0.03")
    try:
        with _asking(run) as slow:
            slow.sendall(_request(big, month.dump))
            said = _lines(server, 2)
            assert "answered in" in said[0] and "idle, stopped" in said[1], said
            # Gone from the socket folder (the next asker answers itself, or a new server
            # starts), still sending what its slow reader has not taken.
            assert not _socket(run)
            assert _frames(slow) == (alone.stdout, alone.stderr, 0)
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_between_questions_what_the_server_keeps_is_left_out_of_collections(
        dump_copy: Path) -> None:
    """A full collection walking the opens, the memo and DuckDB's objects cost a question in
    three or four 38 ms: they are frozen between questions; cyclic garbage made before an open
    or a session is let go is freed all the same, at the next settling."""
    import gc
    import weakref

    from pipeline.cli import _sd_server
    from pipeline.cli.sd import _open_dump

    state = _sd_server._State(_open_dump)
    try:
        dump = state.current(dump_copy)
        state.session()
        garbage = _Cycle()
        gone = weakref.ref(garbage)
        state.settle()
        assert id(dump) not in {id(o) for o in gc.get_objects()}  # frozen: never walked
        del garbage
        gc.collect()
        assert gone() is not None  # frozen: not walked, not freed (the price of the freeze)
        assert state.current(dump_copy) is dump
        state.settle()
        assert gone() is not None
        state.done(keep=False)  # a session let go: everything walked again at the settling
        state.settle()
        assert gone() is None
    finally:
        state.done(keep=False)
        gc.unfreeze()
