"""The servers information systems run, on 127.0.0.1, for transport and session tests.

vsftpd (FTP and explicit FTPS), ProFTPD (FTP), OpenSSH's sshd (internal-sftp; RSA, ECDSA and
Ed25519 host keys at once) and Apache httpd with mod_dav over HTTPS (Basic and Digest), each a
foreground child process on an ephemeral port with its configuration in a temporary folder. The
Debian packages are the ones `.ci/run` installs (ProFTPD conflicts with vsftpd as a package, so
`.ci/run` unpacks `proftpd-core` into /opt/sunpm-ci/proftpd instead of installing it).

Accounts, as on `tests/peers.py`: `sunpm`/`secret` may do everything, `reader`/`secret` may only
list and read. vsftpd and sshd authenticate through PAM and the system's user database; so that
tests never touch /etc, both run under cwrap's nss_wrapper and pam_wrapper (Debian
`libnss-wrapper`, `libpam-wrapper`): a passwd file of our own (`sunpm` is uid 0, `reader` is
`nobody`) and a PAM service checking passwords with `pam_matrix`. ProFTPD reads an
`AuthUserFile`; Apache `htpasswd`/`htdigest` files. Apache refuses to serve as root, so it runs as
`www-data`: its trees are made world-writable (`tree_mode`).

Every server serves trees under `server.root` by their absolute disk path (FTP and SFTP without
chroot, `FTP_RootDir` = the tree's path), Apache at `/basic/<tree>` and `/digest/<tree>`, and
read-only at `/basic/ro/<tree>` and `/digest/ro/<tree>`.

Use `real_server(name, base, certs)` (a context manager) with a name of `REAL_SERVERS`, after
`require(name)`: it skips the test when the binary or the wrappers are missing, and fails it
under CI (`CI` set), where `.ci/run` must have installed them.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from peers import USERS, Certs, free_ports

from config.model import ServerSettings, ServerType

#: server name -> transport kind
REAL_SERVERS: dict[str, str] = {
    "vsftpd-ftp": "ftp",
    "vsftpd-ftps": "ftps",
    "proftpd-ftp": "ftp",
    "sshd-rsa": "sftp",
    "sshd-ecdsa": "sftp",
    "sshd-ed25519": "sftp",
    "apache-basic": "webdav",
    "apache-digest": "webdav",
}
PROFTPD_UNPACKED = Path("/opt/sunpm-ci/proftpd")
APACHE_USER = "www-data"
_START_TIMEOUT_S = 20.0
_HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


def _lib(pattern: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/*/{pattern}") + glob.glob(f"/lib/*/{pattern}"))
    return found[0] if found else None


def _proftpd() -> str | None:
    unpacked = PROFTPD_UNPACKED / "usr" / "sbin" / "proftpd"
    return shutil.which("proftpd") or (str(unpacked) if unpacked.exists() else None)


def _missing(name: str) -> list[str]:
    """What `name` needs that this machine lacks."""
    program = name.split("-")[0]
    needs: dict[str, str | None] = {}
    if program == "vsftpd":
        needs["vsftpd"] = shutil.which("vsftpd") or (
            "/usr/sbin/vsftpd" if os.path.exists("/usr/sbin/vsftpd") else None)
    elif program == "proftpd":
        needs["proftpd (proftpd-core)"] = _proftpd()
        needs["openssl"] = shutil.which("openssl")
    elif program == "sshd":
        needs["sshd (openssh-server)"] = "/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") \
            else None
        needs["ssh-keygen"] = shutil.which("ssh-keygen")
    elif program == "apache":
        needs["apache2"] = "/usr/sbin/apache2" if os.path.exists("/usr/sbin/apache2") else None
        needs["mod_dav_fs"] = ("x" if os.path.exists("/usr/lib/apache2/modules/mod_dav_fs.so")
                               else None)
    if program in ("vsftpd", "sshd"):
        needs["libnss-wrapper"] = _lib("libnss_wrapper.so")
        needs["libpam-wrapper"] = _lib("libpam_wrapper.so")
        needs["pam_matrix"] = _lib("pam_wrapper/pam_matrix.so")
    lacking = [what for what, where in needs.items() if where is None]
    if os.geteuid() != 0:
        lacking.append("root (the servers switch users)")
    return lacking


def require(name: str) -> None:
    """Skip (fail under CI) when `name` cannot run here."""
    lacking = _missing(name)
    if not lacking:
        return
    text = f"{name}: missing {', '.join(lacking)}"
    if os.environ.get("CI"):
        pytest.fail(f"{text} (.ci/run installs them)")
    pytest.skip(f"{text}: see tests/real_servers.py")


@dataclass(slots=True)
class RealServer:
    name: str
    kind: str                      # transport kind
    root: Path                     # trees live here
    port: int
    certs: Certs
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: sshd: `ssh-keygen -lf` fingerprint (`SHA256:...`) per host key type
    fingerprints: dict[str, str] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)

    @property
    def program(self) -> str:
        return self.name.split("-")[0]

    @property
    def tree_mode(self) -> int:
        """Mode of the tree's folders: Apache writes as www-data."""
        return 0o777 if self.program == "apache" else 0o755

    def settings(self, tree: Path, *, slot: int = 1, two_step: bool = True) -> ServerSettings:
        """ServerSettings of `slot` pointing at `tree` (a folder under `root`)."""
        common = {"slot": slot, "type": ServerType(self.kind), "user": "sunpm",
                  "password": USERS["sunpm"], "two_step": two_step}
        if self.kind == "webdav":
            scheme = self.name.split("-")[1]
            return ServerSettings(**common,  # type: ignore[arg-type]
                                  http_url=f"https://127.0.0.1:{self.port}/{scheme}/{tree.name}",
                                  ca_file=self.certs.ca)
        host_key = self.fingerprints[self.name.split("-")[1]] if self.kind == "sftp" else ""
        return ServerSettings(**common, host="127.0.0.1", port=self.port,  # type: ignore[arg-type]
                              root_dir=str(tree), ca_file=self.certs.ca, host_key=host_key)

    def make_tree(self, name: str, folders: tuple[str, ...]) -> Path:
        tree = self.root / name
        for folder in (tree, *(tree / f for f in folders)):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(self.tree_mode)
        return tree

    def log_tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs if p.exists())

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def real_server(name: str, certs: Certs) -> Iterator[RealServer]:
    """Start `name` (a key of `REAL_SERVERS`); its trees go in a fresh folder under /tmp that
    every account can reach (pytest's own temporary folders are private to root)."""
    work = Path(tempfile.mkdtemp(prefix=f"sunpm-{name}-"))
    work.chmod(0o755)
    root = work / "trees"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    conf = work / "conf"
    conf.mkdir(mode=0o755)
    server = RealServer(name=name, kind=REAL_SERVERS[name], root=root, port=free_ports(1)[0],
                        certs=certs)
    try:
        starter = {"vsftpd": _start_vsftpd, "proftpd": _start_proftpd, "sshd": _start_sshd,
                   "apache": _start_apache}[server.program]
        starter(server, conf)
        _wait_listening(server)
        yield server
    finally:
        for proc in server.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        _unlock_all(root)
        shutil.rmtree(work, ignore_errors=True)


