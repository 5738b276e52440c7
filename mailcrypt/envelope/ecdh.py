"""EC key agreement: KeyAgreeRecipientInfo with ephemeral-static ECDH (RFC 5753).

``ECDHRecipient`` makes a fresh ephemeral key per recipient, derives a key-
encryption key with the ANSI X9.63 KDF over ECC-CMS-SharedInfo (RFC 5753
§7.2) and wraps the content key with AES key wrap (RFC 3394, RFC 3565).
``ECDHIdentity`` does the reverse for any KDF hash and AES key wrap size the
policy allows, recipients named by issuerAndSerialNumber or rKeyId.

The SharedInfo is rebuilt from the sender's own encoding of the key-wrap
algorithm, so a sender that writes NULL parameters still derives the same
key. Curves: the NIST prime curves (cofactor 1, so the cofactor schemes are
accepted as the standard ones).
"""

from __future__ import annotations

import functools

from asn1crypto import cms, core, keys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from mailcrypt.envelope.asn1 import (
    ECDH_KDF_OIDS,
    ECDH_SCHEME_BY_OID,
    KEY_WRAP_BY_OID,
    KEY_WRAP_OIDS,
    OID_EC_PUBLIC_KEY,
    ECCCMSSharedInfo,
)
from mailcrypt.envelope.codec import CONTEXT, UNIVERSAL, der_header
from mailcrypt.envelope.keys import HASHES, Identity, Recipient, recipient_key, require
from mailcrypt.errors import CMSParseError, DecryptionFailed, NotForThisIdentity, PolicyViolation, UnsupportedAlgorithm
from mailcrypt.policy import Policy

__all__ = ["ECDHRecipient", "ECDHIdentity"]


_WRAP_KEY_BYTES = {"aes128-wrap": 16, "aes192-wrap": 24, "aes256-wrap": 32}


def _derive_kek(
    shared: bytes, hash_name: str, wrap: cms.KeyEncryptionAlgorithm, wrap_name: str, ukm: bytes | None
) -> bytes:
    length = _WRAP_KEY_BYTES[wrap_name]
    info = {"key_info": wrap, "supp_pub_info": (length * 8).to_bytes(4, "big")}
    if ukm is not None:
        info["entity_u_info"] = ukm
    shared_info = ECCCMSSharedInfo(info).dump()
    return X963KDF(algorithm=HASHES[hash_name](), length=length, sharedinfo=shared_info).derive(shared)


