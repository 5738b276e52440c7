"""Key-encryption-key unwrapping for key agreement: AES key wrap and the CMS Triple-DES key wrap.

AES key wrap (RFC 3394, named in RFC 3565 §2.3.2) is what mailcrypt writes
and reads. The CMS Triple-DES key wrap (RFC 3217 §3, OID
``1.2.840.113549.1.9.16.3.6``, RFC 3370 §4.3.1) is what ``openssl cms
-encrypt`` chooses for an EC recipient when no cipher is named, and what old
clients sent with 3DES content: it is unwrapped here and never written.

What it won't do: derive the key-encryption key (``ecdh.py``), or wrap with 3DES.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from mailcrypt.errors import DecryptionFailed

__all__ = ["KEK_BYTES", "unwrap_key"]

#: The key-encryption key length of each wrap algorithm, in octets.
KEK_BYTES = {"aes128-wrap": 16, "aes192-wrap": 24, "aes256-wrap": 32, "des-ede3-wrap": 24}

# RFC 3217 §3.2 step 2: the fixed IV of the first decryption.
_3DES_WRAP_IV = bytes.fromhex("4adda22c79e82105")
_BLOCK = 8


def _3des_cbc_decrypt(kek: bytes, iv: bytes, data: bytes) -> bytes:
    ctx = Cipher(TripleDES(kek), modes.CBC(iv)).decryptor()
    return ctx.update(data) + ctx.finalize()


def _des_ede3_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 3217 §3.2, the Triple-DES key unwrap; raises ``DecryptionFailed``."""
    # Step 1: a 168-bit key with its checksum and IV makes 40 octets; RFC 3217
    # wraps only 3DES keys, but the algorithm works on any whole number of blocks.
    if len(wrapped) % _BLOCK or len(wrapped) < 3 * _BLOCK:
        raise DecryptionFailed("the 3DES-wrapped content key has an impossible length")
    # Steps 2-4: decrypt with the fixed IV, reverse the octets, split off the IV.
    temp2 = _3des_cbc_decrypt(kek, _3DES_WRAP_IV, wrapped)[::-1]
    iv, temp1 = temp2[:_BLOCK], temp2[_BLOCK:]
    # Steps 5-6: decrypt with that IV; the last block is the checksum.
    cek_icv = _3des_cbc_decrypt(kek, iv, temp1)
    cek, icv = cek_icv[:-_BLOCK], cek_icv[-_BLOCK:]
    # Step 7: the CMS key checksum is the first eight octets of SHA-1 over the key (RFC 3217 §2).
    if not hmac.compare_digest(hashlib.sha1(cek).digest()[:_BLOCK], icv):
        raise DecryptionFailed("the 3DES-wrapped content key does not unwrap with this key")
    return cek


def unwrap_key(wrap_name: str, kek: bytes, wrapped: bytes) -> bytes:
    """The content key ``wrapped`` with ``kek`` by ``wrap_name`` (a key of ``KEK_BYTES``).

    Raises ``DecryptionFailed`` when it does not unwrap (wrong key or altered).
    """
    if wrap_name == "des-ede3-wrap":
        return _des_ede3_unwrap(kek, wrapped)
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise DecryptionFailed("the wrapped content key does not unwrap with this EC key") from None
