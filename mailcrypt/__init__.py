"""mailcrypt: S/MIME encryption for ordinary mail clients.

The package is laid out by concept (DESIGN.md §4): ``envelope`` is the pure
CMS core, ``smime`` the MIME layer, ``cli`` the ``mailcrypt`` command.
Importing the package imports nothing heavy, so ``mailcrypt --help`` starts
fast.
"""

__version__ = "0.1.0"
