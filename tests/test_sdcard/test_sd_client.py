"""The asking side of `sunpm sd serve` (`pipeline/cli/_sd_client.py`): the command line read
before the parser loads, never otherwise than the parser reads it, and the question's bytes,
read back whole or refused, never half."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import _sd_client, build_parser

#: Words of an `sd sql` command line, plain and tricky: options, their values, what the parser
#: takes for an option (`-1`, `--`, `--form`), paths `Path` spells otherwise.
_WORDS = st.sampled_from([
    "--format", "--format=csv", "--format=json", "--format=", "--form", "--no-server", "--help",
    "csv", "json", "table", "xml", "-", "--", "-1", "-x", "", " ", "dump", "a//b", "./d", "d/",
    "/abs/dump", "//two", "../up", "d/./e", "SELECT 1", "-- c\nSELECT 1", "SELECT '--format'",
    "é", "d\udce9mp",
])


def _parsed(words: list[str]) -> tuple[str, str | None, str, bool] | None:
    """What the command's own parser reads of `sd sql WORDS`, None where it refuses them."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser("sd").parse_args(["sd", "sql", *words])
        except SystemExit:
            return None
    return str(args.path), args.query, args.format, args.no_server


@settings(max_examples=3000, deadline=None)
@given(st.lists(_WORDS, max_size=6))
def test_a_command_line_read_before_the_parser_is_read_as_the_parser_reads_it(
        words: list[str]) -> None:
    fast = _sd_client.question(words)
    if fast is not None:
        assert _parsed(words) == (*fast, False), words


@pytest.mark.parametrize("words", [
    ["dump", "SELECT 1"],
    ["dump", "SELECT 1", "--format", "csv"],
    ["--format=json", "/abs/dump", "SELECT 1"],
    ["../up", "SELECT '--format'", "--format", "table", "--format", "csv"],
])
def test_plain_command_lines_are_read_before_the_parser(words: list[str]) -> None:
    fast = _sd_client.question(words)
    assert fast is not None
    assert _parsed(words) == (*fast, False)


@pytest.mark.parametrize("words", [
    ["dump", "SELECT 1", "--no-server"],     # answered in this process
    ["dump"],                                # statements from standard input
    ["dump", "-- c\nSELECT 1"],              # a word the parser reads on its own rules
    ["a//b", "SELECT 1"],                    # `Path` spells it `a/b`
    ["dump", "SELECT 1", "--format", "xml"],  # the parser says what is wrong
    ["dump", "--format", "csv", "SELECT 1"],  # the parser refuses SQL after an option
])
def test_other_command_lines_are_left_to_the_parser(words: list[str]) -> None:
    assert _sd_client.question(words) is None


_TEXT = st.text(st.characters(categories=["L", "N", "P", "S", "Z", "C"]), max_size=40)


@settings(max_examples=500, deadline=None)
@given(_TEXT, st.sampled_from(["table", "csv", "json"]), _TEXT, _TEXT,
       st.tuples(_TEXT, _TEXT), st.tuples(_TEXT, _TEXT), st.data())
def test_a_question_is_read_back_whole_and_only_whole(
        query: str, fmt: str, cwd: str, dump: str, out: tuple[str, str], err: tuple[str, str],
        data: st.DataObject) -> None:
    sent = _sd_client.request(query, fmt, cwd, dump, out, err)
    assert _sd_client.request_read(sent) is True
    assert _sd_client.parsed_request(sent) == {
        "query": query, "format": fmt, "cwd": cwd, "dump": dump, "out": list(out),
        "err": list(err)}
    cut = data.draw(st.integers(0, len(sent) - 1))
    assert _sd_client.request_read(sent[:cut]) is False
    # Bytes past the question, or a length that lies: none of ours.
    assert _sd_client.parsed_request(sent + b"x") is None
    assert _sd_client.parsed_request(sent[:4] + (len(sent)).to_bytes(4, "big") + sent[8:]) \
        is None


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_bytes_that_are_no_question_are_refused_never_raised(data: bytes) -> None:
    whole = _sd_client.request_read(data)
    assert whole in (None, False, True)
    if whole:
        answer = _sd_client.parsed_request(data)
        assert answer is None or set(answer) == {"query", "format", "cwd", "dump", "out",
                                                 "err"}


def test_a_question_over_the_size_limit_is_refused_at_its_head() -> None:
    head = b"SQL1" + (_sd_client.REQUEST_MAX + 1).to_bytes(4, "big")
    assert _sd_client.request_read(head) is None
    assert _sd_client.request_read(b"{\"query\"") is None  # another protocol's


def test_the_socket_name_is_the_sha256_hashlib_gives(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import sys

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    key = hashlib.sha256(os.fsencode("\0".join([os.path.realpath(tmp_path), sys.executable,
                                                 _sd_client.code_stamp()]))).hexdigest()[:24]
    assert _sd_client.socket_path(tmp_path) \
        == str(tmp_path / f"sunpm-sd-{os.getuid()}" / f"{key}.sock")
