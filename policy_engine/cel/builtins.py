"""The function tables: every global function and receiver-style method a condition may call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .conversions import (
    _to_bool,
    _to_bytes,
    _to_double,
    _to_duration,
    _to_int,
    _to_string,
    _to_timestamp,
    _to_uint,
    network_tables,
)
from .datetimes import _ts_accessor
from .format import _make_format
from .mathext import (
    _float_fn,
    _greatest,
    _int_fn,
    _is_fn,
    _least,
    _math_abs,
    _math_sign,
    _round_half_away,
    _shift,
    _sqrt,
)
from .optional import optional_tables
from .regex import _matches
from .strings import (
    _b64decode,
    _b64encode,
    _char_at,
    _contains,
    _ends_with,
    _index_of,
    _last_index_of,
    _lower_ascii,
    _make_join,
    _make_replace,
    _quote,
    _reverse,
    _split,
    _starts_with,
    _substring,
    _trim,
    _upper_ascii,
)
from .values import UINT64_MAX, CelUint, _size, _Sizes, _type_of


def _builtin_tables(sizes: _Sizes) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """(global functions, receiver-style methods). Methods get the receiver first."""
    replace = _make_replace(sizes)
    join = _make_join(sizes)
    fmt = _make_format(sizes)
    glob: dict[str, Callable] = {
        "size": _size,
        "int": _to_int,
        "uint": _to_uint,
        "double": _to_double,
        "string": _to_string,
        "bytes": _to_bytes,
        "bool": _to_bool,
        "timestamp": _to_timestamp,
        "duration": _to_duration,
        "type": _type_of,
        "dyn": lambda v: v,
        "matches": _matches,
        "strings.quote": _quote,
        "base64.encode": _b64encode,
        "base64.decode": _b64decode,
        "math.greatest": _greatest,
        "math.least": _least,
        "math.ceil": _float_fn("math.ceil", lambda x: float(math.ceil(x)) if math.isfinite(x) else x),
        "math.floor": _float_fn("math.floor", lambda x: float(math.floor(x)) if math.isfinite(x) else x),
        "math.round": _float_fn("math.round", _round_half_away),
        "math.trunc": _float_fn("math.trunc", lambda x: float(math.trunc(x)) if math.isfinite(x) else x),
        "math.abs": _math_abs,
        "math.sign": _math_sign,
        "math.isInf": _is_fn("math.isInf", math.isinf),
        "math.isNaN": _is_fn("math.isNaN", math.isnan),
        "math.isFinite": _is_fn("math.isFinite", math.isfinite),
        "math.bitAnd": _int_fn("math.bitAnd", lambda a, b: a & b, lambda a, b: CelUint(a & b)),
        "math.bitOr": _int_fn("math.bitOr", lambda a, b: a | b, lambda a, b: CelUint(a | b)),
        "math.bitXor": _int_fn("math.bitXor", lambda a, b: a ^ b, lambda a, b: CelUint(a ^ b)),
        "math.bitNot": _int_fn("math.bitNot", lambda a: ~a, lambda a: CelUint(UINT64_MAX ^ a)),
        "math.bitShiftLeft": _shift("math.bitShiftLeft", True),
        "math.bitShiftRight": _shift("math.bitShiftRight", False),
        "math.sqrt": _sqrt,
    }
    meth: dict[str, Callable] = {
        "size": _size,
        "contains": _contains,
        "startsWith": _starts_with,
        "endsWith": _ends_with,
        "matches": _matches,
        "charAt": _char_at,
        "indexOf": _index_of,
        "lastIndexOf": _last_index_of,
        "lowerAscii": _lower_ascii,
        "upperAscii": _upper_ascii,
        "replace": replace,
        "split": _split,
        "substring": _substring,
        "trim": _trim,
        "join": join,
        "reverse": _reverse,
        "format": fmt,
    }
    for name, fn in (
        ("getFullYear", lambda t: t.year),
        ("getMonth", lambda t: t.month - 1),
        ("getDate", lambda t: t.day),
        ("getDayOfMonth", lambda t: t.day - 1),
        ("getDayOfWeek", lambda t: (t.weekday() + 1) % 7),
        ("getDayOfYear", lambda t: t.timetuple().tm_yday - 1),
        ("getHours", lambda t: t.hour),
        ("getMinutes", lambda t: t.minute),
        ("getSeconds", lambda t: t.second),
        ("getMilliseconds", lambda t: t.microsecond // 1000),
    ):
        meth[name] = _ts_accessor(name, fn)
    net_glob, net_meth = network_tables()
    glob.update(net_glob)
    meth.update(net_meth)
    opt_glob, opt_meth = optional_tables()
    glob.update(opt_glob)
    meth.update(opt_meth)
    return glob, meth


