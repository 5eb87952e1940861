"""Canonical JSON (RFC 8785, JCS) and the bytes an entry's hash covers.

An entry's **leaf data** is the RFC 8785 serialisation of the object::

    {"body": <body>, "id": ..., "key": ..., "kind": ..., "links": [...],
     "prev": <hex of the previous entry's hash>, "seq": n, "time": "...Z", "v": 1,
     "workflow": ...}

and its hash is the RFC 6962 leaf hash ``SHA-256(0x00 || leaf data)``. Because
``"body"`` sorts first, the leaf data is ``{"body":`` + the stored canonical body text +
``,`` + the canonical header without its opening brace; ``leaf_data`` builds it that
way, so verifying does not re-canonicalise every body (a test checks the splice equals
``rfc8785.dumps`` of the whole object).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import rfc8785

from .errors import InvalidEntry

ENTRY_FORMAT_VERSION = 1
ZERO_HASH = "0" * 64  # the ``prev`` of the first entry

__all__ = ["Canonical", "canonical_json", "canonical_text", "leaf_data", "ENTRY_FORMAT_VERSION", "ZERO_HASH"]


def _check_slow(value: Any, path: str, depth: int = 0) -> bool:
    """Refuse what is not interoperable JSON; return True when ``json.dumps`` (sorted,
    compact, ``ensure_ascii=False``) renders ``value`` exactly as RFC 8785 does.

    It does unless a float is rendered differently by Python's ``repr`` and ECMAScript's
    Number::toString (integral floats ``1.0``/``-0.0``, and exponent forms such as
    ``1e-07`` vs ``1e-7`` or ``1e+20`` vs ``100000000000000000000``), or an object key
    holds a code point above U+FFFF (RFC 8785 sorts keys by UTF-16 code units, Python by
    code points; the two orders differ only around astral characters). Everything else
    agrees: the same string escapes (``\\" \\\\ \\b \\f \\n \\r \\t``, lowercase
    ``\\u00xx`` for other controls, nothing else escaped) and integers (checked here to be
    within ±2^53-1). ``tests/test_ledger_canonical.py`` proves the agreement against
    ``rfc8785`` with hypothesis.
    """
    if depth > 64:
        raise InvalidEntry(f"body nests deeper than 64 levels at `{path}`")
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        if abs(value) > 2**53 - 1:
            raise InvalidEntry(
                f"integer at `{path}` is outside the interoperable range (±2^53-1); store it as a string"
            )
        return True
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEntry(f"number at `{path}` is not finite")
        r = float.__repr__(value)
        return "e" not in r and not r.endswith(".0")
    if isinstance(value, dict):
        fast = True
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidEntry(f"object key {k!r} at `{path}` is not a string")
            if not _check_slow(v, f"{path}.{k}", depth + 1):
                fast = False
            elif type(k) is not str or (not k.isascii() and k and max(k) > "\uffff"):
                fast = False
        return fast
    if isinstance(value, (list, tuple)):
        fast = True
        for i, v in enumerate(value):
            if not _check_slow(v, f"{path}[{i}]", depth + 1):
                fast = False
        return fast
    raise InvalidEntry(f"value at `{path}` is a {type(value).__name__}, not JSON")


class _Bad(Exception):
    pass


def _fast(value: Any, depth: int) -> bool:
    # _check_slow without building paths (the common, valid case); _Bad sends a refusal
    # back to _check_slow for its message
    t = type(value)
    if t is str or value is None or t is bool:
        return True
    if t is int:
        if -(2**53 - 1) <= value <= 2**53 - 1:
            return True
        raise _Bad
    if t is dict:
        if depth >= 64:
            raise _Bad
        ok = True
        for k, v in value.items():
            if type(k) is not str:
                raise _Bad
            if not _fast(v, depth + 1) or (not k.isascii() and k and max(k) > "\uffff"):
                ok = False
        return ok
    if t is list:
        if depth >= 64:
            raise _Bad
        ok = True
        for v in value:
            if not _fast(v, depth + 1):
                ok = False
        return ok
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise _Bad
        r = float.__repr__(value)
        return "e" not in r and not r.endswith(".0")
    return _slow_only(value, depth)


def _slow_only(value: Any, depth: int) -> bool:
    # subclasses, tuples and the rest: the careful walk decides (paths are only for messages)
    try:
        return _check_slow(value, "body", depth)
    except InvalidEntry:
        raise _Bad from None


def _check(value: Any, path: str, depth: int = 0) -> bool:
    """:func:`_check_slow`, fast for plain values (no path strings built unless refused)."""
    try:
        return _fast(value, depth)
    except _Bad:
        return _check_slow(value, path, depth)  # raises with the path


_SAME: Any = object()
_SAFE = float(2**53 - 1)


def _ints(value: Any) -> Any:
    """`value` with every integral float within ±(2^53-1) as that int, or `_SAME` when it
    holds none (plain dicts and lists only; what `_check` then finds fast is written by
    `json` exactly as RFC 8785 writes the original). RFC 8785 writes a number as
    ECMAScript's Number::toString does: an integral value below 10^21 as its integer digits
    (`10.0` as `10`, `-0.0` as `0`), which is how `json` writes the int; Python's `repr`
    keeps the `.0`, so without this a body with one such float went to the `rfc8785`
    package, several times slower."""
    t = type(value)
    if t is float:
        return int(value) if value.is_integer() and -_SAFE <= value <= _SAFE else _SAME
    if t is dict:
        out = None
        for k, v in value.items():
            c = _ints(v)
            if c is not _SAME:
                if out is None:
                    out = dict(value)
                out[k] = c
        return _SAME if out is None else out
    if t is list:
        lst = None
        for i, v in enumerate(value):
            c = _ints(v)
            if c is not _SAME:
                if lst is None:
                    lst = list(value)
                lst[i] = c
        return _SAME if lst is None else lst
    return _SAME


# json.dumps with sorted keys, no spaces and no ASCII escaping: exactly RFC 8785 for the
# values _check passes as fast (the C encoder, built once).
_FAST_DUMPS = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value (dict, list, str, int, float, bool, None).

    Raises :class:`InvalidEntry` for anything that is not interoperable JSON (non-string
    keys, NaN, integers beyond ±2^53-1, other Python types, lone surrogates). Uses the C
    JSON encoder when its output is provably the same (see :func:`_check`), the
    ``rfc8785`` package otherwise.
    """
    try:
        if _check(value, "body"):
            return _FAST_DUMPS(value).encode("utf-8")
        conv = _ints(value)  # (an amount of 10.0: RFC 8785 writes 10, as the int)
        if conv is not _SAME and _check(conv, "body"):
            return _FAST_DUMPS(conv).encode("utf-8")
        return rfc8785.dumps(value)
    except UnicodeError as e:  # (a lone surrogate: name where it is, as a NaN or a big int is named)
        at = _surrogate_at(value, "body")
        if at is None:
            raise InvalidEntry(f"body is not canonicalisable JSON: {e}") from None
        raise InvalidEntry(f"{at[0]} at `{at[1]}` holds a lone surrogate ({at[2]}), which UTF-8 cannot "
                           "encode: body is not canonicalisable JSON") from None
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as e:
        raise InvalidEntry(f"body is not canonicalisable JSON: {e}") from None


