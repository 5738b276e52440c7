"""A private Postfix instance on loopback, for the end-to-end test (STYLE.md §6).

``start_postfix`` writes ``main.cf`` and ``master.cf`` into a fresh directory
under the system temporary directory and starts Postfix on it with
``postfix -c DIR start``: its own configuration, queue and data directories,
an SMTP server on 127.0.0.1 and a free high port (never port 25, so the
package's own service, running or not, is left alone), STARTTLS with a
self-signed certificate made here, relaying for 127.0.0.0/8 only, and every
recipient of the given domains delivered over LMTP (RFC 2033) to the given
port on 127.0.0.1 (a Dovecot of ``tests/dovecot.py`` started with
``lmtp=True``). Nothing is relayed anywhere else: any other domain is
refused at RCPT.

Postfix needs root to start (its master binds as root and drops to the
``postfix`` user), as CI runs the tests; as any other user ``start_postfix``
raises ``PostfixUnavailable`` with the reason, which the test turns into a
skip (a failure under ``CI``). ``stop`` runs ``postfix -c DIR stop`` and then
kills whatever of the instance is left by its master's process group.

It will not send mail itself (the test talks SMTP to it), and it keeps no
state between test runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dovecot import find_daemon, free_port, self_signed

__all__ = ["Postfix", "PostfixUnavailable", "find_postfix", "start_postfix"]


class PostfixUnavailable(RuntimeError):
    """Postfix is installed but cannot run privately here (not root, no ``postfix`` user)."""


def find_postfix() -> str | None:
    """The postfix command, or None when it is not installed."""
    return find_daemon("postfix")


@dataclass
class Postfix:
    """A running private Postfix: SMTP with STARTTLS on ``host``:``port``, trusting ``cert_path``."""

    binary: str
    base: Path
    host: str
    port: int
    cert_path: Path

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def log(self) -> str:
        path = self.base / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def queue(self) -> list[dict[str, object]]:
        """Every message still in the queue (``postqueue -j``: one JSON object per message)."""
        proc = subprocess.run(
            [str(Path(self.binary).with_name("postqueue")), "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"postqueue -j failed ({proc.returncode}): {proc.stderr}")
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def wait_for_empty_queue(self, timeout: float = 60) -> None:
        """Return once every message has left the queue (delivered or bounced); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := self.queue()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left:
            raise AssertionError(f"{len(left)} message(s) still in Postfix's queue: {left}\n{self.log[-3000:]}")

    def _master_pid(self) -> int | None:
        try:
            return int((self.base / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        master = self._master_pid()
        subprocess.run([self.binary, "-c", str(self.config_dir), "stop"], capture_output=True, timeout=30)
        if master is not None:
            # The master and its children (smtpd, qmgr, lmtp...) share the master's process group
            # (it makes itself a session leader); make sure none outlives the test run.
            deadline = time.monotonic() + 10
            while _alive(master) and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                os.killpg(master, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _main_cf(base: Path, cert: Path, key: Path, domains: tuple[str, ...], lmtp_port: int) -> str:
    return "\n".join(
        [
            "compatibility_level = 3.6",
            f"queue_directory = {base}/queue",
            f"data_directory = {base}/data",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "myhostname = mx.e2e.test",
            "mydomain = e2e.test",
            "mydestination =",
            # Loopback only: the instance listens on and relays for 127.0.0.0/8 and nothing else.
            "inet_interfaces = loopback-only",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
            "relay_domains =",
            f"virtual_mailbox_domains = {' '.join(domains)}",
            f"virtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}",
            # The end-to-end test sends a 5 MB attachment, which grows about 1.4x when encrypted.
            "message_size_limit = 52428800",
            # STARTTLS offered, not required (RFC 3207); the proxy verifies this certificate.
            f"smtpd_tls_cert_file = {cert}",
            f"smtpd_tls_key_file = {key}",
            "smtpd_tls_security_level = may",
            # No DNS on a test machine: never look up client or recipient names.
            "smtpd_peername_lookup = no",
            # No local delivery here: no alias or NIS lookups either.
            "alias_maps =",
            "alias_database =",
            "local_recipient_maps =",
            "disable_dns_lookups = yes",
            "smtp_dns_support_level = disabled",
            "lmtp_host_lookup = native",
            # Deliver at once, retry quickly if Dovecot is slow to answer; bounce rather than wait.
            "queue_run_delay = 1s",
            "minimal_backoff_time = 1s",
            "maximal_backoff_time = 2s",
            "maximal_queue_lifetime = 1m",
            "bounce_queue_lifetime = 1m",
            "in_flow_delay = 0",
            # Postfix's own log file (no syslog in a container), written by postlogd (master.cf).
            f"maillog_file = {base}/postfix.log",
            f"maillog_file_prefixes = {base}",
            "",
        ]
    )


def _master_cf(port: int) -> str:
    # service type private unpriv chroot wakeup maxproc command: no chroot, so the temporary
    # directory's paths hold inside every daemon.
    services = [
        f"127.0.0.1:{port} inet n - n - - smtpd",
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "tlsmgr unix - - n 1000? 1 tlsmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "lmtp unix - - n - - lmtp",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    return "\n".join(services) + "\n"


def start_postfix(binary: str, *, domains: tuple[str, ...], lmtp_port: int, attempts: int = 3) -> Postfix:
    """Start a private Postfix delivering ``domains`` to LMTP on ``lmtp_port``; wait until it greets.

    Raises ``PostfixUnavailable`` when it cannot run privately here, and
    RuntimeError with its log when it will not start.
    """
    if os.geteuid() != 0:
        raise PostfixUnavailable("a private Postfix needs root to start (CI runs the tests as root)")
    try:
        import pwd

        pwd.getpwnam("postfix")
    except KeyError:
        raise PostfixUnavailable("there is no postfix user (Debian's postfix package makes it)") from None
    last = ""
    for _ in range(attempts):
        base = Path(tempfile.mkdtemp(prefix="mc-postfix-"))
        base.chmod(0o755)
        etc = base / "etc"
        etc.mkdir()
        # Postfix wants its queue directory to exist, owned by root; it makes what is inside.
        (base / "queue").mkdir(mode=0o755)
        cert, key = self_signed(base)
        port = free_port()
        (etc / "main.cf").write_text(_main_cf(base, cert, key, domains, lmtp_port))
        (etc / "master.cf").write_text(_master_cf(port))
        server = Postfix(binary, base, "127.0.0.1", port, cert)
        # "start" checks the directories first; create-missing makes the queue's subdirectories and
        # the data directory with the owners and modes Postfix wants (postfix(1) "set-permissions").
        made = subprocess.run(
            [binary, "-c", str(etc), "set-permissions", "create-missing"], capture_output=True, text=True, timeout=60
        )
        started = subprocess.run([binary, "-c", str(etc), "start"], capture_output=True, text=True, timeout=60)
        if made.returncode == 0 and started.returncode == 0:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if _greets(port):
                    return server
                time.sleep(0.05)
        last = made.stdout + made.stderr + started.stdout + started.stderr + server.log
        server.stop()
    raise RuntimeError(f"postfix did not start: {last.strip()[-3000:]}")


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(64).startswith(b"220")
    except OSError:
        return False
