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

import re
import subprocess
import sys
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
