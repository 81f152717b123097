"""`sunpm sd sql PATH` without a question: many statements over one open dump, from standard
input (stopping at the first that fails) or at a prompt on a terminal (going on after one)."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from plant import Plant, hashes
from test_sd_damage import unknown_schema_version

ROOT = Path(__file__).resolve().parents[2]


def _sd_sql(dump: Path, stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "sd", "sql", str(dump), *extra],
                          input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)


def test_statements_from_standard_input_answer_in_turn_and_stop_at_the_first_failure(
        month: Plant) -> None:
    before = hashes(month.dump)
    script = ("SET TimeZone = 'Europe/Paris';\n"
              "SELECT device, count(*) AS n FROM records WHERE var = 1 GROUP BY ALL ORDER BY ALL;\n"
              "-- a comment; with a semicolon\n"
              "SELECT strftime(min(time), '%H') AS local_hour FROM records;\n"
              "SELECT no_such_column FROM records;\n"
              "SELECT 'never asked' AS x;\n")
    ran = _sd_sql(month.dump, script, "--format", "csv")
    assert ran.returncode == 1
    assert ran.stderr.startswith("sunpm sd sql: statement 4: Binder Error"), ran.stderr
    one = _sd_sql(month.dump, "", "SELECT device, count(*) AS n FROM records WHERE var = 1 "
                                  "GROUP BY ALL ORDER BY ALL", "--format", "csv")
    # The SET held for the statements after it: the plant's first record, midnight UTC, is
    # 01 in Paris in winter.
    assert ran.stdout == one.stdout + "local_hour\n01\n"
    assert "never asked" not in ran.stdout
    assert hashes(month.dump) == before


def test_a_statement_the_parser_refuses_stops_the_run_there_as_any_failure(month: Plant) -> None:
    """DuckDB's parser refuses a whole text for one bad statement: the statements before it
    are still answered, in turn, and the bad one named by its number, not by a traceback."""
    script = ("SELECT 1 AS a;\n"
              "SELECT 'x;y' AS b; -- a comment; with a semicolon\n"
              "SELEC 2;\n"
              "SELECT 'never asked' AS c;\n")
    ran = _sd_sql(month.dump, script, "--format", "csv")
    assert (ran.returncode, ran.stdout) == (1, "a\n1\nb\nx;y\n"), ran.stderr
    assert ran.stderr == 'sunpm sd sql: statement 3: Parser Error: syntax error at or near ' \
                         '"SELEC"\n'


def test_a_writing_statement_is_refused_in_a_session_too(month: Plant, tmp_path: Path) -> None:
    ran = _sd_sql(month.dump, f"SELECT 1 AS a;\nCOPY (SELECT 1) TO '{tmp_path / 'x.csv'}';\n",
                  "--format", "csv")
    assert (ran.returncode, ran.stdout) == (1, "a\n1\n")
    assert "statement 2: COPY refused" in ran.stderr
    assert not (tmp_path / "x.csv").exists()


def test_a_finding_is_said_once_however_many_statements_meet_it(
        month: Plant, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    shutil.copytree(month.dump, dump)
    path, message = unknown_schema_version(dump)
    ran = _sd_sql(dump, "SELECT count(*) AS n FROM records;\n" * 3, "--format", "csv")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("n\n") == 3
    said = [line for line in ran.stderr.splitlines() if message in line]
    assert len(said) == 1 and path in said[0], ran.stderr


class _Terminal:
    """`sunpm sd sql PATH` on a pseudo-terminal, as a person at a keyboard runs it."""

    def __init__(self, dump: Path) -> None:
        self.fd, child = pty.openpty()
        self.child = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "sd", "sql", str(dump)],
            stdin=child, stdout=child, stderr=child, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"})
        os.close(child)
        self.seen = b""

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def wait_for(self, text: str, timeout_s: float = 60) -> str:
        """Everything shown up to and including `text`'s first showing after the last wait."""
        deadline = time.monotonic() + timeout_s
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen.decode()[-500:]!r}"
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536)
                except OSError:  # the child closed the terminal
                    break
        assert text.encode() in self.seen, self.seen.decode()[-500:]
        shown, _, self.seen = self.seen.partition(text.encode())
        return (shown + text.encode()).decode().replace("\r\n", "\n")

    def answers_then_quits(self) -> None:
        """The prompt still answers a question, and `.quit` ends the session cleanly."""
        self.type("SELECT 6 * 7 AS answer;")
        assert "42" in self.wait_for("sd> ")
        self.type(".quit")
        assert self.child.wait(30) == 0

    def close(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
        self.child.wait(10)
        os.close(self.fd)


def test_the_prompt_goes_on_after_a_failed_statement_and_leaves_at_quit(month: Plant) -> None:
    before = hashes(month.dump)
    term = _Terminal(month.dump)
    try:
        term.wait_for("sd> ")
        term.type("SELECT count(*) AS n")
        term.wait_for("...> ")
        term.type("FROM records WHERE var = 1;")
        counted = term.wait_for("sd> ")
        assert "\nn\n" in counted and "(1 rows)" in counted
        term.type("SELECT no_such_column FROM records;")
        assert "error: Binder Error" in term.wait_for("sd> ")
        term.answers_then_quits()
    finally:
        term.close()
    assert hashes(month.dump) == before


#: A question DuckDB spends minutes on, in its C code, where Python runs no signal handler.
_ENDLESS = "SELECT count(*) AS n FROM range(100000000000) t(x) WHERE x % 7 = 3"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_cpu(pid: int, seconds: float) -> None:
    """Until the process has spent `seconds` of CPU more than now: the long question runs."""
    target = _cpu_s(pid) + seconds
    deadline = time.monotonic() + 120
    while _cpu_s(pid) < target:
        assert time.monotonic() < deadline, "the question never ran"
        time.sleep(0.05)


def test_ctrl_c_stops_a_long_question_at_once(month: Plant, tmp_path: Path) -> None:
    """Ctrl-C used to wait for DuckDB to end the question (minutes, or never); now it stops it
    and exits 130 with the one line every command says."""
    for extra, stdin in (([_ENDLESS], ""), ([], f"SELECT 1 AS a;\n{_ENDLESS};\nSELECT 2 AS b;\n")):
        questions = tmp_path / "q.sql"
        questions.write_text(stdin)
        with questions.open() as given:
            child = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "sd", "sql", "--no-server",
                 str(month.dump), *extra, "--format", "csv"],
                stdin=given, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            # The start (imports, the dump's open) takes about a CPU-second; the question
            # many, on every core.
            _wait_cpu(child.pid, 4)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert (child.returncode, err) == (130, b"sunpm sd sql: interrupted\n"), err
        assert out == (b"a\n1\n" if stdin else b"")


def test_ctrl_c_at_the_prompt_stops_the_question_and_asks_the_next(month: Plant) -> None:
    term = _Terminal(month.dump)
    try:
        term.wait_for("sd> ")
        term.type(f"{_ENDLESS};")
        _wait_cpu(term.child.pid, 4)
        term.child.send_signal(signal.SIGINT)   # as Ctrl-C on its controlling terminal does
        assert "(interrupted)" in term.wait_for("sd> ", 30)
        term.answers_then_quits()
    finally:
        term.close()
