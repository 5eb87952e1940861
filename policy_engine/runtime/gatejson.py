"""The gate's recorded decision as RFC 8785 text, without the generic canonicaliser.

A gate records ``{"action", ["action_error"], ["action_repr_sha256"], ["caller"], "decision",
"now", ["pending_until"], "policy_hash"}`` (``caller``: the principal that asked, only when there is
one: a gate without a caller writes exactly the text it wrote before callers were recorded).
Its cost used to be the decision's ``model_dump`` (a 3-7 KB tree), a walk of the whole body
checking it is interoperable JSON, the sorted-key encoding and, in the ledger, a parse of the
text back. Here:

- the decision of the engine's fast lane (every decision of one outcome of one action
  type is built from one template, ``models.DecisionJson``) is written from the template's
  canonical text, rendered once per template through :func:`canonical_text` with markers in
  the four fields that vary (``action_digest``, ``action_id``, ``evaluated_at``,
  ``reversibility.reversible_until``); ``DecisionJson.render`` (the engine's own check)
  says whether a decision is its template's, and the first decision of each template is
  compared with the reference encoding before the template is trusted;
- the action's canonical text is the one the gate computes anyway to check it;
- the few strings of the envelope are escaped by the C encoder's ``encode_basestring``
  (``json.dumps(..., ensure_ascii=False)``), which is RFC 8785's escaping for any string
  without lone surrogates (checked: such a string goes to the reference path);
- the result goes to the ledger as :class:`~policy_engine.ledger.canonical.Canonical`.

Anything else (a decision not from a template, a template whose text the markers cannot
cut, a value with a lone surrogate) is encoded by :func:`canonical_text` of the plain body,
as before. :func:`gate_body` is the one place both paths are chosen, for ``gate`` and
``gate_many`` alike.

An action the ledger cannot record exactly (a NaN or an Infinity, an integer beyond
±2^53-1, a lone surrogate, a value that is not JSON: :func:`recordable`) is recorded as
its ``repr`` with ``action_error`` naming the problem, and only with a decision that
permits nothing: :func:`fail_closed` turns the engine's ``allow`` or ``require_approval``
into a deny (a replay cannot re-evaluate such a record, and an approval could not bind to
it), and :func:`gate_body` refuses to write any other. So is an action beyond the engine's
input limits taken as one input (``MAX_INPUT_ITEMS``, ``MAX_INPUT_DEPTH``,
``MAX_INPUT_CHARS``: :func:`oversize`), whatever fields the conditions read: one request
never writes a ledger entry larger than those limits allow, and the refusal is recorded.
The ``repr`` kept is its first ``_SHOWN_REPR`` characters (:func:`excerpt`: written piece
by piece, no recursion, never the whole of a huge value), and beside it ``action_repr_sha256``,
the SHA-256 of the whole ``repr`` (:func:`repr_sha256`, as bounded): what a keyed retry is
compared by (``executions._same_action``), so two actions that share their first
``_SHOWN_REPR`` characters are not taken for one request. A body without it (recorded before
it existed) is compared by its excerpt, as it was.

``tests/test_runtime_gatejson.py`` proves the text byte-identical to ``rfc8785.dumps`` of
the body the gate used to build.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator, Mapping
from itertools import islice
from json.encoder import encode_basestring
from typing import Any

from ..gcpause import paused
from ..ledger.canonical import Canonical, canonical_text
from ..ledger.errors import InvalidEntry
from ..limits import INT64_MAX, INT64_MIN, MAX_INPUT_CHARS, MAX_INPUT_DEPTH, MAX_INPUT_ITEMS
from ..models import Decision, DecisionJson, EvalError, ReversibilityInfo, RuleRef, split_at_marks

_SURROGATE = re.compile("[\ud800-\udfff]")
_FIELDS = ("action_id", "action_digest", "evaluated_at", "reversible_until")
_MARK = {k: f"\x00stopline-canonical:{k}\x00" for k in _FIELDS}
_MARK_JSON = {k: encode_basestring(m) for k, m in _MARK.items()}

#: id(template fields set) -> (the set itself, keeping the id taken; plan or None when unusable)
_PLANS: dict[int, tuple[DecisionJson, Any]] = {}
_PLANS_LOCK = threading.Lock()
_UNCHECKED = object()  # a plan built, not yet compared with the reference encoding


def _str(v: Any) -> str | None:
    """RFC 8785 text of a JSON string or null; None for anything else (a lone surrogate)."""
    if v is None:
        return "null"
    if type(v) is str and (v.isascii() or not _SURROGATE.search(v)):
        return encode_basestring(v)
    return None


def _build(fs: DecisionJson) -> tuple | None:
    dec, window = fs.marked(_MARK)
    try:
        text = canonical_text(dec.model_dump(mode="json"))
    except Exception:  # noqa: BLE001 - a template the reference refuses: every decision takes the reference path
        return None
    cut = split_at_marks(text, _MARK_JSON, window)  # None: a policy text holds a marker
    if cut is None:
        return None
    return window, cut[0], cut[1]


def _render(d: Any, plan: tuple) -> str | None:
    window, order, parts = plan
    values = {"action_id": d.action_id, "action_digest": d.action_digest, "evaluated_at": d.evaluated_at}
    if window:
        rev = d.reversibility
        if type(rev) is not ReversibilityInfo:
            return None
        values["reversible_until"] = rev.reversible_until
    out = [parts[0]]
    for k, part in zip(order, parts[1:]):
        s = _str(values[k])
        if s is None:
            return None
        out.append(s)
        out.append(part)
    return "".join(out)


def decision_text(d: Any) -> str | None:
    """``canonical_text(d.model_dump(mode="json"))`` for a decision of the engine's fast lane,
    from its template's canonical text; None when the caller should ask the reference."""
    fs = d.__pydantic_fields_set__
    if type(fs) is not DecisionJson or fs.render(d) is None:  # not (exactly) its template's
        return None
    if fs.base is not None:  # the template's at one `now` (DecisionJson.at): one plan per template
        fs = fs.base
    got = _PLANS.get(id(fs))
    if got is None or got[0] is not fs:
        with _PLANS_LOCK:
            if len(_PLANS) >= 4096:
                _PLANS.clear()
            got = _PLANS[id(fs)] = (fs, _UNCHECKED)
    plan: Any = got[1]
    if plan is None:
        return None
    if plan is _UNCHECKED:  # the template's first decision: built, and compared with the reference once
        built = _build(fs)
        text = _render(d, built) if built is not None else None
        if text is None or text != canonical_text(d.model_dump(mode="json")):
            built = None
        _PLANS[id(fs)] = (fs, built)
        return text if built is not None else None
    return _render(d, plan)


