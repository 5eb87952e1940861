"""Audit (s21) of the ledger's verifiability, as a transparency-log reviewer would test it:
a stored row that no parser here can read (nested past the recursion limit; on SQLite a
BLOB or bytes that are not UTF-8) is a failed verification naming its seq, not an internal
error; a `checkpoint` entry cannot be appended around `checkpoint()` (a forged one, never
removable, failed every later `verify --key`); after a change of signing key `verify`
takes both keys; `prove` gives no proof of an entry whose content no longer matches its
stored hash; a checkpoint file with a byte-order mark verifies and one with CR LF line ends
is named as such; `ledger log` cannot be made to print a forged line by a workflow name."""

from __future__ import annotations

import base64
import json
import os

import pytest
from click.testing import CliRunner
from ledger_fixtures import body, guards_off, ledger_url, one_line_error, run_ledger_cli  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine.cli import main
from policy_engine.ledger import Ledger, NewEntry, generate_key
from policy_engine.ledger.errors import CheckpointError, InvalidEntry, LedgerUnavailable
from policy_engine.ledger.note import open_checkpoint, write_key

KEY = generate_key("audit-s21")
DEEP = "[" * 100_000 + "]" * 100_000  # past any recursion limit of a JSON parser here


def _build(url: str, n: int = 8) -> Ledger:
    led = Ledger.open(url, create=True)
    d = led.append("decision", body("decision"), workflow="w")
    for i in range(n - 1):
        d = led.append("execution", body("execution", i=i), links=[d.id], workflow="w")
    return led


def _failed_at(url: str, seq: int, needle: str) -> None:
    """`verify` (API and CLI) fails at `seq` saying `needle`: exit 1, no internal error."""
    with Ledger.open(url) as led:
        r = led.verify()
    assert not r.ok and r.first_bad == seq and needle in r.problem, r.render()
    code, out, err = run_ledger_cli("verify", "--ledger", url)
    assert code == 1 and out.startswith(f"FAILED at seq {seq}: ") and needle in out, (out, err)
    assert "internal error" not in err and "Traceback" not in err, err


def _rehash(c) -> None:
    """Recompute every hash, prev, Merkle node and the head row, as a careful attacker would."""
    from policy_engine.ledger import merkle as m
    from policy_engine.ledger.canonical import ZERO_HASH, leaf_data

    rows = c.execute(text("SELECT seq, id, kind, workflow, key, links, body, time FROM ledger_entries "
                          "ORDER BY seq")).all()
    c.execute(text("DELETE FROM ledger_nodes"))
    cr, prev = m.CompactRange(), ZERO_HASH
    for r in rows:
        h = m.leaf_hash(leaf_data(r.body, seq=r.seq, id=r.id, kind=r.kind, workflow=r.workflow,
                                  links=tuple(json.loads(r.links)), key=r.key, time=r.time, prev=prev)).hex()
        c.execute(text("UPDATE ledger_entries SET prev = :p, hash = :h WHERE seq = :s"),
                  {"p": prev, "h": h, "s": r.seq})
        for level, _i, nh in cr.append(bytes.fromhex(h)):
            c.execute(text("INSERT INTO ledger_nodes (leaf, level, hash) VALUES (:l, :v, :h)"),
                      {"l": r.seq, "v": level, "h": nh.hex()})
        prev = h
    c.execute(text("UPDATE ledger_heads SET size = :n, head = :h, frontier = :f"),
              {"n": len(rows), "h": prev, "f": cr.encode()})


# ---------------------------------------------------------------- rows no parser here can read
def test_links_nested_past_the_parser_fail_at_their_seq_not_as_an_internal_error(ledger_url):
    """Was: `stopline: internal error: RecursionError ...` (exit 2) and a RecursionError from
    `Ledger.verify()`."""
    _build(ledger_url).close()
    with guards_off(ledger_url) as c:
        c.execute(text("UPDATE ledger_entries SET links = :v WHERE seq = 4"), {"v": DEEP})
    _failed_at(ledger_url, 4, "entry 4 is not readable")


def test_a_body_nested_past_the_parser_with_its_hashes_recomputed_fails_at_its_seq(ledger_url):
    """Its hash, the chain, the Merkle nodes and the head all recomputed: the entry hashes
    right, and its body is one the ledger never writes. Was: an internal error."""
    _build(ledger_url).close()
    with guards_off(ledger_url) as c:
        c.execute(text("UPDATE ledger_entries SET body = :v WHERE seq = 4"), {"v": DEEP})
        _rehash(c)
    _failed_at(ledger_url, 4, "entry 4 is not a valid entry: its body nests too deeply")


