"""The revocation checker: OCSP first, then CRLs, over HTTP, cached (DESIGN.md §3a).

``OnlineRevocationChecker`` is the ``RevocationChecker`` of ``[keys]
revocation = "soft-fail" | "hard-fail"``. For one certificate and its issuer
it answers, in this order:

1. a verdict kept in memory, or in the disk cache (``revcache``) until the
   source's nextUpdate: no network at all;
2. the OCSP responders of the certificate's authorityInfoAccess (``ocsp``):
   a request POSTed over HTTP (RFC 6960 Appendix A.1), the response checked;
3. the HTTP CRLs of its cRLDistributionPoints (``crl``), a CRL read from the
   disk cache while it is current, else fetched and kept.

The first ``good`` or ``revoked`` answer wins and is kept; an OCSP
``unknown`` falls through to the CRLs. When no source answers, the status is
``unavailable`` with every source's reason, ``blocking`` under hard-fail
only, logged as a warning, and remembered in memory for a minute so that a
dead responder costs its timeout once a minute, not once a message.

Each source gets one short timeout (``timeout`` seconds, 3 by default) for
the connection and the answer together; answers are size-limited. Only the
standard library speaks HTTP, only http:// URLs are used (as RFC 5280
§4.2.1.13 and RFC 6960 expect), and a redirect elsewhere than http:// is
refused. It does not do LDAP, delta CRLs, indirect CRLs or OCSP stapling.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from mailcrypt.errors import RevocationUnavailable
from mailcrypt.pki import crl as crls
from mailcrypt.pki import ocsp
from mailcrypt.pki.revanswer import Answer, check_window, serial_of
from mailcrypt.pki.revcache import DiskCache
from mailcrypt.pki.revocation import RevocationStatus
from mailcrypt.policy import DEFAULT_POLICY, Policy

if TYPE_CHECKING:
    import urllib.request

__all__ = ["OnlineRevocationChecker", "REVOCATION_MODES"]

log = logging.getLogger(__name__)

#: The values of ``[keys] revocation`` (DESIGN.md §5).
REVOCATION_MODES = ("soft-fail", "hard-fail", "off")

_MAX_OCSP_BYTES = 1 << 20
_MAX_CRL_BYTES = 32 << 20
_MAX_KEYS = 4096


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """The HTTP client, built at the first fetch.

    urllib.request brings http.client, ssl and socket, about 20 ms of every
    start; most commands never go online, so it is imported only here.
    """
    import http.client
    import urllib.request

    class HTTPRedirectsOnly(urllib.request.HTTPRedirectHandler):
        """Follows a redirect only to another http:// URL (never file:, ftp: or https:)."""

        def redirect_request(
            self,
            req: urllib.request.Request,
            fp: IO[bytes],
            code: int,
            msg: str,
            headers: http.client.HTTPMessage,
            newurl: str,
        ) -> urllib.request.Request | None:
            if not newurl.lower().startswith("http://"):
                return None
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(HTTPRedirectsOnly)


def fetch(url: str, *, body: bytes | None, timeout: float, limit: int) -> bytes:
    """GET ``url`` (or POST ``body`` as an OCSP request) within ``timeout`` seconds in all.

    Raises ``errors.RevocationUnavailable`` for any failure.
    """
    opener = _opener()
    import http.client
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    headers = {"User-Agent": "mailcrypt"}
    if body is not None:
        headers["Content-Type"] = "application/ocsp-request"
    request = urllib.request.Request(url, data=body, headers=headers, method="GET" if body is None else "POST")
    try:
        with opener.open(request, timeout=timeout) as response:
            chunks: list[bytes] = []
            size = 0
            while True:
                if time.monotonic() > deadline:
                    raise RevocationUnavailable(f"{url}: no complete answer within {timeout:g} s", source=url)
                chunk = response.read1(65536)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise RevocationUnavailable(f"{url}: the answer is larger than {limit} bytes", source=url)
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise RevocationUnavailable(f"{url}: HTTP {exc.code} {exc.reason}", source=url) from None
    except urllib.error.URLError as exc:
        raise RevocationUnavailable(f"{url}: unreachable ({exc.reason})", source=url) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise RevocationUnavailable(f"{url}: unreachable ({exc or type(exc).__name__})", source=url) from None


def _key(certificate: x509.Certificate, issuer: x509.Certificate) -> str:
    """The cache key of one certificate: its issuer (whole) and serial number."""
    digest = hashlib.sha256(issuer.public_bytes(serialization.Encoding.DER))
    digest.update(b"/" + str(serial_of(certificate)).encode())
    return digest.hexdigest()