def body_text(action_text: str | None, action_repr: str | None, problem: str | None, d: Any, now: str,
              pending_until: str | None, caller: str | None = None,
              digest: str | None = None) -> tuple[str, tuple[str, ...], dict] | None:
    """The canonical text, top-level keys and `pending_until` (the one top-level value the
    projections read: `Entry.top`) of the gate's decision body (see the module doc), or
    None for the reference path: the arguments of `Canonical`. ``action_text`` is the
    action's canonical text, or None with ``action_repr``, ``problem`` and (when given)
    ``digest`` (:func:`repr_sha256`) for an action recorded by its excerpt."""
    dt = decision_text(d)
    if dt is None:
        return None
    ph, nw = _str(d.policy_hash), _str(now)
    if ph is None or nw is None or type(d.policy_hash) is not str:
        return None
    if action_text is None:
        a, pr = _str(action_repr), _str(problem)
        if a is None or pr is None or type(action_repr) is not str or type(problem) is not str:
            return None
        out = ['{"action":', a, ',"action_error":', pr]
        keys: tuple[str, ...] = ("action", "action_error", "decision", "now", "policy_hash")
        if digest is not None:  # (RFC 8785 order: after `action_error`, before `caller`)
            dg = _str(digest)
            if dg is None or type(digest) is not str:
                return None
            out += [f',"{DIGEST}":', dg]
            keys = ("action", "action_error", DIGEST, *keys[2:])
    else:
        out = ['{"action":', action_text]
        keys = ("action", "decision", "now", "policy_hash")
    if caller is not None:  # (RFC 8785 order: after `action_error`, before `decision`)
        cl = _str(caller)
        if cl is None or type(caller) is not str:
            return None
        out += [',"caller":', cl]
        keys = (*keys[:-3], "caller", *keys[-3:])
    out += [',"decision":', dt, ',"now":', nw]
    if pending_until is not None:
        pu = _str(pending_until)
        if pu is None:
            return None
        out += [',"pending_until":', pu]
        keys = (*keys, "pending_until")
    out += [',"policy_hash":', ph, "}"]
    return "".join(out), keys, ({"pending_until": pending_until} if pending_until is not None else {})


