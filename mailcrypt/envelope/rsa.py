"""RSA key transport: KeyTransRecipientInfo (RFC 5652 §6.2.1).

``RSARecipient`` wraps the content key with RSAES-PKCS1-v1_5 (RFC 3370 §4.2.1,
the `compatible` profile) or RSAES-OAEP (RFC 3560, RFC 8017); ``RSAIdentity``
unwraps either, with any OAEP hash and MGF1 hash the policy allows and an
optional OAEP label. Recipients are named by issuerAndSerialNumber on
output; both that and subjectKeyIdentifier are matched on input.

Both work on ``KeyTransStanza`` records (``stanza.py``), never on the
encoding. Every part of a KeyTransRecipientInfo but the encrypted key is the
same for a certificate from one message to the next: ``RSARecipient`` hands
out the same recipient identifier and algorithm objects every time (whose
DER ``stanza_der`` encodes once), and ``RSAIdentity`` keeps what it read
from them (see there). The algorithm parameters are the one RSA-specific
encoding here (RSAES-OAEP-params, RFC 4055 §3.1).

It does not check certificate validity dates or chains: that is the key
directory's job.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from asn1crypto import algos, core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mailcrypt.envelope.asn1 import HASH_BY_OID, HASH_OIDS, OID_RSA_ENCRYPTION, OID_RSAES_OAEP
from mailcrypt.envelope.keys import HASHES, Identity, KeyTypeRecipient, require
from mailcrypt.envelope.stanza import Algorithm, IssuerSerial, KeyTransStanza, RecipientId, Stanza
from mailcrypt.errors import CMSParseError, DecryptionFailed, NotForThisIdentity, PolicyViolation, UnsupportedAlgorithm
from mailcrypt.policy import Policy, Profile

__all__ = ["RSARecipient", "RSAIdentity"]


class RSARecipient(KeyTypeRecipient):
    """Wraps content keys for an RSA certificate.

    Raises ``InvalidRecipient`` for a non-RSA key, a key below the policy's
    minimum size, or a keyUsage without keyEncipherment; ``PolicyViolation``
    for a padding or hash the policy does not allow.
    """

    key_type = rsa.RSAPublicKey
    key_usage = "key_encipherment"

    def _accept(self, key: CertificatePublicKeyTypes, profile: Profile, policy: Policy) -> None:
        assert isinstance(key, rsa.RSAPublicKey)
        require(key.key_size >= policy.min_rsa_bits, f"RSA key of {key.key_size} bits is too small", self.ref)
        name, oaep_hash = profile.rsa_padding, profile.oaep_hash
        if name not in policy.rsa_paddings:
            raise PolicyViolation(f"RSA padding {name} is not allowed by the policy")
        if name == "oaep" and oaep_hash not in policy.oaep_hashes:
            raise PolicyViolation(f"OAEP hash {oaep_hash} is not allowed by the policy")
        self._key = key
        self._algorithm = _key_encryption_algorithm(name, oaep_hash)
        self._padding = _padding(name, oaep_hash)

    def wrap(self, cek: bytes) -> KeyTransStanza:
        # Named by issuerAndSerialNumber (version 0), as every S/MIME client reads.
        return KeyTransStanza(self.ref.rid, self._algorithm, self._key.encrypt(cek, self._padding))


def _padding(name: str, oaep_hash: str) -> padding.AsymmetricPadding:
    """The encryption padding for a profile's ``rsa_padding`` and ``oaep_hash`` (MGF1 with the same hash)."""
    if name == "oaep":
        h = HASHES[oaep_hash]()
        return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)
    return padding.PKCS1v15()


@functools.lru_cache(maxsize=8)
def _key_encryption_algorithm(padding_name: str, oaep_hash: str) -> Algorithm:
    if padding_name == "oaep":
        return Algorithm(OID_RSAES_OAEP, _oaep_params(oaep_hash).dump())
    # RFC 3370 §4.2.1: rsaEncryption with NULL parameters.
    return Algorithm(OID_RSA_ENCRYPTION, core.Null().dump())


