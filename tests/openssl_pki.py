"""Throwaway certificates and PKCS#12 files made by the real ``openssl`` command.

The key-directory tests import what other tools produce, so the
certificates here come from ``openssl req``/``openssl ca`` and the PKCS#12
files from ``openssl pkcs12 -export`` (default modern encryption, and
``-legacy``). ``openssl ca`` is used because it can set any validity
period, past or future, which the expired and not-yet-valid cases need.
Every key is generated in a temporary directory and never committed.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

_CA_CONFIG = """\
[ca]
default_ca = ca_default

[ca_default]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = yes
copy_extensions = none
default_days = 30

[policy_any]
commonName = optional
emailAddress = optional
organizationName = optional
"""

KEYS = {
    "rsa2048": ["-newkey", "rsa:2048"],
    "rsa3072": ["-newkey", "rsa:3072"],
    "rsa1024": ["-newkey", "rsa:1024"],
    "p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "p521": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"],
}


def openssl(*args: str | Path, input: bytes | None = None) -> bytes:
    """Run openssl; raise with its stderr when it fails."""
    proc = subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@dataclass(frozen=True)
class Made:
    """A key and certificate made by openssl."""

    name: str
    key: Path
    cert: Path

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())

    def der(self) -> Path:
        path = self.cert.with_suffix(".der")
        if not path.exists():
            openssl("x509", "-in", self.cert, "-outform", "DER", "-out", path)
        return path


class PKI:
    """A directory of openssl-made CAs, certificates and PKCS#12 files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def _ext(self, name: str, lines: list[str]) -> Path:
        path = self.dir / f"{name}.ext"
        path.write_text("[ext]\n" + "\n".join(lines) + "\n")
        return path

    def root(self, name: str, *, key: str = "p256", eku: str | None = None) -> Made:
        """A self-signed CA certificate."""
        key_path, cert_path = self.dir / f"{name}.key", self.dir / f"{name}.crt"
        args = [
            "req",
            "-x509",
            *KEYS[key],
            "-nodes",
            "-keyout",
            key_path,
            "-out",
            cert_path,
            "-subj",
            f"/O=mailcrypt test/CN={name}",
            "-days",
            "60",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
        if eku:
            args += ["-addext", f"extendedKeyUsage={eku}"]
        openssl(*args)
        self._ca_dir(name)
        return Made(name, key_path, cert_path)

    def _ca_dir(self, name: str) -> Path:
        ca_dir = self.dir / f"{name}.ca"
        (ca_dir / "issued").mkdir(parents=True, exist_ok=True)
        (ca_dir / "index.txt").write_text("")
        (ca_dir / "serial").write_text("1000\n")
        (ca_dir / "openssl.cnf").write_text(_CA_CONFIG.format(dir=ca_dir))
        return ca_dir

    def issue(
        self,
        name: str,
        *,
        ca: Made,
        key: str = "rsa2048",
        emails: tuple[str, ...] = (),
        subject_email: str | None = None,
        key_usage: str | None = "default",
        eku: str | None = "emailProtection",
        start: str | None = None,
        end: str | None = None,
        is_ca: bool = False,
        name_constraints: str | None = None,
        other_names: tuple[str, ...] = (),
        ocsp_url: str | None = None,
        crl_url: str | None = None,
    ) -> Made:
        """A certificate signed by ``ca`` with openssl ca.

        ``start``/``end`` are openssl dates (``YYYYMMDDHHMMSSZ``); without
        them the certificate is valid from now for 30 days. ``key_usage``
        "default" means keyEncipherment for RSA and keyAgreement for EC.
        ``name_constraints`` is an openssl nameConstraints value for a CA,
        such as ``permitted;email:example.org`` (written critical).
        ``other_names`` are more subjectAltName entries in openssl's syntax
        (``DNS:host.example.org``), after the ``emails``. ``ocsp_url`` and
        ``crl_url`` add an authorityInfoAccess OCSP location and a
        cRLDistributionPoints URI.
        """
        key_path, csr, cert_path = self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.crt"
        subject = f"/O=mailcrypt test/CN={name}" + (f"/emailAddress={subject_email}" if subject_email else "")
        openssl("req", "-new", *KEYS[key], "-nodes", "-keyout", key_path, "-out", csr, "-subj", subject)
        lines = [f"basicConstraints=critical,CA:{'TRUE' if is_ca else 'FALSE'}"]
        if is_ca:
            lines.append("keyUsage=critical,keyCertSign,cRLSign")
            if name_constraints:
                lines.append(f"nameConstraints=critical,{name_constraints}")
        elif key_usage == "default":
            lines.append(
                "keyUsage=critical,digitalSignature," + ("keyEncipherment" if key.startswith("rsa") else "keyAgreement")
            )
        elif key_usage:
            lines.append(f"keyUsage=critical,{key_usage}")
        if eku:
            lines.append(f"extendedKeyUsage={eku}")
        if emails or other_names:
            lines.append("subjectAltName=" + ",".join([*(f"email:{e}" for e in emails), *other_names]))
        lines.append("subjectKeyIdentifier=hash")
        lines.append("authorityKeyIdentifier=keyid")
        if ocsp_url:
            lines.append(f"authorityInfoAccess=OCSP;URI:{ocsp_url}")
        if crl_url:
            lines.append(f"crlDistributionPoints=URI:{crl_url}")
        ca_dir = self.dir / f"{ca.name}.ca"
        args = [
            "ca",
            "-batch",
            "-notext",
            "-config",
            ca_dir / "openssl.cnf",
            "-cert",
            ca.cert,
            "-keyfile",
            ca.key,
            "-in",
            csr,
            "-out",
            cert_path,
            "-extfile",
            self._ext(name, lines),
            "-extensions",
            "ext",
        ]
        if start:
            args += ["-startdate", start]
        if end:
            args += ["-enddate", end]
        elif not start:
            args += ["-days", "30"]
        openssl(*args)
        if is_ca:
            self._ca_dir(name)
        return Made(name, key_path, cert_path)

    def _ca_args(self, ca: Made) -> list[str | Path]:
        return ["-config", self.dir / f"{ca.name}.ca" / "openssl.cnf", "-cert", ca.cert, "-keyfile", ca.key]

    def index(self, ca: Made) -> Path:
        """The ``openssl ca`` database of ``ca`` (what ``openssl ocsp -index`` reads)."""
        return self.dir / f"{ca.name}.ca" / "index.txt"

    def revoke(self, made: Made, *, ca: Made, reason: str = "keyCompromise") -> None:
        """``openssl ca -revoke``: mark ``made`` revoked in its CA's database."""
        openssl("ca", "-batch", *self._ca_args(ca), "-revoke", made.cert, "-crl_reason", reason)

    def crl(self, ca: Made, out: Path, *, last_update: str | None = None, next_update: str | None = None) -> Path:
        """``openssl ca -gencrl`` of ``ca``'s database, written as DER to ``out``.

        ``last_update``/``next_update`` are openssl dates; without them the
        CRL is issued now and is current for a day.
        """
        pem = out.with_suffix(".pem")
        args: list[str | Path] = ["ca", "-batch", *self._ca_args(ca), "-gencrl", "-out", pem]
        if last_update:
            args += ["-crl_lastupdate", last_update]
        args += ["-crl_nextupdate", next_update] if next_update else ["-crldays", "1"]
        openssl(*args)
        openssl("crl", "-in", pem, "-outform", "DER", "-out", out)
        return out

    def pkcs12(self, made: Made, password: str, *, legacy: bool = False, chain: Made | None = None) -> Path:
        """``openssl pkcs12 -export`` of a key and certificate (modern default, or -legacy)."""
        path = self.dir / f"{made.name}{'-legacy' if legacy else ''}.p12"
        args = [
            "pkcs12",
            "-export",
            "-inkey",
            made.key,
            "-in",
            made.cert,
            "-out",
            path,
            "-passout",
            "env:P12_EXPORT_PASSWORD",
            "-name",
            made.name,
        ]
        if chain is not None:
            args += ["-certfile", chain.cert]
        if legacy:
            args.append("-legacy")
        proc = subprocess.run(
            ["openssl", *map(str, args)],
            capture_output=True,
            timeout=120,
            env={**os.environ, "P12_EXPORT_PASSWORD": password},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"openssl pkcs12 failed: {proc.stderr.decode(errors='replace')}")
        return path

    def pkcs12_info(self, path: Path, password: str) -> str:
        """What ``openssl pkcs12 -info`` says about the encryption of a file."""
        proc = subprocess.run(
            ["openssl", "pkcs12", "-in", str(path), "-info", "-noout", "-passin", "env:P12_EXPORT_PASSWORD", "-legacy"],
            capture_output=True,
            timeout=120,
            env={**os.environ, "P12_EXPORT_PASSWORD": password},
        )
        return proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
