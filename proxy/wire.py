"""What may reach the upstream server in the clear: CRLF line ends only, no NUL, no line over 1,000 octets.

An encrypted message is base64 inside, but its outer header fields, the
addresses in MAIL and RCPT and every byte of an opportunistic plaintext copy
reach the upstream server as they are. A server that reads a bare CR or LF
as the end of a line (the receivers of the 2023 SMTP smuggling research)
would see commands of the attacker's choosing there: "<CR>.<CR>" ends the
data and a second transaction follows, in clear text to a recipient without
a certificate, past the ``require`` policy. RFC 5321 §2.3.8 says an SMTP
client MUST NOT send a CR or LF except as CRLF, so the proxy refuses what
would make it do so, with a reply that says what is wrong:

- A command with a CR or NUL in its argument: 501 5.5.2. A quoted local
  part may hold such characters for the address parser, and the proxy
  repeats the address upstream (RFC 5321 §4.1.2 allows no control
  character in a mailbox at all). A LF always ends the command line: how
  the client ended its lines never reaches the upstream server, as the
  proxy writes commands of its own.
- A header block with a bare CR, a bare LF or a NUL: 554 5.6.0. RFC 5322
  §2.2 allows neither in a field, and the outer fields go out in the clear
  with every message.
- The body of a message of which a plaintext copy goes out: the same,
  refused rather than normalised. Turning a bare LF (or CR) into CRLF
  would be reading it as a line end, which RFC 5321 §4.1.1.4 forbids a
  server "even in the name of improved robustness"; RFC 5322 §2.3 says CR
  and LF occur only together in a body, so a conforming client never sends
  one alone, and the client hears which rule its message broke.
- Lines over 998 octets and the CRLF (RFC 5321 §4.5.3.1.6, RFC 5322
  §2.1.1): 500 5.5.6, the code aiosmtpd's own DATA reader answered (500)
  with the enhanced code registered for a line too long (RFC 4954 §6). A header
  line is refused rather than folded: RFC 5322 §2.2.3 folds only at white
  space, and mail clients fold their own fields. A body line cannot be
  folded at all without changing the text.
- A header block larger than ``HEADER_LIMIT``: 552 5.3.4, a permanent
  refusal, as the same message would be refused again.

Every reply is printable ASCII (RFC 5321 §4.2), so the section sign is
spelt out in them.

What it won't do: change a message (every check passes it unchanged or
refuses it), or look into a body that goes upstream only encrypted: base64
has short lines, and any byte may be inside the encryption.
"""

from __future__ import annotations

from mailcrypt.mime import HEADER_LIMIT
from proxy.relay import Refused

__all__ = ["MAX_LINE", "check_command", "check_address", "check_message"]

#: The longest text line without its CRLF (RFC 5321 §4.5.3.1.6: 1,000 octets with it).
MAX_LINE = 998

_BREAKS = {"\r": "a bare CR", "\n": "a bare LF", "\0": "a NUL"}


def check_command(verb: str, arg: str | None) -> None:
    """Raise ``Refused`` (501 5.5.2) when a command's argument holds a CR, LF or NUL."""
    if arg is None:
        return
    for char, what in _BREAKS.items():
        if char in arg:
            raise Refused(
                f"501 5.5.2 Syntax error: {what} in the {verb} command; CR and LF belong only in the "
                "CRLF that ends a line, and NUL nowhere (RFC 5321 section 2.3.8)"
            )


def check_address(verb: str, address: str) -> None:
    """Raise ``Refused`` (501 5.5.2) for an address with a control character (RFC 5321 §4.1.2)."""
    check_command(verb, address)
    if any(c < " " or c == "\x7f" for c in address):
        raise Refused(f"501 5.5.2 Syntax error: a control character in the {verb} address (RFC 5321 section 4.1.2)")


def _bad_line_end(data: bytes | bytearray, start: int, end: int) -> str | None:
    """What is wrong with the line ends of ``data[start:end]``: a bare CR, a bare LF, a NUL, or None.

    Counting is much faster than searching with a pattern (a 25 MB body in
    a tenth of a second instead of more than a second) and copies nothing:
    every CR and every LF is part of a CRLF exactly when the counts agree.
    """
    pairs = data.count(b"\r\n", start, end)
    if data.count(b"\r", start, end) != pairs:
        return "a bare CR"
    if data.count(b"\n", start, end) != pairs:
        return "a bare LF"
    if data.find(b"\0", start, end) >= 0:
        return "a NUL"
    return None


def _long_line(data: bytes | bytearray, start: int, end: int) -> bool:
    """Whether a line in ``data[start:end]`` (CRLF line ends only) is longer than ``MAX_LINE``.

    From each line start the last CRLF that may end a line short enough is
    searched for, so a body is crossed in steps of about a thousand octets.
    """
    pos = start
    while end - pos > MAX_LINE:
        found = data.rfind(b"\r\n", pos, min(end, pos + MAX_LINE + 2))
        if found < 0:
            return True
        pos = found + 2
    return False


def check_message(message: bytes | bytearray, *, plaintext: bool) -> None:
    """Raise ``Refused`` when the message cannot go upstream as it is (see the module docstring).

    The header block is always checked, as its fields go out in the clear;
    the body only when a ``plaintext`` copy of the message goes out.
    """
    end = message.find(b"\r\n\r\n", 0, HEADER_LIMIT + 4)
    if end < 0 and len(message) > HEADER_LIMIT:
        raise Refused(
            f"552 5.3.4 Message header too big: the header block is larger than {HEADER_LIMIT} bytes "
            "(the message was not sent)"
        )
    header_end = len(message) if end < 0 else end + 2
    problem = _bad_line_end(message, 0, header_end)
    if problem is not None:
        raise Refused(
            f"554 5.6.0 Message refused: {problem} in the header; CR and LF may occur only together, "
            "as CRLF, and NUL not at all (RFC 5322 section 2.2)"
        )
    if _long_line(message, 0, header_end):
        raise Refused(
            f"500 5.5.6 Line too long: a header line is longer than {MAX_LINE} octets (RFC 5322 section 2.1.1)"
        )
    if not plaintext or end < 0:
        return
    body_start = end + 4
    problem = _bad_line_end(message, body_start, len(message))
    if problem is not None:
        raise Refused(
            f"554 5.6.0 Message refused: {problem} in the body of a copy sent without encryption; "
            "CR and LF may occur only together, as CRLF, and NUL not at all (RFC 5322 section 2.3)"
        )
    if _long_line(message, body_start, len(message)):
        raise Refused(
            f"500 5.5.6 Line too long: a body line of a copy sent without encryption is longer than "
            f"{MAX_LINE} octets (RFC 5321 section 4.5.3.1.6)"
        )
