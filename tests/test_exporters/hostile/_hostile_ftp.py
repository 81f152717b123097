"""A hostile FTP server in its own process: pyftpdlib over a real folder, with tricks.

    python _hostile_ftp.py --root DIR [--endless TREE_PATH ...] [--trickle TREE_PATH ...]
        [--endless-listing TREE_DIR ...] [--long-line TREE_DIR ...]

Prints `PORT <n>` once listening. Files not named keep their real content. Tricks, each for the
tree paths given (the real file must exist, so SIZE answers its small size):
- `--endless`: RETR sends zeros forever, as fast as the client takes them.
- `--trickle`: RETR sends 8 bytes every 0.1 s, forever (80 B/s: a stalled server).
- `--endless-listing`: MLSD and NLST of the folder list the real files, then made-up names forever.
- `--long-line`: MLSD of the folder starts with a 10,000-byte entry, then the real files.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.handlers.ftp.producers import BufferedIteratorProducer
from pyftpdlib.servers import FTPServer


class _Endless:
    """A file object that never ends; `delay_s` between small blocks makes it a trickle."""

    def __init__(self, name: str, delay_s: float) -> None:
        self.name = name
        self.closed = False
        self._delay_s = delay_s

    def read(self, size: int = -1) -> bytes:
        if self._delay_s:
            time.sleep(self._delay_s)  # one client per server: blocking the loop is fine
            return b"x" * 8
        return b"\0" * (size if size > 0 else 65536)

    def seek(self, offset: int) -> None:
        del offset

    def close(self) -> None:
        self.closed = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--endless", action="append", default=[])
    parser.add_argument("--trickle", action="append", default=[])
    parser.add_argument("--endless-listing", action="append", default=[])
    parser.add_argument("--long-line", action="append", default=[])
    args = parser.parse_args()
    root = Path(args.root).resolve()

    def tree(path: str) -> str:
        return "/" + str(Path(path).resolve().relative_to(root)).strip(".")

    class HostileFs(AbstractedFS):  # type: ignore[misc]
        def open(self, filename: str, mode: str) -> Any:
            if "r" in mode and tree(filename) in args.endless:
                return _Endless(filename, 0.0)
            if "r" in mode and tree(filename) in args.trickle:
                return _Endless(filename, 0.1)
            return super().open(filename, mode)

        def format_mlsx(self, basedir: str, listing: list[str], perms: str, facts: str,
                        ignore_err: bool = True) -> Iterator[bytes]:
            real: Iterator[bytes] = super().format_mlsx(basedir, listing, perms, facts, ignore_err)
            folder = tree(basedir)
            if folder in args.long_line:
                real = itertools.chain([b"type=file;size=1; " + b"L" * 10_000 + b"\r\n"], real)
            if folder in args.endless_listing:
                real = itertools.chain(real, (f"type=file;size=1; made-up-{n:012d}.csv\r\n".encode()
                                              for n in itertools.count()))
            return real

    class Handler(FTPHandler):  # type: ignore[misc]
        use_sendfile = False  # the endless files have no descriptor

        def ftp_NLST(self, path: str) -> Any:
            if tree(path) not in args.endless_listing:
                return super().ftp_NLST(path)
            names = (f"made-up-{n:012d}.csv\r\n".encode() for n in itertools.count())
            self.push_dtp_data(BufferedIteratorProducer(names), isproducer=True, cmd="NLST")
            return path

    authorizer = DummyAuthorizer()
    authorizer.add_user("sunpm", "secret", str(root), perm="elradfmw")
    Handler.authorizer = authorizer
    Handler.abstracted_fs = HostileFs
    Handler.permit_foreign_addresses = False
    server = FTPServer(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.address[1]}", flush=True)
    sys.stdout.close()
    server.serve_forever(timeout=0.2, handle_exit=True)


if __name__ == "__main__":
    main()
