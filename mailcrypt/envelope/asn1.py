"""CMS schemas and object identifiers that asn1crypto does not ship.

asn1crypto defines most of RFC 5652; this module adds what S/MIME key
agreement, AES-GCM and RC2 need, and names the OIDs the envelope uses. It holds
schemas and constants only: no logic, no I/O.
"""

from __future__ import annotations

from asn1crypto import cms, core

__all__ = [
    "OID_DATA",
    "OID_ENVELOPED_DATA",
    "OID_AUTH_ENVELOPED_DATA",
    "OID_SIGNED_DATA",
    "OID_RSA_ENCRYPTION",
    "OID_RSAES_OAEP",
    "OID_EC_PUBLIC_KEY",
    "CONTENT_CIPHER_OIDS",
    "CONTENT_CIPHER_BY_OID",
    "OID_RC2_CBC",
    "OID_DES_CBC",
    "OID_DES_EDE3_WRAP",
    "KEY_WRAP_OIDS",
    "KEY_WRAP_BY_OID",
    "ECDH_KDF_OIDS",
    "ECDH_SCHEME_BY_OID",
    "HASH_OIDS",
    "HASH_BY_OID",
    "WEAK_HASH_OIDS",
    "GCMParameters",
    "RC2CBCParameter",
    "ECCCMSSharedInfo",
]

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"  # RFC 5083 §1

OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"  # RSAES-PKCS1-v1_5, RFC 8017
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"  # RFC 4055 §3 / RFC 8017
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"

# RFC 3565 (CBC) and RFC 5084 (GCM) content-encryption algorithms.
CONTENT_CIPHER_OIDS: dict[str, str] = {
    "aes128-cbc": "2.16.840.1.101.3.4.1.2",
    "aes192-cbc": "2.16.840.1.101.3.4.1.22",
    "aes256-cbc": "2.16.840.1.101.3.4.1.42",
    "aes128-gcm": "2.16.840.1.101.3.4.1.6",
    "aes192-gcm": "2.16.840.1.101.3.4.1.26",
    "aes256-gcm": "2.16.840.1.101.3.4.1.46",
}
CONTENT_CIPHER_BY_OID = {oid: name for name, oid in CONTENT_CIPHER_OIDS.items()}
# RFC 3370 §5.1: read-only, for old mail.
CONTENT_CIPHER_BY_OID["1.2.840.113549.3.7"] = "des-ede3-cbc"

# Read-only content ciphers of old mail whose names depend on their parameters
# or which are not capabilities anyone should advertise: RC2-CBC (RFC 3370
# §5.2) and single DES-CBC (OIW, as old clients wrote it).
OID_RC2_CBC = "1.2.840.113549.3.2"
OID_DES_CBC = "1.3.14.3.2.7"

# RFC 3394 AES key wrap as named in RFC 3565 §2.3.2.
KEY_WRAP_OIDS: dict[str, str] = {
    "aes128-wrap": "2.16.840.1.101.3.4.1.5",
    "aes192-wrap": "2.16.840.1.101.3.4.1.25",
    "aes256-wrap": "2.16.840.1.101.3.4.1.45",
}
KEY_WRAP_BY_OID = {oid: name for name, oid in KEY_WRAP_OIDS.items()}
# RFC 3370 §4.3.1 / RFC 3217: the CMS Triple-DES key wrap, read only.
OID_DES_EDE3_WRAP = "1.2.840.113549.1.9.16.3.6"

# RFC 5753 §7.1.4: ephemeral-static ECDH with the X9.63 KDF over the named hash.
ECDH_KDF_OIDS: dict[str, str] = {
    "sha1": "1.3.133.16.840.63.0.2",  # dhSinglePass-stdDH-sha1kdf-scheme
    "sha224": "1.3.132.1.11.0",
    "sha256": "1.3.132.1.11.1",
    "sha384": "1.3.132.1.11.2",
    "sha512": "1.3.132.1.11.3",
}
# The cofactor variants (RFC 5753 §7.1.4) give the same result on the NIST
# prime curves, whose cofactor is 1, so they are read as the standard ones.
_ECDH_COFACTOR_OIDS: dict[str, str] = {
    "1.3.133.16.840.63.0.3": "sha1",
    "1.3.132.1.14.0": "sha224",
    "1.3.132.1.14.1": "sha256",
    "1.3.132.1.14.2": "sha384",
    "1.3.132.1.14.3": "sha512",
}
ECDH_SCHEME_BY_OID: dict[str, str] = {oid: h for h, oid in ECDH_KDF_OIDS.items()} | _ECDH_COFACTOR_OIDS

HASH_OIDS: dict[str, str] = {
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
HASH_BY_OID = {oid: name for name, oid in HASH_OIDS.items()}
# Digests of old signatures only, never written (RFC 8551 §2.1 says not to use MD5).
WEAK_HASH_OIDS: dict[str, str] = {"md5": "1.2.840.113549.2.5"}


class GCMParameters(core.Sequence):
    """RFC 5084 §3.2: the nonce and the ICV (tag) length of AES-GCM."""

    _fields = [
        ("aes_nonce", core.OctetString),
        ("aes_icv_len", core.Integer, {"default": 12}),
    ]


class RC2CBCParameter(core.Sequence):
    """RFC 3370 §5.2: the effective key size (encoded per RFC 2268 §6) and the IV of RC2-CBC."""

    _fields = [
        ("rc2_parameter_version", core.Integer),
        ("iv", core.OctetString),
    ]


class ECCCMSSharedInfo(core.Sequence):
    """RFC 5753 §7.2: the SharedInfo input to the X9.63 KDF."""

    _fields = [
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]