# ---------------------------------------------------------------------------------- the gate's body
_PREFIX = "body is not canonicalisable JSON: "
_SHOWN_REPR = 4096  #: characters of an unrecordable action's `repr` kept in its decision entry
#: the body's key for the SHA-256 of the whole ``repr`` of an action recorded by its excerpt
#: (:func:`repr_sha256`): what a keyed retry is compared by, the excerpt being only its start
DIGEST = "action_repr_sha256"
_CHUNK = 1 << 16  #: characters hashed at a time (a long string's repr is written in such pieces)


def _surrogate_at(v: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first string (or key) in ``v`` holding a lone surrogate, or None."""
    if depth > 64:
        return None
    if isinstance(v, str):
        return path if not v.isascii() and _SURROGATE.search(v) else None
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(k, str) and not k.isascii() and _SURROGATE.search(k):
                return f"{path} (a key)"
            got = _surrogate_at(x, f"{path}.{k}" if isinstance(k, str) else f"{path}[{k!r}]", depth + 1)
            if got is not None:
                return got
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            got = _surrogate_at(x, f"{path}[{i}]", depth + 1)
            if got is not None:
                return got
    return None


def _escaped(text: str) -> str:
    """``text`` with every lone surrogate written as its ``\\uXXXX`` escape (valid Unicode)."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def oversize(value: Any, they: bool = False) -> str | None:
    """Why ``value`` is beyond the engine's input limits taken as one input (values in
    containers, nesting, characters of keys and strings, counted as the engine's
    ``check_size`` counts them) or holds an integer too long to write as JSON, or None.
    Iterative; stops at the first limit passed. The reason's subject is "it", or "they"
    (a tool call's arguments, the adapters')."""
    it, s = ("they", "") if they else ("it", "s")
    items = chars = 0
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            chars += len(v)
        elif isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
            try:
                chars += len(str(v))
            except ValueError:  # (past Python's own limit on the digits of an int's text)
                return f"{it} hold{s} an integer with too many digits to write as JSON"
        elif isinstance(v, (Mapping, list, tuple)):
            if depth >= MAX_INPUT_DEPTH:
                return f"{it} nest{s} more than {MAX_INPUT_DEPTH} levels deep (MAX_INPUT_DEPTH)"
            items += len(v)
            if items > MAX_INPUT_ITEMS:
                return f"{it} hold{s} more than {MAX_INPUT_ITEMS} values (MAX_INPUT_ITEMS)"
            if isinstance(v, Mapping):
                chars += sum(len(k) for k in v if isinstance(k, str))
                v = v.values()
            stack.extend((x, depth + 1) for x in v)
        if chars > MAX_INPUT_CHARS:
            return f"{it} hold{s} more than {MAX_INPUT_CHARS} characters of text (MAX_INPUT_CHARS)"
    return None


#: an action whose canonical text is at most this long is within every input limit: each
#: value takes at least two characters of it (one with its separator), each character of a
#: key or string at least one, and the canonical encoder refuses nesting beyond 64 levels
_SURELY_WITHIN = min(2 * MAX_INPUT_ITEMS, MAX_INPUT_CHARS)


def _parts(v: Any) -> Iterator[tuple[bool, Any]]:
    """The pieces of a container's ``repr``: (True, text) or (False, a value inside it)."""
    if isinstance(v, Mapping):
        yield True, "{"
        for i, (k, x) in enumerate(v.items()):
            yield True, ", " if i else ""
            yield False, k
            yield True, ": "
            yield False, x
        yield True, "}"
        return
    tup = isinstance(v, tuple)
    yield True, "(" if tup else "["
    for i, x in enumerate(v):
        yield True, ", " if i else ""
        yield False, x
    yield True, ("," if len(v) == 1 else "") + ")" if tup else "]"


_LEAVES = frozenset((int, float, bool, type(None)))  #: values whose repr is short (or fails: a huge int)
_RUN = 512  #: values of a container written at once by :func:`_exact_parts` when all are such leaves
_SHORT = 128  #: or strings of at most so many characters (a run's text stays within a few megabytes)


def _run_text(run: list, pairs: bool) -> str | None:
    """The ``repr`` pieces of ``run`` (values, or with ``pairs`` a dict's items), joined:
    the text :func:`_parts` writes for them, in one join; None unless each is a leaf
    (``_LEAVES``, or a ``str`` of at most ``_SHORT`` characters) Python writes."""
    for x in run:
        if pairs:
            k, x = x
            t = type(k)
            if t not in _LEAVES and (t is not str or len(k) > _SHORT):
                return None
        t = type(x)
        if t not in _LEAVES and (t is not str or len(x) > _SHORT):
            return None
    try:
        return ", ".join([f"{k!r}: {x!r}" for k, x in run] if pairs else map(repr, run))
    except ValueError:  # (an int with more digits than Python writes: written alone, in hex)
        return None


def _leaves_text(v: Any) -> str | None:
    """The whole text :func:`_parts` writes for a container of at most ``_RUN`` leaves
    (:func:`_run_text`), else None: each small dict of a list of rows in one piece."""
    if len(v) > _RUN:
        return None
    if isinstance(v, Mapping):
        text = _run_text(list(v.items()), True)
        return None if text is None else "{" + text + "}"
    text = _run_text(v if isinstance(v, list) else list(v), False)
    if text is None:
        return None
    return "[" + text + "]" if not isinstance(v, tuple) else "(" + text + ("," if len(v) == 1 else "") + ")"


def _exact_parts(v: Any) -> Iterator[tuple[bool, Any]]:
    """:func:`_parts` for :func:`repr_sha256`: the same text, a run of ``_RUN`` leaves as one
    piece (a list of a million ints costs a few joins, not two million pieces)."""
    mapping = isinstance(v, Mapping)
    tup = not mapping and isinstance(v, tuple)
    yield True, "{" if mapping else "(" if tup else "["
    items = iter(v.items() if mapping else v)
    first = True
    while run := list(islice(items, _RUN)):
        text = _run_text(run, mapping)
        if text is not None:
            yield True, text if first else ", " + text
            first = False
            continue
        for x in run:
            yield True, "" if first else ", "
            first = False
            if mapping:
                yield False, x[0]
                yield True, ": "
                yield False, x[1]
            else:
                yield False, x
    yield True, "}" if mapping else ("," if len(v) == 1 else "") + ")" if tup else "]"


def _str_repr(s: str, size: int = _CHUNK) -> Iterator[str]:
    """``repr(s)`` of a ``str`` in pieces of about ``size`` characters (never the whole text
    at once): the quote ``repr`` chooses for the whole string (``"`` when it holds ``'`` and
    no ``"``), and each slice's ``repr`` without its quotes, its own choice of quote undone
    (the only difference a slice's choice makes: whether ``'`` is written ``\\'``). Each
    character is escaped on its own, so slices join to exactly ``repr(s)``."""
    q = '"' if "'" in s and '"' not in s else "'"
    yield q
    for i in range(0, len(s), size):
        part = s[i:i + size]
        r = repr(part)[1:-1]
        if q == "'" and "'" in part and '"' not in part:  # (its repr quoted `"`: the whole's escapes `'`)
            r = r.replace("'", "\\'")
        yield r
    yield q


def repr_pieces(value: Any, cut: int | None = None, exact: bool = False) -> Iterator[str]:
    """``repr(value)`` in pieces, without recursion (any nesting, cycles shown ``[...]`` as
    ``repr`` shows them): the same text for dicts, lists, tuples and plain leaves. ``cut``:
    a string longer than it is shown by its first ``cut`` characters. A leaf whose ``repr``
    fails is shown ``<type>``. ``exact`` (:func:`repr_sha256`): a ``str`` is written in
    pieces of ``_CHUNK`` characters (:func:`_str_repr`), a run of plain leaves in one piece
    (:func:`_exact_parts`), and an int whose ``repr`` fails (more digits than Python writes)
    as ``<int 0x...>``, its hexadecimal digits (no limit), so two such ints are never
    written alike."""
    stack: list[tuple[Iterator[tuple[bool, Any]], int]] = [(iter(((False, value),)), 0)]
    open_: set[int] = set()  # the containers being written (a cycle)
    while stack:
        it, owner = stack[-1]
        tok = next(it, None)
        if tok is None:
            stack.pop()
            open_.discard(owner)
            continue
        literal, v = tok
        if literal:
            yield v
        elif isinstance(v, (Mapping, list, tuple)) and not isinstance(v, str):
            if id(v) in open_:
                yield "{...}" if isinstance(v, Mapping) else "(...)" if isinstance(v, tuple) else "[...]"
            elif exact and (whole := _leaves_text(v)) is not None:
                yield whole
            else:
                open_.add(id(v))
                stack.append(((_exact_parts if exact else _parts)(v), id(v)))
        elif exact and type(v) is str and len(v) > _CHUNK:
            yield from _str_repr(v)
        else:
            try:
                yield repr(v[:cut] if cut is not None and isinstance(v, str) and len(v) > cut else v)
            except Exception:  # noqa: BLE001 - a repr that fails (an int beyond str's digits): its type
                yield f"<int {v:#x}>" if exact and type(v) is int else f"<{type(v).__name__}>"


def excerpt(value: Any, limit: int = _SHOWN_REPR) -> str:
    """The first ``limit`` characters of ``repr(value)`` (:func:`repr_pieces`), lone
    surrogates escaped: bounded work whatever the value's size or nesting."""
    out: list[str] = []
    n = 0
    for piece in repr_pieces(value, cut=limit):
        out.append(piece)
        n += len(piece)
        if n >= limit:
            break
    return _escaped("".join(out)[:limit])


def repr_sha256(value: Any) -> str:
    """The SHA-256 (lowercase hex) of the UTF-8 of the whole ``repr(value)``, as
    :func:`repr_pieces` writes it (``exact``: a huge int by its hex digits, where the
    excerpt shows ``<int>``; lone surrogates, which ``repr`` escapes anyway, as
    ``surrogatepass`` writes them): recorded beside the excerpt of an action the ledger
    records only by its start (``action_repr_sha256``), so a keyed retry is compared with
    the whole action, not its first 4,096 characters. Linear time, no recursion, and a few
    megabytes at most beyond the value (pieces are hashed as they come, a long string's in
    slices): never the whole text."""
    h = hashlib.sha256()
    buf: list[str] = []
    n = 0
    with paused():  # (a writer per container, none in a cycle: a 10,000-deep action's, 3x faster)
        for piece in repr_pieces(value, exact=True):
            buf.append(piece)
            n += len(piece)
            if n >= _CHUNK:
                h.update("".join(buf).encode("utf-8", "surrogatepass"))
                buf.clear()
                n = 0
    h.update("".join(buf).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def recordable(action: Any) -> tuple[str | None, Any, str | None]:
    """``(canonical text, the action as recorded, None)`` for an action the ledger records
    exactly; ``(None, its excerpt, the problem)`` for one it cannot, or that is beyond the
    engine's input limits taken as one input (:func:`oversize`). The problem names the
    value (``number at `action.amount` is not finite``) or the limit, and both for an action
    that is both (a NaN in a 20 MB action); both are valid Unicode. Such an action is
    recorded with its :func:`repr_sha256` too (the caller computes it: ``gate_body``)."""
    try:
        text = canonical_text(action)
    except InvalidEntry as e:
        msg = str(e).removeprefix(_PREFIX)
    else:
        too_big = oversize(action) if len(text) > _SURELY_WITHIN else None
        if too_big is None:
            return text, action, None
        return None, excerpt(action), (f"the action is beyond the gate's input limits: {too_big}; only its first "
                                       f"{_SHOWN_REPR} characters are recorded")
    # the encoder's message for a lone surrogate names a position in the text, not the value
    where = _surrogate_at(action, "action") if "surrogate" in msg else None
    if where is not None:
        msg = f"a string at `{where}` holds a lone surrogate (\\ud800-\\udfff)"
    else:
        msg = _escaped(msg.replace("`body", "`action").replace("body nests", "the action nests"))
    # (the encoder stops at the first value it cannot write: the limits are checked as for any
    # action, and named too, unless what passes them is that value, an int already named)
    too_big = oversize(action)
    if too_big is not None and not too_big.endswith("to write as JSON"):
        msg += (f"; it is also beyond the gate's input limits: {too_big}; only its first {_SHOWN_REPR} "
                "characters are recorded")
    return None, excerpt(action), f"the action cannot be recorded exactly as JSON: {msg}"


def fail_closed(d: Any, problem: str | None) -> Any:
    """The decision to record and return for an action with ``problem`` (see :func:`recordable`):
    the engine's own when it permits nothing (``deny``, ``stop``: a stop trigger still stops
    the workflow), else a deny (deciding ``error``/``unrecordable action``) naming the
    problem and what the policy said. ``d`` itself when there is no problem."""
    if problem is None or d.effect in ("deny", "stop"):
        return d
    ref = RuleRef(kind="error", name="unrecordable action", effect="deny", location=None)
    error = EvalError(rule="<input>", kind="input", message=problem)
    fields = {k: getattr(d, k) for k in Decision.model_fields}
    fields.update(effect="deny", deciding=ref, approvals=(), action_digest=None, stop=None,
                  reason=f"denied: {problem} (the policy said `{d.effect}`; an action the ledger cannot "
                         "record exactly is never permitted)",
                  errors=(*d.errors, error))
    out = Decision(**fields)
    try:
        canonical_text(out.model_dump(mode="json"))
    except InvalidEntry:  # (the engine checked what it shows; if not, keep nothing of the action)
        fields.update(workflow=None, action_type=None, action_id=None, matched=(), trace=(), errors=(error,),
                      reversibility=None, receipt=())
        out = Decision(**fields)
    return out


def gate_body(action_text: str | None, action: Any, problem: str | None, d: Any, now: str,
              pending_until: str | None, caller: str | None = None, digest: str | None = None) -> Canonical | dict:
    """The body of a gate's ``decision`` entry: its canonical text when the fast path can
    write it (:func:`body_text`), else the plain body for the ledger's encoder. ``action``
    is the action, or with ``problem`` its repr (:func:`recordable`). An unrecordable
    action with a decision that permits is refused (:class:`InvalidEntry`): callers pass
    the decision through :func:`fail_closed` first. ``caller``: the principal that asked
    (``caller`` in the body); None writes no such field (the body of before). ``digest``:
    with ``problem``, the :func:`repr_sha256` of the whole action (``action_repr_sha256``:
    what a keyed retry is compared by; None writes no such field, the body of before)."""
    if problem is not None and d.effect not in ("deny", "stop"):
        raise InvalidEntry(f"an action that cannot be recorded exactly is recorded only with a deny or a stop, "
                           f"not `{d.effect}` ({problem})")
    if problem is None:
        digest = None  # (an action recorded exactly is its own record)
    fast = body_text(action_text, action if problem is not None else None, problem, d, now, pending_until, caller,
                     digest)
    if fast is not None:
        return Canonical(*fast)
    body: dict[str, Any] = {"action": action, "decision": d.model_dump(mode="json"), "policy_hash": d.policy_hash,
                            "now": now}
    if problem is not None:
        body["action_error"] = problem
        if digest is not None:
            body[DIGEST] = digest
    if pending_until is not None:
        body["pending_until"] = pending_until
    if caller is not None:
        body["caller"] = caller
    return body