def test_sqlite_a_body_stored_as_a_blob_fails_at_its_seq(tmp_path):
    """SQLite keeps what it is given: a BLOB in the text column. Was: `internal error:
    AttributeError: 'bytes' object has no attribute 'encode'`."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _build(url).close()
    with guards_off(url) as c:
        c.execute(text("UPDATE ledger_entries SET body = CAST(body AS BLOB) WHERE seq = 3"))
    _failed_at(url, 3, "entry 3 is not readable")


@pytest.mark.parametrize("column", ["body", "workflow", "time"])
def test_sqlite_bytes_that_are_not_utf8_fail_at_their_seq(tmp_path, column):
    """Was: exit 2, `error: ledger ...: Could not decode to UTF-8 column 'body' ...` (nothing
    could be checked, no seq) for what is an edited entry."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _build(url).close()
    with guards_off(url) as c:
        c.execute(text(f"UPDATE ledger_entries SET {column} = CAST(X'7b22ff223a317d' AS TEXT) WHERE seq = 5"))
    with Ledger.open(url) as led:
        r = led.verify()
    assert not r.ok and r.first_bad == 5, r.render()
    code, out, err = run_ledger_cli("verify", "--ledger", url)
    assert code == 1 and out.startswith("FAILED at seq 5: entry 5 "), (out, err)
    with Ledger.open(url) as led:  # the pass left the pooled connection reading text as before
        assert led.get(4).body["i"] == 3


# ---------------------------------------------------------------- a forged checkpoint entry
def test_a_checkpoint_entry_cannot_be_appended(ledger_url, tmp_path):
    """Was: appended (API and CLI). A `checkpoint` entry whose note is not signed by the log's
    key can never be removed, and failed every `verify --key` from then on."""
    with _build(ledger_url, 3) as led:
        forged = {"origin": led.origin, "size": led.size, "root": led.root().hex(), "note": "forged\n"}
        with pytest.raises(InvalidEntry, match="written by `checkpoint"):
            led.append("checkpoint", forged)
        with pytest.raises(InvalidEntry, match="written by `checkpoint"):
            led.append_many([NewEntry("stop", body("stop"), workflow="w"), NewEntry("checkpoint", forged)])
        with pytest.raises(InvalidEntry, match="written by `checkpoint"):
            led.transact(lambda c: [NewEntry("checkpoint", forged)])
        f = tmp_path / "cp.json"
        f.write_text(json.dumps(forged))
        one_line_error(*run_ledger_cli("append", "checkpoint", str(f), "--ledger", ledger_url), "`checkpoint`")
        assert led.size == 3
        led.checkpoint(KEY)  # the one way to write one
        assert led.verify(key=KEY.verifier).ok


# ---------------------------------------------------------------- a change of signing key
def test_verify_after_a_change_of_signing_key_takes_both_keys(ledger_url, tmp_path):
    """Was: no way to verify signatures at all once the key changed: `--key old.pub` failed at
    the new checkpoints and `--key new.pub` at the old ones."""
    old, new = generate_key("acme-2025"), generate_key("acme-2026")
    write_key(old, tmp_path / "old.key")
    write_key(new, tmp_path / "new.key")
    with _build(ledger_url, 4) as led:
        cp_old, _ = led.checkpoint(old)
        led.append("stop", body("stop"), workflow="w")
        cp_new, _ = led.checkpoint(new)
        for k in (old, new):  # one key alone still refuses the other's checkpoints
            r = led.verify(key=k.verifier)
            assert not r.ok and "not signed by the key" in r.problem, r.render()
        r = led.verify(key=[old.verifier, new.verifier])
        assert r.ok and r.signatures and r.checkpoints == 2, r.render()
        assert led.verify(checkpoint=cp_old.note, key=[new.verifier, old.verifier]).ok
        assert led.verify(checkpoint=cp_new.note, key=(old.verifier, new.verifier)).ok
        other = generate_key("acme-2026")  # a key of the same name is not one of them
        with pytest.raises(CheckpointError, match="not signed by any of the keys"):
            led.verify(checkpoint=cp_new.note, key=[old.verifier, other.verifier])
    (tmp_path / "cp.note").write_text(cp_old.note)
    pubs = [str(tmp_path / "old.key.pub"), str(tmp_path / "new.key.pub")]
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url, "--checkpoint", str(tmp_path / "cp.note"),
                                    "--key", pubs[0], "--key", pubs[1])
    assert code == 0 and "2 checkpoint entries (signatures checked)" in out, (out, err)
    r = CliRunner(env={"STOPLINE_LEDGER_PUBKEY": os.pathsep.join(pubs)}).invoke(
        main, ["ledger", "verify", "--ledger", ledger_url])
    assert r.exit_code == 0 and "(signatures checked)" in r.stdout, r.output
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url, "--key", pubs[1])
    assert code == 1 and "not signed by the key `acme-2025`" not in out and "acme-2026" in out, (out, err)


