"""Where a certificate says to ask about its revocation: the URLs fetched and the notes on those skipped.

``crl.distribution_points`` and ``ocsp.responder_urls`` share how they read
the extension (absent: nowhere to ask; malformed: a note) and which
locations they fetch (http:// only); these tests hold both to that.
"""

from __future__ import annotations

import datetime

from conftest import certificate
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID, NameOID

from mailcrypt.pki.crl import distribution_points
from mailcrypt.pki.ocsp import responder_urls

_KEY = ec.generate_private_key(ec.SECP256R1())
_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "locations")])


def _certificate(*extensions: x509.ExtensionType) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    noncritical = [(extension, False) for extension in extensions]
    return certificate(
        _NAME, _KEY, extensions=noncritical, serial=1, not_before=now, not_after=now + datetime.timedelta(days=1)
    )


def _uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


def test_no_extension_means_nowhere_to_ask() -> None:
    certificate = _certificate()
    assert distribution_points(certificate) == ([], [])
    assert responder_urls(certificate) == ([], [])


def test_crl_locations_only_http_and_only_complete_points() -> None:
    points = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint([_uri("http://crl.example/ca.crl"), _uri("ldap://crl.example/")], None, None, None),
            x509.DistributionPoint(
                [_uri("http://crl.example/some.crl")], None, frozenset({x509.ReasonFlags.key_compromise}), None
            ),
        ]
    )
    urls, skipped = distribution_points(_certificate(points))
    assert urls == ["http://crl.example/ca.crl"]
    assert skipped == [
        "CRL location ldap://crl.example/ skipped (only http:// is fetched)",
        "a distribution point with an indirect CRL issuer or only some reasons skipped",
    ]


def test_ocsp_locations_only_http_responders() -> None:
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, _uri("http://ca.example/ca.crt")),
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, _uri("http://ocsp.example/")),
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, _uri("ldap://ocsp.example/")),
        ]
    )
    urls, skipped = responder_urls(_certificate(aia))
    assert urls == ["http://ocsp.example/"]
    assert skipped == ["OCSP location ldap://ocsp.example/ skipped (only http:// is used)"]


def test_a_malformed_extension_is_a_note() -> None:
    # An INTEGER where a SEQUENCE OF DistributionPoint / AccessDescription belongs.
    garbage = b"\x02\x01\x01"
    crl = _certificate(x509.UnrecognizedExtension(ExtensionOID.CRL_DISTRIBUTION_POINTS, garbage))
    assert distribution_points(crl) == ([], ["its cRLDistributionPoints extension is malformed"])
    aia = _certificate(x509.UnrecognizedExtension(ExtensionOID.AUTHORITY_INFORMATION_ACCESS, garbage))
    assert responder_urls(aia) == ([], ["its authorityInfoAccess extension is malformed"])
