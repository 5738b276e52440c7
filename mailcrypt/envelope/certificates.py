"""The one certificate parser: bytes in, an ``x509.Certificate`` or a typed error out.

Every certificate mailcrypt reads, from a message (SignedData certificates),
a file (key files, imports, trust anchors, gateways) or the key directory,
is parsed by ``load_certificate``. It lives in the envelope package, the
lowest layer that needs it (SignedData verification needs the signer's
certificate); ``mailcrypt.pki`` exports it as the certificate judge's entry
point, and every layer above the envelope imports it from there.

What it guarantees: the result is an RFC 5280 certificate whose fields that
are decoded lazily (names, extensions, validity, serial, algorithm OIDs)
have been decoded once already, so reading them later cannot raise. Every
failure is a ``MalformedCertificate`` (a ``CMSParseError``: exit 4 for a
message), or an ``UnsupportedAlgorithm`` for the one valid kind
cryptography cannot load (DSA inheriting its parameters), never a library
exception.

What it refuses beyond what cryptography refuses (today; it warns, and has
announced it will refuse them): a serial number that is zero or negative
(RFC 5280 §4.1.2.2 forbids it and asks users to handle such certificates
gracefully: a clear refusal is that) and a country name that is not two
characters (RFC 5280 Appendix A.1). Both are found in the DER (the serial with asn1crypto)
before cryptography sees the bytes, so no warning is ever emitted (a
process-wide warnings filter would not be thread-safe in the proxy's worker
threads) and the refusal is a clear, typed answer.

What it does not do: judge the public key (``pubkey.public_key`` does, by
its algorithm OID, so an unknown or refused key type is an
``UnsupportedAlgorithm`` there), the chain, the purposes or the addresses.
"""

from __future__ import annotations

from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from cryptography import exceptions, x509

from mailcrypt.errors import MalformedCertificate, UnsupportedAlgorithm

__all__ = ["CERTIFICATE_ERRORS", "load_certificate", "load_certificates"]

# What cryptography raises for a certificate it cannot decode, at loading or
# when a lazily decoded field is first read. ``InvalidVersion``,
# ``DuplicateExtension``, ``UnsupportedGeneralNameType`` and
# ``UnsupportedAlgorithm`` are not ``ValueError``s. cryptography 45 raises a
# ``KeyError`` from ``Name.rfc4514_string`` for a name attribute of a string
# type it does not map (found by the fuzzer on the lowest dependency set).
CERTIFICATE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    OverflowError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    exceptions.UnsupportedAlgorithm,
)
# What asn1crypto raises for malformed input when a lazily parsed value is read.
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError)
# PEM labels under which certificates are found (RFC 7468 §5; OpenSSL's "TRUSTED" form is not a certificate).
_PEM_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE"})
# countryName (2.5.4.6) and jurisdictionCountryName (1.3.6.1.4.1.311.60.2.1.3), as DER OBJECT IDENTIFIERs.
_COUNTRY_OIDS = (bytes.fromhex("0603550406"), bytes.fromhex("060b2b0601040182373c020103"))
# id-dsa (RFC 3279 §2.3.2).
_OID_DSA = "1.2.840.10040.4.1"


def load_certificate(der: bytes | bytearray | memoryview) -> x509.Certificate:
    """One DER certificate, fully decoded.

    Raises ``MalformedCertificate`` for one we do not read, and
    ``UnsupportedAlgorithm`` for a DSA key that inherits its parameters.
    """
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise TypeError("der must be bytes")
    data = bytes(der)
    parsed = _asn1_certificate(data)
    serial = _serial(parsed)
    if serial <= 0:
        raise MalformedCertificate(
            f"a certificate has the serial number {serial}, which is not positive (RFC 5280 §4.1.2.2):"
            " such certificates are refused",
            reason="non-positive serial number",
        )
    country = _country_name_problem(data)
    if country is not None:
        raise MalformedCertificate(f"a certificate has {country}", reason=country)
    try:
        certificate = x509.load_der_x509_certificate(data)
    except CERTIFICATE_ERRORS as exc:
        _refuse_inherited_parameters(parsed)
        raise MalformedCertificate(f"a certificate cannot be read: {_why(exc)}", reason=_why(exc)) from None
    _decode_fields(certificate)
    return certificate


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM text (one or more blocks), else the one DER certificate.

    PEM blocks with other labels (keys, CRLs) are skipped; PEM text without a
    certificate raises ``MalformedCertificate``, as does any block that does not parse.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    data = bytes(data)
    if not pem.detect(data):
        return [load_certificate(data)]
    try:
        blocks = [der for label, _headers, der in pem.unarmor(data, multiple=True) if label in _PEM_LABELS]
    except _ASN1_ERRORS:
        raise MalformedCertificate("the PEM text is malformed", reason="bad PEM") from None
    if not blocks:
        raise MalformedCertificate("the PEM text holds no certificate", reason="no certificate")
    return [load_certificate(der) for der in blocks]


