"""A mutation fuzzer of the incoming path: every failure must be one of mailcrypt's typed errors.

Seeds are real peers' output: messages made here by ``openssl cms`` (signed
detached and opaque, enveloped to RSA and to EC, signed then enveloped) and,
when present, the Thunderbird corpus (``tests/corpus.py``; made by NSS and
OpenSSL). Each input is one seed mutated at random, at one of two levels:

- DER: the CMS body is decoded from base64 and damaged: bit flips, bytes
  inserted or deleted, a length field changed (found by walking the TLVs),
  truncation, a TLV replaced by another from a pool of certificate fields
  (versions, serial numbers, public key infos, extensions, names; including
  a negative serial, unknown versions and an unknown key algorithm), then
  re-encoded;
- MIME: header fields mangled, dropped or repeated, boundaries changed,
  base64 damaged, line ends changed, the message truncated.

Every input goes to ``mailcrypt.mime.unwrap_message`` with the recipients'
identities and the CA as trust anchor, and to ``decrypt_message``, with
every warning turned into an error. Any exception that is not a
``MailcryptError`` is a finding: its type, message and the innermost
mailcrypt frame are printed, the input is written to ``--out``, and the exit
status is 1. The seed is printed; the same seed, inputs and workers replay
the same inputs.

Usage: .venv/bin/python benchmarks/fuzz_incoming.py [--inputs N] [--seconds S] [--seed N]
       [--workers N] [--out DIR]

It stops after ``--inputs`` inputs (default 100000), or earlier when
``--seconds`` is given and runs out (said in the output). ``.ci/run`` runs it
with 100000 inputs and no time limit; under CI a missing corpus is a failure.
"""

from __future__ import annotations

import argparse
import base64
import collections
import datetime
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, this directory comes first on the path, and its proxy.py would
# hide the proxy package: the checkout's root and tests/ are put there instead.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[0:1] = [str(_ROOT), str(_ROOT / "tests")]

from corpus import CORPUS  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from mailcrypt.envelope import Identity, identity_from_key  # noqa: E402
from mailcrypt.errors import MailcryptError  # noqa: E402
from mailcrypt.mime import decrypt_message, unwrap_message  # noqa: E402
from mailcrypt.pki import load_certificates  # noqa: E402

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
_B64_BODY = re.compile(rb"\r?\n\r?\n((?:[A-Za-z0-9+/=]{4,}\r?\n)+)")


@dataclass
class Target:
    """What the inputs are fed with: identities, anchors, and the seed messages and TLV donors."""

    identities: list[Identity]
    anchors: list[x509.Certificate]
    seeds: list[tuple[str, bytes]]
    donors: list[bytes] = field(default_factory=list)


# ---------------------------------------------------------------- seeds


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(
    subject: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, issuer: str, signer: object, *, ca: bool
) -> x509.Certificate:
    start = NOW - datetime.timedelta(days=30)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(f"{subject}@example.org")]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]


