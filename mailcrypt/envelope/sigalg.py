"""Signature algorithms of SignedData: identifiers, signing and verification.

What a SignerInfo may name (RFC 5652 §5.3) and what mailcrypt does with it:

- RSA PKCS#1 v1.5: ``rsaEncryption`` or ``sha*WithRSAEncryption``
  (RFC 3370 §3.2, RFC 5754 §3.2); written as ``rsaEncryption``, which every
  client reads.
- RSASSA-PSS with its parameters (RFC 4056): hash, MGF1 hash, salt length;
  written with SHA-256, MGF1-SHA-256 and a 32-byte salt.
- ECDSA: ``ecdsa-with-SHA*`` (RFC 5753 §2.1.1, RFC 5758 §3.2), and
  ``id-ecPublicKey`` as some old signers wrote it; written as ``ecdsa-with-SHA*``.

Hashes are checked against ``Policy.signature_hashes``; with ``weak_ok``
those of ``Policy.weak_signature_hashes`` (SHA-1, MD5) are verified too, for
callers that then treat the signature as no proof. RSA key sizes and curves
are checked against the rest of the Policy. DSA, EdDSA and anything else raise
``UnsupportedAlgorithm``. This module sees bytes to sign or verify and a
key; it knows nothing of attributes or content.
"""

from __future__ import annotations

import hashlib

from asn1crypto import algos, core
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from mailcrypt.envelope.asn1 import HASH_BY_OID, HASH_OIDS, WEAK_HASH_OIDS
from mailcrypt.envelope.keys import HASHES
from mailcrypt.errors import BadSignature, CMSParseError, PolicyViolation, UnsupportedAlgorithm
from mailcrypt.policy import Policy

__all__ = [
    "SigningKey",
    "digest_name",
    "digest_algorithm",
    "sign",
    "verify",
    "signature_digest",
]

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_RSA_WITH = {
    "1.2.840.113549.1.1.4": "md5",
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}
_ECDSA_WITH = {
    "1.2.840.10045.4.1": "sha1",
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
}
_ECDSA_OIDS = {name: oid for oid, name in _ECDSA_WITH.items()}

# Group orders (SEC 2 §2.4.2, §2.5.1, §2.6.1), to put ECDSA signatures in
# low-s form for the replay digest.
_CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
    "secp521r1": int(
        "01FF" + "FFFFFFFF" * 7 + "FFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16
    ),
}

_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError)


# MD5 only ever verifies old signatures, so it is not among the hashes of keys.HASHES.
_SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {**HASHES, "md5": hashes.MD5}
_DIGEST_BY_OID = {**HASH_BY_OID, **{oid: name for name, oid in WEAK_HASH_OIDS.items()}}


def _hash(name: str) -> hashes.HashAlgorithm:
    return _SIGNATURE_HASHES[name]()


def _allowed(name: str, oid: str, policy: Policy, weak_ok: bool) -> str:
    if name in policy.signature_hashes or (weak_ok and name in policy.weak_signature_hashes):
        return name
    raise PolicyViolation(f"{name.upper()} signatures are not allowed by the policy", oid=oid)


def digest_name(oid: str, policy: Policy, *, weak_ok: bool = False) -> str:
    """The hash named by a digest algorithm OID, if the policy allows it for signatures.

    ``weak_ok`` admits the hashes of ``Policy.weak_signature_hashes`` too.
    """
    name = _DIGEST_BY_OID.get(oid)
    if name is None:
        raise UnsupportedAlgorithm(f"unsupported digest algorithm {oid}", oid=oid)
    return _allowed(name, oid, policy, weak_ok)


def digest_algorithm(name: str) -> algos.DigestAlgorithm:
    """The AlgorithmIdentifier of a hash, parameters absent (RFC 5754 §2)."""
    return algos.DigestAlgorithm({"algorithm": HASH_OIDS[name]})


def _pss_params(name: str) -> algos.RSASSAPSSParams:
    return algos.RSASSAPSSParams(
        {
            "hash_algorithm": {"algorithm": HASH_OIDS[name]},
            "mask_gen_algorithm": {"algorithm": OID_MGF1, "parameters": {"algorithm": HASH_OIDS[name]}},
            "salt_length": _hash(name).digest_size,
        }
    )


def sign(key: SigningKey, data: bytes, *, digest: str, rsa_padding: str) -> tuple[algos.SignedDigestAlgorithm, bytes]:
    """Sign ``data``; return the signatureAlgorithm identifier and the signature value."""
    if digest not in HASH_OIDS:
        raise ValueError(f"unknown digest {digest!r}")
    if isinstance(key, rsa.RSAPrivateKey):
        if rsa_padding == "pkcs1v15":
            alg = algos.SignedDigestAlgorithm({"algorithm": OID_RSA_ENCRYPTION, "parameters": core.Null()})
            return alg, key.sign(data, padding.PKCS1v15(), _hash(digest))
        if rsa_padding == "pss":
            size = _hash(digest).digest_size
            scheme = padding.PSS(mgf=padding.MGF1(_hash(digest)), salt_length=size)
            alg = algos.SignedDigestAlgorithm({"algorithm": OID_RSASSA_PSS, "parameters": _pss_params(digest)})
            return alg, key.sign(data, scheme, _hash(digest))
        raise ValueError(f"unknown RSA signature padding {rsa_padding!r}")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        # RFC 5758 §3.2: ecdsa-with-SHA* carries no parameters.
        alg = algos.SignedDigestAlgorithm({"algorithm": _ECDSA_OIDS[digest]})
        return alg, key.sign(data, ec.ECDSA(_hash(digest)))
    raise TypeError(f"cannot sign with a {type(key).__name__}")


