"""How fast `keys list` answers on a key directory of 10,000 certificates.

The certificates are made once (one EC P-256 key shared by all of them,
each with its own address, signed by a throwaway CA, so making them takes
seconds, not minutes), imported into a home as one PEM bundle, and kept in
the benchmark directory for later runs. Then it times:

- ``KeyDirectory.list()`` in this process, first call (index checked
  against the files) and warm calls;
- a fresh Python process that imports the library, lists and prints every
  entry (what the command costs, start-up included);
- the real ``mailcrypt keys list`` process, if the command line has it.

Target (issue: key directory): under 1 second. The script prints the
figures and whether the target holds; it exits 0 either way (a benchmark
informs, it does not gate CI).

Usage: .venv/bin/python benchmarks/keys_list.py [--count N] [--dir DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 1.0

_LIST_SCRIPT = """
import sys
from mailcrypt.keydir import KeyDirectory
entries = KeyDirectory(sys.argv[1]).list()
out = sys.stdout
for e in entries:
    line = f"{e.fingerprint[:16]}  {e.status():<13}  {e.key_type:<8}  {e.not_after:%Y-%m-%d}  {' '.join(e.addresses)}"
    out.write(line + "\\n")
"""


def mailcrypt_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("mailcrypt")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mailcrypt"]


def make_bundle(path: Path, count: int) -> None:
    """``count`` S/MIME certificates in one PEM file, all for one EC key, signed by a throwaway CA."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keys-list benchmark CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    with open(path, "wb") as out:
        for i in range(count):
            address = f"user{i:05d}@example{i % 97}.org"
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"User {i}")]))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365 + i % 300))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(usage, critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
                .sign(ca_key, hashes.SHA256())
            )
            out.write(cert.public_bytes(serialization.Encoding.PEM))


def prepare(directory: Path, count: int) -> Path:
    """A home whose key directory holds ``count`` certificates; made once, reused after."""
    from mailcrypt import config
    from mailcrypt.keydir import KeyDirectory

    home = directory / f"home-{count}"
    keys = home / "keys"
    if keys.is_dir() and len(os.listdir(keys / "certs")) == count:
        print(f"reusing {count} certificates in {home}")
        return home
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / f"bundle-{count}.pem"
    if not bundle.exists():
        started = time.perf_counter()
        make_bundle(bundle, count)
        print(f"made {count} certificates in {time.perf_counter() - started:.1f} s")
    if not (home / "config.toml").exists():
        config.write_default_config(home, "bench@example.org")
    started = time.perf_counter()
    result = KeyDirectory(keys).import_file(bundle)
    print(f"imported {len(result.imported)} certificates in {time.perf_counter() - started:.1f} s")
    return home


def timed(run, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def verdict(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms  {'OK' if seconds < TARGET_SECONDS else 'OVER'} (target < {TARGET_SECONDS:.0f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mailcrypt-bench-keys-list")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from mailcrypt.keydir import KeyDirectory

    home = prepare(args.dir, args.count)
    keys = home / "keys"
    # Touch the certs directory so the first call must check the index against the files.
    os.utime(keys / "certs")
    first = timed(lambda: KeyDirectory(keys).list(), 1)[0]
    count = len(KeyDirectory(keys).list())
    warm = statistics.median(timed(lambda: KeyDirectory(keys).list(), args.runs))
    print(f"\nkeys list on {count} certificates")
    print(f"  KeyDirectory.list(), first call         {verdict(first)}")
    print(f"  KeyDirectory.list(), warm (median)      {verdict(warm)}")

    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def fresh_process() -> None:
        subprocess.run([sys.executable, "-c", _LIST_SCRIPT, str(keys)], check=True, env=env, stdout=subprocess.DEVNULL)

    process = statistics.median(timed(fresh_process, args.runs))
    print(f"  new process: import, list, print all    {verdict(process)}")

    probe = subprocess.run([*mailcrypt_cmd(), "--home", str(home), "keys", "list"], capture_output=True, env=env)
    if probe.returncode == 0:

        def cli() -> None:
            subprocess.run(
                [*mailcrypt_cmd(), "--home", str(home), "keys", "list"], check=True, env=env, stdout=subprocess.DEVNULL
            )

        print(f"  mailcrypt keys list (median)            {verdict(statistics.median(timed(cli, args.runs)))}")
    else:
        print("  mailcrypt keys list                     (not in the command line yet: not timed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
