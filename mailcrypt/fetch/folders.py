"""Which server folders an account's ``folders`` stand for: names as written, patterns through LIST.

An entry with an IMAP wildcard (``*`` any characters, ``%`` any but the
hierarchy delimiter; RFC 3501 §6.3.8) is a pattern: ``["*"]`` is every
folder, ``["Archive/*"]`` every folder below Archive. In a pattern ``/``
stands for the server's hierarchy delimiter, whatever it is (Dovecot's
Maildir++ default is ``.``, so ``Archive/*`` asks for ``Archive.*``): one
configuration then means the same on every server, as mail clients show
the hierarchy with ``/``. Any other entry is a folder name as the server
spells it, fetched as it is.

What a pattern leaves out (a name written out is always fetched):

- folders that cannot be selected (``\\Noselect``, ``\\NonExistent``; RFC 3501
  §7.2.2, RFC 5258 §3.4): they hold no messages;
- the special-use folders of ``EXCLUDED_SPECIAL_USE`` (RFC 6154 §2), see there;
- the target folder of an ``imap:FOLDER`` target and everything below it,
  which hold what the fetcher itself wrote (decrypted mail, the quarantine).

What it won't do: open the folders (``sync``) or decide what happens when one
cannot be opened (``runner``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailcrypt.fetch.imap import IMAPConnection, ListedFolder

__all__ = ["EXCLUDED_SPECIAL_USE", "is_pattern", "resolve_folders", "select_listed"]

log = logging.getLogger(__name__)

#: Special-use attributes (RFC 6154 §2, RFC 8457) whose folders a pattern leaves out.
#:
#: - ``\\Junk`` and ``\\Trash``: mail the user or the server has thrown away; fetching
#:   it would put spam and deleted mail back into the local Maildir, which never deletes.
#: - ``\\Drafts``: unfinished messages of the user's own, saved again (as a new
#:   message) at every autosave: each version would pile up in the Maildir.
#: - ``\\All``, ``\\Flagged`` and ``\\Important``: virtual folders (Gmail's "All Mail",
#:   "Starred", "Important") that show again messages kept in other folders; fetched
#:   beside those, every message would arrive twice and its second copy be
#:   quarantined as a replay.
#:
#: Kept: ``\\Sent`` (the user's sent mail, encrypted to their own certificate too, so
#: that they can read it: DESIGN.md §1) and ``\\Archive`` (mail kept on purpose).
EXCLUDED_SPECIAL_USE = frozenset({"\\junk", "\\trash", "\\drafts", "\\all", "\\flagged", "\\important"})

# RFC 3501 §7.2.2 and RFC 5258 §3.4: no messages can be selected there.
_UNSELECTABLE = frozenset({"\\noselect", "\\nonexistent"})

_WILDCARDS = ("*", "%")


def is_pattern(entry: str) -> bool:
    """Whether a ``folders`` entry holds an IMAP LIST wildcard."""
    return any(w in entry for w in _WILDCARDS)


@dataclass(frozen=True)
class _Below:
    """A folder and everything below it, in the server's spelling."""

    name: str

    def holds(self, folder: str, delimiter: str | None) -> bool:
        if folder == self.name:
            return True
        return delimiter is not None and folder.startswith(self.name + delimiter)


def select_listed(listed: Iterable[ListedFolder], *, skip: Sequence[str] = ()) -> list[str]:
    """The names of ``listed`` a pattern keeps (module docstring), INBOX first, then in name order.

    ``skip`` names folders left out with everything below them.
    """
    below = [_Below(name) for name in skip]
    kept = []
    for folder in listed:
        if folder.attributes & _UNSELECTABLE:
            continue
        special = folder.attributes & EXCLUDED_SPECIAL_USE
        if special:
            log.info("folder %r left out of the pattern: special-use %s", folder.name, ", ".join(sorted(special)))
            continue
        if any(b.holds(folder.name, folder.delimiter) for b in below):
            continue
        kept.append(folder.name)
    # LIST answers in no particular order (RFC 3501 §6.3.8); a fixed order makes runs comparable.
    return sorted(set(kept), key=lambda name: (name.upper() != "INBOX", name))


def resolve_folders(conn: IMAPConnection, entries: Sequence[str], *, skip: Sequence[str] = ()) -> list[str]:
    """The folders ``entries`` stand for on this server, each once, in the order of the entries.

    Names are kept as written; each pattern becomes the folders LIST finds
    for it, less those ``select_listed`` leaves out (``skip``: an IMAP
    target). Raises ``errors.FetchConnectionError`` when LIST fails.
    """
    out: list[str] = []
    delimiter: str | None = None
    asked = False
    for entry in entries:
        if not is_pattern(entry):
            found = [entry]
        else:
            if not asked:
                delimiter, asked = conn.delimiter(), True
            pattern = entry.replace("/", delimiter) if delimiter else entry
            found = select_listed(conn.list_folders(pattern), skip=skip)
            if not found:
                log.info("%s: the pattern %r matches no folder to fetch", conn.label, entry)
        out += [name for name in found if name not in out]
    return out