def _lone(s: str) -> str | None:
    """The first lone surrogate of ``s`` as ``U+XXXX``, or None."""
    for ch in s:
        if "\ud800" <= ch <= "\udfff":
            return f"U+{ord(ch):04X}"
    return None


def _surrogate_at(value: Any, path: str, depth: int = 0) -> tuple[str, str, str] | None:
    """(what, where, which) of the first string or key holding a lone surrogate (the error
    path only: nothing walks a body for this otherwise)."""
    if depth > 64:
        return None
    if isinstance(value, str):
        u = _lone(value)
        return ("string", path, u) if u else None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and (u := _lone(k)):
                return ("object key", path, u)
            if (hit := _surrogate_at(v, f"{path}.{k}", depth + 1)) is not None:
                return hit
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if (hit := _surrogate_at(v, f"{path}[{i}]", depth + 1)) is not None:
                return hit
    return None


def canonical_text(value: Any) -> str:
    """:func:`canonical_json` as text (UTF-8)."""
    return canonical_json(value).decode("utf-8")


class Canonical:
    """A body given as its RFC 8785 text, for :meth:`Ledger.append_many` (``NewEntry.body``).

    The producer vouches that ``text`` is exactly ``canonical_text`` of a JSON object whose
    top-level keys are ``keys`` (the ledger checks the kind's required keys against them
    and stores the text as given; the entry's ``body`` is parsed from it when first read).
    For encoders that know their body's structure, such as the runtime's gate
    (``policy_engine.runtime.gatejson``), proven byte-identical to :func:`canonical_json`
    by tests. Not for ``step`` or ``approval`` entries, whose checks read values.
    """

    __slots__ = ("text", "keys", "top")

    def __init__(self, text: str, keys: tuple[str, ...], top: dict[str, Any] | None = None) -> None:
        self.text = text
        self.keys = keys
        # some of the body's top-level values, as the text holds them: what the entry's
        # readers may take without parsing the text (`Entry.top`)
        self.top = top if top is not None else {}

    def __repr__(self) -> str:
        return f"Canonical({self.text[:60]!r}...)"


