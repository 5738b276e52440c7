"""``mailcrypt proxy`` and ``mailcrypt users ...``: the SMTP proxy and its logins.

``proxy`` runs the proxy of the ``proxy/`` package in the foreground until
SIGTERM or SIGINT (DESIGN.md §6) and prints where to point a mail client.
``users add`` reads the new password from standard input when that is not a
terminal (first line), else asks twice; never from the command line. Its
``--address`` options are the addresses the login may send as; given for
an existing user (without ``--replace``) they are added to its addresses
and the password is kept. ``users list`` shows each login's addresses.
``init_proxy`` is what ``mailcrypt init`` adds for the proxy: its TLS
certificate and a first user, whose generated password is shown once.

This is the one place the ``mailcrypt`` command reaches into ``proxy/``;
it imports it only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mailcrypt import config, errors

if TYPE_CHECKING:
    from proxy import UserStore

__all__ = ["run", "users_add", "users_remove", "users_list", "init_proxy"]


def run(args: argparse.Namespace) -> None:
    from proxy import ProxyServer

    settings = config.load_settings(config.resolve_home(getattr(args, "home", None)))
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", 0) > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    aiosmtpd_log = logging.getLogger("mail.log")
    aiosmtpd_log.setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    # aiosmtpd itself sets the deprecated login_data on every login and then warns about it.
    aiosmtpd_log.addFilter(lambda record: "login_data is deprecated" not in record.getMessage())
    import asyncio

    listen = config.parse_host_port(args.listen, what="--listen") if args.listen else None
    server = ProxyServer(settings, listen=listen)

    def ready(host: str, port: int) -> None:
        upstream = settings.upstream
        where = f"{upstream.host}:{upstream.port}" if upstream else f"the outbox {settings.outbox} (no [upstream])"
        tls = "TLS from the start" if settings.proxy.tls == "implicit" else "STARTTLS"
        print(f"mailcrypt proxy listening on {host}:{port} ({tls}); relaying to {where}", flush=True)
        print(
            f"  point the mail client's outgoing server (SMTP) at {host} port {port}, with the user and "
            f"password of `mailcrypt users add` (certificate: {settings.proxy.tls_cert})",
            flush=True,
        )

    asyncio.run(server.serve(ready=ready))


def _store(args: argparse.Namespace) -> UserStore:
    from proxy import UserStore

    settings = config.load_settings(config.resolve_home(getattr(args, "home", None)))
    return UserStore(settings.proxy.users_file or settings.home / "proxy" / "users")


def _new_password() -> bytes:
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Password for the new proxy user: ")
        if getpass.getpass("Same password again: ") != first:
            raise errors.UsageError("the two passwords differ")
        return first.encode("utf-8")
    line = sys.stdin.buffer.readline() if sys.stdin is not None else b""
    password = line.rstrip(b"\r\n")
    if not password:
        raise errors.UsageError("no password: give it on standard input (first line) or run on a terminal")
    return password


def users_add(args: argparse.Namespace) -> None:
    store = _store(args)
    addresses = args.address or []
    if addresses and not args.replace and args.name in store.names():
        # An existing user gets more addresses and keeps its password: this is
        # how the logins of an older user file are given theirs.
        user = store.assign(args.name, addresses)
        print(f"proxy user {args.name} may send as: {', '.join(user.addresses)}")
        return
    store.add(args.name, _new_password(), replace=args.replace, addresses=addresses)
    print(f"proxy user {args.name} {'updated' if args.replace else 'added'} ({store.path})")
    if not addresses:
        print(
            f"  {args.name} has no sender address yet and cannot send: "
            f"mailcrypt users add {args.name} --address ADDRESS",
        )


def users_remove(args: argparse.Namespace) -> None:
    store = _store(args)
    store.remove(args.name)
    print(f"proxy user {args.name} removed")


def users_list(args: argparse.Namespace) -> None:
    for user in _store(args).users():
        print(f"{user.name}\t{', '.join(user.addresses) or '(no address: may not send)'}")


def init_proxy(home: Path) -> list[str]:
    """Make the proxy's certificate and first user in a new home; the lines to show (once)."""
    from proxy import setup_home

    settings = config.load_settings(home)
    cert, user = setup_home(settings)
    lines = []
    if cert is not None:
        lines.append(f"  proxy TLS      {cert} (for localhost, 127.0.0.1 and ::1; key {settings.proxy.tls_key})")
    if user is not None:
        lines.append(f"  proxy login    user {user[0]}  password {user[1]}")
        lines.append("                 (shown only now; `mailcrypt users add NAME` makes more)")
    return lines
