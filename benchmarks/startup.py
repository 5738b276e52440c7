"""How fast `mailcrypt --help` starts, through the console script and `python -m mailcrypt`.

`mailcrypt.cli` imports only argparse and the subcommands' argument modules
at start (the handlers, and with them cryptography and asn1crypto, load only
when a command runs); tests/test_cli.py checks that nothing heavy is
imported, and this script measures what that buys. Each entry point is run
as a whole process several times; the median wall time is reported.

Target (issue: envelope core): under 150 ms. The script prints the figures
and whether the target holds; it exits 0 either way (a benchmark informs, it
does not gate CI).

Usage: .venv/bin/python benchmarks/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.150


def entry_points() -> list[tuple[str, list[str]]]:
    """The ways a user starts the command: the console script (when installed) and the module."""
    points = [("python -m mailcrypt", [sys.executable, "-m", "mailcrypt"])]
    script = Path(sys.executable).with_name("mailcrypt")
    if script.exists():
        points.insert(0, ("mailcrypt (console script)", [str(script)]))
    return points


def time_help(cmd: list[str]) -> float:
    """Wall seconds of one ``--help`` run; raises when it fails or prints no usage."""
    started = time.perf_counter()
    proc = subprocess.run([*cmd, "--help"], capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or not proc.stdout.startswith(b"usage: mailcrypt"):
        raise SystemExit(f"{' '.join(cmd)} --help failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    # An installed package has its bytecode compiled (pip does it); a checkout
    # run with PYTHONDONTWRITEBYTECODE would otherwise compile every module on
    # every start and time the compiler instead of mailcrypt.
    compileall.compile_dir(ROOT / "mailcrypt", quiet=1)
    print(f"{sys.version.split()[0]}, {args.runs} runs each, median (first run discarded: cold caches)")
    for name, cmd in entry_points():
        time_help(cmd)
        median = statistics.median(time_help(cmd) for _ in range(args.runs))
        verdict = "met" if median < TARGET_SECONDS else "MISSED"
        print(f"{name:30} --help: {median * 1000:6.0f} ms  {verdict} (target < {TARGET_SECONDS * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
