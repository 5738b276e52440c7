"""The IMAP fetcher: a readable, complete local copy of an encrypted mailbox (DESIGN.md §4).

``mailcrypt fetch`` reads the configured folders over IMAP (``imap``), by UID
and incrementally (``state``, in the one state store), decrypts, verifies
and checks each message for replay (``process``, on ``mailcrypt.unwrap`` and
``mailcrypt.replay``), and delivers it atomically into a Maildir++ or an IMAP
folder (``maildir``, ``sink``), in the order STYLE.md §5 sets (``sync``).
``runner`` drives accounts, one pass or ``--watch``; ``progress`` draws the
progress bar and the summary.

The package imports the envelope, MIME, key and store layers, never the proxy.
"""

from mailcrypt.fetch.sync import STEPS, FolderSync, SyncOptions

__all__ = ["STEPS", "FolderSync", "SyncOptions"]
