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

from mailcrypt.keydir.bootstrap import InitResult, init_home
from mailcrypt.keydir.directory import ImportResult, KeyDirectory, RecipientChoice
from mailcrypt.keydir.index import CertificateEntry

__all__ = ["KeyDirectory", "RecipientChoice", "ImportResult", "CertificateEntry", "InitResult", "init_home"]
