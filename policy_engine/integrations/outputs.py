"""What a tool gave back, as an execution records it: its receipt fields as JSON the ledger
can hold (``_jsonable``), a failure as one bounded line (``error_text``). A tool that ran is
recorded whatever it returned or raised. No framework is imported here."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..limits import MAX_INPUT_CHARS, MAX_INPUT_ITEMS
from ..runtime.gatejson import oversize, repr_pieces

MAX_ERROR = 300  #: characters of a failed run's recorded error (``Type: message``, never a traceback)


def error_text(error: BaseException | str) -> str:
    """A tool's failure as its execution's ``error`` records it: ``Type: message`` (``Type``
    alone when the message is empty), cut before any traceback the message embeds, at most
    ``MAX_ERROR`` characters (a lone surrogate escaped)."""
    if isinstance(error, BaseException):
        text = str(error).strip()
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    else:
        text = str(error).strip() or "error"
    head, cut, tail = text.partition("Traceback (most recent call last)")
    if cut:  # never the traceback; when the message was one, its last line (what failed) instead
        head = head.rstrip()
        if not head or head.endswith(":"):
            last = next((ln.strip() for ln in reversed(tail.splitlines())
                         if ln.strip() not in ("", ":") and ln[:1] not in (" ", "\t")), "")
            head = f"{head} {last}".strip() if last else head.rstrip(":") or "error"
        text = head
    if not text.isascii():  # (a lone surrogate no ledger can hold: escaped, so the failure is still recorded)
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 3] + "..."


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_SAFE_INT = 2**53 - 1  #: the ledger's interoperable integers (RFC 8785): a larger one is recorded as its digits


def _receipt_int(digits: str) -> int | str:
    n = int(digits)
    return n if -MAX_SAFE_INT <= n <= MAX_SAFE_INT else digits


def _jsonable(x: Any) -> Any:
    """``x`` as JSON for a receipt, which is recorded whatever the tool returned (the tool
    ran: its execution must be recorded): a value JSON cannot hold exactly (a dict key that
    is not a string) is recorded as its text, and so is what the ledger cannot hold (RFC
    8785 JSON): an integer beyond ±2^53-1 (a 64-bit id) as its digits, a NaN or an infinity
    as ``"NaN"``, ``"Infinity"``, and a lone surrogate (text decoded with
    ``surrogateescape``: a file name, a process's output) escaped as ``\\udcff``, as
    ``error_text`` escapes it."""
    try:
        text = json.dumps(x, default=str, ensure_ascii=False)
        # (written unescaped, every surrogate left in the text is a lone one, in a string:
        # its JSON escape `\\udcff` reads back as those six characters, not as the surrogate)
        text = _LONE_SURROGATE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", text)
        return json.loads(text, parse_int=_receipt_int, parse_constant=str)
    except Exception:  # noqa: BLE001 - (a tuple key, a cycle, a `str()` that raises, nesting): its text
        text = "".join(repr_pieces(x))  # (no recursion)
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)  # (a `__repr__`'s own)


def _fields_of(output: Any) -> Any:
    """A tool's output whose fields a receipt can hold: a pydantic model or a dataclass
    instance as its fields (a tool may return one: the framework shows the model its
    text), anything else as it is."""
    if isinstance(output, type):
        return output
    dump = getattr(output, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json", warnings=False)
        except Exception:  # noqa: BLE001 - not a pydantic model after all: as it is
            return output
    if dataclasses.is_dataclass(output):
        try:
            return dataclasses.asdict(output)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001
            return output
    return output


def _weight(value: Any) -> float:
    """How much of the engine's input limits ``value`` takes (the larger share: values in
    containers or characters of text, as ``gatejson.oversize`` counts them). Iterative."""
    items = chars = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            chars += len(v)
        elif isinstance(v, Mapping):
            items += len(v)
            chars += sum(len(k) for k in v if isinstance(k, str))
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            items += len(v)
            stack.extend(v)
    return max(items / MAX_INPUT_ITEMS, chars / MAX_INPUT_CHARS)


def bounded_receipt(receipt: dict, keep: Iterable[str] = ()) -> tuple[dict, list[str]]:
    """``receipt`` without the fields that put it beyond the engine's input limits (the
    ledger refuses such a receipt whole, and the execution of a tool that ran must be
    recorded), and those fields, sorted: each field beyond the limits alone, then, while the
    rest together still are, the largest of them (never one of ``keep``: the gate's own)."""
    if oversize(receipt) is None:
        return receipt, []
    dropped = {f for f, v in receipt.items() if oversize({f: v}) is not None}
    kept = {f: v for f, v in receipt.items() if f not in dropped}
    if oversize(kept) is not None:  # each field within, together beyond: the largest ones go
        for f in sorted((f for f in kept if f not in set(keep)), key=lambda f: -_weight(kept[f])):
            del kept[f]
            dropped.add(f)
            if oversize(kept) is None:
                break
    return kept, sorted(dropped)
