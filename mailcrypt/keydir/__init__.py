"""The key directory: recipient certificates by address, our own identities, validation.

The package is split by concept:

- ``directory``: ``KeyDirectory``, import, list, lookup, export, remove, and
  the two questions the commands ask (``recipients_for``, ``identities``);
- ``validate``: the certificate checks (dates, key, usage, address, chain);
- ``identities``: our own keys, encrypted at rest, PKCS#12 import;
- ``index``: the SQLite index that makes listing fast;
- ``storage``: the file layout and atomic writes;
- ``files``: what kind of file ``keys import`` was given;
- ``bootstrap``: ``init_home`` for ``mailcrypt init``.
"""

from typing import TYPE_CHECKING

from mailcrypt.lazy import exports

# The names below are imported when first used (mailcrypt.lazy); mypy,
# import-linter and readers see them here.
if TYPE_CHECKING:
    from mailcrypt.keydir.bootstrap import InitResult, init_home
    from mailcrypt.keydir.directory import ImportResult, KeyDirectory, RecipientChoice
    from mailcrypt.keydir.harvesting import advertised, harvest
    from mailcrypt.keydir.index import CertificateEntry
    from mailcrypt.keydir.keyfiles import (
        PASSPHRASE_ENV,
        certificates_for,
        load_certificates,
        load_key_pair,
        load_pkcs12,
        passphrase_from,
    )
    from mailcrypt.keydir.keygen import (
        MAX_DAYS,
        generate_identity,
        self_signed_certificate,
        write_certificate,
        write_private_key,
    )
    from mailcrypt.keydir.passphrase import PassphraseSource

__all__ = [
    "KeyDirectory",
    "RecipientChoice",
    "ImportResult",
    "CertificateEntry",
    "InitResult",
    "init_home",
    "MAX_DAYS",
    "PASSPHRASE_ENV",
    "PassphraseSource",
    "advertised",
    "certificates_for",
    "generate_identity",
    "harvest",
    "load_certificates",
    "load_key_pair",
    "load_pkcs12",
    "passphrase_from",
    "write_certificate",
    "write_private_key",
    "self_signed_certificate",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, __file__)
