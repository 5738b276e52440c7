"""mailcrypt: S/MIME encryption for ordinary mail clients.

The package is laid out by concept (DESIGN.md §4): ``envelope`` is the pure
CMS core, ``pki`` the certificate judge, ``mime`` the MIME layer, ``state``
and ``config`` the store and the settings, ``keydir`` the key directory,
``fetch`` the IMAP fetcher, ``cli`` the ``mailcrypt`` command (the SMTP
proxy is the ``proxy`` package beside this one). Importing the package
imports nothing heavy, and the package roots import a module only when one
of its names is used (``mailcrypt.lazy``), so a command loads what it runs.
"""

__version__ = "0.1.0"
