"""CEL's conversion functions: int(), uint(), double(), string(), bytes(), bool(), timestamp(), duration();
and the network extension (cel-go ext.Network): ip(), cidr(), isIP(), ip.isCanonical() and
the methods of net.IP and net.CIDR values (values.py: CelIP, CelCIDR).

Addresses are parsed with Python's ``ipaddress`` to the rules of Go's ``net/netip`` that
cel-go uses: no zone (``fe80::1%en0``), no IPv4-mapped address written with a dotted quad
(``::ffff:192.168.0.1``), no leading zeros, a prefix length in decimal without a sign or
leading zero. Equality and the address predicates see an IPv4-mapped address written in hex
(``::ffff:c0a8:1``) as the IPv4 address it maps, as cel-go does. A text longer than any
address is refused before it is parsed (constant time whatever the input). Bad input is an
error value (``_Fail``), never an exception out of the evaluator.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .datetimes import (
    _EPOCH,
    _format_duration,
    _format_timestamp,
    _parse_duration,
    _parse_timestamp,
)
from .errors import _Fail
from .values import (
    _PYTYPE_TO_CEL,
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    Addr,
    CelCIDR,
    CelIP,
    CelUint,
    _check_dur,
    _no_overload,
    _norm,
    _unmapped,
)

# ---------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------

_INT_STR_RE = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_STR_RE = re.compile(
    r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[Ii]nf(?:inity)?|NaN|nan)$"
)
_BOOL_STRS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}


def _to_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v
    if t is CelUint:
        if v > INT64_MAX:
            raise _Fail("range error: uint out of int range")
        return int(v)
    if t is float:
        if not (-9.223372036854775808e18 < v < 9.223372036854775808e18):
            raise _Fail("range error: double out of int range")
        return int(v)
    if t is str:
        if not _INT_STR_RE.match(v):
            raise _Fail(f"type conversion error: cannot convert {v!r} to int")
        return _ovf_range_int(int(v))
    if t is datetime:
        return (v - _EPOCH) // timedelta(seconds=1)
    if t is bool or t is bytes:
        raise _no_overload("int", v)
    if t not in _PYTYPE_TO_CEL:
        return _to_int(_norm(v))
    raise _no_overload("int", v)


def _ovf_range_int(r: int) -> int:
    if INT64_MIN <= r <= INT64_MAX:
        return r
    raise _Fail("range error: int out of range")


def _to_uint(v: Any) -> CelUint:
    t = type(v)
    if t is CelUint:
        return v
    if t is int:
        if 0 <= v <= UINT64_MAX:
            return CelUint(v)
        raise _Fail("range error: int out of uint range")
    if t is float:
        if not (-1.0 < v < 1.8446744073709551616e19):
            raise _Fail("range error: double out of uint range")
        return CelUint(int(v))
    if t is str:
        if not _INT_STR_RE.match(v) or v.startswith("-"):
            raise _Fail(f"type conversion error: cannot convert {v!r} to uint")
        r = int(v)
        if r > UINT64_MAX:
            raise _Fail("range error: uint out of range")
        return CelUint(r)
    if t not in _PYTYPE_TO_CEL:
        return _to_uint(_norm(v))
    raise _no_overload("uint", v)


def _to_double(v: Any) -> float:
    t = type(v)
    if t is float:
        return v
    if t is int or t is CelUint:
        return float(v)
    if t is str:
        if not _FLOAT_STR_RE.match(v):
            raise _Fail(f"type conversion error: cannot convert {v!r} to double")
        return float(v)
    if t not in _PYTYPE_TO_CEL:
        return _to_double(_norm(v))
    raise _no_overload("double", v)


def _format_double(f: float) -> str:
    if f != f:
        return "NaN"
    if f in (math.inf, -math.inf):
        return "+Inf" if f > 0 else "-Inf"
    if f.is_integer() and abs(f) < 1e21:
        return str(int(f))
    r = repr(f)
    if "e" in r:
        mant, exp = r.split("e")
        e = int(exp)
        if -4 <= e < 21:
            return format(f, "f").rstrip("0").rstrip(".") if e < 0 else r
        return f"{mant}e{'+' if e >= 0 else '-'}{abs(e):02d}"
    return r


def _to_string(v: Any) -> str:
    t = type(v)
    if t is str:
        return v
    if t is int or t is CelUint:
        return str(int(v))
    if t is float:
        return _format_double(v)
    if t is bool:
        return "true" if v else "false"
    if t is bytes:
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail("invalid UTF-8 in bytes") from None
    if t is datetime:
        return _format_timestamp(v)
    if t is timedelta:
        return _format_duration(v)
    if t is CelIP or t is CelCIDR:
        return str(v)
    if t not in _PYTYPE_TO_CEL:
        return _to_string(_norm(v))
    raise _no_overload("string", v)


def _to_bytes(v: Any) -> bytes:
    t = type(v)
    if t is bytes:
        return v
    if t is str:
        return v.encode("utf-8")
    if t not in _PYTYPE_TO_CEL:
        return _to_bytes(_norm(v))
    raise _no_overload("bytes", v)


def _to_bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    if type(v) is str:
        r = _BOOL_STRS.get(v)
        if r is None:
            raise _Fail(f"type conversion error: cannot convert {v!r} to bool")
        return r
    raise _no_overload("bool", v)


def _to_timestamp(v: Any) -> datetime:
    t = type(v)
    if t is datetime:
        return v
    if t is str:
        return _parse_timestamp(v)
    if t is int:
        try:
            return _EPOCH + timedelta(seconds=v)
        except OverflowError:
            raise _Fail("range error: timestamp out of range") from None
    raise _no_overload("timestamp", v)


def _to_duration(v: Any) -> timedelta:
    t = type(v)
    if t is timedelta:
        return v
    if t is str:
        return _parse_duration(v)
    if t is int:
        return _check_dur(timedelta(seconds=v))
    raise _no_overload("duration", v)


# ---------------------------------------------------------------------------
# The network extension
# ---------------------------------------------------------------------------

#: the longest text that can be an address (45: IPv6 with an embedded dotted quad) or a CIDR
#: (+ "/128"), with room to spare; a longer one is refused without being parsed
_MAX_TEXT = 64
_DIGITS = frozenset("0123456789")


def _shown(raw: str) -> str:
    """The input as an error message quotes it (cut short: a field may be megabytes)."""
    return raw if len(raw) <= _MAX_TEXT else raw[:_MAX_TEXT] + "..."


def _parse_addr(raw: str) -> Addr | None:
    """The address a text is, by netip's rules, or None (the zone and mapped-quad cases are
    the caller's: it words their errors)."""
    if len(raw) > _MAX_TEXT or not raw or not raw.isascii():
        return None
    try:
        a = ipaddress.ip_address(raw)
    except ValueError:
        return None
    return a