class ECDHRecipient(Recipient):
    """Wraps content keys for an EC certificate.

    Raises ``InvalidRecipient`` for a non-EC key, a curve outside the policy
    or a keyUsage without keyAgreement; ``PolicyViolation`` for a KDF hash
    the policy does not allow.
    """

    def __init__(
        self, certificate: x509.Certificate, *, kdf_hash: str = "sha1", key_wrap: str = "aes256-wrap", policy: Policy
    ) -> None:
        super().__init__(certificate)
        key = recipient_key(certificate, policy=policy, ref=self.ref)
        require(isinstance(key, ec.EllipticCurvePublicKey), "not an EC certificate", self.ref)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        require(key.curve.name in policy.curves, f"curve {key.curve.name} is not allowed", self.ref)
        # RFC 8550 §4.4.2: a key used for key agreement needs keyAgreement.
        require(self.ref.key_usage_allows("key_agreement"), "keyUsage does not allow key agreement", self.ref)
        if kdf_hash not in policy.ecdh_kdf_hashes:
            raise PolicyViolation(f"ECDH KDF hash {kdf_hash} is not allowed by the policy")
        if kdf_hash not in HASHES or key_wrap not in KEY_WRAP_OIDS:
            raise UnsupportedAlgorithm(f"unknown ECDH scheme {kdf_hash}/{key_wrap}")
        self._key = key
        self._kdf_hash = kdf_hash
        self._wrap = key_wrap

    def _agree(self, cek: bytes) -> tuple[bytes, bytes]:
        """A fresh ephemeral key and ``cek`` wrapped with the derived key: (the key's point, the wrapped key)."""
        ephemeral = ec.generate_private_key(self._key.curve)
        shared = ephemeral.exchange(ec.ECDH(), self._key)
        kek = _derive_kek_encoded(shared, self._kdf_hash, _wrap_algorithm_der(self._wrap), self._wrap)
        point = ephemeral.public_key().public_bytes(
            encoding=serialization.Encoding.X962, format=serialization.PublicFormat.UncompressedPoint
        )
        return point, aes_key_wrap(kek, cek)

    def wrap(self, cek: bytes) -> cms.RecipientInfo:
        point, encrypted = self._agree(cek)
        wrap_alg = cms.KeyEncryptionAlgorithm.load(_wrap_algorithm_der(self._wrap))
        # RFC 5753 §3.1.1: the originator is the ephemeral key, id-ecPublicKey,
        # parameters absent (the curve is the recipient's).
        originator = keys.PublicKeyInfo(
            {"algorithm": keys.PublicKeyAlgorithm({"algorithm": "ec"}), "public_key": point}
        )
        kari = cms.KeyAgreeRecipientInfo(
            {
                "version": "v3",
                "originator": cms.OriginatorIdentifierOrKey(name="originator_key", value=originator),
                "key_encryption_algorithm": cms.KeyEncryptionAlgorithm(
                    {"algorithm": ECDH_KDF_OIDS[self._kdf_hash], "parameters": wrap_alg}
                ),
                "recipient_encrypted_keys": [
                    {
                        "rid": cms.KeyAgreementRecipientIdentifier(
                            name="issuer_and_serial_number", value=self.ref.issuer_and_serial()
                        ),
                        "encrypted_key": encrypted,
                    }
                ],
            }
        )
        return cms.RecipientInfo(name="kari", value=kari)

    def wrap_der(self, cek: bytes) -> tuple[bytes, str]:
        """The DER of ``wrap(cek)``: the parts that do not change are encoded once and framed around the new ones.

        Building the asn1crypto object took five times the key agreement
        itself. The result is the same encoding (a test checks it against
        ``wrap``'s).
        """
        point, encrypted = self._agree(cek)
        head, tail = self._fixed()
        # OriginatorPublicKey ::= SEQUENCE { algorithm, publicKey BIT STRING } as [1] IMPLICIT,
        # inside originator [0] EXPLICIT.
        bits = der_header(UNIVERSAL, False, _BIT_STRING, len(point) + 1) + b"\x00" + point
        key = _frame(CONTEXT, 1, _EC_ALGORITHM + bits)
        originator = _frame(CONTEXT, 0, key)
        # RecipientEncryptedKeys ::= SEQUENCE OF SEQUENCE { rid, encryptedKey OCTET STRING }
        octets = der_header(UNIVERSAL, False, _OCTET_STRING, len(encrypted)) + encrypted
        keys_der = _frame(UNIVERSAL, _SEQUENCE, _frame(UNIVERSAL, _SEQUENCE, tail + octets))
        # RecipientInfo's kari choice is [1] IMPLICIT KeyAgreeRecipientInfo.
        return _frame(CONTEXT, 1, _VERSION_3 + originator + head + keys_der), "v3"

    def _fixed(self) -> tuple[bytes, bytes]:
        """(keyEncryptionAlgorithm, rid): the same for every message to this certificate, encoded once.

        The rid is the untagged issuerAndSerialNumber choice, whose encoding
        the certificate keeps (``CertificateRef.issuer_and_serial_der``).
        """
        return _key_agreement_algorithm(self._kdf_hash, self._wrap), self.ref.issuer_and_serial_der


_SEQUENCE = 16
_OCTET_STRING = 4
_BIT_STRING = 3
# RFC 5753 §3.1.1: KeyAgreeRecipientInfo version is always 3.
_VERSION_3 = core.Integer(3).dump()
# id-ecPublicKey with absent parameters (RFC 5753 §3.1.1).
_EC_ALGORITHM = keys.PublicKeyAlgorithm({"algorithm": "ec"}).dump()


def _frame(cls: int, tag: int, content: bytes) -> bytes:
    return der_header(cls, True, tag, len(content)) + content


