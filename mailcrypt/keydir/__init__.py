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
    "advertised",
    "CertificateEntry",
    "certificates_for",
    "generate_identity",
    "harvest",
    "ImportResult",
    "init_home",
    "InitResult",
    "KeyDirectory",
    "load_certificates",
    "load_key_pair",
    "load_pkcs12",
    "MAX_DAYS",
    "PASSPHRASE_ENV",
    "passphrase_from",
    "PassphraseSource",
    "RecipientChoice",
    "self_signed_certificate",
    "write_certificate",
    "write_private_key",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, __file__)
