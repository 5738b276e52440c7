"""EC key agreement: KeyAgreeRecipientInfo with ephemeral-static ECDH (RFC 5753).

``ECDHRecipient`` makes a fresh ephemeral key per recipient, derives a key-
encryption key with the ANSI X9.63 KDF over ECC-CMS-SharedInfo (RFC 5753
§7.2) and wraps the content key with AES key wrap (RFC 3394, RFC 3565).
``ECDHIdentity`` does the reverse for any KDF hash and AES key wrap size the
policy allows, and for the CMS Triple-DES key wrap of old mail and of
``openssl cms`` without a cipher option (RFC 3217, ``keywrap.py``; read,
never written), recipients named by issuerAndSerialNumber or rKeyId.

Both work on ``KeyAgreeStanza`` records (``stanza.py``), never on the
RecipientInfo's encoding. The SharedInfo is rebuilt from the sender's own
encoding of the key-wrap algorithm, so a sender that writes NULL parameters
still derives the same key. Curves: the NIST prime curves (cofactor 1, so
the cofactor schemes are accepted as the standard ones).
"""

from __future__ import annotations

import functools

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from mailcrypt.envelope.asn1 import (
    ECDH_KDF_OIDS,
    ECDH_SCHEME_BY_OID,
    KEY_WRAP_BY_OID,
    KEY_WRAP_OIDS,
    OID_DES_EDE3_WRAP,
    OID_EC_PUBLIC_KEY,
    ECCCMSSharedInfo,
)
from mailcrypt.envelope.keys import HASHES, Identity, KeyTypeRecipient, require
from mailcrypt.envelope.keywrap import KEK_BYTES, unwrap_key
from mailcrypt.envelope.stanza import Algorithm, KeyAgreeStanza, OriginatorKey, RecipientEncryptedKey, Stanza
from mailcrypt.envelope.stanza_der import algorithm_der, parse_algorithm, parse_oid
from mailcrypt.errors import CMSParseError, DecryptionFailed, NotForThisIdentity, PolicyViolation, UnsupportedAlgorithm
from mailcrypt.policy import Policy, Profile

__all__ = ["ECDHRecipient", "ECDHIdentity"]


_WRAP_KEY_BYTES = KEK_BYTES


def _derive_kek(shared: bytes, hash_name: str, wrap_der: bytes, wrap_name: str, ukm: bytes | None) -> bytes:
    length = _WRAP_KEY_BYTES[wrap_name]
    wrap = cms.KeyEncryptionAlgorithm.load(wrap_der)
    info = {"key_info": wrap, "supp_pub_info": (length * 8).to_bytes(4, "big")}
    if ukm is not None:
        info["entity_u_info"] = ukm
    shared_info = ECCCMSSharedInfo(info).dump()
    return X963KDF(algorithm=HASHES[hash_name](), length=length, sharedinfo=shared_info).derive(shared)


class ECDHRecipient(KeyTypeRecipient):
    """Wraps content keys for an EC certificate.

    Raises ``InvalidRecipient`` for a non-EC key, a curve outside the policy
    or a keyUsage without keyAgreement; ``PolicyViolation`` for a KDF hash
    the policy does not allow.
    """

    key_type = ec.EllipticCurvePublicKey
    key_usage = "key_agreement"

    def _accept(self, key: CertificatePublicKeyTypes, profile: Profile, policy: Policy) -> None:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        require(key.curve.name in policy.curves, f"curve {key.curve.name} is not allowed", self.ref)
        if profile.ecdh_kdf_hash not in policy.ecdh_kdf_hashes:
            raise PolicyViolation(f"ECDH KDF hash {profile.ecdh_kdf_hash} is not allowed by the policy")
        self._key = key
        self._kdf_hash = profile.ecdh_kdf_hash
        self._wrap = profile.key_wrap

    def _agree(self, cek: bytes) -> tuple[bytes, bytes]:
        """A fresh ephemeral key and ``cek`` wrapped with the derived key: (the key's point, the wrapped key)."""
        ephemeral = ec.generate_private_key(self._key.curve)
        shared = ephemeral.exchange(ec.ECDH(), self._key)
        kek = _derive_kek_encoded(shared, self._kdf_hash, algorithm_der(_wrap_algorithm(self._wrap)), self._wrap)
        point = ephemeral.public_key().public_bytes(
            encoding=serialization.Encoding.X962, format=serialization.PublicFormat.UncompressedPoint
        )
        return point, aes_key_wrap(kek, cek)

    def wrap(self, cek: bytes) -> KeyAgreeStanza:
        point, encrypted = self._agree(cek)
        # RFC 5753 §3.1.1: the originator is the ephemeral key, id-ecPublicKey,
        # parameters absent (the curve is the recipient's); no ukm; the
        # recipient named by issuerAndSerialNumber.
        return KeyAgreeStanza(
            originator=OriginatorKey(_EC_ALGORITHM, point),
            ukm=None,
            algorithm=_key_agreement_algorithm(self._kdf_hash, self._wrap),
            keys=(RecipientEncryptedKey(self.ref.rid, encrypted),),
        )


