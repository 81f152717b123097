"""A pyftpdlib server in its own process, for delivery tests that stop, restart or outlive clients.

    python tests/test_exporters/delivery/_ftp_peer.py --root DIR --events FILE [--port N] [--perm elradfmw]
        [--override /CMD=elrw ...] [--chunk-delay-ms MS] [--password PW]
        [--stall-after STOR:N | RNTO:N | SIZE:N]

Prints `PORT <n>` once listening. Appends one line per completed operation to FILE (flushed), so
the test sees the order in which final names appeared: `STOR <path>` when an upload completed,
`RNTO <path>` when a rename to a final name succeeded; and `DELE <path>` for every delete asked.
`--stall-after CMD:N`: the N-th `STOR` (its bytes stored), `RNTO` (the rename done) or `SIZE`
gets no reply (`226`, `250`, any): the server stops answering anything (`STALL -`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.servers import FTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", default="sunpm")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--perm", default="elradfmw")
    parser.add_argument("--override", action="append", default=[])
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--stall-after", default="")
    args = parser.parse_args()

    events = open(args.events, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    root = Path(args.root).resolve()

    def note(op: str, path: str) -> None:
        rel = "/" + str(Path(path).resolve().relative_to(root))
        events.write(f"{op} {rel}\n")

    stalled_cmd, _, count = args.stall_after.partition(":")
    left = {stalled_cmd: int(count)} if count else {}
    replies = {"STOR": "226", "RNTO": "250", "SIZE": ""}  # "": whatever the reply

    class Handler(FTPHandler):  # type: ignore[misc]
        stall_on: str | None = None
        renamed_to = ""

        def respond(self, resp: str, *more: Any, **named: Any) -> None:
            if self.stall_on is not None and resp.startswith(self.stall_on):
                if self.stall_on == "250":  # the rename is done: its final name appeared
                    note("RNTO", self.renamed_to)
                events.write("STALL -\n")
                while True:  # the server's one loop blocked: no reply, no new connection
                    time.sleep(60)
            super().respond(resp, *more, **named)

        def counted(self, op: str) -> None:
            if op in left:
                left[op] -= 1
                if left[op] == 0:
                    self.stall_on = replies[op]

        def ftp_STOR(self, file: str, mode: str = "w") -> Any:
            self.counted("STOR")
            return super().ftp_STOR(file, mode)

        def ftp_SIZE(self, path: str) -> Any:
            self.counted("SIZE")
            return super().ftp_SIZE(path)

        def on_file_received(self, file: str) -> None:
            note("STOR", file)

        def ftp_DELE(self, path: str) -> Any:
            note("DELE", path)
            return super().ftp_DELE(path)

        def ftp_RNTO(self, path: str) -> Any:
            self.counted("RNTO")
            self.renamed_to = path
            result = super().ftp_RNTO(path)
            if result is not None:
                note("RNTO", path)
            return result

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, str(root), perm=args.perm)
    for item in args.override:
        directory, _, perm = item.partition("=")
        authorizer.override_perm(args.user, str(root / directory.strip("/")), perm,
                                 recursive=True)
    Handler.authorizer = authorizer
    Handler.auth_failed_timeout = 0.2  # pyftpdlib answers a wrong password after 3 s by default
    Handler.permit_foreign_addresses = False
    if args.chunk_delay_ms:
        delay_s = args.chunk_delay_ms / 1000

        class SlowDTPHandler(DTPHandler):  # type: ignore[misc]
            # pyftpdlib's ThrottledDTPHandler only acts past a whole second's budget; small
            # files must be slow too, so each 4 KiB read waits (one client, so blocking is fine).
            ac_in_buffer_size = 4096

            def handle_read(self) -> None:
                super().handle_read()
                time.sleep(delay_s)

            handle_read_event = handle_read  # the ioloop calls this alias

        Handler.dtp_handler = SlowDTPHandler
    else:
        Handler.dtp_handler = DTPHandler
    server = FTPServer(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.address[1]}", flush=True)
    server.serve_forever(timeout=0.2, handle_exit=True)


if __name__ == "__main__":
    main()
