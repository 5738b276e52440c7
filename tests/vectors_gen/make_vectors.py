#!/usr/bin/env python3
"""Recreate mailcrypt's interop test vectors in ``tests/vectors/``.

This script documents where every vector came from; the test suite never runs
it. It drives OpenSSL 3 (``openssl cms -encrypt``) and pyca/cryptography's
``PKCS7EnvelopeBuilder``, then writes one ``<name>.vec`` file per case: a
header of ``key: value`` lines (STYLE.md §6), a blank line, and the CMS as a
PEM block labelled ``CMS``. The exact command line recorded in each header is
run with ``tests/vectors/`` as the working directory.

Before a vector is written, OpenSSL checks it independently: every success
vector must decrypt with ``openssl cms -decrypt`` to the recorded plaintext,
and every tampered or mismatched vector must fail there too. The
``key-management`` header is filled in from a parse of the produced bytes
(asn1crypto), not from what we asked for, so it states what is really on the
wire.

The recipient keys under ``tests/vectors/keys/`` are throwaway test keys,
made once with ``--new-keys``. Regenerating the vectors alone keeps the keys.

What it will not do: touch anything outside ``tests/vectors/``, or make
vectors with mailcrypt itself (vectors must come from other implementations).

Usage: python tests/vectors_gen/make_vectors.py [--new-keys] [--only NAME ...]

``--only`` writes just the named vectors and leaves every other file as it
is (a full run remakes them all, with new random keys and IVs).
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from asn1crypto import cms
from cryptography import __version__ as CRYPTOGRAPHY_VERSION
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parent / "vectors"
KEYS = VECTORS / "keys"
PLAIN = VECTORS / "plaintext"

# name -> (openssl -newkey argument(s), extension section in cert.cnf)
KEY_SPECS: dict[str, tuple[list[str], str]] = {
    "rsa2048": (["-newkey", "rsa:2048"], "rsa_recipient"),
    "rsa3072": (["-newkey", "rsa:3072"], "rsa_recipient"),
    "p256": (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "ec_recipient"),
    "p384": (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "ec_recipient"),
    # Not a recipient of any vector: used to provoke "no matching identity".
    "wrong-rsa2048": (["-newkey", "rsa:2048"], "rsa_recipient"),
    "wrong-p256": (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "ec_recipient"),
}

OID_NAMES = {
    "2.16.840.1.101.3.4.1.2": "aes128-cbc",
    "2.16.840.1.101.3.4.1.22": "aes192-cbc",
    "2.16.840.1.101.3.4.1.42": "aes256-cbc",
    "1.2.840.113549.3.7": "des-ede3-cbc",
    "1.3.14.3.2.7": "des-cbc",
    "2.16.840.1.101.3.4.1.6": "aes128-gcm",
    "2.16.840.1.101.3.4.1.26": "aes192-gcm",
    "2.16.840.1.101.3.4.1.46": "aes256-gcm",
    "2.16.840.1.101.3.4.1.5": "aes128-wrap",
    "2.16.840.1.101.3.4.1.25": "aes192-wrap",
    "2.16.840.1.101.3.4.1.45": "aes256-wrap",
    "1.2.840.113549.1.9.16.3.6": "des-ede3-wrap",  # RFC 3217
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    # dhSinglePass-stdDH-sha*kdf-scheme, RFC 5753 §7.1.4 / SEC 1.
    "1.3.133.16.840.63.0.2": "sha1",
    "1.3.132.1.11.0": "sha224",
    "1.3.132.1.11.1": "sha256",
    "1.3.132.1.11.2": "sha384",
    "1.3.132.1.11.3": "sha512",
}


RC2_CBC = "1.2.840.113549.3.2"
# RC2 and single DES live in OpenSSL 3's legacy provider.
LEGACY = ["-provider", "legacy", "-provider", "default"]


def run(
    cmd: list[str], *, stdin: bytes | None = None, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=VECTORS, input=stdin, capture_output=True, check=check, env=env)


OPENSSL_VERSION = run(["openssl", "version"]).stdout.decode().strip()
PYCA_TOOL = f"pyca/cryptography {CRYPTOGRAPHY_VERSION}"


# --------------------------------------------------------------------------- keys


def make_keys() -> None:
    KEYS.mkdir(parents=True, exist_ok=True)
    for name, (newkey, section) in KEY_SPECS.items():
        address = f"{name}@vectors.mailcrypt.test"
        cmd = [
            "openssl", "req", "-x509", "-config", "../vectors_gen/cert.cnf", "-extensions", section,
            *newkey, "-noenc", "-sha256", "-days", "36500",
            "-subj", f"/CN=mailcrypt test vector {name}/emailAddress={address}",
            "-keyout", f"keys/{name}.key", "-out", f"keys/{name}.crt",
        ]
        run(cmd, env={**os.environ, "VECTOR_EMAIL": address})
        print("key", name, "(" + " ".join(shlex.quote(c) for c in cmd) + ")")


# --------------------------------------------------------------------- plaintexts


def make_plaintexts() -> None:
    PLAIN.mkdir(parents=True, exist_ok=True)
    entity = (
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Hello Bob,\r\n"
        "\r\n"
        "this MIME entity is the plaintext of mailcrypt's interop test vectors.\r\n"
        "Gr\u00fc\u00dfe, \u00e7a va? \u2014 non-ASCII bytes must survive unchanged.\r\n"
        "\r\n"
        "-- \r\n"
        "Alice\r\n"
    ).encode("utf-8")
    (PLAIN / "mime-entity.eml").write_bytes(entity)
    # 256 bytes: a multiple of the AES block, so CBC adds a whole padding block.
    (PLAIN / "binary-256.bin").write_bytes(bytes(range(256)))
    (PLAIN / "empty.bin").write_bytes(b"")
    # Large enough that `openssl cms -stream` splits the ciphertext into many
    # primitive OCTET STRING segments of a constructed one.
    lines = [
        "Content-Type: text/plain; charset=us-ascii\r\n",
        "\r\n",
    ]
    for i in range(800):
        lines.append(f"line {i:04d}: the quick brown fox jumps over the lazy dog\r\n")
    (PLAIN / "large-text.eml").write_bytes("".join(lines).encode("ascii"))


# ------------------------------------------------------------------ CMS helpers


def pem_to_der(pem: bytes) -> bytes:
    body = [ln for ln in pem.decode("ascii").splitlines() if ln and not ln.startswith("-----")]
    return base64.b64decode("".join(body))


def smime_to_der(data: bytes) -> bytes:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes) and payload
    return payload


def openssl_encrypt(args: list[str], plaintext: str, *, outform: str = "DER") -> tuple[str, bytes]:
    """Run ``openssl cms -encrypt`` and return (recorded command, DER/BER bytes)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        # OpenSSL stops reading options at the first operand, so the certificates in ``args`` come last.
        cmd = ["openssl", "cms", "-encrypt", "-binary", "-in", plaintext, "-outform", outform, "-out", str(out), *args]
        run(cmd)
        raw = out.read_bytes()
    ext = {"DER": "der", "PEM": "pem", "SMIME": "p7m.eml"}[outform]
    recorded = [f"out.{ext}" if c == str(out) else c for c in cmd]
    der = {"DER": lambda b: b, "PEM": pem_to_der, "SMIME": smime_to_der}[outform](raw)
    return " ".join(shlex.quote(c) for c in recorded), der