def _pem(obj: x509.Certificate | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _openssl(*args: str, data: bytes) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def openssl_target() -> Target:
    """A throwaway CA, an RSA and an EC recipient, and the messages ``openssl cms`` makes for them."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Fuzz CA", ca_key, "Fuzz CA", ca_key, ca=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_cert = _certificate("rsa", rsa_key, "Fuzz CA", ca_key, ca=False)
    ec_cert = _certificate("ec", ec_key, "Fuzz CA", ca_key, ca=False)
    body = b"From: rsa@example.org\r\nTo: ec@example.org\r\nSubject: fuzz\r\n\r\nHello, fuzz.\r\n"
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, obj in [("ca.pem", ca), ("rsa.pem", rsa_cert), ("rsa.key", rsa_key), ("ec.pem", ec_cert)]:
            (d / name).write_bytes(_pem(obj))
        (d / "ec.key").write_bytes(_pem(ec_key))
        sign = ["cms", "-sign", "-signer", str(d / "rsa.pem"), "-inkey", str(d / "rsa.key"), "-certfile"]
        detached = _openssl(*sign, str(d / "ca.pem"), data=body)
        opaque = _openssl(*sign, str(d / "ca.pem"), "-nodetach", data=body)
        ec_signed = _openssl(
            "cms", "-sign", "-signer", str(d / "ec.pem"), "-inkey", str(d / "ec.key"), "-nodetach", data=body
        )
        enc = ["cms", "-encrypt", "-aes256", str(d / "rsa.pem"), str(d / "ec.pem")]
        seeds += [("openssl detached", detached), ("openssl opaque", opaque), ("openssl ec opaque", ec_signed)]
        seeds.append(("openssl enveloped", _openssl(*enc, data=body)))
        seeds.append(("openssl signed+enveloped", _openssl(*enc, data=detached)))
        gcm = ["cms", "-encrypt", "-aes-256-gcm", "-recip", str(d / "rsa.pem"), "-keyopt", "rsa_padding_mode:oaep"]
        seeds.append(("openssl authenveloped", _openssl(*gcm, data=opaque)))
    identities = [identity_from_key(rsa_key, rsa_cert), identity_from_key(ec_key, ec_cert)]
    return Target(identities, [ca], seeds)


def corpus_target() -> Target | None:
    """The Thunderbird corpus's messages and identities, or None where it is absent."""
    if not CORPUS.is_dir():
        return None
    identities = []
    for key_path in sorted(CORPUS.glob("*/*.key")):
        cert_path = key_path.with_suffix(".crt")
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        for certificate in load_certificates(cert_path.read_bytes()):
            try:
                identities.append(identity_from_key(key, certificate))
            except (TypeError, ValueError):
                continue
    anchors = load_certificates((CORPUS / "generated" / "TestCA.pem").read_bytes())
    seeds = []
    for path in sorted(CORPUS.glob("*/*")):
        if path.suffix in (".p12", ".key", ".crt", ".pem", ".sh", ".txt", ".md") or not path.is_file():
            continue
        data = path.read_bytes()
        if b"Content-Type" in data or b"content-type" in data:
            seeds.append((f"corpus {path.parent.name}/{path.name}", data))
    return Target(identities, anchors, seeds)


def _tlvs(der: bytes, limit: int = 4000) -> list[tuple[int, int, int, int]]:
    """(start, header length, content length, depth) of every TLV in ``der`` it can walk, DER or BER."""
    found: list[tuple[int, int, int, int]] = []
    stack = [(0, len(der), 0)]
    while stack and len(found) < limit:
        pos, end, depth = stack.pop()
        while pos < end and len(found) < limit:
            if pos + 2 > len(der):
                break
            first, lb = der[pos], der[pos + 1]
            hlen = 2
            if lb == 0x80:
                length = end - pos - 2  # indefinite: take the rest
            elif lb & 0x80:
                n = lb & 0x7F
                if n == 0 or n > 4 or pos + 2 + n > len(der):
                    break
                length = int.from_bytes(der[pos + 2 : pos + 2 + n], "big")
                hlen += n
            else:
                length = lb
            if pos + hlen + length > end:
                break
            found.append((pos, hlen, length, depth))
            if first & 0x20:
                stack.append((pos + hlen, pos + hlen + length, depth + 1))
            pos += hlen + length
    return found


def certificate_donors(certificates: list[x509.Certificate]) -> list[bytes]:
    """TLVs to splice: every TLV of these certificates, and hand-made bad certificate fields."""
    donors = []
    for certificate in certificates:
        der = certificate.public_bytes(serialization.Encoding.DER)
        donors += [der[s : s + h + n] for s, h, n, _ in _tlvs(der)]
    # Versions [0] EXPLICIT INTEGER: unknown ones (RFC 5280 §4.1.2.1 knows 0, 1 and 2) and a negative one.
    donors += [b"\xa0\x03\x02\x01" + version.to_bytes(1, "big", signed=True) for version in (3, 7, 127, -1)]
    donors += [
        b"\x02\x01\xff",  # serial -1
        b"\x02\x01\x00",  # serial 0
        b"\x02\x00",  # empty INTEGER
        # A SubjectPublicKeyInfo with an unknown algorithm (1.2.3.4) and a DSA one without parameters.
        bytes.fromhex("300f300506032a0304030600") + b"\x01\x02\x03\x04",
        bytes.fromhex("30123009060728") + bytes.fromhex("8ce38004010305") + b"\x00\x02\x01\x01",
        # Extensions: a duplicated one, a malformed SAN, an unknown critical one.
        bytes.fromhex("a31b3019") + bytes.fromhex("300a0603551d0e0403040102") * 2 + b"\x30\x01\x00",
        bytes.fromhex("a30f300d300b0603551d110404300281ff"),
        bytes.fromhex("a3123010300e06032a0304010101ff0404300200"),
        b"\x17\x0d991340000000Z",  # a UTCTime that is no time
    ]
    return donors


# ------------------------------------------------------------- mutation


def _mutate_der(der: bytes, rng: random.Random, donors: list[bytes]) -> bytes:
    data = bytearray(der)
    if not data:
        return bytes(data)
    kind = rng.randrange(7)
    tlvs = _tlvs(der) if kind in (3, 5, 6) else []
    if kind == 0:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        pos = rng.randrange(len(data) + 1)
        data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == 2:
        pos = rng.randrange(len(data))
        del data[pos : pos + rng.randint(1, 8)]
    elif kind == 3 and tlvs:
        start, hlen, length, _ = rng.choice(tlvs)
        new = rng.choice([0, 1, length - 1, length + 1, length * 2, 0x7F, 0x80, 0xFFFF, rng.randrange(1 << 16)])
        new = max(new, 0)
        header = bytes([data[start]]) + (bytes([new]) if new < 0x80 else bytes([0x82]) + new.to_bytes(2, "big"))
        if rng.random() < 0.2:
            header = bytes([data[start], 0x80])  # indefinite length where it may not be
        data[start : start + hlen] = header
    elif kind == 4:
        del data[rng.randrange(len(data)) :]
    elif kind == 5 and tlvs and donors:
        start, hlen, length, _ = rng.choice(tlvs)
        data[start : start + hlen + length] = rng.choice(donors)
    elif kind == 6 and tlvs:
        # Change a tag (another universal type, or constructed/primitive).
        start = rng.choice(tlvs)[0]
        data[start] = rng.choice([data[start] ^ 0x20, 0x02, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x17, 0x18, 0x30, 0x31])
    else:
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _b64_lines(der: bytes, eol: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"".join(text[i : i + 64] + eol for i in range(0, len(text), 64))


def _mutate_body(message: bytes, rng: random.Random, donors: list[bytes]) -> bytes:
    """One base64 CMS body of the message, decoded, damaged at the DER level, re-encoded."""
    bodies = list(_B64_BODY.finditer(message))
    if not bodies:
        return _mutate_der(message, rng, donors)
    match = rng.choice(bodies)
    try:
        der = base64.b64decode(match.group(1), validate=False)
    except ValueError:
        return message
    eol = b"\r\n" if b"\r\n" in match.group(1) else b"\n"
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        der = _mutate_der(der, rng, donors)
    return message[: match.start(1)] + _b64_lines(der, eol) + message[match.end(1) :]


def _mutate_mime(message: bytes, rng: random.Random) -> bytes:
    data = message
    kind = rng.randrange(8)
    lines = data.split(b"\n")
    if kind == 0 and lines:
        # Mangle a header-ish line: its name, its value or its parameters.
        header_lines = [i for i, line in enumerate(lines) if b":" in line[:40]] or [0]
        i = rng.choice(header_lines)
        choices = [
            b"",
            lines[i] + b'; boundary=""',
            lines[i].replace(b";", b";;"),
            lines[i].replace(b"=", b'="'),
            lines[i].upper(),
            lines[i] + b"; smime-type=enveloped-data",
            lines[i] + b"; smime-type=signed-data",
            b"Content-Type: application/pkcs7-mime; smime-type=" + rng.choice([b"", b"x", b"certs-only"]),
            b"Content-Transfer-Encoding: " + rng.choice([b"base64", b"quoted-printable", b"x-uuencode", b"8bit"]),
            lines[i] + b"\n " + bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 30))),
        ]
        lines[i] = rng.choice(choices)
        if rng.random() < 0.3:
            lines.insert(i, lines[i])  # a repeated field
        data = b"\n".join(lines)
    elif kind == 1:
        found = re.findall(rb'boundary="?([^";\r\n]+)', data)
        if found:
            old = rng.choice(found)
            new = rng.choice([b"", b"x", old + b"x", old[:-1], b"-" * 70 + b"=", old * 2])
            data = data.replace(old, new, rng.choice([1, -1])) if rng.random() < 0.7 else data.replace(b"--" + old, b"")
    elif kind == 2:
        # Damage base64: characters outside the alphabet, padding, a dropped line.
        bodies = list(_B64_BODY.finditer(data))
        if bodies:
            m = rng.choice(bodies)
            text = bytearray(m.group(1))
            for _ in range(rng.randint(1, 5)):
                if not text:
                    break
                pos = rng.randrange(len(text))
                op = rng.randrange(4)
                if op == 0:
                    text[pos : pos + 1] = rng.choice([b"=", b"==", b"*", b"\x00", b" ", b"-", b"\xff"])
                elif op == 1:
                    del text[pos : pos + rng.randint(1, 80)]
                elif op == 2:
                    text[pos:pos] = b"="
                else:
                    text[pos:pos] = b"\r\n\r\n"
            data = data[: m.start(1)] + bytes(text) + data[m.end(1) :]
    elif kind == 3:
        data = data.replace(b"\r\n", b"\n") if b"\r\n" in data else data.replace(b"\n", b"\r\n")
        if rng.random() < 0.5:
            data = data.replace(b"\n", b"\r")
    elif kind == 4:
        data = data[: rng.randrange(len(data) + 1)]
    elif kind == 5:
        pos = rng.randrange(len(data) + 1)
        data = data[:pos] + rng.choice([b"\r\n\r\n", b"\n--", b"=?utf-8?b?", b"\x00", b"\xff\xfe", b"; "]) + data[pos:]
    elif kind == 6:
        # Nest the whole message as the body of another (more layers than allowed, or a wrong wrapper).
        header = rng.choice(
            [b"Content-Type: message/rfc822\r\n\r\n", b"Content-Type: application/pkcs7-mime\r\n\r\n", b""]
        )
        data = header + data
    else:
        # Swap the smime-type or the media type.
        data = data.replace(
            rng.choice([b"enveloped-data", b"signed-data", b"pkcs7-signature", b"multipart/signed"]),
            rng.choice([b"signed-data", b"enveloped-data", b"authEnveloped-data", b"pkcs7-mime", b"multipart/mixed"]),
        )
    return data


