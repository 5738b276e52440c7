"""The MIME layer: RFC 5322 messages to S/MIME messages and back (DESIGN.md §4).

- ``enveloped``: encrypt a message (header protection, CRLF canonicalisation),
  streamed, and decrypt an ``application/pkcs7-mime`` one to bytes;
- ``plaintext``: decrypt a large message into a file that nobody sees
  before its integrity and signatures are checked (``decrypt_file``);
- ``signed``: multipart/signed and signed-data messages, made and read;
- ``pipeline``: the one sign-then-encrypt pipeline of outgoing mail
  (``sign_message_parts``, then ``encrypt_stream`` over ``ChainReader``);
- ``unwrap``: nested signed/enveloped layers in any order, verified;
- ``headers``: header fields, protected headers (RFC 9788), addresses.

It imports the envelope and certificate layers below it, never the key
directory, the fetcher or the proxy. The names below are its API; the
modules are its private parts.
"""

from typing import TYPE_CHECKING

from mailcrypt.lazy import exports

# The names below are imported when first used (mailcrypt.lazy); mypy,
# import-linter and readers see them here.
if TYPE_CHECKING:
    from mailcrypt.mime.enveloped import (
        EncryptionOptions,
        decrypt_message,
        encrypt_message,
        encrypt_stream,
        recipient_addresses,
        sender_address,
    )
    from mailcrypt.mime.headers import (
        HEADER_LIMIT,
        Field,
        addresses_in,
        content_type,
        protect,
        read_header_block,
        received_time,
        sendable_fields,
        split_fields,
    )
    from mailcrypt.mime.pipeline import INLINE_LIMIT, ChainReader, encrypts_inline, signs_inline
    from mailcrypt.mime.plaintext import Plaintext, Verification, decrypt_file
    from mailcrypt.mime.signed import (
        SignedMessage,
        SigningOptions,
        message_id_field,
        sign_entity,
        sign_message,
        sign_message_parts,
    )
    from mailcrypt.mime.unwrap import Layer, Unwrapped, unwrap_message

__all__ = [
    "addresses_in",
    "ChainReader",
    "content_type",
    "decrypt_file",
    "decrypt_message",
    "encrypt_message",
    "EncryptionOptions",
    "encrypt_stream",
    "encrypts_inline",
    "Field",
    "HEADER_LIMIT",
    "INLINE_LIMIT",
    "Layer",
    "message_id_field",
    "Plaintext",
    "protect",
    "read_header_block",
    "received_time",
    "recipient_addresses",
    "sendable_fields",
    "sender_address",
    "sign_entity",
    "sign_message",
    "sign_message_parts",
    "SignedMessage",
    "SigningOptions",
    "signs_inline",
    "split_fields",
    "unwrap_message",
    "Unwrapped",
    "Verification",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, __file__)
