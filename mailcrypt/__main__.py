"""``python -m mailcrypt``: the same as the ``mailcrypt`` command."""

import sys

from mailcrypt.cli import main

sys.exit(main())