def mutate(message: bytes, rng: random.Random, donors: list[bytes]) -> bytes:
    data = message
    for _ in range(rng.choice([1, 1, 1, 2])):
        data = _mutate_body(data, rng, donors) if rng.random() < 0.6 else _mutate_mime(data, rng)
    return data


# --------------------------------------------------------------- running


@dataclass
class Report:
    inputs: int = 0
    typed: collections.Counter[str] = field(default_factory=collections.Counter)
    findings: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)  # signature -> (count, text, input)


def _feed(target: Target, data: bytes, report: Report) -> None:
    report.inputs += 1
    for step in ("unwrap", "decrypt"):
        try:
            if step == "unwrap":
                unwrap_message(data, target.identities, now=NOW, trust_anchors=target.anchors)
            else:
                decrypt_message(data, target.identities)
        except MailcryptError as exc:
            report.typed[type(exc).__name__] += 1
        except Exception as exc:  # noqa: BLE001 - every other exception is what this looks for
            frames = traceback.extract_tb(exc.__traceback__)
            ours = [f for f in frames if "mailcrypt" in f.filename] or frames
            where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
            signature = f"{step}: {type(exc).__module__}.{type(exc).__name__} at {where}"
            count, text, first = report.findings.get(signature, (0, f"{exc}"[:300], data))
            report.findings[signature] = (count + 1, text, first)


