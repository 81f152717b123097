"""The closest known key to a misspelt one (docs/formats.md §4: an unknown key is reported with
the known key at edit distance ≤ 2, so `FTP_Hots` points at `FTP_Host`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from config._distance import MAX_DISTANCE, edit_distance
from config._ini import indexed_key


def closest_key(key: str, known: Iterable[str]) -> str | None:
    """The known key nearest `key` within `MAX_DISTANCE` edits, ignoring case (keys are
    case-sensitive, but `ftp_host` is still a `FTP_Host` typed in the wrong case); None if none.
    Ties go to the most similar by `difflib`'s ratio, then the first known."""
    folded = key.casefold()
    scored = [(edit_distance(folded, k.casefold()), k) for k in known]
    near = [(d, k) for d, k in scored if d <= MAX_DISTANCE]
    if not near:
        return None
    best = min(d for d, _ in near)
    tied = [k for d, k in near if d == best]
    return max(tied, key=lambda k: difflib.SequenceMatcher(None, key, k).ratio())


def unknown_key_message(key: str, known: Iterable[str]) -> str:
    """`unknown key (did you mean FTP_Host?); ignored`, or `unknown key; ignored`."""
    hint = closest_key(key, known)
    return f"unknown key (did you mean {hint}?); ignored" if hint else "unknown key; ignored"


def indexed_unknown_key(key: str, families: tuple[str, ...]) -> str:
    """The warning of a key that is no `<family>[<n>]` of this file (kept, docs/formats.md §4),
    hinting at the family it is a misspelling of: `SCHEDUL_Params[0]` -> `SCHEDULE_Params[0]`."""
    parsed = indexed_key(key)
    family, suffix = (parsed[0], f"[{parsed[1]}]") if parsed else (key, "")
    hint = closest_key(family, families)
    return f"unknown key (did you mean {hint}{suffix}?); ignored" if hint else \
        "unknown key; ignored"


def malformed_key_message(key: str, families: tuple[str, ...]) -> str:
    """The error of a key of a file's own prefix that is no `<family>[<n>]`: the family it is a
    misspelling of when there is one (`SCHEDULE_Parms[1]` -> `SCHEDULE_Params[1]`), else the
    forms the file takes."""
    parsed = indexed_key(key)
    hint = closest_key(parsed[0], families) if parsed else None
    if hint is not None and parsed is not None:
        return f"malformed key (did you mean {hint}[{parsed[1]}]?)"
    return f"malformed key ({' or '.join(f'{f}[<n>]' for f in families)})"