def _check_addr(raw: str, what: str) -> Addr:
    if len(raw) <= _MAX_TEXT and "%" in raw:
        raise _Fail(f"{what} with zone value is not allowed: '{raw}'")
    a = _parse_addr(raw)
    if a is None:
        if what == "IP Address":
            raise _Fail(f"IP Address '{_shown(raw)}' parse error during conversion from string")
        raise _Fail(f"network address '{_shown(raw)}' parse error during conversion from string")
    if a.version == 6 and "." in raw and a.ipv4_mapped is not None:
        raise _Fail(f"IPv4-mapped IPv6 address is not allowed: '{raw}'")
    return a


def parse_ip(raw: str) -> CelIP:
    """``ip(string)``: the address, or ``_Fail`` with cel-go's wording."""
    return CelIP(_check_addr(raw, "IP Address"))


def is_ip(raw: str) -> bool:
    try:
        parse_ip(raw)
    except _Fail:
        return False
    return True


def parse_cidr(raw: str) -> CelCIDR:
    """``cidr(string)``: ``address/bits``, or ``_Fail`` with cel-go's wording."""
    addr_text, slash, bits_text = raw.rpartition("/")
    bad = _Fail(f"network address '{_shown(raw)}' parse error during conversion from string")
    if not slash or len(raw) > _MAX_TEXT:
        raise bad
    if "%" in addr_text:
        raise _Fail(f"CIDR with zone value is not allowed: '{raw}'")
    if not bits_text or len(bits_text) > 3 or not set(bits_text) <= _DIGITS or (
        len(bits_text) > 1 and bits_text[0] == "0"
    ):
        raise bad
    try:
        a = _check_addr(addr_text, "network address")
    except _Fail as ex:
        if ex.err.message.startswith("IPv4-mapped"):
            raise
        raise bad from None
    bits = int(bits_text)
    if bits > a.max_prefixlen:
        raise bad
    return CelCIDR(a, bits)


def same_family_contains(net: CelCIDR, a: Addr) -> bool:
    """Whether the prefix holds the address (of the same family: an IPv4 address never
    matches an IPv6 prefix, as in netip's Prefix.Contains)."""
    if a.version != net.addr.version:
        return False
    shift = net.addr.max_prefixlen - net.bits
    return (int(a) >> shift) == (int(net.addr) >> shift)


def _ip(v: Any) -> CelIP:
    if type(v) is not str:
        raise _no_overload("ip", v)
    return parse_ip(v)


def _cidr(v: Any) -> CelCIDR:
    if type(v) is not str:
        raise _no_overload("cidr", v)
    return parse_cidr(v)


def _is_ip(v: Any) -> bool:
    if type(v) is not str:
        raise _no_overload("isIP", v)
    return is_ip(v)


def _is_canonical(v: Any) -> bool:
    """``ip.isCanonical(s)``: whether `s` is the address written as cel-go writes it."""
    if type(v) is not str:
        raise _no_overload("ip.isCanonical", v)
    return str(parse_ip(v)) == v