def _unlock_all(root: Path) -> None:
    """Undo any read-only folder a test left (chmod) so the cleanup can remove the trees."""
    for folder, dirs, _files in os.walk(root):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(folder, d), 0o755)
    del folder


def _wait_listening(server: RealServer) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        for proc in server.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited ({proc.returncode}):\n"
                                   + server.log_tail())
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} not listening:\n{server.log_tail()}") from None
            time.sleep(0.05)


def _spawn(server: RealServer, conf: Path, argv: list[str],
           env: dict[str, str] | None = None) -> None:
    log = conf / f"{server.program}.out"
    server.logs.append(log)
    with open(log, "ab") as out:
        # A test run killed outright leaves no server behind: the server gets SIGKILL when its
        # parent dies (setpriv is util-linux's, on every Debian).
        setpriv = shutil.which("setpriv")
        guard = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
        server.procs.append(subprocess.Popen([*guard, *argv], stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, cwd=conf,
                                             env={**os.environ, **(env or {})}))


# --------------------------------------------------------------------------- PAM and NSS


def _wrapped_accounts(server: RealServer, conf: Path, service: str) -> dict[str, str]:
    """passwd/group files and a PAM service of our own; the environment that makes a server
    use them (cwrap's nss_wrapper and pam_wrapper, preloaded)."""
    home = server.root
    keep = {"root", "nobody", "sshd", APACHE_USER}
    system = [line for line in Path("/etc/passwd").read_text().splitlines()
              if line.split(":")[0] in keep]
    (conf / "passwd").write_text("\n".join([
        *system,
        f"sunpm:x:0:0:sunpm:{home}:/bin/sh",
        f"reader:x:65534:65534:reader:{home}:/bin/sh"]) + "\n")
    groups = [line for line in Path("/etc/group").read_text().splitlines()
              if line.split(":")[0] in ("root", "nogroup", APACHE_USER)]
    (conf / "group").write_text("\n".join(groups) + "\n")
    (conf / "passdb").write_text("".join(f"{user}:{password}:{service}\n"
                                         for user, password in USERS.items()))
    pam = conf / "pam.d"
    pam.mkdir()
    matrix = _lib("pam_wrapper/pam_matrix.so")
    permit = _lib("security/pam_permit.so") or "pam_permit.so"
    stack = (f"auth required {matrix} passdb={conf / 'passdb'}\n"
             f"account required {permit}\n"
             f"session required {permit}\n"
             f"password required {permit}\n")
    for name in (service, "other"):
        (pam / name).write_text(stack)
    return {"LD_PRELOAD": f"{_lib('libpam_wrapper.so')} {_lib('libnss_wrapper.so')}",
            "PAM_WRAPPER": "1", "PAM_WRAPPER_SERVICE_DIR": str(pam),
            "NSS_WRAPPER_PASSWD": str(conf / "passwd"), "NSS_WRAPPER_GROUP": str(conf / "group")}


