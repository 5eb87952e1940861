"""What a tool gave back, as an execution records it: its receipt fields as JSON the ledger
can hold (``_jsonable``), a failure as one bounded line (``error_text``). A tool that ran is
recorded whatever it returned or raised. No framework is imported here."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from ..runtime.gatejson import repr_pieces

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
