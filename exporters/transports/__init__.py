"""sunpm exporters/transports: moving bytes to a server, one module per protocol.

The registry below maps a `SERVER_Type` to its module's class; `open_transport` builds the
transport of a configured slot. See README.md for the interface and how to add a transport.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from config.model import ServerSettings, ServerType

from ._base import (
    DEFAULT_TIMEOUTS,
    MAX_IN_FLIGHT,
    TMP_SUFFIX,
    DownloadTooLarge,
    Failure,
    FileTransport,
    HostKeyPinned,
    InboundMessage,
    MessageTooLarge,
    MessageTransport,
    RemoteFile,
    Timeouts,
    TransportError,
    tls_context,
)
from .dir import DirTransport
from .ftp import FtpTransport
from .ftps import FtpsTransport

if TYPE_CHECKING:
    from .mqtt import MqttTransport
    from .sftp import SftpTransport
    from .webdav import WebdavTransport

__all__ = [
    "MAX_IN_FLIGHT", "TMP_SUFFIX", "DirTransport", "DownloadTooLarge", "Failure", "FileTransport",
    "FtpTransport", "FtpsTransport", "HostKeyPinned", "InboundMessage", "MessageTooLarge", "MessageTransport", "MqttTransport",
    "RemoteFile", "SftpTransport", "Timeouts", "TransportError", "WebdavTransport",
    "open_transport", "tls_context",
]


def __getattr__(name: str) -> object:
    # asyncssh and httpx cost the gateway some 30 MB resident, aiomqtt (with paho) 14 MB:
    # imported when a slot uses them.
    if name == "MqttTransport":
        from .mqtt import MqttTransport
        return MqttTransport
    if name == "SftpTransport":
        from .sftp import SftpTransport
        return SftpTransport
    if name == "WebdavTransport":
        from .webdav import WebdavTransport
        return WebdavTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_transport(settings: ServerSettings, cert_dir: Path, *,
                   timeouts: Timeouts = DEFAULT_TIMEOUTS,
                   on_host_key_pinned: HostKeyPinned | None = None,
                   ) -> FileTransport | MessageTransport:
    """The transport of a configured slot, not yet connected.

    `cert_dir` holds the `/CERT` files that `*_CaFile`, `MQTT_CertFile`, `MQTT_KeyFile` name;
    `on_host_key_pinned` persists an SFTP host key pinned on first sight (FTP_AcceptUnknownHostKey).
    """
    match settings.type:  # the registry: one line per transport
        case ServerType.DIR: return DirTransport(settings, timeouts=timeouts)
        case ServerType.FTP: return FtpTransport(settings, timeouts=timeouts)
        case ServerType.FTPS: return FtpsTransport(settings, cert_dir=cert_dir, timeouts=timeouts)
        case ServerType.SFTP:
            from .sftp import SftpTransport
            return SftpTransport(settings, timeouts=timeouts,
                                 on_host_key_pinned=on_host_key_pinned)
        case ServerType.WEBDAV:
            from .webdav import WebdavTransport
            return WebdavTransport(settings, cert_dir=cert_dir, timeouts=timeouts)
        case ServerType.MQTT | ServerType.MQTTS:
            from .mqtt import MqttTransport
            return MqttTransport(settings, cert_dir=cert_dir, timeouts=timeouts)
    raise ValueError(f"server {settings.slot}: no transport for SERVER_Type={settings.type}")
