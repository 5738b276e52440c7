"""A private Dovecot IMAP server on loopback, for the fetcher's tests (STYLE.md §6).

``start_dovecot`` writes a configuration into a fresh directory under the
system temporary directory (the mail user must be able to reach it, which a
pytest temporary directory, mode 0700 and owned by root, does not allow),
listens on 127.0.0.1 on two free ports — plain IMAP with STARTTLS, and
IMAPS — with a self-signed certificate made here, and waits until the
server greets. With ``lmtp=True`` it also delivers mail over LMTP (RFC 2033)
on a third free port, for the end-to-end test's Postfix; a recipient's
domain is dropped there, so ``user7@example.org`` is the mailbox of ``user7``.
Junk, Trash, Drafts and Sent are special-use folders (RFC 6154) once a test
creates them. Users live in a passwd-file; as Dovecot does not reliably notice lines added
while it runs, each test takes a user of its own, with an empty mailbox, from a pool written
before the server starts.

Running as root (CI does), the master keeps root and mail is stored as the
``dovecot`` user (or ``nobody``); as any other user, everything runs as that
user. The server is stopped by killing its process group.

Mail is put into the server with IMAP APPEND through imapclient: real server
behaviour, never a file dropped into its Maildir.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Dovecot", "ImapUser", "find_daemon", "find_dovecot", "free_port", "self_signed", "start_dovecot"]

# Daemons live in sbin, which is often not on a user's PATH.
_SBIN = ("/usr/sbin", "/usr/local/sbin")
_users = itertools.count(1)
_POOL = 400
#: Folders the server marks as special-use (RFC 6154 §2) when they exist: (name, attribute).
_SPECIAL_USE = (("Junk", "Junk"), ("Trash", "Trash"), ("Drafts", "Drafts"), ("Sent", "Sent"))
_SALT = os.urandom(6).hex()


def _password(n: int) -> str:
    return f"pw-{n}-{_SALT}"


def find_daemon(name: str) -> str | None:
    """The program ``name`` from an sbin directory or else the PATH, or None when it is not installed."""
    for directory in _SBIN:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def find_dovecot() -> str | None:
    """The dovecot binary, or None when it is not installed."""
    return find_daemon("dovecot")


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, for a daemon that must be told its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "server.cert.pem"
    key_path = directory / "server.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass(frozen=True)
class ImapUser:
    """One user of the test server, with an empty mailbox."""

    server: Dovecot
    name: str
    password: str

    def client(self, *, timeout: float = 30):  # type: ignore[no-untyped-def]
        """A logged-in imapclient connection (plain IMAP on loopback); close it with ``logout``."""
        import imapclient

        client = imapclient.IMAPClient(self.server.host, port=self.server.port, ssl=False, timeout=timeout)
        client.login(self.name, self.password)
        return client

    def append(self, messages: list[bytes] | bytes, folder: str = "INBOX") -> None:
        """APPEND each message to ``folder`` (created if needed), in order."""
        if isinstance(messages, bytes):
            messages = [messages]
        client = self.client()
        try:
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            for message in messages:
                client.append(folder, message)
        finally:
            client.logout()

    def messages(self, folder: str = "INBOX") -> dict[int, tuple[bytes, tuple[bytes, ...]]]:
        """UID -> (body, flags) of every message in ``folder``, read without setting \\Seen."""
        client = self.client()
        try:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            data = client.fetch(uids, ["BODY.PEEK[]", "FLAGS"]) if uids else {}
            return {uid: (d[b"BODY[]"], tuple(d[b"FLAGS"])) for uid, d in data.items()}
        finally:
            client.logout()


@dataclass
class Dovecot:
    """A running private Dovecot; ``port`` is plain IMAP (with STARTTLS), ``tls_port`` IMAPS."""

    binary: str
    base: Path
    host: str
    port: int
    tls_port: int
    cert_path: Path
    process: subprocess.Popen[bytes]
    #: The LMTP port on 127.0.0.1 (``start_dovecot(lmtp=True)``), else None.
    lmtp_port: int | None = None

    @property
    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_user(self) -> ImapUser:
        """A user with an empty mailbox, not handed out before.

        The users are written before the server starts (Dovecot's passwd-file
        cache does not reliably notice lines added within the same second).
        """
        n = next(_users)
        if n > _POOL:
            raise RuntimeError(f"the test Dovecot has only {_POOL} users")
        return ImapUser(self, f"user{n}", _password(n))

    def _sessions(self, user: ImapUser) -> list[tuple[int, str]]:
        """(PID, process title) of this server's IMAP processes serving ``user``.

        Only processes of this server's own process group are looked at, by PID;
        their titles name the user and the command running (verbose_proctitle).
        """
        sessions = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                pid = int(entry.name)
                if os.getpgid(pid) != self.process.pid:
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ProcessLookupError):
                continue
            if title.startswith("dovecot/imap ") and f"[{user.name} " in title:
                sessions.append((pid, title))
        return sessions

    def kill_sessions(self, user: ImapUser) -> int:
        """SIGKILL this server's IMAP processes serving ``user`` (a dropped connection); return how many."""
        sessions = self._sessions(user)
        for pid, _title in sessions:
            os.kill(pid, signal.SIGKILL)
        return len(sessions)

    def wait_for_idle(
        self, user: ImapUser, *, client: subprocess.Popen[str] | None = None, timeout: float = 60
    ) -> None:
        """Return once a session of ``user`` is waiting in IDLE (RFC 2177); fail after ``timeout`` seconds.

        The server's own process title says so (``[user1 127.0.0.1 IDLE]``):
        from then on, mail appended is announced to that session. When the
        ``client`` process that should get there exits first, fail at once.
        """
        deadline = time.monotonic() + timeout
        while not any(title.rstrip().endswith(" IDLE]") for _pid, title in self._sessions(user)):
            if client is not None and client.poll() is not None:
                raise AssertionError(f"the client exited ({client.returncode}) before it waited in IDLE")
            if time.monotonic() > deadline:
                titles = [title for _pid, title in self._sessions(user)]
                raise AssertionError(f"no session of {user.name} in IDLE after {timeout:.0f} s: {titles}")
            time.sleep(0.02)

    def tls_context(self) -> ssl.SSLContext:
        """A client context trusting the server's self-signed certificate."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Children (log, auth, imap) share the process group; make sure none outlives the test run.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(self.base, ignore_errors=True)


def _mail_owner() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    for name in ("dovecot", "nobody"):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            continue
    raise RuntimeError("running as root, but there is neither a dovecot nor a nobody user to store mail as")


def _config(
    base: Path, port: int, tls_port: int, cert: Path, key: Path, uid: int, gid: int, lmtp_port: int | None
) -> str:
    lines = [
        f"base_dir = {base}/run",
        f"state_dir = {base}/state",
        f"log_path = {base}/dovecot.log",
        "protocols = imap",
        "listen = 127.0.0.1",
        # Plain IMAP is allowed on this loopback-only server; STARTTLS and IMAPS are offered too.
        "ssl = yes",
        f"ssl_cert = <{cert}",
        f"ssl_key = <{key}",
        "disable_plaintext_auth = no",
        "auth_mechanisms = plain login",
        "passdb {",
        "  driver = passwd-file",
        f"  args = scheme=PLAIN username_format=%u {base}/passwd",
        "}",
        "userdb {",
        "  driver = static",
        f"  args = uid={uid} gid={gid} home={base}/mail/%u",
        "}",
        "mail_location = maildir:~/Maildir",
        # Special-use folders (RFC 6154), as a real server marks them. Not created by themselves
        # (auto = no, the default), so every mailbox starts empty; a test CREATEs the ones it needs.
        "namespace inbox {",
        "  inbox = yes",
        *(f"  mailbox {name} {{\n    special_use = \\{use}\n  }}" for name, use in _SPECIAL_USE),
        "}",
        "first_valid_uid = 1",
        "first_valid_gid = 0",
        # A throwaway server: durability is the client's business here, not the server's.
        "mail_fsync = never",
        # Process titles name the user and the command running, so a test can cut one user's
        # sessions (kill_sessions) and see one wait in IDLE (wait_for_idle).
        "verbose_proctitle = yes",
        "service imap-login {",
        "  inet_listener imap {",
        "    address = 127.0.0.1",
        f"    port = {port}",
        "  }",
        "  inet_listener imaps {",
        "    address = 127.0.0.1",
        f"    port = {tls_port}",
        "    ssl = yes",
        "  }",
        "}",
        "service stats {",
        "  unix_listener stats-writer {",
        "    mode = 0666",
        "  }",
        "}",
    ]
    if lmtp_port is not None:
        lines[lines.index("protocols = imap")] = "protocols = imap lmtp"
        lines += [
            # LMTP names recipients by address; the passwd-file knows users by name (user7).
            "auth_username_format = %Ln",
            "service lmtp {",
            "  inet_listener lmtp {",
            "    address = 127.0.0.1",
            f"    port = {lmtp_port}",
            "  }",
            "}",
        ]
    if os.geteuid() != 0:
        user = pwd.getpwuid(os.getuid()).pw_name
        lines += [f"default_internal_user = {user}", f"default_login_user = {user}", "default_internal_group = "
                  + f"{os.getgid()}"]
    return "\n".join(lines) + "\n"


def _greets(port: int, greeting: bytes = b"* OK") -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(64).startswith(greeting)
    except OSError:
        return False


def start_dovecot(binary: str, *, attempts: int = 3, lmtp: bool = False) -> Dovecot:
    """Start a private Dovecot and wait until it answers; raises RuntimeError with its log if it will not."""
    last = ""
    for _ in range(attempts):
        base = Path(tempfile.mkdtemp(prefix="mc-dovecot-"))
        base.chmod(0o755)
        uid, gid = _mail_owner()
        (base / "mail").mkdir()
        os.chown(base / "mail", uid, gid)
        (base / "passwd").write_text("".join(f"user{n}:{{PLAIN}}{_password(n)}::::::\n" for n in range(1, _POOL + 1)))
        cert, key = self_signed(base)
        port, tls_port = free_port(), free_port()
        lmtp_port = free_port() if lmtp else None
        conf = base / "dovecot.conf"
        conf.write_text(_config(base, port, tls_port, cert, key, uid, gid, lmtp_port))
        out = open(base / "stdout.log", "wb")  # the server writes to it while it runs
        process = subprocess.Popen(
            [binary, "-F", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        server = Dovecot(binary, base, "127.0.0.1", port, tls_port, cert, process, lmtp_port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            if _greets(port) and _greets_tls(tls_port, server) and (lmtp_port is None or _greets(lmtp_port, b"220")):
                return server
            time.sleep(0.05)
        last = (base / "stdout.log").read_text(errors="replace") + server.log
        server.stop()
    raise RuntimeError(f"dovecot did not start: {last.strip()[-2000:]}")


def _greets_tls(port: int, server: Dovecot) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            with server.tls_context().wrap_socket(raw, server_hostname="localhost") as s:
                return s.recv(64).startswith(b"* OK")
    except OSError:
        return False
