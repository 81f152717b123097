"""Log lines never carry the password of a URL (docs/formats.md §11): on stderr and in the
journal's `log` events alike, whatever logged it."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from waiting import wait_until

from pipeline.service.logs import GatewayFormatter, JournalLogHandler
from store import Log, StoreOptions
from store.events import LogLine, journal_items


async def test_a_url_password_is_masked_on_stderr_and_in_the_journal(tmp_path: Path) -> None:
    logger = logging.getLogger("sunpm.session")
    stream = io.StringIO()
    stderr = logging.StreamHandler(stream)
    stderr.setFormatter(GatewayFormatter())
    journal = JournalLogHandler(logging.INFO)
    logger.addHandler(stderr)
    logger.addHandler(journal)
    try:
        logger.warning("login to %s failed", "ftp://user:secret@host/dir")
        async with await Log.open(tmp_path / "store", StoreOptions()) as store:
            journal.drain(store)
            lines: list[str] = []

            def journaled() -> bool:
                lines[:] = [LogLine.from_body(item.body).message
                            for item in journal_items(store.journal(kinds=["log"]))]
                return bool(lines)

            await wait_until(journaled, 10, what="the line journaled")
    finally:
        logger.removeHandler(stderr)
        logger.removeHandler(journal)
    assert lines == ["login to ftp://user:***@host/dir failed"]
    assert stream.getvalue().endswith(" WARNING session: login to ftp://user:***@host/dir "
                                      "failed\n")