def _check_hash(named: str, digest: str, what: str) -> None:
    if named != digest:
        raise BadSignature(f"the {what} names {named.upper()} but the digest algorithm is {digest.upper()}")


def _pss_scheme(parameters: core.Asn1Value, digest: str, policy: Policy, weak_ok: bool) -> padding.PSS:
    try:
        params = algos.RSASSAPSSParams.load(parameters.dump()) if parameters.dump() else algos.RSASSAPSSParams({})
        hash_oid = params["hash_algorithm"]["algorithm"].dotted
        mgf = params["mask_gen_algorithm"]
        mgf_oid = mgf["algorithm"].dotted
        mgf_hash_oid = mgf["parameters"]["algorithm"].dotted
        salt = int(params["salt_length"].native)
        trailer = params["trailer_field"].native
    except _ASN1_ERRORS as exc:
        raise CMSParseError("malformed RSASSA-PSS parameters") from exc
    if mgf_oid != OID_MGF1:
        raise UnsupportedAlgorithm(f"unsupported PSS mask generation function {mgf_oid}", oid=mgf_oid)
    if trailer not in ("trailer_field_bc", 1):
        raise UnsupportedAlgorithm("unsupported PSS trailer field")
    # RFC 4056 §3: the PSS hash is the SignerInfo's digest algorithm.
    _check_hash(digest_name(hash_oid, policy, weak_ok=weak_ok), digest, "PSS hash")
    mgf_hash = digest_name(mgf_hash_oid, policy, weak_ok=weak_ok)
    if salt < 0:
        raise CMSParseError("negative PSS salt length")
    return padding.PSS(mgf=padding.MGF1(_hash(mgf_hash)), salt_length=salt)


def verify(
    public_key: object,
    algorithm: algos.SignedDigestAlgorithm,
    digest: str,
    signature: bytes,
    *,
    data: bytes | None = None,
    prehashed: bytes | None = None,
    policy: Policy,
    weak_ok: bool = False,
) -> str:
    """Check ``signature`` over ``data`` (or over a precomputed ``digest`` hash).

    ``weak_ok`` admits the hashes of ``Policy.weak_signature_hashes`` (see ``digest_name``).

    Returns the name of the signature scheme (``rsa-pkcs1v15``, ``rsa-pss``,
    ``ecdsa``). Raises ``BadSignature`` when it does not verify or the key
    does not fit the algorithm, ``UnsupportedAlgorithm``/``PolicyViolation``
    for what is not implemented or not allowed.
    """
    if (data is None) == (prehashed is None):
        raise TypeError("give exactly one of data and prehashed")
    try:
        oid = algorithm["algorithm"].dotted
        parameters = algorithm["parameters"]
    except _ASN1_ERRORS as exc:
        raise CMSParseError("malformed signature algorithm") from exc
    algo: hashes.HashAlgorithm | utils.Prehashed = (
        utils.Prehashed(_hash(digest)) if prehashed is not None else _hash(digest)
    )
    message = prehashed if prehashed is not None else data
    assert message is not None
    if oid == OID_RSA_ENCRYPTION or oid in _RSA_WITH or oid == OID_RSASSA_PSS:
        if oid in _RSA_WITH:
            _check_hash(_allowed(_RSA_WITH[oid], oid, policy, weak_ok), digest, "signature algorithm")
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise BadSignature("an RSA signature, but the signer's certificate holds no RSA key")
        if public_key.key_size < policy.min_rsa_bits:
            raise PolicyViolation(f"RSA signing key of {public_key.key_size} bits is below the policy minimum")
        if oid == OID_RSASSA_PSS:
            scheme: padding.AsymmetricPadding = _pss_scheme(parameters, digest, policy, weak_ok)
            name = "rsa-pss"
        else:
            scheme, name = padding.PKCS1v15(), "rsa-pkcs1v15"
        try:
            public_key.verify(signature, message, scheme, algo)
        except InvalidSignature:
            raise BadSignature("the signature does not verify with the signer's key") from None
        return name
    if oid in _ECDSA_WITH or oid == OID_EC_PUBLIC_KEY:
        if oid in _ECDSA_WITH:
            _check_hash(_allowed(_ECDSA_WITH[oid], oid, policy, weak_ok), digest, "signature algorithm")
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise BadSignature("an ECDSA signature, but the signer's certificate holds no EC key")
        if public_key.curve.name not in policy.curves:
            raise PolicyViolation(f"curve {public_key.curve.name} is not allowed by the policy")
        try:
            public_key.verify(signature, message, ec.ECDSA(algo))
        except InvalidSignature:
            raise BadSignature("the signature does not verify with the signer's key") from None
        return "ecdsa"
    raise UnsupportedAlgorithm(f"unsupported signature algorithm {oid}", oid=oid)


def signature_digest(public_key: object, signature: bytes) -> bytes:
    """SHA-256 of the signature value in a form nobody but the signer can vary.

    An ECDSA signature (r, s) is just as valid as (r, n - s), so anyone
    could turn a copied message into one with another signature value;
    the digest is therefore taken over the low-s form. RSA values are
    left-padded to the modulus size.
    """
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        order = _CURVE_ORDERS.get(public_key.curve.name)
        if order is not None:
            try:
                r, s = utils.decode_dss_signature(signature)
            except ValueError:
                return hashlib.sha256(signature).digest()
            size = (order.bit_length() + 7) // 8
            s = min(s, order - s)
            return hashlib.sha256(r.to_bytes(size, "big") + s.to_bytes(size, "big")).digest()
    if isinstance(public_key, rsa.RSAPublicKey):
        size = (public_key.key_size + 7) // 8
        return hashlib.sha256(signature.rjust(size, b"\0")).digest()
    return hashlib.sha256(signature).digest()
