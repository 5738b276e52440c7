"""The interface between path validation and revocation checking.

``validate_chain`` judges a path (signatures, validity, constraints) and then,
when given a ``RevocationChecker``, asks it about every certificate of the path
below the trust anchor, each with its issuer. The checker finds the status
(CRLs from the message or from the distribution points, OCSP from the AIA
responder, cached) and answers with a ``RevocationStatus``; it never raises
for a revoked or unknown certificate. How it fetches and caches, and what
soft-fail means, is the checker's business; the judge only turns the answer
into a chain result: ``revoked`` makes the chain ``invalid``; ``unavailable``
is reported by the checker's own rule (soft-fail: valid with a note;
hard-fail: invalid).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from cryptography import x509

__all__ = ["RevocationStatus", "RevocationChecker"]


@dataclass(frozen=True)
class RevocationStatus:
    """What is known of one certificate's revocation at a time.

    ``state``: ``good`` (a valid CRL or OCSP answer says not revoked),
    ``revoked``, or ``unavailable`` (no answer could be had or trusted).
    ``blocking`` says whether the judge must refuse the path for it (always
    for ``revoked``; for ``unavailable`` only under hard-fail). ``source`` and
    ``reason`` are for people: which CRL or responder, and why.
    """

    state: Literal["good", "revoked", "unavailable"]
    blocking: bool
    source: str = ""
    reason: str = ""


class RevocationChecker(Protocol):
    """Answers for one certificate and its issuer, at ``now``.

    Raises nothing for any answer a responder or CRL gives, nor for a network
    failure (those are ``unavailable``); only ``TypeError``/``ValueError`` for
    programming errors.
    """

    def status(self, certificate: x509.Certificate, issuer: x509.Certificate, *, now: datetime) -> RevocationStatus:
        ...
