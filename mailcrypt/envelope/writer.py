"""Writing EnvelopedData and AuthEnvelopedData as DER, streamed.

The small parts (AlgorithmIdentifiers, the MAC) are encoded by asn1crypto;
each recipient wraps the key into a ``Stanza``, which ``stanza_der``
encodes (from parts encoded once), and the writer sorts them into their
SET OF as asn1crypto would (DER, X.690 §11.6). The encrypted content is
not: its length is known in advance (CBC pads to the next block, GCM adds
nothing), so the writer emits the definite-length headers of the enclosing
elements, then the ciphertext chunk by chunk, then what follows it. A 25 MB
message is never held twice.

Layout (RFC 5652 §3, §6.1; RFC 5083 §2.1)::

    ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }
    EnvelopedData ::= SEQUENCE { version, recipientInfos,
        encryptedContentInfo SEQUENCE { contentType, algorithm, [0] IMPLICIT OCTET STRING } }
    AuthEnvelopedData ::= SEQUENCE { version, recipientInfos,
        authEncryptedContentInfo, mac OCTET STRING }

It writes no originatorInfo and no attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from asn1crypto import cms, core

from mailcrypt.envelope.asn1 import OID_AUTH_ENVELOPED_DATA, OID_DATA, OID_ENVELOPED_DATA
from mailcrypt.envelope.codec import CONTEXT, UNIVERSAL, der_header
from mailcrypt.envelope.content import GCM_TAG_BYTES, ContentEncryptor
from mailcrypt.envelope.keys import Recipient
from mailcrypt.envelope.stanza import KeyTransStanza, Stanza
from mailcrypt.envelope.stanza_der import encode_recipient_info
from mailcrypt.policy import Policy, Profile

__all__ = ["EnvelopeWriter"]

_SEQUENCE = 16
_SET = 17
# Fixed encodings, made once: asn1crypto takes longer to build them than to encrypt a short message.
_DATA_OID = cms.ContentType(OID_DATA).dump()
_OUTER_OIDS = {
    True: cms.ContentType(OID_AUTH_ENVELOPED_DATA).dump(),
    False: cms.ContentType(OID_ENVELOPED_DATA).dump(),
}
_VERSIONS = {v: core.Integer(v).dump() for v in (0, 2, 3)}


class EnvelopeWriter:
    """Produce one DER ContentInfo for ``content_length`` bytes of content.

    Call ``header()``, then ``update()`` for each plaintext chunk, then
    ``finish()``; the concatenation of what they return is the envelope.
    Raises ``ValueError`` from ``finish()`` when the chunks did not add up
    to ``content_length``.
    """

    def __init__(
        self,
        recipients: Sequence[Recipient],
        *,
        content_length: int,
        profile: Profile,
        policy: Policy,
        rng: Callable[[int], bytes],
    ) -> None:
        if not recipients:
            raise ValueError("an envelope needs at least one recipient")
        if not isinstance(content_length, int) or content_length < 0:
            raise TypeError("content_length must be a non-negative int")
        self._content_length = content_length
        self._fed = 0
        self._encryptor = ContentEncryptor(profile.cipher, policy=policy, rng=rng)
        # One RecipientInfo per recipient, each wrapping the same fresh key.
        infos = [r.wrap(self._encryptor.key) for r in recipients]
        self._header = self._build_header(infos)
        self._started = False

    @property
    def authenticated(self) -> bool:
        return self._encryptor.authenticated

    @property
    def content_type(self) -> str:
        return "authEnveloped-data" if self.authenticated else "enveloped-data"

    def _build_header(self, infos: list[Stanza]) -> bytes:
        enc = self._encryptor
        cipher_len = ContentEncryptor.ciphertext_length(enc.cipher, self._content_length)
        if enc.authenticated:
            version = 0  # RFC 5083 §2.1: always 0.
        elif any(s.kind in ("pwri", "ori") for s in infos):
            version = 3  # RFC 5652 §6.1 (the writer has no originatorInfo).
        else:
            # RFC 5652 §6.1: 0 when every RecipientInfo is version 0, else 2.
            version = 0 if all(isinstance(s, KeyTransStanza) and s.version == 0 for s in infos) else 2
        version_der = _VERSIONS[version]
        # RecipientInfos is a SET OF: DER orders the members by their encodings (X.690 §11.6).
        members = b"".join(sorted(encode_recipient_info(s) for s in infos))
        infos_der = der_header(UNIVERSAL, True, _SET, len(members)) + members
        content_oid = _DATA_OID
        algorithm_der = enc.algorithm_identifier_der()
        octets_header = der_header(CONTEXT, False, 0, cipher_len)
        eci_len = len(content_oid) + len(algorithm_der) + len(octets_header) + cipher_len
        eci_header = der_header(UNIVERSAL, True, _SEQUENCE, eci_len)
        self._trailer = core.OctetString(b"\0" * GCM_TAG_BYTES).dump() if enc.authenticated else b""
        body_len = len(version_der) + len(infos_der) + len(eci_header) + eci_len + len(self._trailer)
        body_header = der_header(UNIVERSAL, True, _SEQUENCE, body_len)
        explicit = der_header(CONTEXT, True, 0, len(body_header) + body_len)
        outer_oid = _OUTER_OIDS[enc.authenticated]
        total = len(outer_oid) + len(explicit) + len(body_header) + body_len
        return b"".join(
            (
                der_header(UNIVERSAL, True, _SEQUENCE, total),
                outer_oid,
                explicit,
                body_header,
                version_der,
                infos_der,
                eci_header,
                content_oid,
                algorithm_der,
                octets_header,
            )
        )

    def header(self) -> bytes:
        """Everything before the ciphertext."""
        if self._started:
            raise RuntimeError("header() was already called")
        self._started = True
        return self._header

    def update(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """Ciphertext for the next plaintext chunk."""
        if not self._started:
            raise RuntimeError("call header() first")
        self._fed += len(chunk)
        if self._fed > self._content_length:
            raise ValueError("more content than content_length announced")
        return self._encryptor.update(chunk)

    def finish(self) -> bytes:
        """The last ciphertext block(s) and, for AuthEnvelopedData, the MAC."""
        if self._fed != self._content_length:
            raise ValueError(f"content was {self._fed} bytes, {self._content_length} announced")
        tail = self._encryptor.finish()
        if self._encryptor.authenticated:
            # RFC 5083 §2.1: the mac (the GCM tag) follows the content.
            tail += core.OctetString(self._encryptor.tag).dump()
        return tail
