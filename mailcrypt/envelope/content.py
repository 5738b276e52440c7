"""Content ciphers: AES-CBC (RFC 3565) and AES-GCM (RFC 5084), streamed.

3DES-CBC (RFC 3370 §5.1), RC2-CBC at 40, 64 and 128 effective bits (RFC 3370
§5.2, ``rc2.py``) and single DES-CBC (``1.3.14.3.2.7``, as old clients wrote
it) are decrypted for old mail and never produced.

``ContentEncryptor`` turns plaintext chunks into ciphertext and names its
AlgorithmIdentifier; ``ContentDecryptor`` does the reverse from an
AlgorithmIdentifier found in a message. Both work on chunks so a large
message never needs a second full copy.

Neither releases a verdict early: CBC padding and the GCM tag are checked in
``finish()``, which raises ``DecryptionFailed``. Plaintext handed out before
that call is unauthenticated; callers must discard it when ``finish()``
raises. Key generation and the choice of cipher happen elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from asn1crypto import algos, core
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import AEADEncryptionContext, Cipher, CipherContext, algorithms, modes

from mailcrypt.envelope.asn1 import (
    CONTENT_CIPHER_BY_OID,
    CONTENT_CIPHER_OIDS,
    OID_DES_CBC,
    OID_RC2_CBC,
    GCMParameters,
    RC2CBCParameter,
)
from mailcrypt.envelope.codec import UNIVERSAL, der_header
from mailcrypt.envelope.rc2 import RC2CBCDecryptor, effective_bits, rc2_cbc_decryptor
from mailcrypt.errors import CMSParseError, DecryptionFailed, PolicyViolation, UnsupportedAlgorithm
from mailcrypt.policy import CONTENT_CIPHERS, LEGACY_CONTENT_CIPHERS, Policy

__all__ = ["ContentEncryptor", "ContentDecryptor", "GCM_NONCE_BYTES", "GCM_TAG_BYTES"]

GCM_NONCE_BYTES = 12  # RFC 5084 §3.2 recommends 12 octets.
GCM_TAG_BYTES = 16  # Written explicitly, never the 12-octet default (DESIGN.md §1).
_BLOCK = 16
_SEQUENCE = 16
_OCTET_STRING = 4
_GCM_ICV_LENGTH = core.Integer(GCM_TAG_BYTES).dump()


@functools.lru_cache(maxsize=16)
def _oid_der(oid: str) -> bytes:
    return core.ObjectIdentifier(oid).dump()


class ContentEncryptor:
    """Encrypt one message's content with a fresh key.

    Raises ``PolicyViolation`` when the cipher is not allowed.
    """

    def __init__(self, cipher: str, *, policy: Policy, rng: Callable[[int], bytes]) -> None:
        if cipher not in CONTENT_CIPHERS:
            raise UnsupportedAlgorithm(f"unknown content cipher {cipher}")
        if cipher not in policy.content_ciphers:
            raise PolicyViolation(f"content cipher {cipher} is not allowed by the policy")
        self.cipher = cipher
        self.mode, key_len = CONTENT_CIPHERS[cipher]
        # The content-encryption key: fresh from the CSPRNG for every message.
        self.key = _random(rng, key_len)
        self._length = 0
        self._ctx: CipherContext
        if self.mode == "gcm":
            self._iv = _random(rng, GCM_NONCE_BYTES)
            self._ctx = Cipher(algorithms.AES(self.key), modes.GCM(self._iv)).encryptor()
        else:
            self._iv = _random(rng, _BLOCK)
            self._ctx = Cipher(algorithms.AES(self.key), modes.CBC(self._iv)).encryptor()
        self.tag = b""

    @property
    def authenticated(self) -> bool:
        return self.mode == "gcm"

    def algorithm_identifier(self) -> algos.EncryptionAlgorithm:
        oid = CONTENT_CIPHER_OIDS[self.cipher]
        if self.mode == "gcm":
            params: core.Asn1Value = GCMParameters({"aes_nonce": self._iv, "aes_icv_len": GCM_TAG_BYTES})
        else:
            params = core.OctetString(self._iv)
        return algos.EncryptionAlgorithm({"algorithm": oid, "parameters": params})

    def algorithm_identifier_der(self) -> bytes:
        """The DER of ``algorithm_identifier()``, framed around the fresh IV.

        The OID and, for GCM, the ICV length are encoded once by asn1crypto;
        the object itself cost more than encrypting a 10 KB message. A test
        checks that the bytes are the same.
        """
        # CBC: AlgorithmIdentifier { oid, OCTET STRING iv } (RFC 3565 §4.1);
        # GCM: AlgorithmIdentifier { oid, GCMParameters { OCTET STRING nonce, icvLen } } (RFC 5084 §3.2).
        iv = der_header(UNIVERSAL, False, _OCTET_STRING, len(self._iv)) + self._iv
        if self.mode == "gcm":
            inner = iv + _GCM_ICV_LENGTH
            iv = der_header(UNIVERSAL, True, _SEQUENCE, len(inner)) + inner
        body = _oid_der(CONTENT_CIPHER_OIDS[self.cipher]) + iv
        return der_header(UNIVERSAL, True, _SEQUENCE, len(body)) + body

    @staticmethod
    def ciphertext_length(cipher: str, plaintext_length: int) -> int:
        """Exact ciphertext length: GCM adds nothing, CBC pads to a full block (RFC 5652 §6.3)."""
        if CONTENT_CIPHERS[cipher][0] == "gcm":
            return plaintext_length
        return (plaintext_length // _BLOCK + 1) * _BLOCK

    def update(self, chunk: bytes | bytearray | memoryview) -> bytes:
        self._length += len(chunk)
        return self._ctx.update(chunk)

    def finish(self) -> bytes:
        if self.mode == "gcm":
            out = self._ctx.finalize()
            assert isinstance(self._ctx, AEADEncryptionContext)  # made with modes.GCM
            self.tag = self._ctx.tag
            return out
        pad = _BLOCK - self._length % _BLOCK
        return self._ctx.update(bytes([pad]) * pad) + self._ctx.finalize()


class ContentDecryptor:
    """Decrypt content described by a contentEncryptionAlgorithm: its OID and the DER of its parameters.

    ``parameters`` is empty when the AlgorithmIdentifier has none. Raises
    ``UnsupportedAlgorithm`` or ``PolicyViolation`` for the algorithm,
    ``CMSParseError`` for broken parameters, ``DecryptionFailed`` from
    ``finish()`` for a bad tag or padding.
    """

    def __init__(self, oid: str, parameters: bytes, *, policy: Policy, authenticated: bool) -> None:
        self._rc2_bits = 0
        self._rc2_iv = b""
        if oid == OID_RC2_CBC:
            # The cipher's name depends on the effective key size in the parameters.
            cipher = self._rc2_parameters(parameters)
        elif oid == OID_DES_CBC:
            cipher = "des-cbc"
        else:
            found = CONTENT_CIPHER_BY_OID.get(oid)
            if found is None:
                raise UnsupportedAlgorithm(f"unsupported content-encryption algorithm {oid}", oid=oid)
            cipher = found
        if cipher not in policy.content_ciphers:
            raise PolicyViolation(f"content cipher {cipher} is not allowed by the policy", oid=oid)
        self.cipher = cipher
        self.mode, self.key_length = (CONTENT_CIPHERS | LEGACY_CONTENT_CIPHERS)[cipher]
        self._block = _BLOCK if cipher in CONTENT_CIPHERS else 8
        # RFC 5083 §2.1: AuthEnvelopedData must use an authenticated cipher, and
        # an AEAD inside plain EnvelopedData would carry no tag.
        if authenticated != (self.mode == "gcm"):
            raise CMSParseError(f"{cipher} does not fit this CMS content type")
        try:
            if self.mode == "gcm":
                gcm = GCMParameters.load(parameters)
                self.iv = bytes(gcm["aes_nonce"].native)
                self.tag_length = int(gcm["aes_icv_len"].native)
            elif self._rc2_bits:
                self.iv = self._rc2_iv
                self.tag_length = 0
            else:
                self.iv = bytes(core.OctetString.load(parameters).native)
                self.tag_length = 0
        except (ValueError, TypeError, AttributeError) as exc:
            raise CMSParseError(f"malformed {cipher} parameters") from exc
        if self.mode == "gcm":
            # RFC 5084 §3.2 recommends 12 octets; the AES-GCM primitive takes 8 to 128.
            if not 8 <= len(self.iv) <= 128:
                raise CMSParseError("AES-GCM nonce of an impossible length")
            if self.tag_length not in (12, 13, 14, 15, 16):
                raise CMSParseError(f"AES-GCM tag length {self.tag_length} is not allowed (RFC 5084 §3.2)")
        elif len(self.iv) != self._block:
            raise CMSParseError(f"{cipher} IV is not {self._block} octets")
        self._ctx: CipherContext | RC2CBCDecryptor | None = None
        self._held = b""
        self._seen = 0

    def _rc2_parameters(self, parameters: bytes) -> str:
        """Read RC2CBCParameter (RFC 3370 §5.2), or a bare IV (RFC 2268 §6); return the cipher's name."""
        try:
            if parameters[:1] == b"\x04":
                version = None
                self._rc2_iv = bytes(core.OctetString.load(parameters).native)
            else:
                params = RC2CBCParameter.load(parameters)
                version = int(params["rc2_parameter_version"].native)
                self._rc2_iv = bytes(params["iv"].native)
        except (ValueError, TypeError, AttributeError) as exc:
            raise CMSParseError("malformed RC2 parameters") from exc
        try:
            self._rc2_bits = effective_bits(version)
        except ValueError as exc:
            raise UnsupportedAlgorithm(str(exc), oid=OID_RC2_CBC) from None
        cipher = _RC2_NAMES.get(self._rc2_bits)
        if cipher is None:
            raise UnsupportedAlgorithm(f"RC2 with {self._rc2_bits} effective key bits is not read", oid=OID_RC2_CBC)
        return cipher

    def start(self, key: bytes, tag: bytes = b"", aad: bytes = b"") -> None:
        if self._rc2_bits:
            # The RC2 key length is not in the parameters; OpenSSL makes it the effective size.
            if len(key) != self._rc2_bits // 8:
                raise DecryptionFailed("the unwrapped content key has the wrong length")
            self._ctx = rc2_cbc_decryptor(key, self.iv, self._rc2_bits)
            return
        if len(key) != self.key_length:
            raise DecryptionFailed("the unwrapped content key has the wrong length")
        if self.mode == "gcm":
            if len(tag) != self.tag_length:
                raise CMSParseError("the AES-GCM tag length does not match its parameters")
            mode = modes.GCM(self.iv, tag, min_tag_length=12)
            ctx = Cipher(algorithms.AES(key), mode).decryptor()
            self._ctx = ctx
            if aad:
                ctx.authenticate_additional_data(aad)
        elif self.cipher == "des-cbc":
            # cryptography has no single DES; EDE with three equal keys is single DES.
            self._ctx = Cipher(TripleDES(key * 3), modes.CBC(self.iv)).decryptor()
        elif self.cipher == "des-ede3-cbc":
            self._ctx = Cipher(TripleDES(key), modes.CBC(self.iv)).decryptor()
        else:
            self._ctx = Cipher(algorithms.AES(key), modes.CBC(self.iv)).decryptor()

    def update(self, chunk: bytes | memoryview) -> bytes:
        assert self._ctx is not None, "start() first"
        self._seen += len(chunk)
        out = self._ctx.update(chunk)
        if self.mode == "gcm":
            return out
        # Hold the last block back: it carries the padding, checked in finish().
        out = self._held + out
        self._held = out[-self._block :]
        return out[: -self._block]

    def finish(self) -> bytes:
        assert self._ctx is not None, "start() first"
        if self.mode == "gcm":
            try:
                return self._ctx.finalize()
            except InvalidTag:
                raise DecryptionFailed(
                    "authentication tag mismatch: the message was altered or the key is wrong"
                ) from None
        if self._seen == 0 or self._seen % self._block:
            raise DecryptionFailed("CBC ciphertext is not a whole number of blocks")
        last = self._held + self._ctx.finalize()
        unpadder = padding.PKCS7(self._block * 8).unpadder()
        try:
            return unpadder.update(last) + unpadder.finalize()
        except ValueError:
            raise DecryptionFailed("bad padding: the message was altered or the key is wrong") from None


#: The RC2 variants read (RFC 3370 §5.2), by effective key bits.
_RC2_NAMES = {40: "rc2-40-cbc", 64: "rc2-64-cbc", 128: "rc2-128-cbc"}


def _random(rng: Callable[[int], bytes], n: int) -> bytes:
    value = rng(n)
    if not isinstance(value, bytes) or len(value) != n:
        raise TypeError("rng must return the number of bytes asked for")
    return value
