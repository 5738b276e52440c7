"""The certificate judge: chains, name constraints, S/MIME purposes and addresses (DESIGN.md §3a).

- ``chain``: RFC 5280 path building and validation to the trust anchors,
  one for signers and recipients (``purpose="signing" | "encryption"``);
- ``policies``: certificate policy processing (RFC 5280 §6.1);
- ``purposes``: the S/MIME purposes of RFC 8550 (keyUsage, extendedKeyUsage);
- ``nameconstraints``: rfc822Name, dNSName, directoryName, URI and IP constraints;
- ``mailboxes``: the one rule for the addresses a certificate is for
  (RFC 8550 §3), used by every caller that files, finds or matches one;
- ``revocation``, ``online``: the revocation interface and its checker
  (OCSP from ``ocsp``, CRLs from ``crl``, kept by ``revcache``);
- ``messagecrls``: the checker over CRLs a message carries (RFC 5652
  §5.1), with ``crlscope`` for the CRL processing of RFC 5280 §6.3;
- ``load_certificate``, ``load_certificates``: the one certificate parser,
  through which every certificate mailcrypt reads passes (from messages,
  files and the key directory). It is defined in the envelope core, the
  lowest layer that needs it (SignedData carries certificates), and is
  exported here as the judge's entry point: every layer above imports it
  from ``mailcrypt.pki``. Every failure is a ``MalformedCertificate``
  (or ``UnsupportedAlgorithm``), a typed error;
- ``validate``: a certificate's fitness as a recipient or an identity, its
  fingerprint and key type.

It sits above the envelope core and below the MIME layer. The names below
are its API; the modules are its private parts.
"""

from typing import TYPE_CHECKING

from mailcrypt.lazy import exports

# The names below are imported when first used (mailcrypt.lazy); mypy,
# import-linter and readers see them here.
if TYPE_CHECKING:
    from mailcrypt.envelope import load_certificate, load_certificates
    from mailcrypt.pki.chain import ChainResult, validate_chain
    from mailcrypt.pki.mailboxes import certificate_addresses, names_address
    from mailcrypt.pki.messagecrls import MessageCRLs, RevocationRequired, validate_signer
    from mailcrypt.pki.online import REVOCATION_MODES, OnlineRevocationChecker
    from mailcrypt.pki.revocation import RevocationChecker, RevocationStatus
    from mailcrypt.pki.validate import (
        ChainVerifier,
        check_identity,
        date_problem,
        describe,
        fingerprint,
        is_chain_certificate,
        key_type,
        recipient_problem,
        usage_problem,
    )

__all__ = [
    "certificate_addresses",
    "ChainResult",
    "ChainVerifier",
    "check_identity",
    "date_problem",
    "describe",
    "fingerprint",
    "is_chain_certificate",
    "key_type",
    "load_certificate",
    "load_certificates",
    "MessageCRLs",
    "names_address",
    "OnlineRevocationChecker",
    "recipient_problem",
    "REVOCATION_MODES",
    "RevocationChecker",
    "RevocationRequired",
    "RevocationStatus",
    "usage_problem",
    "validate_chain",
    "validate_signer",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, __file__)
