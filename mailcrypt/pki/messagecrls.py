"""Revocation from CRLs given with a message (RFC 5652 §5.1 ``crls``; RFC 5280 §6.3).

A SignedData may carry CRLs, and RFC 5652 lets the receiver use them: they
are signed by their issuers, so whoever forwarded them cannot forge them.
``MessageCRLs`` is a ``RevocationChecker`` over such CRLs; for a
certificate it runs the CRL processing of RFC 5280 §6.3.3:

- every given complete CRL that covers the certificate (``crlscope``:
  issuer, distribution point, issuingDistributionPoint, indirect CRLs, the
  reasons covered) is used when it is current (thisUpdate, nextUpdate), has
  no unknown critical extension, and its signature holds under the key of a
  CRL issuer it may trust (below);
- a delta CRL (deltaCRLIndicator) given beside it is applied when it fits
  (same scope, a base it builds on) and is itself usable; a delta CRL whose
  complete CRL is absent answers nothing, and a fitting delta that is not
  usable (stale, badly signed) leaves the complete CRL undetermined;
- the certificate is ``revoked`` when a usable CRL lists it (a delta's
  removeFromCRL lifts a certificateHold of the complete CRL, §6.3.3 (g),
  (h)); ``good`` when usable CRLs cover every reason between them and none
  lists it; otherwise the ``fallback`` checker answers.

The CRL issuer is found by name among the path issuer, the given
certificates and the trust anchors, with a key that verifies the CRL
(§6.3.3 (f)): the path issuer itself, a trust anchor, or any other
certificate that the judge finds valid for ``crl-signing`` to the trust
anchors, revocation included. That covers CRL signing keys apart from the
certificate signing key (key rollover, self-issued certificates, separate
CRL signing certificates) and indirect CRL issuers. Every configured trust
anchor counts, not only the one the certificate's path ends at. A CRL
issuer whose keyUsage lacks cRLSign signs no CRL.

``RevocationRequired`` is the fallback of a relying party that requires
revocation information and has no other source (PKITS): every certificate
no given CRL answers for is ``unavailable`` and blocking. Nothing here
fetches or stores anything (``online`` does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import exceptions, x509

from mailcrypt.envelope import public_key
from mailcrypt.errors import CMSParseError, RevocationUnavailable, UnsupportedAlgorithm
from mailcrypt.pki import crlscope
from mailcrypt.pki.chain import ChainResult, validate_chain
from mailcrypt.pki.purposes import purpose_problem
from mailcrypt.pki.revanswer import check_window, serial_of, verify_signature
from mailcrypt.pki.revocation import RevocationChecker, RevocationStatus
from mailcrypt.policy import DEFAULT_POLICY, Policy

__all__ = ["MessageCRLs", "RevocationRequired", "validate_signer"]

# asn1crypto's errors for a malformed value read lazily (as in envelope.signed_parts).
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError)


class RevocationRequired:
    """A ``RevocationChecker`` with no source: every certificate is ``unavailable``, blocking.

    Raises nothing.
    """

    def status(self, certificate: x509.Certificate, issuer: x509.Certificate, *, now: datetime) -> RevocationStatus:
        return RevocationStatus("unavailable", True, "none", "no CRL given covers it, and no other source is used")


# A CRL, its candidate signer, the certificate asked about, its path issuer, and the time.
_Slot = tuple[bytes, x509.Certificate, x509.Certificate, x509.Certificate, datetime]


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


class MessageCRLs:
    """A ``RevocationChecker`` over given CRLs (see the module docstring); ``fallback`` answers the rest.

    ``crls`` are DER CRLs (unreadable ones are skipped with a note);
    ``certificates`` are where CRL issuers are looked for, beside the path
    issuer and the ``anchors``. For one message, one thread at a time.
    Raises nothing for an answer; ``TypeError`` for wrong arguments.
    """

    def __init__(
        self,
        crls: Iterable[bytes],
        *,
        certificates: Sequence[x509.Certificate] = (),
        anchors: Sequence[x509.Certificate],
        fallback: RevocationChecker,
        policy: Policy = DEFAULT_POLICY,
    ) -> None:
        self.fallback = fallback
        self.policy = policy
        self.anchors = list(anchors)
        self.certificates = [*certificates, *self.anchors]
        self.notes: list[str] = []
        self.crls: list[crlscope.ReadCRL] = []
        for number, der in enumerate(crls):
            if not isinstance(der, bytes):
                raise TypeError("crls must be DER bytes")
            try:
                self.crls.append(crlscope.read_crl(der))
            except _ASN1_ERRORS:
                self.notes.append(f"given CRL #{number + 1} is not a readable CRL")
        # The certificates whose CRL issuer's path is being judged now: the
        # recursion through validate_chain stops at them (a CRL key vouching for itself).
        self._busy: set[x509.Certificate] = set()
        self._signers: dict[_Slot, str | None] = {}

    def status(self, certificate: x509.Certificate, issuer: x509.Certificate, *, now: datetime) -> RevocationStatus:
        """The status of ``certificate`` by the given CRLs, else by ``fallback``; never raises for an answer."""
        if not isinstance(certificate, x509.Certificate) or not isinstance(issuer, x509.Certificate):
            raise TypeError("certificate and issuer must be cryptography x509.Certificate objects")
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        problems = list(self.notes)
        covered: set[x509.ReasonFlags] = set()
        sources = []
        self._busy.add(certificate)
        try:
            for complete in self.crls:
                if complete.delta_base is not None:
                    continue
                try:
                    reasons = crlscope.coverage(complete, certificate)
                except ValueError:
                    return self._fall_back(certificate, issuer, now, ["its cRLDistributionPoints are malformed"])
                if not reasons:
                    continue
                source = f"given CRL of {complete.crl.issuer.rfc4514_string()}"
                try:
                    self._usable(complete, certificate, issuer, now)
                    delta = self._delta(complete, certificate, issuer, now)
                except RevocationUnavailable as exc:
                    problems.append(f"{source}: {exc}")
                    continue
                revoked = self._listed(certificate, complete, delta)
                if revoked is not None:
                    return RevocationStatus("revoked", True, source, revoked)
                covered |= reasons
                sources.append(source + (" and its delta CRL" if delta is not None else ""))
        finally:
            self._busy.discard(certificate)
        if covered >= crlscope.ALL_REASONS:
            return RevocationStatus("good", False, "; ".join(sources), "not listed")
        if covered:
            problems.append("the given CRLs cover only some revocation reasons")
        return self._fall_back(certificate, issuer, now, problems)

    def _fall_back(
        self, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime, problems: list[str]
    ) -> RevocationStatus:
        answer = self.fallback.status(certificate, issuer, now=now)
        if answer.state != "unavailable" or not problems:
            return answer
        return RevocationStatus(answer.state, answer.blocking, answer.source, "; ".join([*problems, answer.reason]))

    def _listed(
        self, certificate: x509.Certificate, complete: crlscope.ReadCRL, delta: crlscope.ReadCRL | None
    ) -> str | None:
        """Why ``certificate`` is revoked by the complete CRL and its delta, or None (§6.3.3 (g), (h))."""
        key = (crlscope.name_key(certificate.issuer), serial_of(certificate))
        for read in (delta, complete):
            if read is None or key not in read.entries:
                continue
            reason = read.entries[key]
            if reason == "remove_from_crl":
                return None
            when = f"listed by the CRL of {read.crl.last_update_utc:%Y-%m-%d}"
            return f"{when} ({reason})" if reason and reason != "unspecified" else when
        return None

    def _delta(
        self, complete: crlscope.ReadCRL, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime
    ) -> crlscope.ReadCRL | None:
        """The newest delta CRL given for ``complete``; raises when that one is not usable."""
        deltas = [d for d in self.crls if crlscope.delta_fits(d, complete)]
        if not deltas:
            return None
        newest = max(deltas, key=lambda d: d.number or 0)
        try:
            self._usable(newest, certificate, issuer, now)
        except RevocationUnavailable as exc:
            raise RevocationUnavailable(f"its delta CRL cannot be used: {exc}") from None
        return newest

    def _usable(
        self, read: crlscope.ReadCRL, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime
    ) -> None:
        """Raise ``RevocationUnavailable`` unless ``read`` is current and signed by a CRL issuer it may trust.

        A CRL issuer whose path is being judged above (busy) may not vouch
        for the certificates of that path, except for its own certificate:
        an indirect CRL may cover its issuer's certificate (PKITS 4.14.30),
        whose path the caller is validating right now.
        """
        if read.problem is not None:
            raise RevocationUnavailable(read.problem)
        check_window(read.crl.last_update_utc, read.crl.next_update_utc, now=now, source="the CRL")
        why = []
        # The path issuer first: most CRLs are signed with the key that signed the certificate.
        for candidate in [issuer, *(c for c in self.certificates if c != issuer)]:
            if crlscope.name_key(candidate.subject) != read.issuer:
                continue
            if candidate in self._busy and candidate != certificate:
                continue
            problem = self._signer_problem(read, candidate, certificate, issuer, now)
            if problem is None:
                return
            why.append(problem)
        raise RevocationUnavailable("; ".join(why) or "no certificate of its issuer is known")

    def _signer_problem(
        self,
        read: crlscope.ReadCRL,
        signer: x509.Certificate,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        now: datetime,
    ) -> str | None:
        """Why ``signer`` cannot vouch for ``read``, or None (§6.3.3 (f))."""
        slot = (read.der, signer, certificate, issuer, now)
        if slot in self._signers:
            return self._signers[slot]
        try:
            algorithm = read.crl.signature_hash_algorithm
            # The envelope's reader refuses DSA and other keys by their OID,
            # before cryptography builds (and warns about) a key object.
            key = public_key(signer, policy=self.policy)
            crl = read.crl
            verify_signature(
                key, crl.signature, crl.tbs_certlist_bytes, algorithm, policy=self.policy, source="the CRL"
            )
        except (exceptions.UnsupportedAlgorithm, UnsupportedAlgorithm, CMSParseError) as exc:
            return f"the CRL cannot be checked with the key of {_subject(signer)}: {exc}"
        except RevocationUnavailable as exc:
            return f"not signed by {_subject(signer)}: {exc}"
        problem = self._trust_problem(signer, certificate, issuer, now)
        self._signers[slot] = problem
        return problem

    def _trust_problem(
        self, signer: x509.Certificate, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime
    ) -> str | None:
        try:
            usage = purpose_problem(signer, "crl-signing")
        except ValueError:
            usage = "has a malformed keyUsage"
        if usage is not None:
            return f"its issuer {_subject(signer)} {usage}"
        if signer in (issuer, certificate) or signer in self.anchors:
            return None  # In the path being judged, or trusted as configured.
        result = validate_chain(
            signer,
            intermediates=self.certificates,
            anchors=self.anchors,
            now=now,
            policy=self.policy,
            revocation=self,
            purpose="crl-signing",
        )
        return None if result.trusted else f"its issuer {_subject(signer)} is not trusted: {result.reason}"


def validate_signer(
    certificate: x509.Certificate,
    *,
    crls: Sequence[bytes],
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime,
    policy: Policy = DEFAULT_POLICY,
    revocation: RevocationChecker | None = None,
) -> ChainResult:
    """``validate_chain`` for the signer of a message that carried ``crls`` (DER CRLs, maybe none).

    When revocation is checked at all (``revocation`` given) and there are
    trust anchors to judge CRL issuers by, the message's CRLs answer first
    (``MessageCRLs``: signed by their issuers, they are a source RFC 5652
    §5.1 lets the receiver use, and they answer before the network is
    asked) and ``revocation`` answers what they leave open; CRL issuers are
    sought among ``intermediates``.
    """
    checker = revocation
    if revocation is not None and crls and anchors:
        checker = MessageCRLs(crls, certificates=intermediates, anchors=anchors, fallback=revocation, policy=policy)
    return validate_chain(
        certificate, intermediates=intermediates, anchors=anchors, now=now, policy=policy, revocation=checker
    )
