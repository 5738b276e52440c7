"""The IMAP fetcher: a readable, complete local copy of an encrypted mailbox (DESIGN.md §4).

``mailcrypt fetch`` reads the configured folders over IMAP (``imap``), by UID
and incrementally (``state``, in the one state store), decrypts, verifies
and checks each message for replay (``process``, on ``mailcrypt.mime.unwrap`` and
``mailcrypt.state.replay``), and delivers it atomically into a Maildir++ or an IMAP
folder (``maildir``, ``sink``), in the order STYLE.md §5 sets (``sync``).
``runner`` drives accounts, one pass or ``--watch``, over the folders
``folders`` resolves (LIST patterns); ``progress`` draws the
progress bar and the summary. ``requeue`` re-processes the Quarantine of a
Maildir with the current keys and settings.

The package imports the envelope, MIME, key and store layers, never the proxy.
"""

from mailcrypt.fetch.folders import EXCLUDED_SPECIAL_USE, resolve_folders
from mailcrypt.fetch.process import REASON_EXIT_CODES, MessageProcessor
from mailcrypt.fetch.progress import Counts, Progress, summary_table
from mailcrypt.fetch.requeue import REQUEUE_STEPS, Requeue, RequeueCounts
from mailcrypt.fetch.runner import Fetcher, Plan, account_lock
from mailcrypt.fetch.state import FetchState
from mailcrypt.fetch.sync import STEPS, FolderSync, SyncOptions

__all__ = [
    "EXCLUDED_SPECIAL_USE",
    "REQUEUE_STEPS",
    "Requeue",
    "RequeueCounts",
    "account_lock",
    "STEPS",
    "FolderSync",
    "SyncOptions",
    "Counts",
    "FetchState",
    "Fetcher",
    "MessageProcessor",
    "Plan",
    "Progress",
    "REASON_EXIT_CODES",
    "resolve_folders",
    "summary_table",
]