def _targets() -> list[Target]:
    targets = [openssl_target()]
    corpus = corpus_target()
    if corpus is not None:
        targets.append(corpus)
    certificates = [i.certificate for t in targets for i in t.identities] + [a for t in targets for a in t.anchors]
    donors = certificate_donors(certificates)
    for t in targets:
        t.donors = donors
    return targets


def _worker(args: tuple[int, int, float]) -> Report:
    seed, budget, deadline = args
    # This process only fuzzes: every warning is turned into an error, and so into a finding.
    warnings.simplefilter("error")
    rng = random.Random(seed)
    targets = _targets()
    report = Report()
    # Every seed once, unmutated: they must pass or fail typed too.
    for target in targets:
        for _, message in target.seeds:
            _feed(target, message, report)
    while report.inputs < budget and time.monotonic() < deadline:
        target = rng.choice(targets)
        _, message = rng.choice(target.seeds)
        _feed(target, mutate(message, rng, target.donors), report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs in all (default 100000)")
    parser.add_argument("--seconds", type=float, default=None, help="time budget (default: none)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and printed)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: cores)")
    parser.add_argument("--out", type=Path, default=None, help="directory for the inputs of findings")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    corpus = "present" if CORPUS.is_dir() else f"absent ({CORPUS})"
    if not CORPUS.is_dir() and os.environ.get("CI"):
        print(f"fuzz_incoming: the Thunderbird corpus is {corpus}; CI is set, so this is a failure")
        return 1
    seconds = "no time limit" if args.seconds is None else f"at most {args.seconds:g} s"
    budget = f"{args.inputs} inputs, {seconds}, {args.workers} workers"
    print(f"fuzz_incoming: seed {seed}, {budget}, corpus {corpus}")
    sys.stdout.flush()
    started = time.monotonic()
    deadline = started + (args.seconds if args.seconds is not None else float("inf"))
    share = [args.inputs // args.workers + (1 if i < args.inputs % args.workers else 0) for i in range(args.workers)]
    jobs = [(seed * 1000 + i, share[i], deadline) for i in range(args.workers)]
    if args.workers == 1:
        reports = [_worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            reports = pool.map(_worker, jobs)
    elapsed = time.monotonic() - started
    total = Report()
    for r in reports:
        total.inputs += r.inputs
        total.typed.update(r.typed)
        for sig, (count, text, data) in r.findings.items():
            old = total.findings.get(sig, (0, text, data))
            total.findings[sig] = (old[0] + count, old[1], old[2])
    untyped = sum(count for count, _, _ in total.findings.values())
    print(f"fuzz_incoming: {total.inputs} inputs in {elapsed:.1f} s ({total.inputs / elapsed:.0f}/s), seed {seed}")
    print("typed errors: " + ", ".join(f"{name} {n}" for name, n in total.typed.most_common()))
    print(f"exceptions other than mailcrypt's: {untyped} ({len(total.findings)} kinds)")
    for i, (sig, (count, text, data)) in enumerate(sorted(total.findings.items(), key=lambda kv: -kv[1][0])):
        print(f"  {count:6d}  {sig}: {text}")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"finding-{i}.eml").write_bytes(data)
    if total.inputs < args.inputs:
        print(f"fuzz_incoming: the time budget ended after {total.inputs} of {args.inputs} inputs")
    return 1 if untyped else 0


if __name__ == "__main__":
    sys.exit(main())
