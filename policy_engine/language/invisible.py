"""W217 of `check --strict`: a character typed into a string that no one sees.

A string of the policy (a constant, a list item, a workflow's or a declaration's string) or a
string or bytes literal of a condition's CEL that holds a Default_Ignorable code point (a
zero-width space or joiner, a soft hyphen, a word joiner, a byte order mark, a variation
selector, a tag character) or a control character (C0 but the tab, DEL, C1).
`["evil.com<U+200B>"]` reads as `["evil.com"]`, and a `deny ... when action.domain in
policy.blocked` never matches `evil.com`. Reported at each character (at most
`_MAX_INVISIBLE` a file), named; written as an escape (`\\u200b`) it is meant, and not
reported. Outside a string such a character is already a syntax error (E002, E101 in a
condition), and a bidirectional control anywhere in the file is E002 (loader.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..cel import parse as cel_parse
from ..source import DEFAULT_IGNORABLE  # (Unicode's Default_Ignorable_Code_Point ranges)

if TYPE_CHECKING:
    from .check import Checker

def _invisible_class() -> str:
    ranges = [(0x00, 0x08), (0x0B, 0x1F), (0x7F, 0x9F), *DEFAULT_IGNORABLE]  # controls but tab and newline
    return "[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]"


_INVISIBLE = re.compile(_invisible_class())
_MAX_INVISIBLE = 20  # reported for one file at most
_CEL_STRINGS = frozenset({"STRING_LIT", "MLSTRING_LIT", "BYTES_LIT"})


def char_name(ch: str) -> str:
    """`U+200B ZERO WIDTH SPACE`, `U+0007 control character BELL`."""
    import unicodedata

    cp = ord(ch)
    name = unicodedata.name(ch, "")
    if not name and unicodedata.category(ch) == "Cc":
        name = "control character" + (f" {_CONTROL_NAMES[cp]}" if cp in _CONTROL_NAMES else "")
    return f"U+{cp:04X} {name or 'default-ignorable code point'}"


_CONTROL_NAMES = {
    0x00: "NULL", 0x01: "START OF HEADING", 0x02: "START OF TEXT", 0x03: "END OF TEXT", 0x04: "END OF TRANSMISSION",
    0x05: "ENQUIRY", 0x06: "ACKNOWLEDGE", 0x07: "BELL", 0x08: "BACKSPACE", 0x0B: "LINE TABULATION",
    0x0C: "FORM FEED", 0x0D: "CARRIAGE RETURN", 0x0E: "SHIFT OUT", 0x0F: "SHIFT IN", 0x10: "DATA LINK ESCAPE",
    0x11: "DEVICE CONTROL ONE", 0x12: "DEVICE CONTROL TWO", 0x13: "DEVICE CONTROL THREE",
    0x14: "DEVICE CONTROL FOUR", 0x15: "NEGATIVE ACKNOWLEDGE", 0x16: "SYNCHRONOUS IDLE",
    0x17: "END OF TRANSMISSION BLOCK", 0x18: "CANCEL", 0x19: "END OF MEDIUM", 0x1A: "SUBSTITUTE", 0x1B: "ESCAPE",
    0x1C: "FILE SEPARATOR", 0x1D: "GROUP SEPARATOR", 0x1E: "RECORD SEPARATOR", 0x1F: "UNIT SEPARATOR",
    0x7F: "DELETE", 0x80: "PADDING CHARACTER", 0x81: "HIGH OCTET PRESET", 0x82: "BREAK PERMITTED HERE",
    0x83: "NO BREAK HERE", 0x84: "INDEX", 0x85: "NEXT LINE", 0x86: "START OF SELECTED AREA",
    0x87: "END OF SELECTED AREA", 0x88: "CHARACTER TABULATION SET", 0x89: "CHARACTER TABULATION WITH JUSTIFICATION",
    0x8A: "LINE TABULATION SET", 0x8B: "PARTIAL LINE FORWARD", 0x8C: "PARTIAL LINE BACKWARD",
    0x8D: "REVERSE LINE FEED", 0x8E: "SINGLE SHIFT TWO", 0x8F: "SINGLE SHIFT THREE", 0x90: "DEVICE CONTROL STRING",
    0x91: "PRIVATE USE ONE", 0x92: "PRIVATE USE TWO", 0x93: "SET TRANSMIT STATE", 0x94: "CANCEL CHARACTER",
    0x95: "MESSAGE WAITING", 0x96: "START OF GUARDED AREA", 0x97: "END OF GUARDED AREA", 0x98: "START OF STRING",
    0x99: "SINGLE GRAPHIC CHARACTER INTRODUCER", 0x9A: "SINGLE CHARACTER INTRODUCER",
    0x9B: "CONTROL SEQUENCE INTRODUCER", 0x9C: "STRING TERMINATOR", 0x9D: "OPERATING SYSTEM COMMAND",
    0x9E: "PRIVACY MESSAGE", 0x9F: "APPLICATION PROGRAM COMMAND",
}


def _escape(ch: str, cel: bool) -> str:
    """How to write `ch` as an escape: JSON's `\\u200b` (a pair above U+FFFF), CEL's `\\U000e0041`."""
    cp = ord(ch)
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    if cel:
        return f"\\U{cp:08x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def _string_regions(text: str):
    """Yield (start, end, kind) for each policy string (`"`, quotes included) and condition
    (`` ` ``, backticks included) of `text`, outside comments, with the lexer's rules (as
    `parser._scan`). Linear."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            j = text.find("\n", i)
            i = n if j == -1 else j
            continue
        if ch == "`":
            j = text.find("`", i + 1)
            if j == -1:
                return  # unclosed: a syntax error already
            yield i, j + 1, "`"
            i = j + 1
            continue
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            if j < n and text[j] == '"':
                yield i, j + 1, '"'
            i = j + 1
            continue
        i += 1


def _cel_string_spans(source: str) -> list[tuple[int, int]]:
    """(start, end) of each string or bytes literal of a condition's CEL text; none when it
    does not parse (the checker reported that)."""
    from lark import Token

    try:
        tree = cel_parse._parse(source)
    except Exception:  # noqa: BLE001 - a syntax error, reported as E101
        return []
    out = []
    for tok in tree.scan_values(lambda v: isinstance(v, Token) and v.type in _CEL_STRINGS):
        if tok.start_pos is not None:
            out.append((tok.start_pos, tok.start_pos + len(str(tok))))
    return out


def invisible_characters(checker: Checker) -> None:
    """W217 at each invisible or control character typed into a string of a checked file."""
    for f in checker.files:
        src = checker.sources.get(f.path)
        if src is None or not _INVISIBLE.search(src.text):
            continue  # (nearly every file: one scan of its text)
        text = src.text
        found = 0
        for start, end, kind in _string_regions(text):
            if found >= _MAX_INVISIBLE:
                break
            m = _INVISIBLE.search(text, start, end)
            if m is None:
                continue
            if kind == '"':
                spans = [(start + 1, end - 1)]
            else:
                spans = [(start + 1 + s, start + 1 + e) for s, e in _cel_string_spans(text[start + 1:end - 1])]
            for s, e in spans:
                raw = kind == "`" and "r" in text[s:s + 3].split('"')[0].split("'")[0].lower()  # `r"`, `br'`
                for m in _INVISIBLE.finditer(text, s, e):
                    at = m.start()
                    if not raw and text[at - 1] == "\\" and (at - 2 < s or text[at - 2] != "\\"):
                        continue  # an escape JSON (or CEL) refuses: already an error there
                    if found >= _MAX_INVISIBLE:
                        break
                    found += 1
                    ch = m.group()
                    esc = _escape(ch, kind == "`")
                    where = "a string of a condition" if kind == "`" else "a string"
                    checker.add(
                        "W217",
                        f"invisible character {char_name(ch)} in {where}",
                        src.span(at, at + len(ch)),
                        severity="warning",
                        label=f"{char_name(ch).split(' ', 1)[0]} here: not shown, but part of the string",
                        help=f"remove it; if it is meant, write it as the escape `{esc}`"
                        + (" in a string that is not raw (no `r` prefix)" if raw else ""),
                        notes=("the string is not what it looks like: it differs from the same text without "
                               "the character, so a rule comparing with it never matches what it seems to name",),
                    )
