"""The certificate judge: chains, name constraints, S/MIME purposes and addresses (DESIGN.md §3a).

- ``chain``: RFC 5280 path building and validation to the trust anchors;
- ``nameconstraints``: rfc822Name, dNSName, directoryName, URI and IP constraints;
- ``validate``: a certificate's fitness as a recipient or an identity, its
  addresses (RFC 8550 §3), its fingerprint and key type.

It sits above the envelope core and below the MIME layer. The names below
are its API; the modules are its private parts.
"""
from mailcrypt.pki.chain import ChainResult, validate_chain
from mailcrypt.pki.validate import (
    ChainVerifier,
    certificate_addresses,
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
    "ChainResult",
    "ChainVerifier",
    "certificate_addresses",
    "check_identity",
    "date_problem",
    "describe",
    "fingerprint",
    "is_chain_certificate",
    "key_type",
    "recipient_problem",
    "usage_problem",
    "validate_chain",
]
