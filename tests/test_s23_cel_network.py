"""CEL's network extension (cel-go ext.Network): `ip()`, `cidr()`, `isIP()`, `ip.isCanonical()`
and the methods of `net.IP` / `net.CIDR`, on the reference closures and the generated fast
path alike; bad input is an error value (never an exception, never a wider permission); a
policy gating on `cidr(...).containsIP(ip(action.source_ip))` decides right, and a literal
that is no CIDR is a check-time error at its file:line:col."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import policy_engine
from policy_engine.cel import CelError, CelType, compile_cel
from policy_engine.cel.typecheck import typecheck
from policy_engine.fieldtypes import FType
from policy_engine.language.loader import load_text

ACT = {"a": "10.1.2.3", "mapped": "::ffff:a01:203", "v6": "2001:db8::1", "bad": "10.0.0.256", "n": 5}

CASES: list[tuple[str, Any]] = [
    ("cidr('10.0.0.0/8').containsIP(ip(action.a))", True),
    ("cidr('10.0.0.0/8').containsIP(action.a)", True),
    ("cidr('11.0.0.0/8').containsIP(ip(action.a))", False),
    ("cidr('::/0').containsIP(ip(action.a))", False),  # an IPv4 address never matches an IPv6 prefix
    ("cidr('10.0.0.0/8').containsIP(action.mapped)", True),  # the mapped address is the IPv4 one
    ("cidr('::ffff:0:0/96').containsIP(action.mapped)", True),
    ("cidr('11.0.0.0/8').containsIP(action.mapped)", False),
    ("cidr('10.0.0.0/8').containsCIDR(action.a + '/16')", True),
    ("cidr('10.1.0.0/16').containsCIDR(cidr('10.0.0.0/8'))", False),
    ("ip(action.mapped) == ip(action.a)", True),  # a mapped address written in hex is the IPv4 one
    ("string(ip(action.mapped))", "::ffff:10.1.2.3"),
    ("ip(action.mapped).family()", 6),
    ("ip(action.v6).family()", 6),
    ("string(ip(action.v6.upperAscii()))", "2001:db8::1"),
    ("ip.isCanonical(action.v6.upperAscii())", False),
    ("ip.isCanonical(action.v6)", True),
    ("isIP(action.bad)", False),
    ("isIP(action.a)", True),
    ("cidr(action.a + '/24').masked() == cidr('10.1.2.0/24')", True),
    ("cidr(action.a + '/24') == cidr('10.1.2.0/24')", False),  # the address as written
    ("string(cidr(action.a + '/24').ip())", "10.1.2.3"),
    ("cidr(action.v6 + '/32').prefixLength()", 32),
    ("ip(action.a).isGlobalUnicast() && !ip('255.255.255.255').isGlobalUnicast()", True),
    ("type(ip(action.a)) == net.IP && type(cidr('::/0')) == net.CIDR", True),
    ("[ip(action.a)].exists(x, x == ip(action.mapped))", True),
    ("ip(action.a) == action.a", False),  # heterogeneous equality: false, as for any two kinds
    # errors: values, with cel-go's words
    ("ip(action.bad)", CelError("IP Address '10.0.0.256' parse error during conversion from string")),
    ("ip(action.n)", CelError("no such overload: ip(int)")),
    ("ip('fe80::1%eth0')", CelError("IP Address with zone value is not allowed: 'fe80::1%eth0'")),
    ("ip('::ffff:10.1.2.3')", CelError("IPv4-mapped IPv6 address is not allowed: '::ffff:10.1.2.3'")),
    ("cidr(action.a + '/33')", CelError("network address '10.1.2.3/33' parse error during conversion from string")),
    ("cidr(action.a + '/08')", CelError("network address '10.1.2.3/08' parse error during conversion from string")),
    ("cidr(action.a)", CelError("network address '10.1.2.3' parse error during conversion from string")),
    ("ip(action.a).masked()", CelError("no such overload: masked(net.IP)")),
    ("action.a.family()", CelError("no such overload: family(string)")),
    ("ip(action.a) < ip(action.a)", CelError("no such overload: _<_(net.IP, net.IP)")),
    ("cidr('10.0.0.0/8').containsIP(action.n)", CelError("no such overload: containsIP(net.CIDR, int)")),
    # an error is absorbed like any other by `||` / `&&`
    ("ip(action.bad).isLoopback() || true", True),
]


@pytest.mark.parametrize("accelerate", [False, True], ids=["closures", "fast"])
@pytest.mark.parametrize("src, want", CASES, ids=[c[0] for c in CASES])
def test_network_functions(src: str, want: Any, accelerate: bool) -> None:
    expr = compile_cel(src, accelerate=accelerate)
    for _ in range(3):  # (the fast path is generated after the first calls)
        got = expr({"action": ACT})
        assert type(got) is type(want) and got == want, (src, got)


def test_predicates_follow_netip() -> None:
    table = {
        "isUnspecified": (["0.0.0.0", "::"], ["0.0.0.1", "::1"]),
        "isLoopback": (["127.0.0.1", "127.255.0.9", "::1", "::ffff:7f00:1"], ["128.0.0.1", "::2"]),
        "isGlobalUnicast": (["192.168.0.1", "8.8.8.8", "2001:db8::1"],
                            ["255.255.255.255", "0.0.0.0", "127.0.0.1", "224.0.0.1", "169.254.1.1", "ff00::1",
                             "fe80::1", "::1", "::"]),
        "isLinkLocalMulticast": (["224.0.0.1", "224.0.0.255", "ff02::1", "ff12::1"], ["224.0.1.1", "ff05::1"]),
        "isLinkLocalUnicast": (["169.254.169.254", "fe80::1", "febf::1"], ["169.255.0.1", "fec0::1"]),
    }
    for method, (yes, no) in table.items():
        for addr, want in [(a, True) for a in yes] + [(a, False) for a in no]:
            assert compile_cel(f"ip(x).{method}()")({"x": addr}) is want, (method, addr)


def test_a_huge_input_is_refused_before_it_is_parsed() -> None:
    big = "1" * 4_000_000
    for src in ("ip(x)", "cidr(x)", "cidr('10.0.0.0/8').containsIP(x)"):
        got = compile_cel(src)({"x": big})
        assert type(got) is CelError and "parse error" in got.message
        assert len(got.message) < 200  # the message quotes the input cut short
    assert compile_cel("isIP(x)")({"x": big}) is False


def test_type_identifiers() -> None:
    assert compile_cel("net.IP")({}) == CelType("net.IP")
    assert compile_cel("type(net.CIDR)")({}) == CelType("type")


# ------------------------------------------------------------------ the type check
ENV = {"action": FType("object", fields=())}


def kinds(src: str) -> list[tuple[str, str]]:
    return [(f.kind, src[f.start:f.end]) for f in typecheck(src, {"n": FType("int"), "s": FType("string")})]


def test_type_check_knows_the_extension() -> None:
    assert kinds("cidr('10.0.0.0/8').containsIP(ip(s)) && isIP(s) && ip.isCanonical(s)") == []
    assert kinds("ip(s).family() == 4 && cidr('::/0').prefixLength() > 0") == []
    assert kinds("ip(n).isLoopback()") == [("mismatch", "n")]
    assert kinds("cidr('10.0.0.0/8').isLoopback()") == [("mismatch", "cidr('10.0.0.0/8')")]
    assert kinds("ip(s).containsIP(s)") == [("mismatch", "ip(s)")]
    assert kinds("cidr('10.0.0.0/8').containsIP(n)") == [("mismatch", "n")]
    assert kinds("ip(s) < ip(s)") != []
    assert kinds("ip(s)") == [("mismatch", "ip(s)")]  # a condition that is not a bool


def test_type_check_refuses_a_literal_that_is_no_address() -> None:
    assert kinds("cidr('10.0.0.0/33').containsIP(s)") == [("mismatch", "'10.0.0.0/33'")]
    assert kinds("cidr('10.0.0.0/8').containsIP('10.0.0.300')") == [("mismatch", "'10.0.0.300'")]
    assert kinds("cidr('10.0.0.0/8').containsCIDR('10.0.0.0')") == [("mismatch", "'10.0.0.0'")]
    assert kinds("ip('fe80::1%eth0') == ip(s)") == [("mismatch", "'fe80::1%eth0'")]
    assert kinds("ip.isCanonical('1.2.3')") == [("mismatch", "'1.2.3'")]
    assert kinds("isIP('1.2.3')") == []  # any string is a question for isIP


# ------------------------------------------------------------------ a policy
POLICY = '''
roles [reviewer]

workflow "net" {
  version "1.0.0"
  owners {
    business "B"
    technical "T"
  }
  default deny

  action call_api {
    system "api"
    reversible full via "api.undo"
    fields {
      source_ip: string
    }
    require_approval loopback by 1 reviewer when `ip(action.source_ip).isLoopback()`
    allow internal when `cidr("10.0.0.0/8").containsIP(ip(action.source_ip))`
  }
}
'''


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("net") / "net.policy"
    path.write_text(POLICY, encoding="utf-8")
    return {"reference": policy_engine.load(path, accelerate=False), "accelerated": policy_engine.load(path)}


def test_the_policy_checks_clean() -> None:
    assert [(d.code, d.message) for d in load_text(POLICY, "net.policy").diagnostics] == []


@pytest.mark.parametrize("mode", ["reference", "accelerated"])
@pytest.mark.parametrize("source_ip, effect", [
    ("10.2.3.4", "allow"),
    ("::ffff:a02:304", "allow"),  # an IPv4-mapped address is the IPv4 address it maps
    ("::ffff:b00:1", "deny"),
    ("11.0.0.1", "deny"),
    ("127.0.0.1", "require_approval"),
    ("10.0.0.1%eth0", "require_approval"),  # an error: the approval rule matches, the allow does not
    ("not an address", "require_approval"),
])
def test_the_policy_decides(engines: dict, mode: str, source_ip: str, effect: str) -> None:
    action = {"workflow": "net", "type": "call_api", "id": "c-1", "source_ip": source_ip}
    for _ in range(4):  # the accelerated gate is built after the first evaluations
        d = engines[mode].evaluate(action)
        assert d.effect == effect
    if effect == "require_approval" and source_ip != "127.0.0.1":
        assert {e.kind for e in d.errors} == {"rule"} and all(
            "not allowed" in e.message or "parse error" in e.message for e in d.errors)


def test_a_literal_that_is_no_cidr_is_a_check_error_at_its_place() -> None:
    text = POLICY.replace('cidr("10.0.0.0/8")', 'cidr("10.0.0.0/33")')
    (d,) = load_text(text, "net.policy").diagnostics
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "10.0.0.0/33" in ln)
    col = text.splitlines()[line - 1].index('"10.0.0.0/33"') + 1
    assert (d.code, d.severity, d.span.line, d.span.col, d.span.end_col - d.span.col) == (
        "E116", "error", line, col, len('"10.0.0.0/33"'))
    assert d.message == ('`"10.0.0.0/33"` is not a CIDR: network address \'10.0.0.0/33\' parse error during '
                         'conversion from string')


def test_unknown_names_know_the_extension(tmp_path: Path) -> None:
    from policy_engine.cel.analysis import unknown_names

    assert unknown_names("cidr('10.0.0.0/8').containsIP(ip(x)) && isIP(x) && ip.isCanonical(x)") == []
    assert [u.name for u in unknown_names("ip(x).contains_ip(y)")] == ["contains_ip"]
