"""Crash safety: kill the fetcher at every step of a message's handling, rerun, one copy each.

The fetcher runs as ``python -m mailcrypt fetch`` in a subprocess whose only
difference from the real command is a fault hook (STYLE.md §6: a mock only
to inject a fault a real peer cannot produce): at the chosen step for the
chosen UID the process sends itself SIGKILL, as a power cut or the OOM
killer would stop it, with no cleanup and no exception handler. Batches are
two messages long so that a crash can fall after an earlier batch was
committed. Then ``mailcrypt fetch`` is run for real: afterwards every message
is there exactly once, with the right status, and one more run changes
nothing (STYLE.md §6, isync's run-tests.pl).
"""

from __future__ import annotations

import pytest
from fetch_helpers import FOLDER_SYNC, by_uid, env_for, make_home, plain, run_cli, run_crashing, status

from mailcrypt.fetch import STEPS
from mailcrypt.mime import enveloped as smime

# Per message: UID 3 (delivered) and UID 4 (a replay of UID 1: quarantined).
# Per batch: the batch [3, 4] reports its last UID, 4; "fetched" its first, 3.
CASES = [(step, uid) for step in STEPS[1:5] for uid in (3, 4)] + [("fetched", 3)] + [(s, 4) for s in STEPS[5:]]


@pytest.fixture(scope="module")
def mail(rsa2048, ec_p256, make_keypair):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    stranger = make_keypair("crash-stranger", ec.generate_private_key(ec.SECP256R1()))
    a = smime.encrypt_message(plain("A"), [rsa2048.cert])
    return [
        a,
        plain("plain"),
        smime.encrypt_message(plain("B"), [ec_p256.cert]),
        a,
        smime.encrypt_message(plain("not for me"), [stranger.cert]),
        smime.encrypt_message(plain("C"), [rsa2048.cert]),
    ]


def check(delivered: dict[int, tuple[str, bytes]]) -> None:
    assert sorted(delivered) == [1, 2, 3, 4, 5, 6]
    expect = {1: ("", "decrypted"), 2: ("", "plain"), 3: ("", "decrypted"), 4: (".Quarantine", "quarantined; replay"),
              5: (".Quarantine", "quarantined; no-key"), 6: ("", "decrypted")}
    for uid, (folder, state) in expect.items():
        assert delivered[uid][0] == folder, (uid, status(delivered[uid][1]))
        assert status(delivered[uid][1]).startswith(state), (uid, status(delivered[uid][1]))


@pytest.mark.parametrize(("step", "uid"), CASES, ids=[f"{s}-uid{u}" for s, u in CASES])
def test_crash_at_every_step_then_rerun(tmp_path, imap_user, rsa2048, ec_p256, mail, step, uid) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048, ec_p256])
    imap_user.append(mail)
    crashed = run_crashing(home, env_for(imap_user), FOLDER_SYNC, step, uid, "fetch", "--mark-seen", batch_count=2)
    assert crashed.returncode == -9, (crashed.returncode, crashed.stderr)
    partial = by_uid(home / "mail")  # asserts no UID has two copies even now
    assert set(partial) <= {1, 2, 3, 4, 5, 6}

    rerun = run_cli(home, imap_user, "--mark-seen")
    assert rerun.returncode in (0, 3, 5), rerun.stderr
    delivered = by_uid(home / "mail")
    check(delivered)
    leftovers = [p for p in (home / "mail").rglob("tmp/*")]
    assert leftovers == []

    final = run_cli(home, imap_user, "--mark-seen")
    assert final.returncode == 0, final.stderr
    assert by_uid(home / "mail") == delivered
    seen = {u for u, (_body, flags) in imap_user.messages().items() if b"\\Seen" in flags}
    # \\Seen is set only after progress is recorded; a crash right between leaves that batch unseen.
    assert seen >= ({1, 2, 5, 6} if step == "committed" else {1, 2, 3, 4, 5, 6})
