"""Targets of the transport contract suite: a real peer (tests/peers.py) and a fresh tree per test.

A new file transport joins the suite by adding its name to `FILE_KINDS` and a branch to
`settings_for`. The servers of `tests/real_servers.py` (vsftpd, ProFTPD, OpenSSH, Apache) join
as `REAL_TARGETS`: the target's `kind` is the transport, its `server` the server's name.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, replace
from pathlib import Path

from peers import Certs, Peer, run_peer
from real_servers import REAL_SERVERS, RealServer, real_server, require

from config.model import ServerSettings, ServerType
from exporters.transports import FileTransport, Timeouts, open_transport

FILE_KINDS = ["dir", "ftp", "ftps", "sftp", "webdav"]
NETWORK_KINDS = ["ftp", "ftps", "sftp", "webdav"]
REAL_TARGETS = list(REAL_SERVERS)
TREE = ("CONFIG", "DEF", "SCRIPT", "CERT", "DATA", "CMD", "ALARM", "LOG", "BIN")
# Short enough that a broken test fails in seconds, long enough for a loaded 2-core CI box.
FAST = Timeouts(connect_s=10.0, operation_s=10.0)

_serial = itertools.count()


@dataclass(slots=True)
class Target:
    """A file server ready for one test: `tree` is its tree root on the server's own disk."""

    kind: str
    tree: Path
    settings: ServerSettings
    certs: Certs
    peer: Peer | RealServer | None
    server: str = ""  # the real server's name (tests/real_servers.py), or "" for tests/peers.py

    def transport(self, timeouts: Timeouts = FAST, **changes: object) -> FileTransport:
        settings = replace(self.settings, **changes)  # type: ignore[arg-type]
        transport = open_transport(settings, self.certs.dir, timeouts=timeouts)
        assert isinstance(transport, FileTransport)
        return transport


class PeerPool:
    """One long-lived peer per kind for the whole session, started on first use."""

    def __init__(self, base: Path, certs: Certs) -> None:
        self._base = base
        self._certs = certs
        self._stack = contextlib.ExitStack()
        self._peers: dict[str, Peer] = {}
        self._real: dict[str, RealServer] = {}

    def get_real(self, name: str) -> RealServer:
        require(name)
        if name not in self._real:
            self._real[name] = self._stack.enter_context(real_server(name, self._certs))
        return self._real[name]

    def get(self, kind: str) -> Peer:
        if kind not in self._peers:
            root = self._base / kind
            root.mkdir()
            self._peers[kind] = self._stack.enter_context(run_peer(kind, root, self._certs))
        return self._peers[kind]

    def close(self) -> None:
        self._stack.close()



def make_tree(root: Path) -> Path:
    for name in TREE:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


def settings_for(kind: str, peer: Peer | None, tree_name: str, tree: Path, certs: Certs,
                 ) -> ServerSettings:
    """ServerSettings of slot 1 pointing at `tree` (`tree_name` under the peer's root)."""
    common = {"slot": 1, "type": ServerType(kind), "user": "sunpm", "password": "secret"}
    if kind == "dir":
        return ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(tree))
    assert peer is not None
    if kind == "webdav":
        return ServerSettings(**common,  # type: ignore[arg-type]
                              http_url=f"https://127.0.0.1:{peer.port}/{tree_name}",
                              ca_file=certs.ca)
    return ServerSettings(**common, host="127.0.0.1", port=peer.port,  # type: ignore[arg-type]
                          root_dir=f"/{tree_name}", ca_file=certs.ca,
                          host_key=certs.host_key_line if kind == "sftp" else "")


def fresh_real_target(server: RealServer, certs: Certs) -> Target:
    tree = server.make_tree(f"t{next(_serial)}", TREE)
    return Target(kind=server.kind, tree=tree, settings=server.settings(tree), certs=certs,
                  peer=server, server=server.name)


def fresh_target(kind: str, peer: Peer | None, base: Path, certs: Certs) -> Target:
    name = f"t{next(_serial)}"
    tree = make_tree(base / name)
    return Target(kind=kind, tree=tree, settings=settings_for(kind, peer, name, tree, certs),
                  certs=certs, peer=peer)
