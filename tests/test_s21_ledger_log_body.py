"""`stopline ledger log --body`: what happened, readable from the shell. Each entry's body on
an indented line under it, as its canonical JSON (the bytes the hash covers), cut at
`--body-chars N` (default 200) with how much is left and the command that prints it all;
the characters a terminal would act on written as JSON escapes (the line still parses to
the body); the default listing and `--format json` as they were."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from click.testing import CliRunner
from ledger_fixtures import run_ledger_cli

from policy_engine.ledger import Ledger

T = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
LINE = re.compile(r"^ {0,7}\d+  \d{4}-\d\d-\d\dT[\d:.]+Z  \w+ +\S+ +[0-9a-f-]{36}( -> [0-9a-f,-]+)?$")


def _ledger(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.open(url, create=True) as led:
        d = led.append("decision", {"action": {"type": "refund", "amount": 40}, "decision": {"effect": "allow"},
                                    "policy_hash": "p"}, workflow="refunds", time=T)
        x = led.append("execution", {"receipt": {"refund_id": "r-1", "note": "n" * 400}, "authorized": True},
                       links=[d.id], time=T)
        led.append("stop", {"trigger": "rate \u202eevil\u009b2J", "at": "\U0001f600"}, workflow="refunds", time=T)
        return url, led.entries(limit=10), d, x


def test_the_default_listing_has_no_bodies_and_is_as_before(tmp_path):
    url, es, d, x = _ledger(tmp_path)
    code, out, err = run_ledger_cli("log", "--ledger", url)
    lines = out.splitlines()
    assert code == 0 and err == "" and len(lines) == 3, out
    assert all(LINE.match(ln) for ln in lines), out
    assert lines[1] == f"       1  {es[1].time}  execution  -                    {x.id} -> {d.id}"


def test_body_prints_each_body_as_its_canonical_json_under_its_entry(tmp_path):
    url, es, d, x = _ledger(tmp_path)
    code, out, err = run_ledger_cli("log", "--ledger", url, "--body", "--body-chars", "0")
    lines = out.splitlines()
    assert code == 0 and err == "" and len(lines) == 6, out
    for i, e in enumerate(es):
        head, shown = lines[2 * i], lines[2 * i + 1]
        assert LINE.match(head) and head.split()[0] == str(e.seq)
        assert shown.startswith(" " * 10) and not shown.startswith(" " * 11)
        assert json.loads(shown) == e.body  # the same value, whatever the escapes
    assert lines[1].strip() == es[0].body_json == \
        '{"action":{"amount":40,"type":"refund"},"decision":{"effect":"allow"},"policy_hash":"p"}'
    assert lines[3].strip() == es[1].body_json  # whole: no cut with 0


def test_a_long_body_is_cut_saying_how_much_is_left_and_how_to_read_it(tmp_path):
    url, es, d, x = _ledger(tmp_path)
    code, out, _ = run_ledger_cli("log", "--ledger", url, "-b")  # the default: 200 characters
    lines = out.splitlines()
    cut = lines[3].strip()
    left = len(es[1].body_json) - 200
    assert cut == f"{es[1].body_json[:200]} … (+{left} characters: `stopline ledger show 1`, or --body-chars 0)"
    assert lines[1].strip() == es[0].body_json  # a short one whole
    code, out, _ = run_ledger_cli("log", "--ledger", url, "-b", "--body-chars", "30", "--kind", "decision")
    assert out.splitlines()[1].strip() == \
        f"{es[0].body_json[:30]} … (+{len(es[0].body_json) - 30} characters: `stopline ledger show 0`, " \
        "or --body-chars 0)"


def test_what_a_terminal_would_act_on_is_escaped_and_the_line_is_still_the_body(tmp_path):
    from policy_engine.cli import main

    url, es, d, x = _ledger(tmp_path)
    r = CliRunner().invoke(main, ["ledger", "log", "--ledger", url, "--body", "--reverse", "--limit", "1"],
                           color=True)
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and len(lines) == 2, r.output
    assert "\u202e" not in r.stdout and "\u009b" not in r.stdout
    assert lines[1].strip() == '{"at":"\U0001f600","trigger":"rate \\u202eevil\\u009b2J"}'  # a printable emoji as is
    assert json.loads(lines[1]) == es[2].body


def test_json_output_is_unchanged_by_body(tmp_path):
    url, es, d, x = _ledger(tmp_path)
    plain = run_ledger_cli("log", "--ledger", url, "--format", "json")
    with_body = run_ledger_cli("log", "--ledger", url, "--format", "json", "--body", "--body-chars", "5")
    assert plain == with_body and json.loads(plain[1]) == [e.to_json() for e in es]


def test_a_negative_body_chars_is_a_usage_error(tmp_path):
    url, *_ = _ledger(tmp_path)
    code, out, err = run_ledger_cli("log", "--ledger", url, "--body", "--body-chars", "-1")
    assert code == 2 and "--body-chars" in err and "Traceback" not in err


def test_a_kind_the_ledger_does_not_know_is_an_error_not_an_empty_list(tmp_path):
    # `--kind decisoin` printed nothing and exited 0: a typo read as "no such entries"
    url, *_ = _ledger(tmp_path)
    code, out, err = run_ledger_cli("log", "--ledger", url, "--kind", "decisoin")
    assert code == 2 and out == "", (code, out)
    assert "'decisoin' is not one of" in err and "'decision'" in err and "Traceback" not in err, err
    code, out, _ = run_ledger_cli("log", "--ledger", url, "--kind", "decision")
    assert code == 0 and len(out.splitlines()) == 1, out


def test_a_lone_surrogate_is_named_where_it_is_as_a_nan_is(tmp_path):
    # it was the codec's message, naming a character position in text nobody sees
    import pytest

    from policy_engine.ledger import InvalidEntry

    with Ledger.open(f"sqlite:///{tmp_path / 's.db'}", create=True) as led:
        for body, where in (
                ({"receipt": {"a": [1, {"b": "x\udfff"}]}, "authorized": True}, "string at `body.receipt.a[1].b`"),
                ({"receipt": {"\ud800": 1}, "authorized": True}, "object key at `body.receipt`")):
            with pytest.raises(InvalidEntry, match=re.escape(where) + r" holds a lone surrogate \(U\+D(800|FFF)\)"):
                led.append("execution", body)
        assert led.size == 0