def _ip_pred(name: str, v4: Callable[[int], bool], v6: Callable[[int], bool]) -> Callable:
    """A predicate of an address, on its integer value (of the IPv4 address a mapped one maps)."""

    def f(x: Any) -> bool:
        if type(x) is not CelIP:
            raise _no_overload(name, x)
        a = _unmapped(x.addr)
        return v4(int(a)) if a.version == 4 else v6(int(a))

    return f


def _v4_in(prefix: int, bits: int) -> Callable[[int], bool]:
    shift = 32 - bits
    return lambda n: (n >> shift) == (prefix >> shift)


def _v6_top16(mask: int, want: int) -> Callable[[int], bool]:
    return lambda n: (n >> 112) & mask == want


_V4_LOOP = _v4_in(0x7F000000, 8)  # 127.0.0.0/8
_V4_MULTI = _v4_in(0xE0000000, 4)  # 224.0.0.0/4
_V4_LL_MULTI = _v4_in(0xE0000000, 24)  # 224.0.0.0/24
_V4_LL_UNI = _v4_in(0xA9FE0000, 16)  # 169.254.0.0/16
_V6_MULTI = _v6_top16(0xFF00, 0xFF00)  # ff00::/8
_V6_LL_MULTI = _v6_top16(0xFF0F, 0xFF02)  # ff02::/16 (any flags)
_V6_LL_UNI = _v6_top16(0xFFC0, 0xFE80)  # fe80::/10


def _global_unicast(n: int, v4: bool) -> bool:
    """netip's IsGlobalUnicast: none of unspecified, loopback, multicast, link-local
    unicast, IPv4 broadcast (private ranges are global unicast)."""
    if v4:
        return not (n == 0 or n == 0xFFFFFFFF or _V4_LOOP(n) or _V4_MULTI(n) or _V4_LL_UNI(n))
    return not (n == 0 or n == 1 or _V6_MULTI(n) or _V6_LL_UNI(n))


def _family(x: Any) -> int:
    if type(x) is not CelIP:
        raise _no_overload("family", x)
    return 4 if x.addr.version == 4 else 6


def _prefix_length(x: Any) -> int:
    if type(x) is not CelCIDR:
        raise _no_overload("prefixLength", x)
    return x.bits


def _cidr_ip(x: Any) -> CelIP:
    if type(x) is not CelCIDR:
        raise _no_overload("ip", x)
    return CelIP(x.addr)


def _masked(x: Any) -> CelCIDR:
    if type(x) is not CelCIDR:
        raise _no_overload("masked", x)
    a = x.addr
    keep = a.max_prefixlen - x.bits
    n = (int(a) >> keep) << keep
    return CelCIDR(type(a)(n), x.bits)


def _contains_ip(x: Any, y: Any) -> bool:
    if type(x) is not CelCIDR:
        raise _no_overload("containsIP", x, y)
    if type(y) is str:
        y = parse_ip(y)
    elif type(y) is not CelIP:
        raise _no_overload("containsIP", x, y)
    # an IPv4-mapped address (written in hex: `::ffff:a01:203`) is the IPv4 address it maps, as
    # for `==` and the predicates: else it would slip past a `deny` of its IPv4 range
    return same_family_contains(x, _unmapped(y.addr) if x.addr.version == 4 else y.addr)


def _contains_cidr(x: Any, y: Any) -> bool:
    if type(x) is not CelCIDR:
        raise _no_overload("containsCIDR", x, y)
    if type(y) is str:
        y = parse_cidr(y)
    elif type(y) is not CelCIDR:
        raise _no_overload("containsCIDR", x, y)
    return y.bits >= x.bits and same_family_contains(x, y.addr)


def network_tables() -> tuple[dict[str, Callable], dict[str, Callable]]:
    """(global functions, methods) of the extension, for builtins.py's tables."""
    glob: dict[str, Callable] = {
        "ip": _ip,
        "cidr": _cidr,
        "isIP": _is_ip,
        "ip.isCanonical": _is_canonical,
    }
    meth: dict[str, Callable] = {
        "family": _family,
        "isUnspecified": _ip_pred("isUnspecified", lambda n: n == 0, lambda n: n == 0),
        "isLoopback": _ip_pred("isLoopback", _V4_LOOP, lambda n: n == 1),
        "isGlobalUnicast": _ip_pred("isGlobalUnicast", lambda n: _global_unicast(n, True),
                                    lambda n: _global_unicast(n, False)),
        "isLinkLocalMulticast": _ip_pred("isLinkLocalMulticast", _V4_LL_MULTI, _V6_LL_MULTI),
        "isLinkLocalUnicast": _ip_pred("isLinkLocalUnicast", _V4_LL_UNI, _V6_LL_UNI),
        "containsIP": _contains_ip,
        "containsCIDR": _contains_cidr,
        "masked": _masked,
        "prefixLength": _prefix_length,
        "ip": _cidr_ip,
    }
    return glob, meth

