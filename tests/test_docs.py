"""The repository speaks of itself only: its docs exist, keep the cited section numbers, show the
golden files as they are, and nothing tracked points at documents outside the repository."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.defaults import default_files

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Names of the documents docs/ replaced, spelled in pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([
    re.escape("spec" + "/formats.md"), re.escape("spec" + "/behaviour.md"),
    re.escape("DESIGN" + ".md"), re.escape("STYLE" + ".md"), re.escape(".." + "/shared"),
    re.escape("/work" + "/shared"),
]))
CITED_DOCS = {"formats": "formats.md", "behaviour": "behaviour.md",
              "architecture": "architecture.md", "style": "style.md"}
CITE = re.compile(r"\b(formats|behaviour|architecture|style)\.md`?,? §(\d+(?:\.\d+)*)")
GOLDEN_BLOCK = re.compile(r"^<!-- golden: (\S+) -->\n```[a-z]*\n(.*?)^```$",
                          flags=re.MULTILINE | re.DOTALL)


def _tracked_texts() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    texts: dict[str, str] = {}
    for name in filter(None, names):
        try:
            texts[name] = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
    return texts


def _sections(doc: str) -> set[str]:
    text = (DOCS / doc).read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)*)\.? ", text, flags=re.MULTILINE))


def test_no_tracked_file_refers_outside_the_repository() -> None:
    found = [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m[0]}"
             for name, text in _tracked_texts().items() for m in OUTSIDE.finditer(text)]
    assert found == [], ("references outside the repository (run "
                         "`python tools/rewrite_doc_refs.py`):\n" + "\n".join(found[:40]))


def test_generated_configuration_refers_inside_the_repository() -> None:
    for rel, data in default_files("WPM00BDE4").items():
        assert not OUTSIDE.search(data.decode("utf-8")), rel
    assert b"docs/configuration.md" in default_files("WPM00BDE4")["CONFIG/WPM00BDE4_config.ini"]


def test_every_cited_section_exists() -> None:
    sections = {name: _sections(doc) for name, doc in CITED_DOCS.items()}
    missing = sorted({f"{name}: {doc}.md §{number}"
                      for name, text in _tracked_texts().items()
                      for doc, number in CITE.findall(text)
                      if number not in sections[doc]})
    assert missing == []


@pytest.mark.parametrize("doc", sorted(CITED_DOCS.values()))
def test_docs_keep_numbered_sections(doc: str) -> None:
    # The numbers are the ones code cites; a document without them breaks every citation.
    assert {"1", "2"} <= _sections(doc)


def test_format_examples_are_the_golden_files() -> None:
    text = (DOCS / "formats.md").read_text(encoding="utf-8")
    blocks = GOLDEN_BLOCK.findall(text)
    assert len(blocks) >= 20
    for path, body in blocks:
        golden = (ROOT / path).read_text(encoding="utf-8")
        assert body.rstrip("\n") == golden.rstrip("\n"), path
    # Every stream an IS receives has its example.
    shown = {Path(p).name for p, _ in blocks}
    for name in ("WPM00BDE4_MODBUS_210205_091500.csv", "WPM00BDE4_MODBUS_P_210205_091500.csv",
                 "WPM00BDE4_AL_210212_081500.csv", "WPM00BDE4_LOG_210205_091600.log",
                 "WPM00BDE4_ACK_210205_091500.json", "mqtt_data_210205_085500.json",
                 "mqtt_alarm_device.json", "mqtt_result.json"):
        assert name in shown


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location("rewrite_doc_refs",
                                                  ROOT / "tools" / "rewrite_doc_refs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rewriter() -> Callable[..., str]:
    rewrite: Callable[..., str] = _tool().rewrite
    return rewrite


_OLD = ["spec" + "/formats.md §9.3", ".." + "/shared/" + "spec" + "/behaviour.md §5.1",
        "DESIGN" + ".md §2", "STYLE" + ".md §10", "formats" + ".md §8.4", "behaviour" + ".md §6",
        "docs/formats.md §3", "`" + "spec" + "/formats.md`", "formats.md", " ", "(", "), "]


def test_rewrite_points_every_old_name_into_docs() -> None:
    rewrite = _rewriter()
    text = "; ".join(_OLD)
    out = rewrite(text, in_docs=False)
    assert not OUTSIDE.search(out)
    assert out.count("docs/formats.md §") == 3 and out.count("docs/behaviour.md §") == 2
    assert "docs/architecture.md §2" in out and "docs/style.md §10" in out
    inside = rewrite(text, in_docs=True)
    assert not OUTSIDE.search(inside) and "docs/docs/" not in inside
    assert "architecture.md §2" in inside and "docs/architecture.md" not in inside


@given(st.lists(st.tuples(st.sampled_from(_OLD), st.sampled_from([" ", ", ", " (", "\n#: "])),
                max_size=12), st.booleans())
def test_rewrite_is_idempotent(pieces: list[tuple[str, str]], in_docs: bool) -> None:
    # Names in text stand apart from their neighbours (spaces, punctuation, line starts).
    rewrite = _rewriter()
    once = rewrite("".join(name + gap for name, gap in pieces), in_docs=in_docs)
    assert rewrite(once, in_docs=in_docs) == once
    assert not OUTSIDE.search(once)


def test_rewrite_wraps_only_the_prose_it_made_too_long() -> None:
    tool = _tool()
    design = "DESIGN" + ".md"

    def padded(head: str, tail: str) -> str:
        # 95 columns before the rename, 106 after it: over the limit only once renamed.
        return head + " " + "w" * (95 - len(head) - len(tail) - 2) + " " + tail

    lines = [
        padded('"""Summary', f"({design} §7)."),
        "",
        padded("A paragraph line", f"{design} §4"),
        "and its next line, which takes the carried words.",
        '"""',
        "",
        padded("TEXT = 'a literal", f"{design} §2'"),
        padded("# a comment", f"{design} §3"),
        "x = 1  # type: ignore[misc]",
        padded("y = 2  # after code", f"{design} §5"),
    ]
    source = "\n".join(lines) + "\n"
    after = tool.rewrite(source, in_docs=False)
    assert [len(line) > tool.MAX_LINE for line in after.splitlines()] == [
        True, False, True, False, False, False, True, True, False, True]
    wrapped = tool.wrap_pushed_lines(source, after)
    long_lines = [line for line in wrapped.splitlines() if len(line) > tool.MAX_LINE]
    # A string value and a line of code are never cut.
    assert long_lines == [after.splitlines()[6], after.splitlines()[9]]
    tree = ast.parse(wrapped)
    assert " ".join((ast.get_docstring(tree) or "").split()) == " ".join(
        ast.get_docstring(ast.parse(after), clean=True).split())  # type: ignore[union-attr]
    assert wrapped.count("\n") == after.count("\n") + 2   # the summary and the comment
    # The paragraph's next line took the carried words.
    assert wrapped.splitlines()[4] == "docs/architecture.md §4 and its next line, which takes " \
        "the carried words."
    # The comment's tail went on a comment line of its own, not into the code below it.
    assert wrapped.splitlines()[-3].startswith("# ")
    assert wrapped.splitlines()[-2] == "x = 1  # type: ignore[misc]"
    assert tool.wrap_pushed_lines(wrapped, wrapped) == wrapped


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name)) or [" ".join((*path, name))]
    return found


def test_cli_doc_covers_every_command() -> None:
    from pipeline.cli import build_parser

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    commands = _commands(build_parser())
    assert {"config init", "config validate", "modbus read", "tic decode"} <= set(commands)
    # A section of its own, or a planned item not yet merged into one.
    missing = [c for c in commands
               if f"## `sunpm {c}`" not in text and f"**`sunpm {c}`**" not in text]
    assert missing == []
