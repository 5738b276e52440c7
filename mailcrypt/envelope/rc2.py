"""RC2-CBC decryption (RFC 2268) for old mail: any key length, any effective key size.

Old Outlook and OpenSSL versions encrypted mail with RC2 at 40, 64 or 128
effective key bits (RFC 3370 §5.2). cryptography's ``decrepit`` RC2 takes
only 128-bit keys with 128 effective bits, so that case uses it and every
other case this module's own implementation of RFC 2268, which is slow
(pure Python) but only ever sees archived mail.

``RC2CBCDecryptor`` has the ``update``/``finalize`` shape of a cryptography
``CipherContext``: ciphertext in, plaintext out, padding left to the caller.
``effective_bits`` decodes the rc2ParameterVersion of RFC 2268 §6.

What it won't do: encrypt (mailcrypt never writes RC2), or judge padding.
It is not constant-time; RC2 at these key sizes protects nothing that a
timing difference could still reveal.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import RC2
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, modes

__all__ = ["RC2CBCDecryptor", "effective_bits", "rc2_cbc_decryptor"]

BLOCK = 8

# RFC 2268 §2: PITABLE, a permutation of 0..255 based on the digits of pi.
_PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad"
)

# RFC 2268 §6 (and RFC 3370 §5.2): rc2ParameterVersion for the effective key
# sizes mail uses; a version of 256 or more is the number of bits itself.
_VERSION_BITS = {160: 40, 120: 64, 58: 128}


def effective_bits(version: int | None) -> int:
    """The effective key bits an RC2CBCParameter's version stands for.

    None is the RFC 2268 §6 form that carries only the IV: 32 bits.
    Raises ``ValueError`` for a version that names another size.
    """
    if version is None:
        return 32
    if version in _VERSION_BITS:
        return _VERSION_BITS[version]
    if 256 <= version <= 1024:
        return version
    raise ValueError(f"RC2 parameter version {version} names an effective key size mailcrypt does not read")


def _expand(key: bytes, bits: int) -> list[int]:
    """The 64 16-bit subkeys of RFC 2268 §2 for ``key`` at ``bits`` effective bits."""
    length = len(key)
    table = bytearray(128)
    table[:length] = key
    for i in range(length, 128):
        table[i] = _PITABLE[(table[i - 1] + table[i - length]) & 0xFF]
    t8 = (bits + 7) // 8
    tm = 0xFF >> (8 * t8 - bits)
    table[128 - t8] = _PITABLE[table[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        table[i] = _PITABLE[table[i + 1] ^ table[i + t8]]
    return [table[2 * i] | table[2 * i + 1] << 8 for i in range(64)]


def _decrypt_block(k: list[int], block: bytes) -> bytes:
    """RFC 2268 §4: five r-mixing rounds, an r-mashing, six, an r-mashing, five."""
    r0, r1, r2, r3 = (block[0] | block[1] << 8, block[2] | block[3] << 8, block[4] | block[5] << 8,
                      block[6] | block[7] << 8)
    j = 63
    for rnd in range(16):
        r3 = (((r3 >> 5) | (r3 << 11)) - k[j] - (r2 & r1) - (~r2 & r0)) & 0xFFFF
        r2 = (((r2 >> 3) | (r2 << 13)) - k[j - 1] - (r1 & r0) - (~r1 & r3)) & 0xFFFF
        r1 = (((r1 >> 2) | (r1 << 14)) - k[j - 2] - (r0 & r3) - (~r0 & r2)) & 0xFFFF
        r0 = (((r0 >> 1) | (r0 << 15)) - k[j - 3] - (r3 & r2) - (~r3 & r1)) & 0xFFFF
        j -= 4
        if rnd in (4, 10):
            r3 = (r3 - k[r2 & 63]) & 0xFFFF
            r2 = (r2 - k[r1 & 63]) & 0xFFFF
            r1 = (r1 - k[r0 & 63]) & 0xFFFF
            r0 = (r0 - k[r3 & 63]) & 0xFFFF
    return bytes((r0 & 0xFF, r0 >> 8, r1 & 0xFF, r1 >> 8, r2 & 0xFF, r2 >> 8, r3 & 0xFF, r3 >> 8))


class RC2CBCDecryptor:
    """RC2 in CBC mode, decrypting whole blocks as they arrive (the pure-Python path)."""

    def __init__(self, key: bytes, iv: bytes, bits: int) -> None:
        if not 1 <= len(key) <= 128:
            raise ValueError("an RC2 key has 1 to 128 octets")
        if not 1 <= bits <= 1024:
            raise ValueError("RC2 effective key bits lie between 1 and 1024")
        if len(iv) != BLOCK:
            raise ValueError("the RC2 IV is 8 octets")
        self._k = _expand(key, bits)
        self._previous = iv
        self._rest = b""

    def update(self, data: bytes | memoryview) -> bytes:
        data = self._rest + bytes(data)
        whole = len(data) - len(data) % BLOCK
        self._rest = data[whole:]
        out = bytearray()
        previous = self._previous
        for start in range(0, whole, BLOCK):
            block = data[start : start + BLOCK]
            plain = _decrypt_block(self._k, block)
            out += bytes(a ^ b for a, b in zip(plain, previous, strict=True))
            previous = block
        self._previous = previous
        return bytes(out)

    def finalize(self) -> bytes:
        if self._rest:
            raise ValueError("the RC2 ciphertext is not a whole number of blocks")
        return b""


def rc2_cbc_decryptor(key: bytes, iv: bytes, bits: int) -> CipherContext | RC2CBCDecryptor:
    """An RC2-CBC decryptor: cryptography's where it can (128-bit keys at 128 bits), else this module's."""
    if len(key) == 16 and bits == 128:
        return Cipher(RC2(key), modes.CBC(iv)).decryptor()
    return RC2CBCDecryptor(key, iv, bits)
