"""``python -m proxy``: the same as ``mailcrypt proxy`` (see ``mailcrypt/cli/proxy.py``)."""

from __future__ import annotations

import sys

from mailcrypt.cli import main

if __name__ == "__main__":
    sys.exit(main(["proxy", *sys.argv[1:]]))
