"""Algorithm profiles (what we send) and policies (what we accept).

A ``Profile`` is the set of choices the sender makes for one envelope: the
content cipher, the RSA padding and the ECDH key-derivation hash. The two
named profiles come from DESIGN.md §1: ``COMPATIBLE`` (the default, readable
by Thunderbird, Outlook, Apple Mail and gpgsm) and ``MODERN``
(AuthEnvelopedData with AES-GCM, RSA-OAEP, SHA-256 KDF).

A ``Policy`` is the frozen list of what the envelope core may produce or
accept at all; anything not listed is rejected with ``PolicyViolation``. The
policy is data passed to every call; this module reads no configuration and
decides nothing about fallbacks, which belong to the proxy and the fetcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = [
    "CONTENT_CIPHERS",
    "LEGACY_CONTENT_CIPHERS",
    "Profile",
    "COMPATIBLE",
    "MODERN",
    "PROFILES",
    "Policy",
    "DEFAULT_POLICY",
]

#: Content ciphers by name: (mode, key length in bytes).
CONTENT_CIPHERS: dict[str, tuple[str, int]] = {
    "aes128-cbc": ("cbc", 16),
    "aes192-cbc": ("cbc", 24),
    "aes256-cbc": ("cbc", 32),
    "aes128-gcm": ("gcm", 16),
    "aes192-gcm": ("gcm", 24),
    "aes256-gcm": ("gcm", 32),
}

#: Read in old mail, never written: RFC 8551 §2.7 leaves receivers free to keep
#: 3DES so that mail from older clients stays readable.
LEGACY_CONTENT_CIPHERS: dict[str, tuple[str, int]] = {
    "des-ede3-cbc": ("cbc", 24),
}

_PADDINGS = ("pkcs1v15", "oaep")
_HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")


@dataclass(frozen=True)
class Profile:
    """The algorithms a sender uses for one envelope.

    ``cipher`` decides the content type as well: a GCM cipher produces
    AuthEnvelopedData (RFC 5083/5084), a CBC cipher EnvelopedData (RFC 5652).
    """

    name: str
    cipher: str = "aes256-cbc"
    rsa_padding: str = "pkcs1v15"
    oaep_hash: str = "sha256"
    ecdh_kdf_hash: str = "sha1"
    key_wrap: str = "aes256-wrap"

    def __post_init__(self) -> None:
        if self.cipher not in CONTENT_CIPHERS:
            raise ValueError(f"unknown content cipher {self.cipher!r}")
        if self.rsa_padding not in _PADDINGS:
            raise ValueError(f"unknown RSA padding {self.rsa_padding!r}")
        if self.oaep_hash not in _HASHES or self.ecdh_kdf_hash not in _HASHES:
            raise ValueError("unknown hash in profile")
        if self.key_wrap not in ("aes128-wrap", "aes192-wrap", "aes256-wrap"):
            raise ValueError(f"unknown key wrap {self.key_wrap!r}")

    @property
    def authenticated(self) -> bool:
        """True when the content cipher is an AEAD (AuthEnvelopedData)."""
        return CONTENT_CIPHERS[self.cipher][0] == "gcm"

    def with_options(self, **changes: str) -> Profile:
        """A copy with some choices changed (``--cipher``, ``--rsa-padding``)."""
        return replace(self, **changes)


#: What every S/MIME client reads: EnvelopedData AES-256-CBC, RSA PKCS#1 v1.5,
#: ECDH with the SHA-1 X9.63 KDF and AES-256 key wrap (DESIGN.md §1).
COMPATIBLE = Profile("compatible")

#: AuthEnvelopedData AES-256-GCM, RSA-OAEP SHA-256/MGF1-SHA-256, ECDH SHA-256 KDF.
MODERN = Profile(
    "modern", cipher="aes256-gcm", rsa_padding="oaep", oaep_hash="sha256", ecdh_kdf_hash="sha256"
)

PROFILES: dict[str, Profile] = {p.name: p for p in (COMPATIBLE, MODERN)}


@dataclass(frozen=True)
class Policy:
    """What the envelope core may produce and accept. Anything else is refused."""

    content_ciphers: frozenset[str] = field(
        default_factory=lambda: frozenset(CONTENT_CIPHERS) | frozenset(LEGACY_CONTENT_CIPHERS)
    )
    rsa_paddings: frozenset[str] = frozenset(_PADDINGS)
    oaep_hashes: frozenset[str] = frozenset(_HASHES)
    ecdh_kdf_hashes: frozenset[str] = frozenset(_HASHES)
    curves: frozenset[str] = frozenset({"secp256r1", "secp384r1", "secp521r1"})
    min_rsa_bits: int = 2048
    #: Refuse EnvelopedData (unauthenticated CBC) on input when True.
    require_authenticated: bool = False


DEFAULT_POLICY = Policy()
