"""`stopline ledger ...`: exit codes 0/1/2 and one-line errors, never a traceback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from ledger_fixtures import guards_off, ledger_url, raw  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine.cli import main


def run(*args, env=None):
    r = CliRunner().invoke(main, ["ledger", *args], env=env, catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def _one_line_error(code, out, err):
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def test_init_append_log_show_prove_checkpoint_verify(ledger_url, tmp_path):
    env = {"STOPLINE_LEDGER": ledger_url}
    assert run("init", env=env)[0] == 0
    key = tmp_path / "k.key"
    assert run("keygen", "--name", "t", "--out", str(key))[0] == 0
    assert (key.stat().st_mode & 0o777) == 0o600 and (tmp_path / "k.key.pub").exists()
    b = tmp_path / "b.json"
    b.write_text('{"trigger": "t"}')
    code, out, _ = run("append", "stop", str(b), "--workflow", "w", env=env)
    assert code == 0
    eid = json.loads(out)["id"]
    code, out, _ = run("log", "--format", "json", env=env)
    assert code == 0 and [e["id"] for e in json.loads(out)] == [eid]
    code, out, _ = run("show", eid, env=env)
    assert code == 0 and json.loads(out)["body"] == {"trigger": "t"}
    cp = tmp_path / "cp.note"
    code, out, _ = run("checkpoint", "--key", str(key), "--out", str(cp), env=env)
    assert code == 0 and out == cp.read_text() and out.split("\n")[1] == "1"
    code, out, _ = run("prove", eid, env=env)
    assert code == 0 and json.loads(out)["size"] == 2
    code, out, _ = run("prove", "--consistency", "1", env=env)
    assert code == 0 and json.loads(out)["type"] == "consistency"
    code, out, _ = run("verify", "--checkpoint", str(cp), "--key", str(tmp_path / "k.key.pub"), env=env)
    assert code == 0 and out.startswith("ok: 2 entries")
    # tampered: exit 1 naming the seq
    with guards_off(ledger_url) as c:
        c.execute(text("UPDATE ledger_entries SET body = '{\"trigger\":\"x\"}' WHERE seq = 0"))
    code, out, _ = run("verify", env=env)
    assert code == 1 and out.startswith("FAILED at seq 0: entry 0 does not match its hash")
    code, out, _ = run("verify", "--format", "json", env=env)
    assert code == 1 and json.loads(out)["first_bad"] == 0


def test_a_missing_show_or_a_refused_append_is_exit_2(ledger_url, tmp_path):
    assert run("init", "--ledger", ledger_url)[0] == 0
    _one_line_error(*run("show", "nope", "--ledger", ledger_url))
    b = tmp_path / "b.json"
    b.write_text('{"x": 1}')
    _one_line_error(*run("append", "stop", str(b), "--ledger", ledger_url))
    b.write_text('{"x": ')
    _one_line_error(*run("append", "stop", str(b), "--ledger", ledger_url))


def test_a_newer_schema_is_exit_2(ledger_url):
    assert run("init", "--ledger", ledger_url)[0] == 0
    with raw(ledger_url) as c:
        c.execute(text("UPDATE ledger_meta SET value = '7' WHERE name = 'schema_version'"))
    code, out, err = run("verify", "--ledger", ledger_url)
    _one_line_error(code, out, err)
    assert "schema version 7" in err


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/corrupt.db", "sqlite:///{tmp}/missing.db", "nonsense",
                                 "postgresql+psycopg://postgres@127.0.0.1:1/test", "mysql://u@h/d"])
def test_unreadable_ledgers_are_exit_2_with_one_line(url, tmp_path):
    (tmp_path / "corrupt.db").write_bytes(b"\x00garbage" * 512)
    for cmd in (["verify"], ["log"], ["show", "0"], ["prove", "0"], ["init"]):
        if cmd == ["init"] and "missing" in url:
            continue
        code, out, err = run(*cmd, "--ledger", url.format(tmp=tmp_path))
        _one_line_error(code, out, err)
    assert not (tmp_path / "missing.db").exists()


def test_a_bad_checkpoint_or_key_file_is_exit_2(ledger_url, tmp_path):
    assert run("init", "--ledger", ledger_url)[0] == 0
    key = tmp_path / "k.key"
    run("keygen", "--out", str(key))
    bad = tmp_path / "bad.note"
    bad.write_text("not a note")
    _one_line_error(*run("verify", "--ledger", ledger_url, "--checkpoint", str(bad), "--key", str(key)))
    _one_line_error(*run("verify", "--ledger", ledger_url, "--checkpoint", str(tmp_path / "none"), "--key", str(key)))
    _one_line_error(*run("checkpoint", "--ledger", ledger_url, "--key", str(bad)))
    _one_line_error(*run("keygen", "--out", str(key)))  # never overwrites a key