# --------------------------------------------------------------------------- vsftpd


def _start_vsftpd(server: RealServer, conf: Path) -> None:
    env = _wrapped_accounts(server, conf, "sunpm-vsftpd")
    empty = conf / "empty"
    empty.mkdir(mode=0o755)
    c = server.certs
    lines = [
        "listen=YES", "listen_address=127.0.0.1", f"listen_port={server.port}",
        "background=NO", "anonymous_enable=NO", "local_enable=YES", "write_enable=YES",
        "local_umask=022", "pam_service_name=sunpm-vsftpd", f"secure_chroot_dir={empty}",
        "check_shell=NO", "xferlog_enable=NO", "use_localtime=NO",
        # Sandboxing needs namespaces and seccomp filters a container may not grant.
        "seccomp_sandbox=NO", "isolate=NO", "isolate_network=NO",
    ]
    if server.kind == "ftps":
        # require_ssl_reuse stays at its default (YES): data channels must resume the
        # control connection's TLS session.
        lines += ["ssl_enable=YES", f"rsa_cert_file={c.dir / c.server_cert}",
                  f"rsa_private_key_file={c.dir / c.server_key}",
                  "force_local_logins_ssl=YES", "force_local_data_ssl=YES",
                  "ssl_ciphers=HIGH"]
    (conf / "vsftpd.conf").write_text("\n".join(lines) + "\n")
    vsftpd = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    _spawn(server, conf, [vsftpd, str(conf / "vsftpd.conf")], env)


# --------------------------------------------------------------------------- ProFTPD


def _crypt(password: str) -> str:
    done = subprocess.run(["openssl", "passwd", "-6", password], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def _start_proftpd(server: RealServer, conf: Path) -> None:
    home = server.root
    (conf / "ftpd.passwd").write_text(
        f"sunpm:{_crypt(USERS['sunpm'])}:0:0:sunpm:{home}:/bin/sh\n"
        f"reader:{_crypt(USERS['reader'])}:65534:65534:reader:{home}:/bin/sh\n")
    (conf / "ftpd.group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for name in ("ftpd.passwd", "ftpd.group"):
        (conf / name).chmod(0o600)  # ProFTPD refuses world-readable password files
    (conf / "proftpd.conf").write_text(f"""
ServerType standalone
ServerName "sunpm test"
DefaultServer on
UseIPv6 off
DefaultAddress 127.0.0.1
SocketBindTight on
Port {server.port}
User nobody
Group nogroup
PidFile {conf}/proftpd.pid
ScoreboardFile {conf}/proftpd.scoreboard
SystemLog {conf}/proftpd.log
TransferLog none
WtmpLog off
DelayEngine off
ControlsEngine off
UseReverseDNS off
AuthOrder mod_auth_file.c
AuthUserFile {conf}/ftpd.passwd
AuthGroupFile {conf}/ftpd.group
RequireValidShell off
UseFtpUsers off
RootLogin on
AllowOverwrite on
Umask 022
<Directory {home}>
  <Limit WRITE>
    DenyUser reader
  </Limit>
</Directory>
""")
    server.logs.append(conf / "proftpd.log")
    proftpd = _proftpd()
    assert proftpd is not None
    _spawn(server, conf, [proftpd, "--nodaemon", "-c", str(conf / "proftpd.conf")])


# --------------------------------------------------------------------------- OpenSSH


def _start_sshd(server: RealServer, conf: Path) -> None:
    env = _wrapped_accounts(server, conf, "sshd")
    keys = []
    for key_type in _HOST_KEY_TYPES:
        key = conf / f"ssh_host_{key_type}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(key)],
                       check=True, capture_output=True)
        shown = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], check=True,
                               capture_output=True, text=True).stdout.split()
        server.fingerprints[key_type] = shown[1]  # "256 SHA256:... comment (ED25519)"
        keys.append(f"HostKey {key}")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    host_keys = "\n".join(keys)
    (conf / "sshd_config").write_text(f"""
Port {server.port}
ListenAddress 127.0.0.1
{host_keys}
PidFile {conf}/sshd.pid
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
PermitRootLogin yes
StrictModes no
AuthorizedKeysFile none
UseDNS no
PrintMotd no
MaxStartups 100
Subsystem sftp internal-sftp
Match User reader
    ForceCommand internal-sftp -R
""")
    _spawn(server, conf, ["/usr/sbin/sshd", "-D", "-e", "-f", str(conf / "sshd_config")], env)