@functools.lru_cache(maxsize=32)
def _key_agreement_algorithm(kdf_hash: str, wrap_name: str) -> bytes:
    parameters = cms.KeyEncryptionAlgorithm.load(_wrap_algorithm_der(wrap_name))
    return cms.KeyEncryptionAlgorithm({"algorithm": ECDH_KDF_OIDS[kdf_hash], "parameters": parameters}).dump()


@functools.lru_cache(maxsize=4)
def _wrap_algorithm_der(wrap_name: str) -> bytes:
    # RFC 3565 §2.3.2: AES key wrap algorithm identifiers have absent parameters.
    return cms.KeyEncryptionAlgorithm({"algorithm": KEY_WRAP_OIDS[wrap_name]}).dump()


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

    def _my_encrypted_key(self, kari: cms.KeyAgreeRecipientInfo) -> bytes:
        for rek in kari["recipient_encrypted_keys"]:
            rid = rek["rid"]
            if rid.name == "issuer_and_serial_number":
                mine = self.ref.matches_issuer_and_serial(rid.chosen)
            else:
                mine = self.ref.matches_key_identifier(bytes(rid.chosen["subject_key_identifier"].native))
            if mine:
                return bytes(rek["encrypted_key"].native)
        raise NotForThisIdentity("no recipientEncryptedKey names this certificate")

    def unwrap(self, info: cms.RecipientInfo, *, policy: Policy) -> tuple[bytes, str]:
        if info.name != "kari":
            raise NotForThisIdentity("not a key agreement recipient")
        kari = info.chosen
        encrypted = self._my_encrypted_key(kari)
        curve = self._key.curve
        if curve.name not in policy.curves:
            raise PolicyViolation(f"curve {curve.name} is not allowed by the policy")
        algorithm = kari["key_encryption_algorithm"]
        oid = algorithm["algorithm"].dotted
        hash_name = ECDH_SCHEME_BY_OID.get(oid)
        if hash_name is None:
            raise UnsupportedAlgorithm(f"unsupported key agreement algorithm {oid}", oid=oid)
        if hash_name not in policy.ecdh_kdf_hashes:
            raise PolicyViolation(f"ECDH KDF hash {hash_name} is not allowed by the policy", oid=oid)
        try:
            wrap = cms.KeyEncryptionAlgorithm.load(algorithm["parameters"].dump())
            wrap_oid = wrap["algorithm"].dotted
        except (ValueError, TypeError, KeyError) as exc:
            raise CMSParseError("malformed key wrap algorithm in a KeyAgreeRecipientInfo") from exc
        wrap_name = KEY_WRAP_BY_OID.get(wrap_oid)
        if wrap_name is None:
            raise UnsupportedAlgorithm(f"unsupported key wrap algorithm {wrap_oid}", oid=wrap_oid)
        peer = self._originator_key(kari, curve)
        ukm = kari["ukm"].native if kari["ukm"].native is not None else None
        kek = _derive_kek(self._key.exchange(ec.ECDH(), peer), hash_name, wrap, wrap_name, ukm)
        try:
            cek = aes_key_unwrap(kek, encrypted)
        except (InvalidUnwrap, ValueError):
            raise DecryptionFailed("the wrapped content key does not unwrap with this EC key") from None
        return cek, f"ecdh-{hash_name}kdf-{wrap_name}"

    @staticmethod
    def _originator_key(kari: cms.KeyAgreeRecipientInfo, curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
        originator = kari["originator"]
        if originator.name != "originator_key":
            # RFC 5753 §3.1.1: the originator MUST be an ephemeral originatorKey.
            raise UnsupportedAlgorithm("static-static ECDH (originator by certificate) is not supported")
        info = originator.chosen
        if info["algorithm"]["algorithm"].dotted != OID_EC_PUBLIC_KEY:
            raise CMSParseError("the originator key is not an EC public key")
        params = info["algorithm"]["parameters"]
        if isinstance(params, keys.ECDomainParameters) and params.name == "named":
            if params.chosen.native not in (curve.name, _curve_alias(curve.name)):
                raise DecryptionFailed("the originator key is on another curve")
        try:
            raw = bytes(info["public_key"].native)
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, raw)
        except ValueError:
            raise CMSParseError("the originator's ephemeral key is not a point on the curve") from None


def _curve_alias(name: str) -> str:
    return {"secp256r1": "prime256v1"}.get(name, name)