def _asn1_certificate(data: bytes) -> asn1_x509.Certificate:
    try:
        return asn1_x509.Certificate.load(data, strict=True)
    except _ASN1_ERRORS:
        raise MalformedCertificate("a certificate is not DER X.509", reason="not a certificate") from None


def _serial(parsed: asn1_x509.Certificate) -> int:
    """The serial number, read with asn1crypto (RFC 5280 §4.1.2.2: an INTEGER, which may be negative here)."""
    try:
        serial = parsed["tbs_certificate"]["serial_number"].native
    except _ASN1_ERRORS:
        raise MalformedCertificate("a certificate is not DER X.509", reason="not a certificate") from None
    if not isinstance(serial, int):
        raise MalformedCertificate("a certificate has no serial number", reason="no serial number")
    return serial


def _country_name_problem(data: bytes) -> str | None:
    """A country name that is not two characters, anywhere in the certificate; else None.

    X520countryName is a PrintableString of SIZE (2) (RFC 5280 Appendix A.1),
    as is jurisdictionCountryName. cryptography warns when it decodes another
    length (in the subject, the issuer, or a directoryName inside an
    extension) and will refuse it; like a non-positive serial, such a
    certificate is refused here before cryptography sees it. Every
    AttributeTypeAndValue with one of these types is found by its OID's DER
    followed by a value that closes the enclosing SEQUENCE exactly.
    """
    for oid in _COUNTRY_OIDS:
        start = 0
        while (at := data.find(oid, start)) >= 0:
            start = at + 1
            value = _tlv_at(data, at + len(oid))
            if value is None or not _closes_sequence(data, at, len(oid) + value[0]):
                continue
            tag, contents = data[at + len(oid)], value[1]
            width = 2 if tag == 0x1E else 4 if tag == 0x1C else 1  # BMPString, UniversalString
            if tag == 0x0C:
                characters = len(contents.decode("utf-8", "replace"))
            else:
                characters = len(contents) // width
            if characters != 2:
                return f"a country name of {characters} characters (RFC 5280 Appendix A.1 says 2)"
    return None


def _tlv_at(data: bytes, pos: int) -> tuple[int, bytes] | None:
    """(whole length, contents) of the DER TLV at ``pos`` (one tag byte), or None."""
    if pos + 2 > len(data):
        return None
    first = data[pos + 1]
    if first < 0x80:
        header, length = 2, first
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or pos + 2 + n > len(data):
            return None
        header, length = 2 + n, int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
    if pos + header + length > len(data):
        return None
    return header + length, data[pos + header : pos + header + length]


def _closes_sequence(data: bytes, at: int, inner: int) -> bool:
    """Whether a SEQUENCE header ending at ``at`` says its contents are ``inner`` bytes long."""
    if at >= 2 and data[at - 2] == 0x30 and data[at - 1] == inner:
        return True
    if at >= 3 and data[at - 3] == 0x30 and data[at - 2] == 0x81 and data[at - 1] == inner:
        return True
    return at >= 4 and data[at - 4] == 0x30 and data[at - 3] == 0x82 and data[at - 2 : at] == inner.to_bytes(2, "big")


def _refuse_inherited_parameters(parsed: asn1_x509.Certificate) -> None:
    """``UnsupportedAlgorithm`` for a DSA key that inherits its parameters from its issuer.

    RFC 3279 §2.3.2 allows a DSA subjectPublicKeyInfo without parameters;
    cryptography cannot load such a certificate at all. That is an
    algorithm mailcrypt does not support (DSA is refused by policy anyway,
    RFC 8551 §2.2), not a malformed certificate.
    """
    try:
        algorithm = parsed["tbs_certificate"]["subject_public_key_info"]["algorithm"]
        oid, parameters = algorithm["algorithm"].dotted, algorithm["parameters"]
    except _ASN1_ERRORS:
        return
    if oid == _OID_DSA and parameters.native is None:
        raise UnsupportedAlgorithm("a DSA certificate inheriting its key parameters is not supported", oid=oid)


def _decode_fields(certificate: x509.Certificate) -> None:
    """Read every field cryptography decodes lazily, so that a later read cannot fail."""
    try:
        certificate.version  # noqa: B018 - each read decodes the field and raises here if it cannot
        certificate.serial_number  # noqa: B018
        certificate.subject.rfc4514_string()
        certificate.issuer.rfc4514_string()
        certificate.not_valid_before_utc  # noqa: B018
        certificate.not_valid_after_utc  # noqa: B018
        certificate.signature_algorithm_oid  # noqa: B018
        certificate.public_key_algorithm_oid  # noqa: B018
        for extension in certificate.extensions:
            extension.value  # noqa: B018
    except CERTIFICATE_ERRORS as exc:
        raise MalformedCertificate(f"a certificate cannot be read: {_why(exc)}", reason=_why(exc)) from None


def _why(exc: Exception) -> str:
    """A short reason from a library exception (its message names a field, never key material)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
