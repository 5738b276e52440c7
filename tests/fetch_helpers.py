"""Helpers of the fetcher's tests: a home wired to the test Dovecot, plain messages, reading the Maildir.

``make_home`` writes a mailcrypt home whose ``[[accounts]]`` entry points at
a user of the session's Dovecot (plain IMAP on loopback, or TLS trusting the
server's self-signed certificate) and files the given key pairs as
identities, unencrypted (they are the session's throwaway keys).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mailcrypt.keydir import KeyDirectory
from mailcrypt.keydir.passphrase import PassphraseSource

PASSWORD_ENV = "MAILCRYPT_TEST_IMAP_PASSWORD"
ROOT = Path(__file__).resolve().parents[1]


def make_home(
    home: Path,
    user,  # type: ignore[no-untyped-def]
    keypairs=(),  # type: ignore[no-untyped-def]
    *,
    security: str = "none",
    folders: tuple[str, ...] = ("INBOX",),
    extra: str = "",
) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    server = user.server
    port = server.tls_port if security == "tls" else server.port
    ca = f'ca_file = "{server.cert_path}"\n' if security != "none" else ""
    folder_list = ", ".join(f'"{f}"' for f in folders)
    (home / "config.toml").write_text(
        "[identity]\naddress = \"me@example.test\"\n\n"
        "[[accounts]]\n"
        'name = "test"\n'
        f'host = "{"localhost" if security != "none" else "127.0.0.1"}"\n'
        f"port = {port}\n"
        f'security = "{security}"\n'
        f'username = "{user.name}"\n'
        f'password_env = "{PASSWORD_ENV}"\n'
        f"folders = [{folder_list}]\n"
        f"{ca}{extra}"
    )
    keys = KeyDirectory(home / "keys")
    for kp in keypairs:
        keys.add_identity(kp.key, kp.cert, passphrase=PassphraseSource.unencrypted())
    return home


def env_for(user) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env[PASSWORD_ENV] = user.password
    env.pop("MAILCRYPT_PASSPHRASE", None)
    return env


def run_cli(home: Path, user, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """``mailcrypt --home HOME fetch ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "mailcrypt", "--home", str(home), "fetch", *args],
        env=env_for(user),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


# The child python that runs ``mailcrypt`` with one fault hook. STYLE.md §6 allows a mock only to inject
# a fault a real peer cannot produce: here the process sends itself SIGKILL, as a power cut or the OOM
# killer would stop it, with no cleanup and no exception handler.
_CRASHING = textwrap.dedent(
    """
    import dataclasses, importlib, os, signal, sys
    from mailcrypt.cli import main

    module, name, step, uid, batch_count = sys.argv[1:6]
    worker = getattr(importlib.import_module(module), name)
    real_init = worker.__init__

    def fault(at, u):
        if at == step and u == int(uid):
            os.kill(os.getpid(), signal.SIGKILL)

    def init(self, **kw):
        kw["fault"] = fault
        if batch_count:
            kw["options"] = dataclasses.replace(kw["options"], batch_count=int(batch_count))
        real_init(self, **kw)

    worker.__init__ = init
    sys.exit(main(sys.argv[6:]))
    """
)


#: The workers ``run_crashing`` can make crash: the fetcher's per-folder loop and the quarantine's re-processing.
FOLDER_SYNC = "mailcrypt.fetch.sync.FolderSync"
REQUEUE = "mailcrypt.fetch.requeue.Requeue"


def run_crashing(
    home: Path,
    env: dict[str, str],
    worker: str,
    step: str,
    uid: int,
    *args: str,
    batch_count: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """``mailcrypt --home HOME ARGS`` in a child python that kills itself at ``step`` for ``uid``.

    ``worker`` names the class whose ``fault`` hook is replaced, ``FOLDER_SYNC`` for a fetch or
    ``REQUEUE`` for a re-processing; ``batch_count`` also
    shortens the fetcher's batches, so that a crash can fall after an earlier batch was committed.
    The caller checks that the child did die (return code -9).
    """
    module, name = worker.rsplit(".", 1)
    batch = "" if batch_count is None else str(batch_count)
    return subprocess.run(
        [sys.executable, "-c", _CRASHING, module, name, step, str(uid), batch, "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def plain(subject: str, body: str = "hello", *, ctype: str = "text/plain") -> bytes:
    """A plain RFC 5322 message to me@example.test whose Message-ID is made from ``subject``."""
    return (
        f"From: Sender <sender@example.test>\r\nTo: me@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.test>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {ctype}; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def maildir_files(root: Path) -> dict[str, list[Path]]:
    """Every message file under a Maildir++ tree, by folder ("" for the root), tmp/ excluded."""
    out: dict[str, list[Path]] = {}
    if not root.exists():
        return out
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("."))
    for folder in folders:
        name = "" if folder == root else folder.name
        for sub in ("new", "cur"):
            # A folder with no messages (the root, a mailbox even when INBOX is not fetched) is not listed.
            if (folder / sub).is_dir() and (paths := sorted((folder / sub).iterdir())):
                out.setdefault(name, []).extend(paths)
    return out


def by_uid(root: Path) -> dict[int, tuple[str, bytes]]:
    """UID -> (folder, content) for every message file; asserts no UID has two copies."""
    out: dict[int, tuple[str, bytes]] = {}
    for folder, paths in maildir_files(root).items():
        for path in paths:
            uid = int(path.name.split(",U=")[1].split(":")[0])
            assert uid not in out, f"UID {uid} delivered twice: {out[uid][0]!r} and {folder!r}"
            out[uid] = (folder, path.read_bytes())
    return out


def status(data: bytes) -> str:
    """The X-Mailcrypt-Status value of a delivered file (LF line ends on disk, CRLF on the server)."""
    for line in data.replace(b"\r\n", b"\n").split(b"\n"):
        if line.lower().startswith(b"x-mailcrypt-status:"):
            return line.split(b":", 1)[1].strip().decode()
        if not line:
            break
    raise AssertionError("no X-Mailcrypt-Status field")


def strip_status(data: bytes) -> bytes:
    """The file without the X-Mailcrypt-* fields the fetcher put on top."""
    while data.lower().startswith(b"x-mailcrypt-"):
        data = data.split(b"\n", 1)[1]
    return data


def append_at(user, messages, folder: str = "INBOX") -> None:  # type: ignore[no-untyped-def]
    """APPEND each (message, arrival) to ``folder`` with that INTERNALDATE (RFC 3501 §6.3.11), in order."""
    client = user.client()
    try:
        if folder != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)
        for message, when in messages:
            client.append(folder, message, msg_time=when)
    finally:
        client.logout()


def lf(data: bytes) -> bytes:
    """``data`` as the Maildir stores it: CRLF turned into LF."""
    return data.replace(b"\r\n", b"\n")
