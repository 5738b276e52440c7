"""What revocation checking costs per message in the proxy, with a warm cache, against revocation off.

One run makes an openssl CA whose recipients' certificates name an
``openssl ocsp`` responder and a CRL served over HTTP on 127.0.0.1
(``tests/revocation_kit.py``), a home that trusts the CA, and then measures
with ``[keys] revocation = "soft-fail"`` and with ``"off"``:

1. the proxy (in-process, as the proxy tests run it): N messages of about
   2 KB, each to two recipients (one checked by OCSP, one by CRL), over one
   logged-in connection, signed and encrypted, delivered into the outbox;
   one message first warms the revocation cache and the RCPT plan cache;
2. the RCPT lookup alone, as when the proxy's plan cache misses (a new
   address, or a key directory that changed): ``KeyDirectory.best`` for
   both recipients, which checks the chain and asks the checker;
3. one ``OnlineRevocationChecker.status`` answered from memory, and one
   answered from the disk cache (a new checker, as in a new process).

Each figure is the best of ``--rounds`` rounds, and the ratio soft-fail/off
is printed. The responder and the CRL server are stopped before the
measured rounds, so every answer must come from the cache (a network
attempt would show up as an "unavailable" warning). Exits 0 either way.

Usage: .venv/bin/python benchmarks/revocation.py [--messages N] [--lookups N] [--rounds N]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# Run as a script, this directory comes first on the path, and its proxy.py would
# hide the proxy package: the checkout's root and tests/ are put there instead.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[0:1] = [str(_ROOT), str(_ROOT / "tests")]

from proxy_kit import SENDER, make_home, start_proxy  # noqa: E402
from revocation_kit import make_world  # noqa: E402

from mailcrypt import config  # noqa: E402
from mailcrypt.keydir import KeyDirectory  # noqa: E402
from mailcrypt.pki import OnlineRevocationChecker  # noqa: E402

RECIPIENTS = ("good@revocation.test", "crl-good@revocation.test")
BODY = ("revocation benchmark line of text\r\n" * 60).encode()


def configure(home: Path, anchor: Path, mode: str) -> config.Settings:
    text = (home / "config.toml").read_text()
    head, _, rest = text.partition("trust_anchors = ")
    rest = rest.split("\n", 1)[1]
    while rest.startswith("revocation"):
        rest = rest.split("\n", 1)[1]
    (home / "config.toml").write_text(head + f'trust_anchors = ["{anchor}"]\nrevocation = "{mode}"\n' + rest)
    return config.load_settings(home)


def message(n: int) -> bytes:
    head = (
        f"From: {SENDER}\r\nTo: {', '.join(RECIPIENTS)}\r\nSubject: benchmark {n}\r\n"
        f"Message-ID: <bench-{n}-{time.monotonic_ns()}@example.org>\r\n\r\n"
    )
    return head.encode() + BODY


def proxy_round(settings: config.Settings, count: int) -> float:
    """Seconds per message through the proxy, after one warm-up message."""
    proxy = start_proxy(settings)
    try:
        with proxy.client() as client:
            client.sendmail(SENDER, list(RECIPIENTS), message(-1))
            started = time.perf_counter()
            for n in range(count):
                client.sendmail(SENDER, list(RECIPIENTS), message(n))
            return (time.perf_counter() - started) / count
    finally:
        proxy.thread.stop()


def lookup_round(settings: config.Settings, count: int) -> float:
    """Seconds per RCPT lookup of one recipient in the key directory (no plan cache)."""
    keys = KeyDirectory.from_settings(settings)
    for address in RECIPIENTS:
        keys.best(address)
    started = time.perf_counter()
    for n in range(count):
        keys.best(RECIPIENTS[n % len(RECIPIENTS)])
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = make_world(root / "pki")
        anchor = world.root.cert
        settings = make_home(root / "home")
        keys = KeyDirectory.from_settings(configure(settings.home, anchor, "off"))
        for name in ("good", "crl-good"):
            keys.import_file(world.certs[name].cert)
        soft = configure(settings.home, anchor, "soft-fail")
        # Warm the disk cache with the services up; then take them away.
        for address in RECIPIENTS:
            KeyDirectory.from_settings(soft).best(address)
        world.stop()
        off = configure(settings.home, anchor, "off")
        figures: dict[str, dict[str, float]] = {"proxy": {}, "lookup": {}}
        for mode, chosen in (("off", off), ("soft-fail", soft)):
            figures["proxy"][mode] = min(proxy_round(chosen, args.messages) for _ in range(args.rounds))
            figures["lookup"][mode] = min(lookup_round(chosen, args.lookups) for _ in range(args.rounds))
        cert, issuer = world.certs["good"].certificate, world.root.certificate
        now = datetime.now(UTC)
        warm = OnlineRevocationChecker(root / "home" / "revocation")
        warm.status(cert, issuer, now=now)
        started = time.perf_counter()
        for _ in range(args.lookups):
            warm.status(cert, issuer, now=now)
        memory = (time.perf_counter() - started) / args.lookups
        started = time.perf_counter()
        for _ in range(args.lookups):
            OnlineRevocationChecker(root / "home" / "revocation").status(cert, issuer, now=now)
        disk = (time.perf_counter() - started) / args.lookups
    proxy, lookup = figures["proxy"], figures["lookup"]
    print(f"proxy, {args.messages} messages to 2 recipients, best of {args.rounds}:")
    print(f"  revocation off        {proxy['off'] * 1e3:8.3f} ms/message")
    print(f"  soft-fail, warm cache {proxy['soft-fail'] * 1e3:8.3f} ms/message")
    print(f"  ratio soft-fail/off   {proxy['soft-fail'] / proxy['off']:8.3f}")
    print("RCPT lookup when the proxy's plan cache misses (KeyDirectory.best, chain checked):")
    print(f"  revocation off        {lookup['off'] * 1e6:8.1f} us/lookup")
    print(f"  soft-fail, warm cache {lookup['soft-fail'] * 1e6:8.1f} us/lookup")
    print(f"  ratio soft-fail/off   {lookup['soft-fail'] / lookup['off']:8.3f}")
    print("one checker answer:")
    print(f"  from memory           {memory * 1e6:8.1f} us")
    print(f"  from the disk cache   {disk * 1e6:8.1f} us (a new checker each time)")


if __name__ == "__main__":
    main()
