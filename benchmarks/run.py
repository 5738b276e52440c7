"""Speed and memory of `mailcrypt encrypt`/`decrypt` against `openssl cms`, in one run.

Both tools run as whole processes on the same 25 MB message for 10 RSA-2048
recipients; each measurement is repeated, openssl's and mailcrypt's runs
taken in turn, and the median wall time is reported with the peak resident
memory of that process (from wait4, so it is the child's own figure). Also timed: `mailcrypt --help` start-up.

Targets (issue: envelope core): encrypt and decrypt within 1.4x of
openssl's wall time, peak memory no higher than openssl's, `--help` under
150 ms. The script prints the figures and whether each target holds; it
exits 0 either way (a benchmark informs, it does not gate CI).

Usage: .venv/bin/python benchmarks/run.py [--runs N] [--size-mb N] [--recipients N]
"""

from __future__ import annotations

import argparse
import base64
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mailcrypt.keydir import keygen

ROOT = Path(__file__).resolve().parents[1]


def mailcrypt_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("mailcrypt")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mailcrypt"]


def make_identity(directory: Path, n: int) -> tuple[Path, Path]:
    """A throwaway RSA-2048 identity made by mailcrypt's own generator, as two files."""
    key, cert = keygen.generate_identity(f"user{n}@example.org", key_type="rsa2048", days=30)
    key_path, cert_path = directory / f"user{n}.key", directory / f"user{n}.crt"
    keygen.write_private_key(key_path, key, passphrase=None)
    keygen.write_certificate(cert_path, cert)
    return key_path, cert_path


def make_message(path: Path, size: int) -> None:
    """A realistic large message: a text part and a base64 attachment, CRLF."""
    raw = os.urandom(size * 3 // 4)
    body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = (
        b"From: User One <user1@example.org>\r\nTo: user2@example.org\r\nSubject: benchmark\r\n"
        b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n'
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    path.write_bytes(head + body + b"--b--\r\n")


# Linux carries a process's peak RSS across exec, so a child spawned straight
# from this (large) process would report this process's peak as its own. A
# tiny launcher, itself a fresh interpreter, spawns the measured command and
# reports that child's own figures.
_LAUNCHER = r"""
import os, sys, time
cmd = sys.argv[1:]
null = os.open(os.devnull, os.O_WRONLY)
start = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, null, 1)])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process; raises on failure."""
    proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *cmd], capture_output=True, text=True, check=False)
    try:
        elapsed, rss, code = proc.stdout.split()
    except ValueError:
        raise SystemExit(f"launcher failed: {proc.stderr}") from None
    if int(code) != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{proc.stderr}")
    return float(elapsed), int(rss)


def measure(baseline: list[str], ours: list[str], runs: int) -> tuple[float, int, float, int]:
    """Median seconds and peak RSS of ``baseline`` and of ``ours``, their runs taken in turn.

    Alternating the two keeps a change in the machine's speed during the
    measurement (another process, CPU frequency) from landing on one side only.
    """
    results: tuple[list[tuple[float, int]], list[tuple[float, int]]] = ([], [])
    for _ in range(runs):
        results[0].append(run(baseline))
        results[1].append(run(ours))
    (b_t, b_m), (o_t, o_m) = (
        (statistics.median(t for t, _ in side), max(m for _, m in side)) for side in results
    )
    return b_t, b_m, o_t, o_m


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=25)
    parser.add_argument("--recipients", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        raise SystemExit("openssl is needed for the baseline")
    mc = mailcrypt_cmd()
    # An installed package has its bytecode compiled (pip does it); a checkout
    # run with PYTHONDONTWRITEBYTECODE would otherwise compile every module
    # on every start and time the compiler instead of mailcrypt.
    compileall.compile_dir(ROOT / "mailcrypt", quiet=1)
    with tempfile.TemporaryDirectory(prefix="mailcrypt-bench-") as tmp:
        d = Path(tmp)
        ids = [make_identity(d, n) for n in range(1, args.recipients + 1)]
        certs = [str(c) for _, c in ids]
        key3, cert3 = (str(p) for p in ids[min(2, len(ids) - 1)])
        msg = d / "msg.eml"
        make_message(msg, args.size_mb * 1024 * 1024)
        size = msg.stat().st_size
        ossl_enc, mc_enc = d / "enc.openssl.eml", d / "enc.mailcrypt.eml"
        print(
            f"message {size / 1e6:.1f} MB, {args.recipients} RSA-2048 recipients,"
            f" {args.runs} runs each (in turn), median"
        )
        print(
            f"{sys.version.split()[0]} / "
            f"{subprocess.run(['openssl', 'version'], capture_output=True, text=True).stdout.strip()}"
        )

        rows = []
        o_t, o_m, m_t, m_m = measure(
            ["openssl", "cms", "-encrypt", "-aes256", "-in", str(msg), "-out", str(ossl_enc), *certs],
            [*mc, "encrypt", *(a for c in certs for a in ("--cert", c)), str(msg), "-o", str(mc_enc)],
            args.runs,
        )
        rows.append(("encrypt (aes256-cbc)", o_t, o_m, m_t, m_m))
        o_t, o_m, m_t, m_m = measure(
            [
                "openssl",
                "cms",
                "-decrypt",
                "-in",
                str(ossl_enc),
                "-inkey",
                key3,
                "-recip",
                cert3,
                "-out",
                str(d / "dec.o"),
            ],
            [*mc, "decrypt", "--key", key3, "--cert", cert3, str(ossl_enc), "-o", str(d / "dec.m")],
            args.runs,
        )
        rows.append(("decrypt (openssl's message)", o_t, o_m, m_t, m_m))
        # Cross-check that both tools produced readable output while being timed.
        run(["openssl", "cms", "-decrypt", "-in", str(mc_enc), "-inkey", key3, "-recip", cert3, "-out", str(d / "x.o")])

        print(
            f"\n{'operation':30} {'openssl s':>10} {'MiB':>7} {'mailcrypt s':>12} {'MiB':>7}"
            f" {'time x':>7} {'mem x':>6}  target"
        )
        for name, ot, om, mt, mm in rows:
            ok = mt <= 1.4 * ot and mm <= om
            print(
                f"{name:30} {ot:10.3f} {om / 1024:7.1f} {mt:12.3f} {mm / 1024:7.1f} {mt / ot:7.2f} {mm / om:6.2f}"
                f"  {'met' if ok else 'MISSED'} (time <= 1.4x, memory <= 1.0x)"
            )
        help_times = [run([*mc, "--help"])[0] for _ in range(max(10, args.runs))]
        help_t = statistics.median(help_times)
        print(
            f"\nmailcrypt --help: {help_t * 1000:.0f} ms median"
            f"  {'met' if help_t < 0.150 else 'MISSED'} (target < 150 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