def header(
    *,
    seq: int,
    id: str,
    kind: str,
    workflow: str | None,
    links: tuple[str, ...] | list[str],
    key: str | None,
    time: str,
    prev: str,
) -> dict[str, Any]:
    """The hashed fields of an entry other than its body."""
    return {
        "id": id,
        "key": key,
        "kind": kind,
        "links": list(links),
        "prev": prev,
        "seq": seq,
        "time": time,
        "v": ENTRY_FORMAT_VERSION,
        "workflow": workflow,
    }


def leaf_data(body_text: str, **fields: Any) -> bytes:
    """The RFC 8785 bytes of the whole entry, given its canonical body text and header fields.

    ``body_text`` must already be canonical (it is, for every stored body; a changed body
    changes these bytes and so the hash, which is what verification needs).
    """
    head = _HEADER_DUMPS(header(**fields)).encode("utf-8")
    return b'{"body":' + body_text.encode("utf-8") + b"," + head[1:]


# The header holds only ASCII keys, small integers, None, and strings / lists of strings
# that were checked to be valid UTF-8. For those, json.dumps with sorted keys, no spaces and
# ensure_ascii=False produces exactly RFC 8785 (the same string escapes: \" \\ \b \f \n \r \t
# and lowercase \u00xx for other control characters, nothing else escaped), at a fraction of
# the cost; tests/test_ledger.py compares the two on hostile strings.
_HEADER_DUMPS = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _const(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(digits: str) -> int | float:
    # an integer literal beyond ±(2^53-1) in a stored body is a double RFC 8785 wrote in
    # integer digits (1e16 as 10000000000000000): read back as that double, it is written
    # again as the same text; read as a Python int, the ledger refused it as out of range
    n = int(digits)
    return n if -(2**53 - 1) <= n <= 2**53 - 1 else float(digits)


_DECODE = json.JSONDecoder(parse_constant=_const).decode
_DECODE_WIDE = json.JSONDecoder(parse_constant=_const, parse_int=_number).decode
_LONG_RUN = re.compile(r"[0-9]{16}")  # (2^53-1 has 16 digits: a body without such a run holds no wider integer)


def parse_body(text: str) -> Any:
    """Parse a stored body (strict JSON: no NaN/Infinity), its numbers as RFC 8785 reads
    them: an integer beyond ±(2^53-1) (which the ledger writes only for a double such as
    ``1e16``) is that double, so ``canonical_text(parse_body(t)) == t`` for every stored
    body ``t``."""
    return (_DECODE_WIDE if _LONG_RUN.search(text) else _DECODE)(text)
