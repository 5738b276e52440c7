"""The SMTP client's vocabulary: replies, errors, server settings, and commands as bytes.

``Reply`` is a server's answer; ``UpstreamUnavailable`` and ``LoginRefused``
are what a connection raises; ``path``, ``mail_command`` and ``rcpt_command``
write envelope addresses into commands (RFC 5321 §4.1.1.2–3, §4.1.2), never
with a CR, LF or NUL in them; ``stuff`` dot-stuffs a message (§4.5.2).

What it won't do: open connections or read replies (``client`` does).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "Reply",
    "UpstreamUnavailable",
    "LoginRefused",
    "ServerConfig",
    "path",
    "mail_command",
    "rcpt_command",
    "stuff",
]


class Reply(NamedTuple):
    """One SMTP reply: the code and the text of its lines joined by newlines."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.text.split())}"


class UpstreamUnavailable(Exception):
    """The server cannot be reached or went away: a temporary failure.

    ``stage`` says where (connect, greeting, tls, auth, mail, rcpt, data);
    ``reply`` is the server's reply when it gave one (a 421 or a 4xx while
    connecting).
    """

    def __init__(self, message: str, *, stage: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.reply = reply


class LoginRefused(Exception):
    """The server refused the login (a 5xx answer to AUTH); ``reply`` is its answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True)
class ServerConfig:
    """How to reach one server: ``security`` is ``tls``, ``starttls`` or ``none``.

    ``timeout`` bounds every step but one: the wait for the reply to the end
    of a message, which ``data_timeout`` bounds (RFC 5321 §4.5.3.2.6: 10
    minutes, as the server may scan the message before it answers).
    """

    host: str
    port: int
    security: str
    tls_context: ssl.SSLContext | None
    timeout: float
    local_hostname: str = "localhost"
    data_timeout: float = 600.0


def path(address: str) -> str:
    """``address`` as an SMTP path, "<>" for the null reverse-path (RFC 5321 §4.1.2).

    A CR, LF or NUL would end the command line early (RFC 5321 §2.3.8): the
    client's commands are checked before (``wire``); this is the last guard.
    """
    if address in ("", "<>"):
        return "<>"
    if "\r" in address or "\n" in address or "\0" in address:
        raise ValueError("an address with a CR, LF or NUL cannot go into an SMTP command")
    return f"<{address}>"


def mail_command(sender: str, options: Sequence[str]) -> bytes:
    return f"MAIL FROM:{path(sender)}{''.join(' ' + o for o in options)}".encode()


def rcpt_command(recipient: str) -> bytes:
    return f"RCPT TO:{path(recipient)}".encode()


def stuff(data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    """Dot-stuffing (RFC 5321 §4.5.2): a line that starts with "." gets another one in front.

    Base64 lines never start with a dot, so an encrypted message goes through
    uncopied; only a message with such a line is copied once.
    """
    view = memoryview(data)
    if view[:1] != b"." and b"\n." not in data:
        return data
    stuffed = bytes(view).replace(b"\n.", b"\n..")
    return b"." + stuffed if stuffed[:1] == b"." else stuffed
