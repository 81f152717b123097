"""The closest known key to a misspelt one (docs/formats.md §4: an unknown key is reported with
the known key at edit distance ≤ 2, so `FTP_Hots` points at `FTP_Host`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Final

from config._ini import indexed_key

MAX_DISTANCE: Final = 2


def edit_distance(a: str, b: str, limit: int = MAX_DISTANCE) -> int:
    """Levenshtein distance of `a` and `b`, or `limit + 1` as soon as it must exceed `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return min(previous[-1], limit + 1)


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
