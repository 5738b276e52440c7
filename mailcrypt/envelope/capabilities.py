"""The SMIMECapabilities signed attribute: what we announce and what we read.

RFC 8551 §2.5.2: a signer lists, in order of preference, the algorithms it
can decrypt. mailcrypt announces what its envelope reader implements (AES-GCM
and AES-CBC, RSA-OAEP with SHA-256 and RSA PKCS#1 v1.5, ECDH with the SHA-256,
SHA-384, SHA-512 and SHA-1 KDFs and AES key wrap); from other people's mail it
reads the entries it knows into short names the profile choice can use
(DESIGN.md §1: ``modern`` only for recipients known to support it).

Names read: content ciphers as in ``policy.CONTENT_CIPHERS`` (``aes256-gcm``),
``des-ede3-cbc``, ``rsa-pkcs1v15``, ``rsa-oaep-<hash>`` (RFC 3560 §5; the
default parameters are SHA-1), ``ecdh-<hash>kdf`` with ``-<wrap>`` when a key
wrap is named (RFC 5753 §7.1.4, §8), and key wraps (``aes256-wrap``). Unknown
entries are skipped. This module neither signs nor decides anything.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from asn1crypto import algos, cms, core

from mailcrypt.envelope.asn1 import (
    CONTENT_CIPHER_BY_OID,
    CONTENT_CIPHER_OIDS,
    ECDH_KDF_OIDS,
    ECDH_SCHEME_BY_OID,
    HASH_BY_OID,
    HASH_OIDS,
    KEY_WRAP_BY_OID,
    KEY_WRAP_OIDS,
    OID_RSA_ENCRYPTION,
    OID_RSAES_OAEP,
)
from mailcrypt.policy import Profile

__all__ = [
    "OUR_CAPABILITIES",
    "capabilities_attribute",
    "parse_capabilities",
    "supports_profile",
    "announces_key_agreement",
]

_MGF1 = "1.2.840.113549.1.1.8"

#: What mailcrypt announces, most preferred first.
OUR_CAPABILITIES: tuple[str, ...] = (
    "aes256-gcm",
    "aes128-gcm",
    "aes256-cbc",
    "aes128-cbc",
    "rsa-oaep-sha256",
    "rsa-pkcs1v15",
    "ecdh-sha256kdf-aes256-wrap",
    "ecdh-sha384kdf-aes256-wrap",
    "ecdh-sha512kdf-aes256-wrap",
    "ecdh-sha1kdf-aes256-wrap",
)


def _capability(name: str) -> cms.SMIMECapabilityIdentifier:
    if name in CONTENT_CIPHER_OIDS:
        # RFC 3565 §4 leaves the parameters of AES-CBC absent; GCM is announced alike.
        return cms.SMIMECapabilityIdentifier({"capability_id": CONTENT_CIPHER_OIDS[name]})
    if name == "rsa-pkcs1v15":
        return cms.SMIMECapabilityIdentifier({"capability_id": OID_RSA_ENCRYPTION, "parameters": core.Null()})
    if name.startswith("rsa-oaep-"):
        hash_oid = HASH_OIDS[name.removeprefix("rsa-oaep-")]
        params = algos.RSAESOAEPParams(
            {
                "hash_algorithm": {"algorithm": hash_oid},
                "mask_gen_algorithm": {"algorithm": _MGF1, "parameters": {"algorithm": hash_oid}},
            }
        )
        return cms.SMIMECapabilityIdentifier({"capability_id": OID_RSAES_OAEP, "parameters": params})
    if name.startswith("ecdh-"):
        kdf, _, wrap = name.removeprefix("ecdh-").partition("kdf-")
        # RFC 5753 §8: the parameters name the key wrap algorithm.
        wrap_id = algos.AlgorithmIdentifier({"algorithm": KEY_WRAP_OIDS[wrap]})
        return cms.SMIMECapabilityIdentifier({"capability_id": ECDH_KDF_OIDS[kdf], "parameters": wrap_id})
    raise ValueError(f"unknown capability {name!r}")


def capabilities_attribute(names: Iterable[str] = OUR_CAPABILITIES) -> cms.CMSAttribute:
    """The smimeCapabilities signed attribute (RFC 8551 §2.5.2) listing ``names``."""
    # Built once per list: encoding it afresh cost more than the RSA signature.
    return cms.CMSAttribute.load(_capabilities_der(tuple(names)))


@functools.lru_cache(maxsize=16)
def _capabilities_der(names: tuple[str, ...]) -> bytes:
    caps = cms.SMIMECapabilites([_capability(n) for n in names])
    return cms.CMSAttribute({"type": "smime_capabilities", "values": [caps]}).dump()


def _name(capability: cms.SMIMECapabilityIdentifier) -> str | None:
    oid = capability["capability_id"].dotted
    params = capability["parameters"]
    raw = params.dump() if params is not None else b""
    if oid in CONTENT_CIPHER_BY_OID:
        return CONTENT_CIPHER_BY_OID[oid]
    if oid in KEY_WRAP_BY_OID:
        return KEY_WRAP_BY_OID[oid]
    if oid == OID_RSA_ENCRYPTION:
        return "rsa-pkcs1v15"
    if oid == OID_RSAES_OAEP:
        if not raw or raw == b"\x05\x00":
            return "rsa-oaep-sha1"
        parsed = algos.RSAESOAEPParams.load(raw)
        name = HASH_BY_OID.get(parsed["hash_algorithm"]["algorithm"].dotted)
        return f"rsa-oaep-{name}" if name else None
    if oid in ECDH_SCHEME_BY_OID:
        name = f"ecdh-{ECDH_SCHEME_BY_OID[oid]}kdf"
        if raw and raw != b"\x05\x00":
            wrap = KEY_WRAP_BY_OID.get(algos.AlgorithmIdentifier.load(raw)["algorithm"].dotted)
            if wrap:
                name += f"-{wrap}"
        return name
    return None


def parse_capabilities(values: cms.SetOfSMIMECapabilites) -> tuple[str, ...]:
    """The names of the capabilities we know, in the sender's order, each once.

    An entry that cannot be read is skipped like an unknown one: the
    attribute is advice for choosing algorithms, never a reason to refuse mail.
    """
    names: list[str] = []
    for caps in values:
        for capability in caps:
            try:
                name = _name(capability)
            except (ValueError, TypeError, KeyError, IndexError):
                continue
            if name and name not in names:
                names.append(name)
    return tuple(names)


def supports_profile(capabilities: Iterable[str], profile: Profile, *, key_type: str) -> bool:
    """Whether a correspondent's announced capabilities cover ``profile`` for its key type.

    ``key_type`` is ``rsa`` or ``ec``. RSA needs the content cipher and the
    profile's padding (``rsa-oaep-<hash>`` or ``rsa-pkcs1v15``); EC needs the
    cipher and ECDH with the profile's KDF hash, with any key wrap.
    """
    caps = set(capabilities)
    if profile.cipher not in caps:
        return False
    if key_type == "rsa":
        wanted = "rsa-pkcs1v15" if profile.rsa_padding == "pkcs1v15" else f"rsa-oaep-{profile.oaep_hash}"
        return wanted in caps
    if key_type == "ec":
        prefix = f"ecdh-{profile.ecdh_kdf_hash}kdf"
        return any(c == prefix or c.startswith(prefix + "-") for c in caps)
    raise ValueError(f"unknown key type {key_type!r}")


def announces_key_agreement(capabilities: Iterable[str]) -> bool:
    """Whether a correspondent announced an ECDH key agreement scheme (``ecdh-…``).

    A client that lists one decrypts KeyAgreeRecipientInfos, so it can read
    an envelope holding them beside its own KeyTransRecipientInfo (DESIGN.md
    §1 "Readable by every recipient"). A client that lists none is not known
    to: it may be one that rejects such an envelope as a whole (NSS 3.87).
    """
    return any(c.startswith("ecdh-") for c in capabilities)
