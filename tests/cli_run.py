"""Run the ``mailcrypt`` command as a user would: a fresh interpreter, no inherited MAILCRYPT_ settings.

``verify_strictly`` runs ``python -W error -m mailcrypt verify``, so that
any warning the command would print (a library's deprecation notice about a
malformed certificate, say) fails as an error the test can see.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def clean_env(home: Path) -> dict[str, str]:
    """This process's environment without any MAILCRYPT_ variable, and MAILCRYPT_HOME set to ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env["MAILCRYPT_HOME"] = str(home)
    return env


def verify_strictly(message: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """``mailcrypt verify message`` under ``-W error`` with ``home``; its exit status and text output."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "mailcrypt", "verify", str(message)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(home),
        stdin=subprocess.DEVNULL,
    )