def describe_ri(ri: cms.RecipientInfo) -> str:
    """The key-management name of one RecipientInfo, or '' when none fits the naming scheme."""
    if ri.name == "ktri":
        alg = ri.chosen["key_encryption_algorithm"]
        oid = alg["algorithm"].dotted
        if oid == "1.2.840.113549.1.1.1":
            return "rsa-pkcs1v15"
        if oid == "1.2.840.113549.1.1.7":
            params = alg["parameters"]
            h = params["hash_algorithm"]["algorithm"].dotted
            mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].dotted
            label = params["p_source_algorithm"]["parameters"].native
            if h != mgf_hash or label:
                return ""
            return f"rsa-oaep-{OID_NAMES[h]}"
        return ""
    if ri.name == "kari":
        alg = ri.chosen["key_encryption_algorithm"]
        kdf = OID_NAMES.get(alg["algorithm"].dotted)
        # The parameters of a dhSinglePass scheme are the KeyWrapAlgorithm (RFC 5753 §3.1.1).
        wrap = OID_NAMES.get(cms.KeyEncryptionAlgorithm.load(alg["parameters"].dump())["algorithm"].dotted)
        return f"ecdh-{kdf}kdf-{wrap}" if kdf and wrap else ""
    return ""


def parse(der: bytes) -> tuple[str, str, list[cms.RecipientInfo]]:
    ci = cms.ContentInfo.load(der)
    ctype = ci["content_type"].dotted
    content = ci["content"]
    eci = content["encrypted_content_info" if ctype == "1.2.840.113549.1.7.3" else "auth_encrypted_content_info"]
    algorithm = eci["content_encryption_algorithm"]
    cipher = OID_NAMES.get(algorithm["algorithm"].dotted, "")
    if algorithm["algorithm"].dotted == RC2_CBC:
        # RFC 3370 §5.2: the effective key size is coded in the parameters' version (RFC 2268 §6).
        bits = {160: 40, 120: 64, 58: 128}[algorithm["parameters"]["rc2_parameter_version"].native]
        cipher = f"rc2-{bits}-cbc"
    kind = {"1.2.840.113549.1.7.3": "enveloped-data", "1.2.840.113549.1.9.16.1.23": "authEnveloped-data"}[ctype]
    return kind, cipher, list(content["recipient_infos"])


