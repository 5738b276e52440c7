"""`mailcrypt fetch` against a plain imapclient fetch of the same mailbox, in one run.

A private Dovecot on loopback (the test fixture's, ``tests/dovecot.py``)
gets 1,000 S/MIME messages of 10 KB each, encrypted by mailcrypt to an
RSA-2048 identity (``--profile``: compatible, AES-256-CBC by default).
Then, alternately and ``--runs`` times each, into a fresh Maildir:

- baseline: imapclient, UID SEARCH and ranged ``UID FETCH <uids> (BODY.PEEK[])``
  in batches of 200, each message written to ``tmp/``, fsynced, renamed into
  ``new/``, and ``new/`` fsynced once per batch: the same fsync policy as the
  fetcher's;
- mailcrypt: the fetcher itself (``mailcrypt.fetch.runner.Fetcher``, what the
  command runs after start-up): sizes, the same batches, decrypt, replay
  check, status fields, the same delivery, progress in ``state.db``.

Both write into the same Maildir directories (``home/mail``), emptied
between runs but not recreated: ext4 places a new file's inode near its
directory, and on a filesystem that has seen much churn, creating a file
costs from 0.02 to 0.35 ms depending on where a directory happened to land.
With a fresh directory per baseline run and the fetcher's own one, that
alone moved the baseline between 0.43 s and 0.8 s from run to run while the
fetcher's cost per file stayed put.

It prints the median wall time of each, messages per second and the ratio.
Target (issue: fetch): mailcrypt <= 1.5x the baseline. Also timed once: the
whole command, ``mailcrypt fetch``, as a process (start-up and key loading
included). Exits 0 either way: a benchmark informs, it does not gate CI.

Usage: .venv/bin/python benchmarks/fetch.py [--messages N] [--size KB] [--runs N] [--profile modern]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import imapclient  # noqa: E402
from cryptography import x509  # noqa: E402
from dovecot import find_dovecot, start_dovecot  # noqa: E402

from mailcrypt.config import load_settings  # noqa: E402
from mailcrypt.fetch.process import MessageProcessor  # noqa: E402
from mailcrypt.fetch.runner import Fetcher, Plan  # noqa: E402
from mailcrypt.fetch.state import FetchState  # noqa: E402
from mailcrypt.keydir import KeyDirectory, keygen  # noqa: E402
from mailcrypt.keydir.passphrase import PassphraseSource  # noqa: E402
from mailcrypt.mime import enveloped as smime  # noqa: E402
from mailcrypt.policy import PROFILES  # noqa: E402
from mailcrypt.state.replay import ReplayGuard  # noqa: E402
from mailcrypt.state.store import Store  # noqa: E402

BATCH = 200


def identity() -> tuple[object, x509.Certificate]:
    """The benchmark recipient, made by mailcrypt's own generator."""
    return keygen.generate_identity("bench@example.org", key_type="rsa2048", days=30)