# --------------------------------------------------------------------------- Apache


_APACHE_MODULES = ("mpm_event", "authz_core", "authn_core", "authn_file", "auth_basic",
                   "auth_digest", "authz_user", "alias", "dav", "dav_fs", "ssl",
                   "socache_shmcb")
REALM = "sunpm"


def _start_apache(server: RealServer, conf: Path) -> None:
    home = server.root
    home.chmod(0o755)
    htpasswd = "".join(
        f"{user}:{{SHA}}{base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()}\n"
        for user, pw in USERS.items())
    htdigest = "".join(
        f"{user}:{REALM}:{hashlib.md5(f'{user}:{REALM}:{pw}'.encode()).hexdigest()}\n"
        for user, pw in USERS.items())
    (conf / "htpasswd").write_text(htpasswd)
    (conf / "htdigest").write_text(htdigest)
    run = conf / "run"
    run.mkdir()
    shutil.chown(run, APACHE_USER, APACHE_USER)
    c = server.certs
    modules = "\n".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so"
                        for m in _APACHE_MODULES)
    schemes = {"basic": f"AuthType Basic\n    AuthBasicProvider file\n"
                        f"    AuthUserFile {conf}/htpasswd",
               "digest": f"AuthType Digest\n    AuthDigestProvider file\n"
                         f"    AuthUserFile {conf}/htdigest"}
    locations = []
    for scheme, auth in schemes.items():
        locations.append(f"""
Alias /{scheme}/ro {home}
Alias /{scheme} {home}
<Location /{scheme}>
    {auth}
    AuthName {REALM}
    Require valid-user
</Location>
<Location /{scheme}/ro>
    {auth}
    AuthName {REALM}
    <Limit PUT DELETE MOVE COPY MKCOL PROPPATCH LOCK UNLOCK POST>
        Require all denied
    </Limit>
    <LimitExcept PUT DELETE MOVE COPY MKCOL PROPPATCH LOCK UNLOCK POST>
        Require valid-user
    </LimitExcept>
</Location>""")
    (conf / "httpd.conf").write_text(f"""
ServerRoot {conf}
{modules}
Listen 127.0.0.1:{server.port}
ServerName 127.0.0.1
User {APACHE_USER}
Group {APACHE_USER}
PidFile {conf}/httpd.pid
ErrorLog {conf}/error.log
LogLevel warn
Mutex file:{run} default
DefaultRuntimeDir {run}
DAVLockDB {run}/DAVLock
SSLEngine on
SSLCertificateFile {c.dir / c.server_cert}
SSLCertificateKeyFile {c.dir / c.server_key}
DocumentRoot {home}
<Directory />
    Require all denied
</Directory>
<Directory {home}>
    Dav On
    Options None
    AllowOverride None
</Directory>
{''.join(locations)}
""")
    server.logs.append(conf / "error.log")
    _spawn(server, conf, ["/usr/sbin/apache2", "-f", str(conf / "httpd.conf"),
                          "-DFOREGROUND"])
