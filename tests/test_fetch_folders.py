"""Folders as people have them: LIST patterns, a folder that cannot be opened, a changed UIDVALIDITY.

Against the session's Dovecot (``tests/dovecot.py``), whose hierarchy
delimiter is ``.`` (Maildir++) and which marks Junk, Trash, Drafts and Sent as
special-use folders (RFC 6154). Dovecot derives a new folder's UIDVALIDITY
from the clock, so deleting a folder and creating it again a second later
renumbers it, as a server migration or a restore does.
"""

from __future__ import annotations

import datetime
import sqlite3
import time
from pathlib import Path

from fetch_helpers import maildir_files, make_home, run_cli, status
from test_fetch_messages import plain

from mailcrypt.envelope import Signer
from mailcrypt.mime import enveloped as smime
from mailcrypt.mime import signed as smime_signed
from mailcrypt.state.store import SCHEMA_VERSION, Store

NOW = datetime.datetime.now(datetime.UTC)


def _create(user, *folders: str) -> None:  # type: ignore[no-untyped-def]
    client = user.client()
    try:
        for folder in folders:
            client.create_folder(folder)
    finally:
        client.logout()


def _renumber(user, folder: str, messages: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    """Delete ``folder`` and create it again holding ``messages``: the server gives it a new UIDVALIDITY."""
    client = user.client()
    try:
        before = client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"]
        client.delete_folder(folder)
        time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock.
        client.create_folder(folder)
        for message in messages:
            client.append(folder, message)
        assert client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"] != before
    finally:
        client.logout()


def _subjects(root: Path) -> dict[str, list[str]]:
    """Maildir folder -> the sorted Subjects of its messages."""
    out: dict[str, list[str]] = {}
    for folder, paths in maildir_files(root).items():
        for path in paths:
            # The Maildir holds LF line ends, as local mail tools write it.
            header = path.read_bytes().split(b"\n\n", 1)[0]
            subject = next(
                line.split(b":", 1)[1].strip().decode() for line in header.split(b"\n")
                if line.lower().startswith(b"subject:")
            )
            out.setdefault(folder, []).append(subject)
    return {folder: sorted(subjects) for folder, subjects in out.items()}


# ------------------------------------------------------------------ patterns


def test_star_fetches_every_folder_but_junk_trash_and_drafts(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    # "Lists.python" without "Lists": the server lists Lists as \Noselect, which holds no mail.
    _create(imap_user, "Junk", "Trash", "Drafts", "Sent", "Work", "Lists.python")
    for folder in ("INBOX", "Junk", "Trash", "Drafts", "Sent", "Work", "Lists.python"):
        imap_user.append(plain(f"in {folder}"), folder=folder)
    home = make_home(tmp_path / "home", imap_user, folders=("*",))
    result = run_cli(home, imap_user)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _subjects(home / "mail") == {
        "": ["in INBOX"],
        ".Sent": ["in Sent"],
        ".Work": ["in Work"],
        ".Lists.python": ["in Lists.python"],
    }
    for label in ("test/INBOX", "test/Sent", "test/Work", "test/Lists.python"):
        assert label in result.stdout
    assert "Junk" not in result.stdout and "Trash" not in result.stdout
    # Named beside the pattern, a special-use folder is fetched.
    other = make_home(tmp_path / "other", imap_user, folders=("*", "Junk"))
    result = run_cli(other, imap_user)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(_subjects(other / "mail")) == {"", ".Sent", ".Work", ".Lists.python", ".Junk"}


def test_a_pattern_below_a_folder_uses_the_servers_delimiter(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    _create(imap_user, "Archive", "Archive.2023", "Archive.2024", "Archived")
    for folder in ("INBOX", "Archive", "Archive.2023", "Archive.2024", "Archived"):
        imap_user.append(plain(f"in {folder}"), folder=folder)
    # "/" in a pattern is the hierarchy level, "." on this server.
    home = make_home(tmp_path / "home", imap_user, folders=("Archive/*",))
    result = run_cli(home, imap_user)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _subjects(home / "mail") == {".Archive.2023": ["in Archive.2023"], ".Archive.2024": ["in Archive.2024"]}
    # New folders are found by the next run.
    imap_user.append(plain("in Archive.2025"), folder="Archive.2025")
    assert run_cli(home, imap_user).returncode == 0
    assert _subjects(home / "mail")[".Archive.2025"] == ["in Archive.2025"]


# ------------------------------------------------------------------ folders that cannot be fetched


def test_a_missing_folder_is_reported_and_the_others_are_fetched(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    imap_user.append(plain("work mail"), folder="Work")
    imap_user.append(plain("inbox mail"))
    home = make_home(tmp_path / "home", imap_user, folders=("Nope", "Work", "INBOX"))
    result = run_cli(home, imap_user)
    assert result.returncode == 2, result.stdout + result.stderr
    assert _subjects(home / "mail") == {"": ["inbox mail"], ".Work": ["work mail"]}
    # The summary names the folder and why; stderr says the others were fetched.
    assert "not fetched: test/Nope: the server refused to open 'Nope'" in result.stdout
    assert "test/Work" in result.stdout and "test/INBOX" in result.stdout
    assert "1 folder(s) not fetched (test/Nope" in result.stderr
    # Nothing is fetched twice on the next run, and the folder is still reported.
    again = run_cli(home, imap_user)
    assert again.returncode == 2 and "not fetched: test/Nope" in again.stdout
    assert _subjects(home / "mail") == {"": ["inbox mail"], ".Work": ["work mail"]}


def test_a_changed_uidvalidity_stops_only_that_folder(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    imap_user.append(plain("renumbered one"), folder="Renumbered")
    imap_user.append(plain("other one"), folder="Other")
    home = make_home(tmp_path / "home", imap_user, folders=("Renumbered", "Other"))
    assert run_cli(home, imap_user).returncode == 0
    _renumber(imap_user, "Renumbered", [plain("renumbered one"), plain("renumbered two")])
    imap_user.append(plain("other two"), folder="Other")
    result = run_cli(home, imap_user)
    assert result.returncode == 2, result.stdout + result.stderr
    # The other folder is fetched as usual; the renumbered one is left alone.
    assert _subjects(home / "mail") == {".Renumbered": ["renumbered one"], ".Other": ["other one", "other two"]}
    assert "not fetched: test/Renumbered: the server's UIDVALIDITY changed" in result.stdout
    assert "--folder 'Renumbered' --accept-uidvalidity" in result.stdout
    assert "recognised by its content and not delivered again" in result.stdout


def test_accept_uidvalidity_delivers_nothing_twice_and_no_replay(tmp_path, imap_user, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    signer = Signer(ec_p256.key, ec_p256.cert)
    signed = smime.encrypt_message(
        smime_signed.sign_message(plain("signed and encrypted"), signer, signing_time=NOW), [rsa2048.cert]
    )
    old = [plain("plain"), signed, smime.encrypt_message(plain("encrypted"), [rsa2048.cert])]
    imap_user.append(old, folder="Work")
    home = make_home(tmp_path / "home", imap_user, [rsa2048], folders=("Work",))
    first = run_cli(home, imap_user)
    assert first.returncode == 0, first.stdout + first.stderr
    delivered = _subjects(home / "mail")
    assert delivered == {".Work": ["encrypted", "plain", "signed and encrypted"]}
    # The server renumbers the folder; the same messages come back, in another order, with a new one.
    fresh = smime.encrypt_message(
        smime_signed.sign_message(plain("new since"), signer, signing_time=NOW), [rsa2048.cert]
    )
    _renumber(imap_user, "Work", [old[2], fresh, old[1], old[0]])
    assert run_cli(home, imap_user).returncode == 2
    accepted = run_cli(home, imap_user, "--accept-uidvalidity")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert _subjects(home / "mail") == {".Work": ["encrypted", "new since", "plain", "signed and encrypted"]}
    assert "3 delivered before their folder's UIDVALIDITY changed: recognised" in accepted.stdout
    assert not maildir_files(home / "mail").get(".Quarantine")
    # A later run changes nothing; a true copy arriving later is still a replay.
    assert run_cli(home, imap_user).returncode == 0
    assert len(maildir_files(home / "mail")[".Work"]) == 4
    inner = smime.decrypt_message(signed, [rsa2048.identity])[0]
    imap_user.append(smime.encrypt_message(inner, [rsa2048.cert]), folder="Work")
    replayed = run_cli(home, imap_user)
    assert replayed.returncode == 5, replayed.stdout + replayed.stderr
    (quarantined,) = maildir_files(home / "mail")[".Quarantine"]
    assert status(quarantined.read_bytes()).startswith("quarantined; replay")


def test_a_store_of_schema_version_1_gains_the_content_digests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "INSERT INTO schema_version VALUES (1);"
        "CREATE TABLE fetch_state (account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL,"
        " last_uid INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL, PRIMARY KEY (account, folder));"
        "INSERT INTO fetch_state VALUES ('test', 'INBOX', 7, 42, 0);"
    )
    db.close()
    with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        assert store.read("SELECT uidvalidity, last_uid FROM fetch_state") == [(7, 42)]
        columns = {row[1] for row in store.read("PRAGMA table_info(fetch_delivered)")}
        assert columns == {"account", "folder", "uidvalidity", "uid", "digest"}


def test_a_pattern_never_fetches_what_the_fetcher_wrote_to_an_imap_target() -> None:
    from mailcrypt.fetch.folders import select_listed
    from mailcrypt.fetch.imap import ListedFolder

    listed = [
        ListedFolder(name, "/", frozenset(attributes))
        for name, attributes in (
            ("Work", ()),
            ("Decrypted", ()),
            ("Decrypted/Work", ()),
            ("Decrypted/Quarantine", ()),
            ("DecryptedNot", ()),
            ("[Gmail]", ("\\noselect", "\\haschildren")),
            ("[Gmail]/All Mail", ("\\all",)),
            ("[Gmail]/Sent Mail", ("\\sent",)),
            ("INBOX", ()),
        )
    ]
    assert select_listed(listed, skip=["Decrypted"]) == ["INBOX", "DecryptedNot", "Work", "[Gmail]/Sent Mail"]