# id-ecPublicKey with absent parameters (RFC 5753 §3.1.1).
_EC_ALGORITHM = Algorithm(OID_EC_PUBLIC_KEY)


@functools.lru_cache(maxsize=32)
def _key_agreement_algorithm(kdf_hash: str, wrap_name: str) -> Algorithm:
    # RFC 5753 §3.1.1: the parameters of the key agreement algorithm are the key-wrap algorithm.
    return Algorithm(ECDH_KDF_OIDS[kdf_hash], algorithm_der(_wrap_algorithm(wrap_name)))


@functools.lru_cache(maxsize=4)
def _wrap_algorithm(wrap_name: str) -> Algorithm:
    # RFC 3565 §2.3.2: AES key wrap algorithm identifiers have absent parameters.
    return Algorithm(KEY_WRAP_OIDS[wrap_name])


@functools.lru_cache(maxsize=16)
def _shared_info(wrap_der: bytes, wrap_name: str) -> bytes:
    """ECC-CMS-SharedInfo without ukm: the same for every message with one key wrap."""
    length = _WRAP_KEY_BYTES[wrap_name]
    info = {"key_info": cms.KeyEncryptionAlgorithm.load(wrap_der), "supp_pub_info": (length * 8).to_bytes(4, "big")}
    return ECCCMSSharedInfo(info).dump()


def _derive_kek_encoded(shared: bytes, hash_name: str, wrap_der: bytes, wrap_name: str) -> bytes:
    length = _WRAP_KEY_BYTES[wrap_name]
    info = _shared_info(wrap_der, wrap_name)
    return X963KDF(algorithm=HASHES[hash_name](), length=length, sharedinfo=info).derive(shared)


class ECDHIdentity(Identity):
    """An EC private key with its certificate."""

    _key: ec.EllipticCurvePrivateKey

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        super().__init__(certificate)
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise TypeError("private_key must be an EC private key")
        if private_key.public_key() != certificate.public_key():
            raise ValueError("the private key does not belong to the certificate")
        self._key = private_key

    def _my_encrypted_key(self, stanza: KeyAgreeStanza) -> bytes:
        for rek in stanza.keys:
            if self.ref.matches(rek.rid):
                return rek.encrypted_key
        raise NotForThisIdentity("no recipientEncryptedKey names this certificate")

    def unwrap(self, stanza: Stanza, *, policy: Policy) -> tuple[bytes, str]:
        if not isinstance(stanza, KeyAgreeStanza):
            raise NotForThisIdentity("not a key agreement recipient")
        encrypted = self._my_encrypted_key(stanza)
        curve = self._key.curve
        if curve.name not in policy.curves:
            raise PolicyViolation(f"curve {curve.name} is not allowed by the policy")
        oid = stanza.algorithm.oid
        hash_name = ECDH_SCHEME_BY_OID.get(oid)
        if hash_name is None:
            raise UnsupportedAlgorithm(f"unsupported key agreement algorithm {oid}", oid=oid)
        if hash_name not in policy.ecdh_kdf_hashes:
            raise PolicyViolation(f"ECDH KDF hash {hash_name} is not allowed by the policy", oid=oid)
        wrap_der = stanza.algorithm.parameters
        try:
            wrap_oid = parse_algorithm(wrap_der).oid
        except CMSParseError:
            raise CMSParseError("malformed key wrap algorithm in a KeyAgreeRecipientInfo") from None
        wrap_name = "des-ede3-wrap" if wrap_oid == OID_DES_EDE3_WRAP else KEY_WRAP_BY_OID.get(wrap_oid)
        if wrap_name is None:
            raise UnsupportedAlgorithm(f"unsupported key wrap algorithm {wrap_oid}", oid=wrap_oid)
        peer = self._originator_key(stanza, curve)
        kek = _derive_kek(self._key.exchange(ec.ECDH(), peer), hash_name, wrap_der, wrap_name, stanza.ukm)
        cek = unwrap_key(wrap_name, kek, encrypted)
        return cek, f"ecdh-{hash_name}kdf-{wrap_name}"

    @staticmethod
    def _originator_key(stanza: KeyAgreeStanza, curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
        originator = stanza.originator
        if not isinstance(originator, OriginatorKey):
            # RFC 5753 §3.1.1: the originator MUST be an ephemeral originatorKey.
            raise UnsupportedAlgorithm("static-static ECDH (originator by certificate) is not supported")
        if originator.algorithm.oid != OID_EC_PUBLIC_KEY:
            raise CMSParseError("the originator key is not an EC public key")
        params = originator.algorithm.parameters
        if params[:1] == b"\x06":
            # A named curve (RFC 5480 §2.1.1); absent or NULL parameters mean the recipient's curve.
            try:
                named = ec.get_curve_for_oid(x509.ObjectIdentifier(parse_oid(params)))().name
            except (CMSParseError, LookupError, ValueError):
                named = ""
            if named != curve.name:
                raise DecryptionFailed("the originator key is on another curve")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, originator.public_key)
        except ValueError:
            raise CMSParseError("the originator's ephemeral key is not a point on the curve") from None
