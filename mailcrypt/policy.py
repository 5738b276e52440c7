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

A ``PolicyTable`` holds the administrator's per-recipient settings (DESIGN.md
§4-5): for each address, ``require``, ``opportunistic`` or ``plaintext`` and
the profile to send with, resolved address > domain > default, plus
domain-level gateway certificates and ``mixed_recipient_infos``. It is plain
data too: ``mailcrypt.config`` builds it from the configuration file, the key
directory and the proxy read it. No message header can change it.

``readable_together`` and ``readable_envelopes`` hold the rule of DESIGN.md
§1 "Readable by every recipient": older NSS (3.87, Debian's
``libnss3-tools`` and many installed Thunderbirds) rejects a whole envelope
as bad DER when it holds any KeyAgreeRecipientInfo (RFC 5652 §6.2.2, the EC
recipients' kind), so key agreement shares an envelope with a key transport
(RSA) recipient only when that recipient's client is known to read it: by
``mixed_recipient_infos`` or by the ECDH capabilities it announced in
signed mail (RFC 8551 §2.5.2). Which members an envelope has is the
caller's business; these functions only say which may go together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple, Protocol, TypeVar

from mailcrypt.addresses import address_key, domain_key

__all__ = [
    "CONTENT_CIPHERS",
    "LEGACY_CONTENT_CIPHERS",
    "Profile",
    "COMPATIBLE",
    "MODERN",
    "PROFILES",
    "Policy",
    "DEFAULT_POLICY",
    "RECIPIENT_POLICIES",
    "RecipientPolicy",
    "Decision",
    "PolicyTable",
    "common_profile",
    "EnvelopeMember",
    "readable_together",
    "readable_envelopes",
]

#: Content ciphers by name: (mode, key length in bytes). AES-CBC (RFC 3565 §4.1)
#: and AES-GCM (RFC 5084 §3.2) at each AES key length, named ``aes<bits>-<mode>``.
CONTENT_CIPHERS: dict[str, tuple[str, int]] = {
    f"aes{bits}-{mode}": (mode, bits // 8) for mode in ("cbc", "gcm") for bits in (128, 192, 256)
}

#: Read in old mail, never written: RFC 8551 §2.7 leaves receivers free to keep
#: 3DES so that mail from older clients stays readable, and archives hold RC2
#: (RFC 3370 §5.2, the old Outlook and OpenSSL default) and single DES too. The
#: RC2 key length is its effective key size, as OpenSSL makes it.
LEGACY_CONTENT_CIPHERS: dict[str, tuple[str, int]] = {
    "des-ede3-cbc": ("cbc", 24),
    "des-cbc": ("cbc", 8),
    "rc2-40-cbc": ("cbc", 5),
    "rc2-64-cbc": ("cbc", 8),
    "rc2-128-cbc": ("cbc", 16),
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
    #: Hashes accepted as proof in signatures (SignedData and certificate chains).
    #: SHA-1 and MD5 are left out (RFC 8551 §2.1; Thunderbird refuses SHA-1 by default).
    signature_hashes: frozenset[str] = frozenset({"sha224", "sha256", "sha384", "sha512"})
    #: Hashes of old signatures that are read but never accepted as proof: the
    #: signature is checked, the content is delivered, and the message counts as
    #: unsigned (DESIGN.md §2). A hash in neither set is refused outright.
    weak_signature_hashes: frozenset[str] = frozenset({"sha1", "md5"})
    #: Public key algorithms of certificates (signers, issuers, recipients), by the
    #: names of ``mailcrypt.envelope.pubkey.ALGORITHM_NAMES``. DSA is left out: RFC 8551
    #: §2.2 dropped it, and it is refused by its OID before a key object is built.
    public_key_algorithms: frozenset[str] = frozenset({"rsa", "rsassa-pss", "ec", "ed25519", "ed448"})


DEFAULT_POLICY = Policy()


# ------------------------------------------------------------ per-recipient policy

#: What to do for a recipient (DESIGN.md §4): ``require`` refuses a recipient
#: without a usable certificate, ``opportunistic`` encrypts when one exists and
#: sends in the clear otherwise, ``plaintext`` never encrypts.
RECIPIENT_POLICIES = ("require", "opportunistic", "plaintext")


@dataclass(frozen=True)
class RecipientPolicy:
    """The settings of one ``[policy.domains."…"]`` or ``[policy.addresses."…"]`` table.

    ``None`` means "not set here": the value comes from the next level
    (address > domain > default). ``gateway`` is a certificate file used for
    every address of a domain (only domains have one).
    ``mixed_recipient_infos`` True says the recipients' mail clients read an
    envelope that holds key agreement (EC) and key transport (RSA)
    RecipientInfos side by side (see the module docstring).
    """

    policy: str | None = None
    profile: str | None = None
    gateway: Path | None = None
    mixed_recipient_infos: bool | None = None

    def __post_init__(self) -> None:
        if self.policy is not None and self.policy not in RECIPIENT_POLICIES:
            raise ValueError(f"unknown recipient policy {self.policy!r}")
        if self.profile is not None and self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}")
        if self.gateway is not None and not isinstance(self.gateway, Path):
            raise TypeError("gateway must be a pathlib.Path")
        if self.mixed_recipient_infos is not None and not isinstance(self.mixed_recipient_infos, bool):
            raise TypeError("mixed_recipient_infos must be a bool")


class Decision(NamedTuple):
    """What the table says for one address, and why (for the log)."""

    policy: str
    profile: Profile
    reason: str
    #: Certificate file to encrypt to instead of the address's own, if any.
    gateway: Path | None = None
    #: True when the profile is set for this address or its domain; False when it
    #: is the table's default, which capabilities a correspondent advertised in
    #: signed mail may raise to ``modern`` (DESIGN.md §1).
    profile_set: bool = False
    #: True when the administrator says this recipient's client reads envelopes
    #: that mix key agreement with key transport (``mixed_recipient_infos``).
    mixed_recipient_infos: bool = False


@dataclass(frozen=True)
class PolicyTable:
    """Per-recipient policy and profile, resolved address > domain > default.

    ``domains`` is keyed by domain and ``addresses`` by address; keys are
    normalised with ``domain_key``/``address_key`` on construction, so lookups
    follow the RFC 5280 comparison rules. Each of policy and profile is
    resolved on its own: an address that sets only a profile takes its
    policy from its domain or the default. ``mixed_recipient_infos`` is the
    default of that setting (``[policy] mixed_recipient_infos``).
    """

    default: str = "require"
    profile: str = "compatible"
    domains: Mapping[str, RecipientPolicy] = field(default_factory=dict)
    addresses: Mapping[str, RecipientPolicy] = field(default_factory=dict)
    mixed_recipient_infos: bool = False

    def __post_init__(self) -> None:
        if self.default not in RECIPIENT_POLICIES:
            raise ValueError(f"unknown recipient policy {self.default!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}")
        domains = {domain_key(k): v for k, v in self.domains.items()}
        addresses = {address_key(k): v for k, v in self.addresses.items()}
        for value in (*domains.values(), *addresses.values()):
            if not isinstance(value, RecipientPolicy):
                raise TypeError("PolicyTable entries must be RecipientPolicy objects")
        if any(v.gateway is not None for v in addresses.values()):
            raise ValueError("gateway certificates are set per domain, not per address")
        object.__setattr__(self, "domains", MappingProxyType(domains))
        object.__setattr__(self, "addresses", MappingProxyType(addresses))

    def __hash__(self) -> int:
        return hash(
            (
                self.default,
                self.profile,
                tuple(self.domains.items()),
                tuple(self.addresses.items()),
                self.mixed_recipient_infos,
            )
        )

    def decide(self, address: str) -> Decision:
        """The policy, profile and gateway for ``address``, with the reason."""
        if not isinstance(address, str):
            raise TypeError("address must be a str")
        key = address_key(address)
        domain = key.rpartition("@")[2]
        levels = (
            (self.addresses.get(key), f'policy.addresses."{key}"'),
            (self.domains.get(domain), f'policy.domains."{domain}"'),
        )
        policy, policy_from = self.default, "policy.default"
        profile, profile_from = self.profile, "policy.profile"
        mixed, mixed_from = self.mixed_recipient_infos, "policy.mixed_recipient_infos"
        for entry, where in reversed(levels):
            if entry is None:
                continue
            if entry.policy is not None:
                policy, policy_from = entry.policy, where
            if entry.profile is not None:
                profile, profile_from = entry.profile, where
            if entry.mixed_recipient_infos is not None:
                mixed, mixed_from = entry.mixed_recipient_infos, where
        gateway = None
        domain_entry = self.domains.get(domain)
        if domain_entry is not None and domain_entry.gateway is not None:
            gateway = domain_entry.gateway
        reason = f"policy {policy} from {policy_from}, profile {profile} from {profile_from}"
        if gateway is not None:
            reason += f', gateway certificate from policy.domains."{domain}".gateway'
        if mixed:
            reason += f", mixed recipient infos from {mixed_from}"
        return Decision(policy, PROFILES[profile], reason, gateway, profile_from != "policy.profile", mixed)


def common_profile(profiles: Iterable[Profile]) -> Profile:
    """The one profile an envelope for all these recipients can use.

    A message has a single content cipher (DESIGN.md §1), so ``modern`` is
    chosen only when every recipient gets ``modern``; otherwise everyone
    gets ``compatible``. Raises ``ValueError`` for an empty list.
    """
    chosen = list(profiles)
    if not chosen:
        raise ValueError("no recipients")
    if all(p.name == MODERN.name for p in chosen):
        return MODERN
    return COMPATIBLE


# ------------------------------------------------------------ readable by every recipient


class EnvelopeMember(Protocol):
    """One certificate an envelope is encrypted to, as far as the rule below cares."""

    @property
    def key_agreement(self) -> bool:
        """True when its RecipientInfo is a KeyAgreeRecipientInfo (an EC key, RFC 5753)."""
        ...

    @property
    def reads_key_agreement(self) -> bool:
        """True when its client is known to read an envelope that holds a KeyAgreeRecipientInfo."""
        ...


_Member = TypeVar("_Member", bound=EnvelopeMember)


def _reads(member: EnvelopeMember) -> bool:
    # A client that holds an EC key reads key agreement by definition.
    return member.key_agreement or member.reads_key_agreement


def readable_together(members: Iterable[EnvelopeMember]) -> bool:
    """Whether one envelope for all ``members`` is readable by each of them (module docstring).

    It is, when no member needs key agreement (only KeyTransRecipientInfos,
    which every S/MIME client reads), or when every member is known to read it.
    """
    chosen = list(members)
    return not any(m.key_agreement for m in chosen) or all(_reads(m) for m in chosen)


def readable_envelopes(members: Sequence[_Member]) -> list[list[_Member]]:
    """``members`` split into as few envelopes as the rule allows, each readable by all of its members.

    One envelope when ``readable_together`` allows it; otherwise two: the key
    transport members not known to read key agreement, and everyone else
    (the key agreement members and the key transport members known to read
    it). Order is kept within each; an empty ``members`` gives no envelope.
    """
    if not members:
        return []
    if readable_together(members):
        return [list(members)]
    return [[m for m in members if not _reads(m)], [m for m in members if _reads(m)]]