def _oaep_params(hash_name: str) -> algos.RSAESOAEPParams:
    if hash_name == "sha1":
        # RFC 4055 §3.1: SHA-1 with MGF1-SHA-1 is the DEFAULT, encoded as an empty SEQUENCE.
        return algos.RSAESOAEPParams.load(b"\x30\x00")
    digest = {"algorithm": HASH_OIDS[hash_name]}
    return algos.RSAESOAEPParams(
        {"hash_algorithm": digest, "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": digest}}
    )


class RSAIdentity(Identity):
    """An RSA private key with its certificate.

    Mail to one person names the same certificate and algorithm in every
    KeyTransRecipientInfo; only the encrypted key differs. What this
    identity reads from the rest (is it addressed to me, which algorithm,
    the OAEP parameters) depends on nothing but the recipient identifier
    and the algorithm, so it is kept per identity, keyed by those two
    (their exact bytes, as the stanza holds them): matching names and
    decoding parameters with asn1crypto cost a tenth of the RSA operation
    per message. Only a reading that succeeded is kept, the policy is
    applied every time in the original order, and neither the encrypted key
    nor anything decrypted is ever kept.
    """

    _key: rsa.RSAPrivateKey

    def __init__(self, private_key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
        super().__init__(certificate)
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise TypeError("private_key must be an RSA private key")
        if private_key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
            raise ValueError("the private key does not belong to the certificate")
        self._key = private_key
        self._read: dict[tuple[RecipientId, Algorithm], _ReadKTRI] = {}

    def unwrap(self, stanza: Stanza, *, policy: Policy) -> tuple[bytes, str]:
        if not isinstance(stanza, KeyTransStanza):
            raise NotForThisIdentity("not a key transport recipient")
        memo_key = (stanza.rid, stanza.algorithm)
        known = self._read.get(memo_key)
        if known is None:
            return self._unwrap_read(stanza, policy, memo_key)
        if not known.mine:
            raise NotForThisIdentity("recipient identifier names another certificate")
        if self._key.key_size < policy.min_rsa_bits:
            raise PolicyViolation(f"RSA key of {self._key.key_size} bits is below the policy minimum")
        return self._decrypt(known, stanza.encrypted_key, policy)

    def _unwrap_read(
        self, stanza: KeyTransStanza, policy: Policy, memo_key: tuple[RecipientId, Algorithm]
    ) -> tuple[bytes, str]:
        """``unwrap`` reading the identifier and the algorithm; remembers what it read under ``memo_key``."""
        if not self.ref.matches(stanza.rid):
            self._remember(memo_key, _NOT_MINE)
            raise NotForThisIdentity("recipient identifier names another certificate")
        if self._key.key_size < policy.min_rsa_bits:
            raise PolicyViolation(f"RSA key of {self._key.key_size} bits is below the policy minimum")
        oid = stanza.algorithm.oid
        oaep = None
        if oid == OID_RSAES_OAEP:
            if "oaep" not in policy.rsa_paddings:
                raise PolicyViolation("RSA-OAEP is not allowed by the policy", oid=oid)
            oaep = _read_oaep(stanza.algorithm.parameters)
        known = _ReadKTRI(True, oid, oaep)
        self._remember(memo_key, known)
        return self._decrypt(known, stanza.encrypted_key, policy)

    def _remember(self, memo_key: tuple[RecipientId, Algorithm], known: _ReadKTRI) -> None:
        # Bounded: hostile input must not fill the memory (a sender can vary the bytes at will).
        if _memo_size(memo_key) > _MEMO_KEY_BYTES:
            return
        if len(self._read) >= _MEMO_LIMIT:
            self._read.clear()
        self._read[memo_key] = known

    def _decrypt(self, known: _ReadKTRI, encrypted: bytes, policy: Policy) -> tuple[bytes, str]:
        oid = known.oid
        if oid == OID_RSA_ENCRYPTION:
            if "pkcs1v15" not in policy.rsa_paddings:
                raise PolicyViolation("RSA PKCS#1 v1.5 is not allowed by the policy", oid=oid)
            scheme: padding.AsymmetricPadding = padding.PKCS1v15()
            description = "rsa-pkcs1v15"
        elif oid == OID_RSAES_OAEP:
            if "oaep" not in policy.rsa_paddings:
                raise PolicyViolation("RSA-OAEP is not allowed by the policy", oid=oid)
            assert known.oaep is not None
            scheme, description = _oaep_scheme(known.oaep, policy)
        else:
            raise UnsupportedAlgorithm(f"unsupported key transport algorithm {oid}", oid=oid)
        try:
            return self._key.decrypt(encrypted, scheme), description
        except ValueError:
            # One message for every failure: the cause must not become an oracle.
            raise DecryptionFailed("the wrapped content key does not decrypt with this RSA key") from None


# Per identity, at most this many readings of at most this many bytes each.
_MEMO_LIMIT = 64
_MEMO_KEY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class _OAEPRead:
    """RSAES-OAEP parameters as read (RFC 8017 §A.2.1), before the policy is asked."""

    hash_name: str
    mgf_hash: str
    label: bytes
    hash_oid: str


@dataclass(frozen=True, slots=True)
class _ReadKTRI:
    """What an RSAIdentity read from a KeyTransRecipientInfo, apart from the encrypted key."""

    mine: bool
    oid: str = ""
    oaep: _OAEPRead | None = None


_NOT_MINE = _ReadKTRI(False)


def _memo_size(memo_key: tuple[RecipientId, Algorithm]) -> int:
    rid, algorithm = memo_key
    named = len(rid.issuer) if isinstance(rid, IssuerSerial) else len(rid.ski) + len(rid.extra)
    return named + len(algorithm.parameters)


def _read_oaep(params: bytes) -> _OAEPRead:
    """The hashes and label of RSAES-OAEP parameters' DER; ``CMSParseError``/``UnsupportedAlgorithm`` for bad ones."""
    try:
        parsed = algos.RSAESOAEPParams.load(params, strict=True) if params else algos.RSAESOAEPParams({})
        hash_oid = parsed["hash_algorithm"]["algorithm"].dotted
        mgf = parsed["mask_gen_algorithm"]
        mgf_oid = mgf["algorithm"].dotted
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CMSParseError("malformed RSA-OAEP parameters") from exc
    # RFC 8017 §A.2.1 defines MGF1 only; name anything else before reading its parameters.
    if mgf_oid != "1.2.840.113549.1.1.8":
        raise UnsupportedAlgorithm(f"unsupported OAEP mask generation function {mgf_oid}", oid=mgf_oid)
    try:
        mgf_hash_oid = mgf["parameters"]["algorithm"].dotted
        label = bytes(parsed["p_source_algorithm"]["parameters"].native or b"")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CMSParseError("malformed RSA-OAEP parameters") from exc
    hash_name = HASH_BY_OID.get(hash_oid)
    mgf_hash = HASH_BY_OID.get(mgf_hash_oid)
    if hash_name is None or mgf_hash is None:
        raise UnsupportedAlgorithm("unsupported OAEP hash", oid=hash_oid if hash_name is None else mgf_hash_oid)
    return _OAEPRead(hash_name, mgf_hash, label, hash_oid)


def _oaep_scheme(read: _OAEPRead, policy: Policy) -> tuple[padding.OAEP, str]:
    """The padding for read OAEP parameters, if the policy allows their hashes (else ``PolicyViolation``)."""
    hash_name, mgf_hash, label = read.hash_name, read.mgf_hash, read.label
    if hash_name not in policy.oaep_hashes or mgf_hash not in policy.oaep_hashes:
        raise PolicyViolation(f"OAEP with {hash_name}/MGF1-{mgf_hash} is not allowed by the policy", oid=read.hash_oid)
    scheme = padding.OAEP(mgf=padding.MGF1(HASHES[mgf_hash]()), algorithm=HASHES[hash_name](), label=label or None)
    description = f"rsa-oaep-{hash_name}" + ("" if mgf_hash == hash_name else f"-mgf1-{mgf_hash}")
    return scheme, description + ("-label" if label else "")
