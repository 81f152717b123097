"""Point references to the contract documents at the repository's own docs/.

    python tools/rewrite_doc_refs.py          # rewrite every tracked text file in place
    python tools/rewrite_doc_refs.py --check  # list what would change, exit 1 if anything would

Idempotent: a second run changes nothing, so it can run again after any merge. Section numbers
are kept: docs/formats.md, docs/behaviour.md, docs/architecture.md and docs/style.md number
their sections as the documents they replace. Outside docs/, a section cite of the formats or
behaviour document without a directory gains the `docs/` prefix; inside docs/ names stay
relative (the documents sit side by side).
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]

# Spelled in pieces so this file holds none of the names it rewrites.
_SPEC: Final = "spec" + "/"
_DESIGN: Final = "DESIGN" + r"\.md"
_STYLE: Final = "STYLE" + r"\.md"
_SHARED: Final = r"(?:(?:/work/|(?:\.\./)+)shared/)?"
_FREE: Final = r"(?<![\w/.-])"   # not inside another path or word

#: (pattern, replacement outside docs/, replacement inside docs/)
_RULES: Final = (
    (re.compile(_FREE + _SHARED + re.escape(_SPEC) + r"(formats|behaviour)\.md"),
     r"docs/\1.md", r"\1.md"),
    (re.compile(_FREE + _SHARED + _DESIGN), "docs/architecture.md", "architecture.md"),
    (re.compile(_FREE + _SHARED + _STYLE), "docs/style.md", "style.md"),
    (re.compile(_FREE + r"(formats|behaviour)\.md(?= §)"), r"docs/\1.md", None),
)


def rewrite(text: str, *, in_docs: bool) -> str:
    for pattern, outside, inside in _RULES:
        replacement = inside if in_docs else outside
        if replacement is not None:
            text = pattern.sub(replacement, text)
    return text


#: Longest line of the code style: a comment or docstring line pushed past it is wrapped.
MAX_LINE: Final = 100


def _text_rows(source: str) -> set[int]:
    """0-based rows of a Python source that are prose: comments and standalone string statements
    (docstrings), where a line break changes no value."""
    rows: set[int] = set()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    starts = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.ENCODING)
    for k, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT and tok.line.lstrip().startswith("#"):
            rows.add(tok.start[0] - 1)     # a comment line; a comment after code is code's row
        elif tok.type == tokenize.STRING and tok.string.endswith(('"""', "'''")):
            before = tokens[k - 1].type if k else tokenize.ENCODING
            after = tokens[k + 1].type if k + 1 < len(tokens) else tokenize.NEWLINE
            if before in starts and after in (tokenize.NEWLINE, tokenize.ENDMARKER):
                rows.update(range(tok.start[0] - 1, tok.end[0]))
    return rows


def _split_at(line: str, limit: int) -> int:
    """Index of the last space before `limit` outside backquotes, 0 when there is none."""
    best, quoted = 0, False
    for i, char in enumerate(line[:limit + 1]):
        if char == "`":
            quoted = not quoted
        elif char == " " and not quoted and line[:i].strip():
            best = i
    return best


def _prefix(line: str) -> str:
    """Indentation plus comment marker (`    #: `), the part a wrapped line repeats."""
    match = re.match(r"\s*(?:#:?\s*)?", line)
    return match[0] if match else ""


def _joinable(line: str, prefix: str) -> bool:
    """Whether `line` continues the paragraph a wrapped tail came from: same prefix, prose, not
    a list item, table row, literal block or closing quotes."""
    body = line[len(prefix):]
    return (line.startswith(prefix) and bool(body) and not body[0].isspace()
            and not re.match(r"(?:[-*|>]|\d+\.|\"\"\"|\'\'\'|```)", body))


def wrap_pushed_lines(before: str, after: str) -> str:
    """Wrap the comment and docstring lines of `after` that the rewrite made longer than
    `MAX_LINE` (lines already too long are left alone), carrying the tail into the next line of
    the same paragraph; `before` and `after` have equal line counts."""
    old_lines, lines = before.split("\n"), after.split("\n")
    try:
        prose = _text_rows(after)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return after
    out: list[str] = []
    row = 0
    carry = ""
    while row < len(lines):
        line, old = lines[row], old_lines[row]
        if carry:
            prefix = _prefix(line)
            if row in prose and _joinable(line, prefix):
                line = prefix + carry + " " + line[len(prefix):]
            else:
                out.append(_prefix(out[-1]) + carry)
            carry = ""
        pushed = line != old and len(old) <= MAX_LINE
        if row in prose and len(line) > MAX_LINE and (pushed or line != lines[row]):
            prefix = _prefix(line)
            at = _split_at(line, MAX_LINE)
            if at > len(prefix):
                out.append(line[:at].rstrip())
                carry = line[at + 1:].lstrip()
                row += 1
                continue
        out.append(line)
        row += 1
    if carry:
        out.append(_prefix(out[-1]) + carry)
    return "\n".join(out)


def tracked_files(root: Path) -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True,
                           check=True).stdout.decode().split("\0")
    return [root / n for n in names if n]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    changed: list[str] = []
    for path in tracked_files(ROOT):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        rel = path.relative_to(ROOT)
        new = rewrite(text, in_docs=rel.parts[0] == "docs")
        if path.suffix == ".py" and new != text:
            new = wrap_pushed_lines(text, new)
        if new != text:
            changed.append(str(rel))
            if not check:
                path.write_text(new, encoding="utf-8")
    for name in changed:
        print(name)
    print(f"{len(changed)} file(s) {'to rewrite' if check else 'rewritten'}", file=sys.stderr)
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