def test_a_bad_signature_by_one_given_key_fails_even_when_another_verifies():
    """Several keys widen whose signature is accepted, never what a bad signature means."""
    a, b = generate_key("a"), generate_key("b")
    from policy_engine.ledger.note import sign_checkpoint

    note = sign_checkpoint(a, "example.org/log", 3, b"\x01" * 32)
    sig_b = sign_checkpoint(b, "example.org/log", 3, b"\x01" * 32).rsplit("\n\n", 1)[1]
    raw = bytearray(base64.b64decode(sig_b.split(" ")[2]))
    raw[10] ^= 1
    forged = note + f"\u2014 b {base64.b64encode(bytes(raw)).decode()}\n"
    assert open_checkpoint(note, [b.verifier, a.verifier]).size == 3
    with pytest.raises(CheckpointError, match="signature by `b` does not verify"):
        open_checkpoint(forged, [a.verifier, b.verifier])
    with pytest.raises(CheckpointError, match="none was given"):
        open_checkpoint(note, [])


# ---------------------------------------------------------------- a proof of edited content
def test_prove_gives_no_proof_of_an_entry_whose_content_no_longer_matches_its_hash(ledger_url):
    """Was: a valid inclusion proof of the stored hash, printed beside `show`'s edited body:
    the proof vouched for content the log never held."""
    with _build(ledger_url) as led:
        assert led.prove(3).verify()
        with guards_off(ledger_url) as c:
            c.execute(text("UPDATE ledger_entries SET body = replace(body, 'true', 'false') WHERE seq = 3"))
        with pytest.raises(LedgerUnavailable, match="entry 3 does not match its stored hash"):
            led.prove(3)
        assert led.prove(2).verify() and led.prove_consistency(2).verify()  # the rest is as it was
    one_line_error(*run_ledger_cli("prove", "3", "--ledger", ledger_url), "entry 3", "stopline ledger verify")


# ---------------------------------------------------------------- checkpoint files that travelled
def test_a_checkpoint_file_with_a_byte_order_mark_verifies_and_crlf_is_named(tmp_path):
    """Was: `the checkpoint's signature by ... does not verify` (a BOM: it reads as tampering)
    and `not a signed note` (CR LF)."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    write_key(KEY, tmp_path / "k")
    with _build(url, 3) as led:
        cp, _ = led.checkpoint(KEY)
    (tmp_path / "bom.note").write_bytes(b"\xef\xbb\xbf" + cp.note.encode())
    (tmp_path / "crlf.note").write_bytes(cp.note.replace("\n", "\r\n").encode())
    code, out, err = run_ledger_cli("verify", "--ledger", url, "--checkpoint", str(tmp_path / "bom.note"),
                                    "--key", str(tmp_path / "k.pub"))
    assert code == 0 and "consistent with the checkpoint of size 3" in out, (out, err)
    one_line_error(*run_ledger_cli("verify", "--ledger", url, "--checkpoint", str(tmp_path / "crlf.note"),
                                   "--key", str(tmp_path / "k.pub")), "CR LF")


# ---------------------------------------------------------------- what `ledger log` prints
def test_ledger_log_cannot_be_made_to_print_a_forged_line_by_a_workflow_name(tmp_path):
    """A workflow is any string: one holding a line break printed a second, forged line in the
    listing (`7  2026-01-01  ...`), and a terminal escape reached the terminal."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    wf = "w\x1b[2J\n       7  2026-01-01T00:00:00.000000Z  stop       forged\u202e"
    with Ledger.open(url, create=True) as led:
        led.append("stop", body("stop"), workflow=wf)
        led.append("stop", body("stop"), workflow="plain")
    r = CliRunner().invoke(main, ["ledger", "log", "--ledger", url], color=True)  # (color: nothing stripped)
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and len(lines) == 2, r.output
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert '"w\\u001b[2J\\n       7  2026-01-01T00:00:00.000000Z  stop       forged\\u202e"' in lines[0]
    assert lines[1].split()[3] == "plain"  # a plain name as it was


def test_a_body_that_is_not_an_object_is_named_in_json_terms(tmp_path):
    """Was: `a `execution` body is a JSON object, not list` (Python's names for JSON values)."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _build(url, 1).close()
    f = tmp_path / "b.json"
    for given, called in (("[1]", "an array"), ("null", "null"), ("7", "a number"), ('"x"', "a string")):
        f.write_text(given)
        one_line_error(*run_ledger_cli("append", "execution", str(f), "--ledger", url),
                       f"body is a JSON object, not {called}")