def ri_matches(ri: cms.RecipientInfo, cert_path: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if ri.name == "ktri":
        rids = [ri.chosen["rid"]]
    elif ri.name == "kari":
        rids = [rek["rid"] for rek in ri.chosen["recipient_encrypted_keys"]]
    else:
        return False
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for rid in rids:
        chosen = rid.chosen
        if rid.name in ("issuer_and_serial_number",):
            if (chosen["serial_number"].native == cert.serial_number
                    and chosen["issuer"].dump() == cert.issuer.public_bytes()):
                return True
        elif rid.name == "subject_key_identifier":
            if chosen.native == ski:
                return True
        elif rid.name == "r_key_id":
            if chosen["subject_key_identifier"].native == ski:
                return True
    return False


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    b = bytearray(data)
    b[offset] ^= mask
    return bytes(b)


def locate(der: bytes, needle: bytes) -> int:
    at = der.find(needle)
    assert at >= 0 and der.find(needle, at + 1) < 0, "needle must occur exactly once"
    return at


def openssl_decrypt(der: bytes, identity: str) -> subprocess.CompletedProcess:
    return run(
        ["openssl", "cms", "-decrypt", *LEGACY, "-binary", "-inform", "DER",
         "-inkey", f"keys/{identity}.key", "-recip", f"keys/{identity}.crt"],
        stdin=der,
        check=False,
    )


# ------------------------------------------------------------------------ cases


@dataclass
class Vector:
    name: str
    expect: str
    tool: str
    command: str
    der: bytes
    identity: list[str]
    plaintext: str | None = None
    matched: str | None = None
    error: str | None = None
    oid: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # Set False when openssl itself is expected to decrypt a vector we reject (unsupported ones it knows).
    openssl_fails: bool | None = None


VECTORS_OUT: list[Vector] = []


def add(v: Vector) -> Vector:
    VECTORS_OUT.append(v)
    return v


def ossl(name: str, args: list[str], *, identity: list[str], plaintext: str = "plaintext/mime-entity.eml",
         expect: str = "success", matched: str | None = None, outform: str = "DER", note: str = "") -> Vector:
    command, der = openssl_encrypt(args, plaintext, outform=outform)
    extra = {"note": note} if note else {}
    return add(Vector(name, expect, OPENSSL_VERSION, command, der, identity,
                      plaintext=plaintext if expect == "success" else None,
                      matched=matched or (identity[-1] if expect == "success" else None), extra=extra))


def pyca(name: str, certs: list[str], algorithm: str | None, options: list[str], *, identity: list[str],
         plaintext: str = "plaintext/mime-entity.eml", expected_plaintext: str | None = None) -> Vector:
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data((VECTORS / plaintext).read_bytes())
    call = f"pkcs7.PKCS7EnvelopeBuilder().set_data(open({plaintext!r}, 'rb').read())"
    for c in certs:
        builder = builder.add_recipient(x509.load_pem_x509_certificate((KEYS / f"{c}.crt").read_bytes()))
        call += f".add_recipient(x509.load_pem_x509_certificate(open('keys/{c}.crt', 'rb').read()))"
    if algorithm:
        builder = builder.set_content_encryption_algorithm(getattr(algorithms, algorithm))
        call += f".set_content_encryption_algorithm(algorithms.{algorithm})"
    opts = [getattr(pkcs7.PKCS7Options, o) for o in options]
    der = builder.encrypt(serialization.Encoding.DER, opts)
    call += f".encrypt(serialization.Encoding.DER, [{', '.join('pkcs7.PKCS7Options.' + o for o in options)}])"
    return add(Vector(name, "success", PYCA_TOOL, call, der, identity,
                      plaintext=expected_plaintext or plaintext, matched=identity[-1]))


def derived(name: str, source: Vector, der: bytes, modification: str, *, expect: str, identity: list[str] | None = None,
            error: str | None = None, oid: str | None = None) -> Vector:
    return add(Vector(name, expect, f"{source.tool}, then make_vectors.py (byte edit)", source.command, der,
                      identity or source.identity, error=error, oid=oid,
                      extra={"derived-from": source.name, "modification": modification}))


def build_cases() -> None:
    # --- RSA key transport, PKCS#1 v1.5, recipient by issuerAndSerialNumber; every AES content cipher.
    for cipher in ("aes-128-cbc", "aes-192-cbc", "aes-256-cbc", "aes-128-gcm", "aes-192-gcm", "aes-256-gcm"):
        short = cipher.replace("aes-", "aes")
        ossl(f"openssl-rsa2048-{short}", [f"-{cipher}", "keys/rsa2048.crt"], identity=["rsa2048"])
    ossl("openssl-rsa3072-aes256-cbc", ["-aes-256-cbc", "keys/rsa3072.crt"], identity=["rsa3072"])
    ossl("openssl-rsa3072-aes256-gcm", ["-aes-256-gcm", "keys/rsa3072.crt"], identity=["rsa3072"])

    # --- RSA-OAEP (RFC 3560 / RFC 8017): default SHA-1, SHA-256 (MGF1 follows the hash), explicit MGF1,
    # mismatched MGF1, SHA-384/512, and a label.
    oaep = ["-keyopt", "rsa_padding_mode:oaep"]
    ossl("openssl-rsa2048-oaep-sha1-aes256-cbc", ["-aes-256-cbc", "-recip", "keys/rsa2048.crt", *oaep],
         identity=["rsa2048"])
    ossl("openssl-rsa2048-oaep-sha256-aes256-cbc",
         ["-aes-256-cbc", "-recip", "keys/rsa2048.crt", *oaep, "-keyopt", "rsa_oaep_md:sha256"], identity=["rsa2048"])
    ossl("openssl-rsa2048-oaep-sha256-mgf1sha256-aes256-gcm",
         ["-aes-256-gcm", "-recip", "keys/rsa2048.crt", *oaep, "-keyopt", "rsa_oaep_md:sha256",
          "-keyopt", "rsa_mgf1_md:sha256"],
         identity=["rsa2048"])
    ossl("openssl-rsa2048-oaep-sha256-mgf1sha1-aes128-cbc",
         ["-aes-128-cbc", "-recip", "keys/rsa2048.crt", *oaep, "-keyopt", "rsa_oaep_md:sha256",
          "-keyopt", "rsa_mgf1_md:sha1"],
         identity=["rsa2048"], note="OAEP hash SHA-256 with MGF1-SHA-1: the two hashes differ")
    ossl("openssl-rsa3072-oaep-sha384-aes256-gcm",
         ["-aes-256-gcm", "-recip", "keys/rsa3072.crt", *oaep, "-keyopt", "rsa_oaep_md:sha384"], identity=["rsa3072"])
    ossl("openssl-rsa3072-oaep-sha512-aes192-cbc",
         ["-aes-192-cbc", "-recip", "keys/rsa3072.crt", *oaep, "-keyopt", "rsa_oaep_md:sha512"], identity=["rsa3072"])
    ossl("openssl-rsa2048-oaep-sha256-label-aes256-cbc",
         ["-aes-256-cbc", "-recip", "keys/rsa2048.crt", *oaep, "-keyopt", "rsa_oaep_md:sha256",
          "-keyopt", "rsa_oaep_label:6d61696c6372797074"],
         identity=["rsa2048"], note="OAEP label (pSpecified) is the hex string 6d61696c6372797074")

    # --- Recipient identified by subjectKeyIdentifier (-keyid): ktri rid [0], kari rKeyId.
    ossl("openssl-rsa2048-keyid-aes256-cbc", ["-aes-256-cbc", "-keyid", "keys/rsa2048.crt"], identity=["rsa2048"])
    ossl("openssl-rsa3072-keyid-oaep-sha256-aes128-gcm",
         ["-aes-128-gcm", "-keyid", "-recip", "keys/rsa3072.crt", *oaep, "-keyopt", "rsa_oaep_md:sha256"],
         identity=["rsa3072"])
    ossl("openssl-p256-keyid-aes128-gcm", ["-aes-128-gcm", "-keyid", "keys/p256.crt"], identity=["p256"])

    # --- ECDH ephemeral-static (RFC 5753). OpenSSL's default KDF is SHA-1; the key wrap follows the
    # content cipher's key length.
    ossl("openssl-p256-aes128-cbc", ["-aes-128-cbc", "keys/p256.crt"], identity=["p256"])
    ossl("openssl-p256-aes256-cbc", ["-aes-256-cbc", "keys/p256.crt"], identity=["p256"])
    ossl("openssl-p384-aes192-cbc", ["-aes-192-cbc", "keys/p384.crt"], identity=["p384"])
    ossl("openssl-p384-aes256-gcm", ["-aes-256-gcm", "keys/p384.crt"], identity=["p384"])
    for md, cipher, key in (("sha224", "aes-256-cbc", "p256"), ("sha256", "aes-256-cbc", "p256"),
                            ("sha256", "aes-128-gcm", "p256"), ("sha384", "aes-256-gcm", "p384"),
                            ("sha512", "aes-256-cbc", "p384"), ("sha512", "aes-128-cbc", "p256")):
        c = cipher.replace("aes-", "aes")
        ossl(f"openssl-{key}-kdf-{md}-{c}", [f"-{cipher}", "-recip", f"keys/{key}.crt", "-keyopt", f"ecdh_kdf_md:{md}"],
             identity=[key])

    # --- Several recipients in one envelope; mixed key types and options per recipient.
    ossl("openssl-multi-rsa2048-p256-aes256-cbc", ["-aes-256-cbc", "keys/rsa2048.crt", "keys/p256.crt"],
         identity=["p256"], note="the EC identity must be found behind an RSA RecipientInfo")
    ossl("openssl-multi-rsa2048-p256-aes256-cbc-as-rsa", ["-aes-256-cbc", "keys/rsa2048.crt", "keys/p256.crt"],
         identity=["rsa2048"])
    ossl("openssl-multi-four-aes256-gcm",
         ["-aes-256-gcm", "-recip", "keys/p384.crt", "-keyopt", "ecdh_kdf_md:sha384",
          "-recip", "keys/rsa2048.crt", *oaep, "-keyopt", "rsa_oaep_md:sha256",
          "-recip", "keys/p256.crt", "-recip", "keys/rsa3072.crt"],
         identity=["wrong-rsa2048", "wrong-p256", "rsa3072"],
         note="several identities given; only the last one matches")
    ossl("openssl-multi-keyid-p384-rsa3072-aes128-cbc", ["-aes-128-cbc", "-keyid", "keys/p384.crt", "keys/rsa3072.crt"],
         identity=["p384"])
    ossl("openssl-multi-pwri-rsa2048-aes256-cbc",
         ["-aes-256-cbc", "-pwri_password", "not-a-real-secret", "keys/rsa2048.crt"],
         identity=["rsa2048"], note="a PasswordRecipientInfo precedes ours and must be skipped")

    # --- Edge plaintexts.
    ossl("openssl-rsa2048-aes256-cbc-empty", ["-aes-256-cbc", "keys/rsa2048.crt"], identity=["rsa2048"],
         plaintext="plaintext/empty.bin")
    ossl("openssl-p256-aes128-gcm-empty", ["-aes-128-gcm", "keys/p256.crt"], identity=["p256"],
         plaintext="plaintext/empty.bin")
    ossl("openssl-rsa2048-aes128-cbc-binary256", ["-aes-128-cbc", "keys/rsa2048.crt"], identity=["rsa2048"],
         plaintext="plaintext/binary-256.bin",
         note="plaintext is a multiple of 16 bytes, so the last block is all padding")

    # --- Indefinite-length BER (-stream): constructed encryptedContent split into segments.
    ossl("openssl-stream-rsa2048-aes256-cbc", ["-stream", "-aes-256-cbc", "keys/rsa2048.crt"], identity=["rsa2048"],
         plaintext="plaintext/large-text.eml")
    ossl("openssl-stream-p256-aes128-gcm", ["-stream", "-aes-128-gcm", "keys/p256.crt"], identity=["p256"],
         plaintext="plaintext/large-text.eml")
    ossl("openssl-stream-multi-aes256-gcm", ["-stream", "-aes-256-gcm", "keys/rsa3072.crt", "keys/p384.crt"],
         identity=["p384"], plaintext="plaintext/mime-entity.eml")
    ossl("openssl-stream-rsa2048-aes128-cbc-empty", ["-stream", "-aes-128-cbc", "keys/rsa2048.crt"],
         identity=["rsa2048"], plaintext="plaintext/empty.bin")

    # --- Other output forms; the bytes stored are the decoded CMS either way.
    ossl("openssl-pem-rsa2048-aes256-cbc", ["-aes-256-cbc", "keys/rsa2048.crt"], identity=["rsa2048"], outform="PEM")
    ossl("openssl-smime-p384-aes256-cbc", ["-aes-256-cbc", "keys/p384.crt"], identity=["p384"], outform="SMIME")
    ossl("openssl-smime-stream-rsa3072-aes256-gcm", ["-stream", "-aes-256-gcm", "keys/rsa3072.crt"],
         identity=["rsa3072"], outform="SMIME", plaintext="plaintext/large-text.eml")

    # --- pyca/cryptography PKCS7EnvelopeBuilder (RSA PKCS#1 v1.5, AES-128/256-CBC).
    pyca("pyca-rsa2048-aes128-cbc-binary", ["rsa2048"], "AES128", ["Binary"], identity=["rsa2048"])
    pyca("pyca-rsa2048-default-binary", ["rsa2048"], None, ["Binary"], identity=["rsa2048"],
         plaintext="plaintext/binary-256.bin")
    pyca("pyca-rsa3072-aes256-cbc-binary", ["rsa3072"], "AES256", ["Binary"], identity=["rsa3072"])
    pyca("pyca-multi-rsa2048-rsa3072-aes256-cbc", ["rsa2048", "rsa3072"], "AES256", [], identity=["rsa3072"],
         plaintext="plaintext/mime-entity.eml")
    pyca("pyca-rsa2048-aes256-cbc-text", ["rsa2048"], "AES256", ["Text"], identity=["rsa2048"],
         plaintext="plaintext/mime-entity.eml", expected_plaintext="plaintext/pyca-text-mime-entity.eml")

    # --- Not for us.
    ossl("nomatch-rsa2048", ["-aes-256-cbc", "keys/rsa2048.crt"], identity=["wrong-rsa2048"], expect="no-match")
    ossl("nomatch-keyid-rsa2048", ["-aes-256-gcm", "-keyid", "keys/rsa2048.crt"], identity=["wrong-rsa2048", "p256"],
         expect="no-match")
    ossl("nomatch-p256", ["-aes-128-cbc", "keys/p256.crt"], identity=["wrong-p256", "p384", "rsa2048"],
         expect="no-match")
    ossl("nomatch-multi", ["-aes-256-cbc", "keys/rsa3072.crt", "keys/p384.crt"], identity=["rsa2048", "p256"],
         expect="no-match")
    ossl("nomatch-pwri-only", ["-aes-256-cbc", "-pwri_password", "not-a-real-secret"], identity=["rsa2048", "p256"],
         expect="no-match", note="only a PasswordRecipientInfo; no certificate identity can match")

    # --- Tampered or truncated copies of good vectors.
    by_name = {v.name: v for v in VECTORS_OUT}
    gcm = by_name["openssl-rsa2048-aes256-gcm"]
    derived("integrity-gcm-tag-flipped", gcm, flip(gcm.der, len(gcm.der) - 1),
            "last byte of the AuthEnvelopedData mac (the GCM tag) XOR 0x01", expect="integrity")
    ct = cms.ContentInfo.load(gcm.der)["content"]["auth_encrypted_content_info"]["encrypted_content"].native
    derived("integrity-gcm-ciphertext-flipped", gcm, flip(gcm.der, locate(gcm.der, ct) + 5),
            "byte 5 of the GCM ciphertext XOR 0x01", expect="integrity")
    ecgcm = by_name["openssl-p256-kdf-sha256-aes128-gcm"]
    derived("integrity-p256-gcm-tag-flipped", ecgcm, flip(ecgcm.der, len(ecgcm.der) - 16, 0x80),
            "first byte of the AuthEnvelopedData mac (the GCM tag) XOR 0x80", expect="integrity")
    for tampered in VECTORS_OUT[-3:]:
        # The edit must have hit what it claims: the mac, or the ciphertext, and nothing else.
        ours = cms.ContentInfo.load(tampered.der)["content"]
        theirs = cms.ContentInfo.load(by_name[tampered.extra["derived-from"]].der)["content"]
        same_mac = ours["mac"].native == theirs["mac"].native
        same_ct = (ours["auth_encrypted_content_info"]["encrypted_content"].native
                   == theirs["auth_encrypted_content_info"]["encrypted_content"].native)
        assert same_mac != same_ct, tampered.name
    cbc = by_name["openssl-rsa2048-aes256-cbc"]
    ct = cms.ContentInfo.load(cbc.der)["content"]["encrypted_content_info"]["encrypted_content"].native
    derived("integrity-cbc-bad-padding", cbc, flip(cbc.der, locate(cbc.der, ct) + len(ct) - 17, 0xFF),
            "last byte of the next-to-last ciphertext block XOR 0xFF, so the final padding byte becomes >= 0xEF"
            " (invalid, RFC 5652 section 6.3)", expect="integrity")
    oaep_v = by_name["openssl-rsa2048-oaep-sha256-aes256-cbc"]
    ek = cms.ContentInfo.load(oaep_v.der)["content"]["recipient_infos"][0].chosen["encrypted_key"].native
    derived("integrity-oaep-encrypted-key-flipped", oaep_v, flip(oaep_v.der, locate(oaep_v.der, ek) + 100),
            "byte 100 of the KeyTransRecipientInfo encryptedKey XOR 0x01 (OAEP decoding must fail)", expect="integrity")
    ec = by_name["openssl-p256-aes256-cbc"]
    kari = cms.ContentInfo.load(ec.der)["content"]["recipient_infos"][0].chosen
    ek = kari["recipient_encrypted_keys"][0]["encrypted_key"].native
    derived("integrity-ecdh-wrapped-key-flipped", ec, flip(ec.der, locate(ec.der, ek) + 10),
            "byte 10 of the KeyAgreeRecipientInfo encryptedKey XOR 0x01"
            " (AES key unwrap integrity check, RFC 3394 section 2.2.3)",
            expect="integrity")

    derived("malformed-truncated-half", cbc, cbc.der[: len(cbc.der) // 2], "first half of the DER only",
            expect="malformed")
    derived("malformed-truncated-header", cbc, cbc.der[:40], "first 40 bytes of the DER only", expect="malformed")
    derived("malformed-truncated-last-byte", gcm, gcm.der[:-1], "DER without its last byte (inside the mac)",
            expect="malformed")
    stream = by_name["openssl-stream-rsa2048-aes256-cbc"]
    derived("malformed-truncated-stream", stream, stream.der[:-9],
            "BER without its last 9 bytes (end-of-contents octets missing)", expect="malformed")
    derived("malformed-truncated-stream-middle", stream, stream.der[: len(stream.der) * 2 // 3],
            "BER cut two thirds of the way into the constructed encryptedContent", expect="malformed")

    # --- Content ciphers mailcrypt does not implement.
    # 3DES is read (never written) so that old mail stays readable.
    ossl("openssl-rsa2048-des3-cbc", ["-des3", "keys/rsa2048.crt"], identity=["rsa2048"])
    # Archive ciphers, read and never written: RC2 at 40, 64 and 128 effective bits
    # (RFC 3370 §5.2) and single DES, from OpenSSL's legacy provider.
    for option, short in (("-rc2-40", "rc2-40"), ("-rc2-64", "rc2-64"), ("-rc2-128", "rc2-128"), ("-des", "des")):
        ossl(f"openssl-rsa2048-{short}-cbc", [*LEGACY, option, "keys/rsa2048.crt"], identity=["rsa2048"])
    # No cipher option to an EC certificate: 3DES content and the CMS 3DES key wrap (RFC 3217).
    for curve in ("p256", "p384"):
        ossl(f"openssl-{curve}-default-des3-wrap", [f"keys/{curve}.crt"], identity=[curve],
             note="openssl cms -encrypt without a cipher option")
    v = ossl("unsupported-camellia256-cbc", ["-camellia-256-cbc", "keys/rsa2048.crt"], identity=["rsa2048"],
             expect="unsupported")
    v.oid, v.openssl_fails = "1.2.392.200011.61.1.1.1.4", False
    aes256_oid = bytes.fromhex("060960864801650304012a")  # OBJECT IDENTIFIER 2.16.840.1.101.3.4.1.42
    at = locate(cbc.der, aes256_oid)
    derived("unsupported-unknown-content-oid", cbc, cbc.der[: at + 10] + b"\x63" + cbc.der[at + 11:],
            "contentEncryptionAlgorithm 2.16.840.1.101.3.4.1.42 (aes256-CBC)"
            " changed to the unassigned 2.16.840.1.101.3.4.1.99",
            expect="unsupported", oid="2.16.840.1.101.3.4.1.99")

    # --- Not an encrypted message at all.
    # Input that is not DER at all (no SEQUENCE tag) is "not an encrypted message"; input that is DER
    # but not a well-formed ContentInfo is a CMS parse error.
    add(Vector("not-encrypted-plain-text", "malformed", "make_vectors.py", "b'This is not a CMS message.\\n'",
               b"This is not a CMS message.\n", ["rsa2048"], error="NotEncryptedError"))
    add(Vector("not-encrypted-empty-input", "malformed", "make_vectors.py", "b''", b"", ["rsa2048"],
               error="NotEncryptedError"))
    cert = x509.load_pem_x509_certificate((KEYS / "rsa2048.crt").read_bytes())
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    add(Vector("malformed-x509-certificate", "malformed", OPENSSL_VERSION,
               "openssl x509 -in keys/rsa2048.crt -outform DER", cert_der, ["rsa2048"],
               extra={"note": "valid DER, but a Certificate, not a ContentInfo"}))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = ["openssl", "cms", "-sign", "-binary", "-nodetach", "-md", "sha256", "-signer", "keys/rsa2048.crt",
               "-inkey", "keys/rsa2048.key", "-in", "plaintext/mime-entity.eml", "-outform", "DER", "-out", str(out)]
        run(cmd)
        add(Vector("not-encrypted-signed-data", "malformed", OPENSSL_VERSION, " ".join(cmd[:-1] + ["out.der"]),
                   out.read_bytes(), ["rsa2048"], error="NotEncryptedError",
                   extra={"note": "a well-formed ContentInfo of type signed-data"}))
        cmd = ["openssl", "cms", "-data_create", "-binary", "-in", "plaintext/mime-entity.eml",
               "-outform", "DER", "-out", str(out)]
        run(cmd)
        add(Vector("not-encrypted-data", "malformed", OPENSSL_VERSION, " ".join(cmd[:-1] + ["out.der"]),
                   out.read_bytes(), ["rsa2048"], error="NotEncryptedError",
                   extra={"note": "a well-formed ContentInfo of type id-data"}))


# ------------------------------------------------------------------ write/check


def check_and_header(v: Vector) -> list[tuple[str, str]]:
    h: list[tuple[str, str]] = [("expect", v.expect)]
    if v.error:
        h.append(("error", v.error))
    h += [("tool", v.tool), ("command", v.command)]
    for k in ("derived-from", "modification"):
        if k in v.extra:
            h.append((k, v.extra[k]))
    h.append(("identity", ", ".join(v.identity)))
    if v.expect == "success":
        assert v.plaintext and v.matched
        kind, cipher, ris = parse(v.der)
        mine = [ri for ri in ris if ri_matches(ri, KEYS / f"{v.matched}.crt")]
        assert len(mine) == 1, v.name
        km = describe_ri(mine[0])
        h.append(("matched-identity", v.matched))
        h.append(("plaintext", v.plaintext))
        h.append(("content-type", kind))
        h.append(("cipher", cipher))
        if km:
            h.append(("key-management", km))
        h.append(("recipient-count", str(len(ris))))
        res = openssl_decrypt(v.der, v.matched)
        assert res.returncode == 0, (v.name, res.stderr)
        assert res.stdout == (VECTORS / v.plaintext).read_bytes(), v.name
        for other in v.identity[:-1]:
            assert not any(ri_matches(ri, KEYS / f"{other}.crt") for ri in ris), v.name
    else:
        if v.expect == "no-match":
            _kind, _cipher, ris = parse(v.der)
            h.append(("recipient-count", str(len(ris))))
            for ident in v.identity:
                assert not any(ri_matches(ri, KEYS / f"{ident}.crt") for ri in ris), v.name
        if v.oid:
            h.append(("oid", v.oid))
        if v.expect in ("no-match", "integrity", "unsupported"):
            res = openssl_decrypt(v.der, v.identity[0])
            if v.openssl_fails is False:
                expected = (VECTORS / "plaintext/mime-entity.eml").read_bytes()
                assert res.returncode == 0 and res.stdout == expected, v.name
            else:
                assert res.returncode != 0, v.name
    if "note" in v.extra:
        h.append(("note", v.extra["note"]))
    return h


def write(v: Vector, header: list[tuple[str, str]]) -> None:
    lines = [f"{k}: {val}" for k, val in header]
    for _k, val in header:
        assert "\n" not in val
    b64 = base64.b64encode(v.der).decode("ascii")
    body = ["-----BEGIN CMS-----", *textwrap.wrap(b64, 64), "-----END CMS-----"]
    (VECTORS / f"{v.name}.vec").write_text("\n".join(lines) + "\n\n" + "\n".join(body) + "\n", encoding="ascii")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-keys", action="store_true", help="replace the throwaway recipient keys too")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="write only these vectors, keep the others")
    args = parser.parse_args()
    if args.new_keys or not all((KEYS / f"{n}.key").exists() for n in KEY_SPECS):
        make_keys()
    make_plaintexts()
    # pyca's Text option prepends a text/plain header to the data (RFC 8551 §3.1 canonical MIME).
    (PLAIN / "pyca-text-mime-entity.eml").write_bytes(
        b"Content-Type: text/plain\r\n\r\n" + (PLAIN / "mime-entity.eml").read_bytes())
    if not args.only:
        for old in VECTORS.glob("*.vec"):
            old.unlink()
    build_cases()
    names = [v.name for v in VECTORS_OUT]
    assert len(names) == len(set(names)), "duplicate vector names"
    if args.only:
        unknown = set(args.only) - set(names)
        assert not unknown, f"no such vectors: {sorted(unknown)}"
    chosen = [v for v in VECTORS_OUT if not args.only or v.name in args.only]
    for v in chosen:
        header = check_and_header(v)
        write(v, header)
        print(f"{v.name:55s} {v.expect}")
    print(f"{len(chosen)} vectors written to {VECTORS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
