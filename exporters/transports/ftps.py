"""`ftps`: FTP with explicit TLS (`AUTH TLS`, RFC 4217), control and data channels encrypted.

The server certificate and its host name are checked against `FTP_CaFile` (a file in `/CERT`) or the
system CAs (docs/behaviour.md §4.2 step 1); a mismatch is not retriable.

Peer quirks handled here:
- vsftpd (`require_ssl_reuse=YES`, its default), FileZilla Server and ProFTPD refuse a data
  connection whose TLS session is not the control connection's: `ftplib` opens each data channel
  with a fresh session, so data channels here resume the control session.
- `PROT P` is sent right after login, so no listing or file ever crosses in clear.
Everything else (binary mode, rename over an existing name, listings) is `ftp.py`'s.
"""

from __future__ import annotations

import ftplib
import socket
import ssl
from pathlib import Path

from config.model import ServerSettings

from ._base import DEFAULT_TIMEOUTS, Timeouts, tls_context
from .ftp import CappedLines, FtpTransport


class _ReusingFtpTls(CappedLines, ftplib.FTP_TLS):
    data_conn: socket.socket | None = None

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=session)
        self.data_conn = conn
        return conn, size  # type: ignore[return-value]


class FtpsTransport(FtpTransport):
    """Explicit FTPS; same keys as `ftp` plus `FTP_CaFile`."""

    def __init__(self, settings: ServerSettings, *, cert_dir: Path,
                 timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        super().__init__(settings, timeouts=timeouts)
        self._cert_dir = cert_dir

    def _new_client(self) -> ftplib.FTP:
        return _ReusingFtpTls(context=tls_context(self.server, self._cert_dir,
                                                  self._settings.ca_file))

    def _secure_login(self, ftp: ftplib.FTP) -> None:
        assert isinstance(ftp, ftplib.FTP_TLS)
        ftp.auth()
        ftp.login(self._settings.user, self._settings.password, secure=False)
        ftp.prot_p()