def message(i: int, size: int) -> bytes:
    head = (
        f"From: sender@example.org\r\nTo: bench@example.org\r\nSubject: message {i}\r\n"
        f"Message-ID: <bench.{i}.{os.urandom(6).hex()}@example.org>\r\nContent-Type: text/plain\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def empty_maildir(root: Path) -> None:
    """Remove every message (and Maildir++ subfolder) under ``root``, keeping its own tmp/new/cur."""
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        with os.scandir(root / sub) as entries:
            for entry in entries:
                os.unlink(entry.path)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.startswith("."):
            shutil.rmtree(entry)
    fsync_dir(root)


def baseline(user, target: Path) -> int:  # type: ignore[no-untyped-def]
    """Plain imapclient ranged fetch into a Maildir, same fsync policy; returns messages written."""
    for sub in ("tmp", "new", "cur"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    client = imapclient.IMAPClient(user.server.host, port=user.server.port, ssl=False, use_uid=True)
    client.login(user.name, user.password)
    try:
        info = client.select_folder("INBOX", readonly=True)
        uidvalidity = info[b"UIDVALIDITY"]
        uids = sorted(client.search(["UID", "1:*"]))
        written = 0
        for i in range(0, len(uids), BATCH):
            for uid, data in client.fetch(uids[i : i + BATCH], ["BODY.PEEK[]"]).items():
                name = f"base.{uidvalidity},U={uid}"
                tmp = target / "tmp" / name
                with open(tmp, "wb") as f:
                    f.write(data[b"BODY[]"])
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, target / "new" / name)
                written += 1
            fsync_dir(target / "new")
        return written
    finally:
        client.logout()


def mailcrypt_fetch(home: Path, identities: list, password: bytes) -> int:  # type: ignore[type-arg]
    """The fetcher, in-process; returns messages delivered."""
    settings = load_settings(home)
    account = settings.accounts[0]
    with Store.open(settings.state_db) as store:
        fetcher = Fetcher(
            settings,
            [Plan(account, account.folders, account.target)],
            state=FetchState(store),
            processor=MessageProcessor(identities, guard=ReplayGuard(store)),
            password=lambda _account: password,
        )
        rows = fetcher.run_once()
    return sum(counts.fetched for _label, counts in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10, help="message size in KB (default 10)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="compatible")
    args = parser.parse_args()

    binary = find_dovecot()
    if binary is None:
        sys.exit("dovecot is not installed (apt-get install dovecot-imapd)")
    server = start_dovecot(binary)
    work = Path(tempfile.mkdtemp(prefix="mailcrypt-bench-fetch-"))
    try:
        user = server.add_user()
        key, cert = identity()
        profile = PROFILES[args.profile]
        print(f"appending {args.messages} messages of {args.size} KB, encrypted ({profile.cipher}) ...", flush=True)
        client = imapclient.IMAPClient(server.host, port=server.port, ssl=False)
        client.login(user.name, user.password)
        total = 0
        for i in range(args.messages):
            encrypted = smime.encrypt_message(message(i, args.size * 1024), [cert], profile=profile)
            total += len(encrypted)
            client.append("INBOX", encrypted)
        client.logout()
        print(f"mailbox: {args.messages} messages, {total / 1e6:.1f} MB on the server")

        home = work / "home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[[accounts]]\nname = "bench"\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
            f'username = "{user.name}"\npassword_env = "BENCH_IMAP_PASSWORD"\n'
        )
        keys = KeyDirectory(home / "keys")
        keys.add_identity(key, cert, passphrase=PassphraseSource.unencrypted())
        identities = keys.identities(PassphraseSource.unencrypted())

        maildir = home / "mail"  # the fetcher's default target; the baseline writes there too
        base_times, mc_times = [], []
        for run in range(args.runs):
            empty_maildir(maildir)
            start = time.perf_counter()
            n = baseline(user, maildir)
            base_times.append(time.perf_counter() - start)
            assert n == args.messages, n
            empty_maildir(maildir)
            for name in ("state.db", "state.db-wal", "state.db-shm"):
                (home / name).unlink(missing_ok=True)
            start = time.perf_counter()
            n = mailcrypt_fetch(home, identities, user.password.encode())
            mc_times.append(time.perf_counter() - start)
            assert n == args.messages, n
            print(f"run {run + 1}: baseline {base_times[-1]:.2f} s, mailcrypt {mc_times[-1]:.2f} s", flush=True)

        empty_maildir(maildir)
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            (home / name).unlink(missing_ok=True)
        env = dict(os.environ, BENCH_IMAP_PASSWORD=user.password)
        exe = Path(sys.executable).with_name("mailcrypt")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "mailcrypt"]
        start = time.perf_counter()
        done = subprocess.run([*command, "--home", str(home), "fetch"], env=env, capture_output=True, text=True)
        whole = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)

        b, m = statistics.median(base_times), statistics.median(mc_times)
        ratio = m / b
        print()
        print(f"{'':28}{'median':>10}{'msg/s':>10}")
        print(f"{'plain imapclient fetch':28}{b:>9.2f}s{args.messages / b:>10.0f}")
        print(f"{'mailcrypt fetch (decrypt)':28}{m:>9.2f}s{args.messages / m:>10.0f}")
        print(
            f"{'mailcrypt fetch, command':28}{whole:>9.2f}s{args.messages / whole:>10.0f}"
            "   (one run, start-up included)"
        )
        print(f"ratio mailcrypt / baseline: {ratio:.2f}x (target <= 1.5x): {'met' if ratio <= 1.5 else 'NOT met'}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
