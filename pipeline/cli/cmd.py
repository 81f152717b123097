"""`sunpm cmd NAME [key=value ...] [--data DIR]`: a command to the running gateway through its
local socket (`DATA/sunpm.sock`, only the service user and root may open it).

`NAME` is a built-in (`status`, `connect`, `getParameters` ...) or `<script>.<function>`; a value
is read as JSON when it is JSON (`server=2`, `raw=true`, `value=80.5`), else as text. The answer is
printed as JSON; exit 0 for a result, 1 for an error answer, 2 for a name that is no built-in
(refused before sending, as typed, with the closest built-in) or when the gateway cannot be
reached.

`sunpm archive [--data DIR]` asks the running gateway for its debug archive
(`<uid>_SYSTEME_<ts>.tar.gz` in `DATA/archives/`, uploaded to server 1's `/LOG` after its next
session) and prints its path.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from store.events import JsonValue

_TIMEOUT_S = 660.0     # a command may take 600 s (docs/behaviour.md §7.2)
#: `discoverDevices` has no 600 s limit: 240 ids at 1 s on several interfaces take longer.
_DISCOVERY_TIMEOUT_S = 4 * 3600.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("cmd", help="send a command to the running gateway")
    parser.add_argument("name", metavar="NAME", help="status, connect, getParameters, ...")
    # A default makes argparse treat the `*` positional as optional in its "required" message.
    parser.add_argument("parameters", nargs="*", metavar="KEY=VALUE", default=[])
    parser.add_argument("--data", type=Path, metavar="DIR", default=Path("sunpm-data"),
                        help="the gateway's data directory (default ./sunpm-data)")
    parser.add_argument("--caller-id", help="callerId (a repeat within 7 days is not run again)")
    parser.set_defaults(handler=_cmd)
    archive = subparsers.add_parser(
        "archive", help="make the running gateway's debug archive (uploaded at the next session)")
    archive.add_argument("--data", type=Path, metavar="DIR", default=Path("sunpm-data"),
                         help="the gateway's data directory (default ./sunpm-data)")
    archive.set_defaults(handler=_archive)


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _cmd(args: argparse.Namespace) -> int:
    parameters: dict[str, object] = {}
    for item in args.parameters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"sunpm cmd: '{item}' is not KEY=VALUE", file=sys.stderr)
            return 2
        parameters[key] = _value(value)
    name: str = args.name if "." in args.name else f"sunpm.{args.name}"
    if (unknown := _unknown_builtin(args.name, name)) is not None:
        print(f"sunpm cmd: {unknown}", file=sys.stderr)
        return 2
    request = {"rpcName": name, "parameters": parameters, "callerId": args.caller_id}
    timeout = _DISCOVERY_TIMEOUT_S if name.lower() == "sunpm.discoverdevices" else _TIMEOUT_S
    doc = _exchange(args.data, request, "sunpm cmd", timeout)
    if doc is None:
        return 2
    # Numbers as the files write them (docs/formats.md §9.3): a script's 1e20 is
    # 100000000000000000000, not json's 1e+20. Imported here, as the socket's name: the
    # package is heavy and `sunpm --help` must not wait for it (`_exchange` loaded it already).
    from exporters.views.numbers import json_text

    print(json_text(cast("dict[str, JsonValue]", doc), indent=2))
    return 1 if "error" in doc else 0


def _unknown_builtin(typed: str, name: str) -> str | None:
    """Why `typed` names no built-in, or None. Said here, in the user's words: the gateway's
    answer names the command as it runs it (`unknown command 'sunpm.nosuch'`)."""
    # Imported here: the service package is heavy and `sunpm --help` must not wait for it.
    import difflib

    from pipeline.service.commands import BUILTIN_NAMES

    script, _, function = name.partition(".")
    if script.lower() != "sunpm" or function.lower() in {n.lower() for n in BUILTIN_NAMES}:
        return None
    by_lower = {n.lower(): n for n in BUILTIN_NAMES}
    close = difflib.get_close_matches(function.lower(), by_lower, n=1)
    hint = f"did you mean {by_lower[close[0]]}?" if close else "built-ins: " + ", ".join(
        BUILTIN_NAMES)
    return f"unknown command '{typed}' ({hint})"


def _archive(args: argparse.Namespace) -> int:
    doc = _exchange(args.data, {"request": "archive"}, "sunpm archive", _TIMEOUT_S)
    if doc is None:
        return 2
    if "error" in doc:
        print(f"sunpm archive: {doc['error']}", file=sys.stderr)
        return 1
    print(doc.get("result"))
    return 0


def _exchange(data: Path, request: dict[str, object], command: str,
              timeout_s: float) -> dict[str, object] | None:
    """The gateway's answer to one request, or None (said on stderr) when there is none."""
    # Imported here: the service package is heavy and `sunpm --help` must not wait for it.
    from pipeline.service.local import SOCKET_NAME, unix_address

    path = data / SOCKET_NAME
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, \
                unix_address(path) as address:
            sock.settimeout(timeout_s)
            sock.connect(address)
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError as err:
        print(f"{command}: {path}: cannot reach the gateway ({err.strerror or err}); is "
              "`sunpm run` running with this --data?", file=sys.stderr)
        return None
    if not answer:
        # The gateway stopped (or restarted) with the request in hand: it may have run it, and
        # its result, if any, is journaled.
        print(f"{command}: {path}: the gateway closed the connection without an answer (it "
              "is stopping or restarting?)", file=sys.stderr)
        return None
    try:
        doc = json.loads(answer)
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        print(f"{command}: {path}: unreadable answer", file=sys.stderr)
        return None
    return doc