class OnlineRevocationChecker:
    """Answers from memory, the disk cache, OCSP, then CRLs (see the module docstring).

    ``cache`` is the directory of the disk cache (None: memory only).
    Safe to share between threads.
    """

    def __init__(
        self,
        cache: Path | None,
        *,
        mode: str = "soft-fail",
        timeout: float = 3.0,
        policy: Policy = DEFAULT_POLICY,
        retry_after: float = 60.0,
    ) -> None:
        if mode not in ("soft-fail", "hard-fail"):
            raise ValueError(f"revocation mode must be soft-fail or hard-fail, not {mode!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.mode = mode
        self.timeout = timeout
        self.policy = policy
        self.retry_after = retry_after
        self._disk = DiskCache(cache) if cache is not None else None
        self._lock = threading.Lock()
        # Per certificate: (status, current until (None: final), monotonic deadline for unavailable).
        self._verdicts: dict[str, tuple[RevocationStatus, datetime | None, float | None]] = {}
        self._keys: dict[tuple[x509.Certificate, x509.Certificate], str] = {}
        # Per (URL, issuer): a CRL that passed load_crl.
        self._crls: dict[tuple[str, bytes], x509.CertificateRevocationList] = {}

    # ------------------------------------------------------------------ the protocol

    def status(self, certificate: x509.Certificate, issuer: x509.Certificate, *, now: datetime) -> RevocationStatus:
        """The revocation status of ``certificate`` (issued by ``issuer``) at ``now``; never raises for an answer."""
        if not isinstance(certificate, x509.Certificate) or not isinstance(issuer, x509.Certificate):
            raise TypeError("certificate and issuer must be cryptography x509.Certificate objects")
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        with self._lock:
            key = self._keys.get((certificate, issuer))
        if key is None:
            key = _key(certificate, issuer)
            with self._lock:
                # The keys of the certificates in use; a long-running proxy meets few.
                if len(self._keys) >= _MAX_KEYS:
                    self._keys.clear()
                self._keys[(certificate, issuer)] = key
        with self._lock:
            kept = self._verdicts.get(key)
        if kept is not None:
            status, until, retry = kept
            if retry is not None and time.monotonic() < retry:
                return status
            if retry is None and (until is None or now <= until):
                return status
        if self._disk is not None:
            found = self._disk.verdict(key, now)
            if found is not None:
                with self._lock:
                    self._verdicts[key] = (found[0], found[1], None)
                return found[0]
        return self._ask(key, certificate, issuer, now)

    # ------------------------------------------------------------------ asking the sources

    def _ask(
        self, key: str, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime
    ) -> RevocationStatus:
        responders, ocsp_notes = ocsp.responder_urls(certificate)
        points, crl_notes = crls.distribution_points(certificate)
        reasons = [*ocsp_notes, *crl_notes]
        if not responders and not points:
            reasons.insert(0, "the certificate names no OCSP responder and no HTTP CRL distribution point")
        for url in responders:
            try:
                answer = self._ocsp(url, certificate, issuer, now)
            except RevocationUnavailable as exc:
                reasons.append(f"OCSP {exc}")
                continue
            if answer.state == "unknown":
                reasons.append(f"{answer.source}: {answer.reason}")
                continue
            return self._keep(key, answer, now)
        for url in points:
            try:
                answer = crls.answer(self._crl(url, issuer, now), certificate, url=url)
            except RevocationUnavailable as exc:
                reasons.append(f"CRL {exc}")
                continue
            return self._keep(key, answer, now)
        status = RevocationStatus(
            "unavailable",
            self.mode == "hard-fail",
            ", ".join([*responders, *points]) or "none",
            "; ".join(reasons),
        )
        who = certificate.subject.rfc4514_string()
        log.warning("revocation of %s not known (%s): %s", who, self.mode, status.reason)
        with self._lock:
            self._verdicts[key] = (status, None, time.monotonic() + self.retry_after)
        return status

    def _keep(self, key: str, answer: Answer, now: datetime) -> RevocationStatus:
        if answer.state == "revoked":
            status = RevocationStatus("revoked", True, answer.source, answer.reason)
        else:
            status = RevocationStatus("good", False, answer.source, answer.reason)
        if answer.until is not None and answer.until <= now:
            return status  # Not current beyond this moment (an OCSP answer without nextUpdate).
        with self._lock:
            self._verdicts[key] = (status, answer.until, None)
        if self._disk is not None:
            self._disk.keep_verdict(key, status, answer.until)
        return status

    def _ocsp(self, url: str, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime) -> Answer:
        nonce = os.urandom(16)
        request = ocsp.build_request(certificate, issuer, nonce)
        der = fetch(url, body=request, timeout=self.timeout, limit=_MAX_OCSP_BYTES)
        return ocsp.check_response(der, certificate, issuer, nonce=nonce, now=now, policy=self.policy, source=url)

    def _crl(self, url: str, issuer: x509.Certificate, now: datetime) -> x509.CertificateRevocationList:
        """A current CRL of ``issuer`` from ``url``: from memory, the disk cache, or the network."""
        slot = (url, issuer.fingerprint(hashes.SHA256()))
        with self._lock:
            known = self._crls.get(slot)
        if known is not None:
            try:
                check_window(known.last_update_utc, known.next_update_utc, now=now, source=url)
                return known
            except RevocationUnavailable:
                pass
        kept = self._disk.crl(url) if self._disk is not None else None
        if kept is not None:
            try:
                found = crls.load_crl(kept, issuer, now=now, policy=self.policy, source=url)
            except RevocationUnavailable:
                found = None
            if found is not None:
                with self._lock:
                    self._crls[slot] = found
                return found
        der = fetch(url, body=None, timeout=self.timeout, limit=_MAX_CRL_BYTES)
        found = crls.load_crl(der, issuer, now=now, policy=self.policy, source=url)
        with self._lock:
            self._crls[slot] = found
        if self._disk is not None:
            self._disk.keep_crl(url, der)
        return found
