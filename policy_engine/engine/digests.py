"""The canonical JSON of plan hashes and action digests, and the two hashes."""

from __future__ import annotations

import hashlib
import json
import marshal
import re
from collections.abc import Callable, Mapping
from json.encoder import c_encode_basestring as _c_encode_basestring  # type: ignore[attr-defined]
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from typing import Any

from pydantic import BaseModel

from .. import construct as _construct
from ..models import Deferred, RollbackPlan
from .util import as_dict

__all__ = ["plan_hash", "legacy_plan_hash", "plan_matches_hash", "action_digest", "set_digest", "deferred_digest",
           "PendingDigest", "flat_canonical",
           "exact_canonical", "deferred_digest_nested", "digest_now", "digest_now_nested",
           "snapshot_digest"]


# The canonical JSON of plan hashes and action digests: keys sorted, no whitespace, UTF-8
# text, no NaN or Infinity; a value of another type is a TypeError, a cycle a
# RecursionError. Exactly `json.dumps(data, sort_keys=True, separators=(",", ":"),
# ensure_ascii=False, allow_nan=False)`, by the C encoder built once (json.dumps builds one
# per call; it keeps no state between calls), else by json's own encoder.
def _no_json(v: Any) -> Any:
    raise TypeError(f"a {type(v).__name__} is not JSON")


_canonical: Callable[[Any], str]
if _c_make_encoder is not None:
    _c_canon = _c_make_encoder(None, _no_json, _c_encode_basestring, None, ":", ",", True, False, False)

    def _canonical_c(data: Any, _enc: Any = _c_canon, _join: Callable = "".join) -> str:
        return _join(_enc(data, 0))

    _canonical = _canonical_c
else:  # pragma: no cover - a Python without the C accelerator
    _canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


# The canonical JSON by orjson (about 5-7x the C encoder), where it writes exactly the C
# encoder's bytes. For exact plain data (exact dict, list, tuple, str, int, float, bool,
# None, nothing else: a flat action's values, or what a marshal image loads back as) with
# exact str keys, orjson writes exactly the bytes above, UTF-8 encoded (the same escapes:
# `"`, `\\`, \b \t \n \f \r short, other controls as \u00xx, nothing else escaped; keys
# in code point order at every level; ints in decimal; floats as Python's repr), with
# three exceptions, each of which leaves a mark in its text:
# - a float 0 < |x| < 1e-4: Python writes `1e-05` / `1.5e-07`, orjson `0.00001` / `1.5e-7`
#   (its text holds `0.0000` or `e-`);
# - NaN and +-Infinity: the canonical JSON refuses them (no digest), orjson writes `null`;
# - what it refuses: an int outside [-2**63, 2**64), a lone surrogate, a non-str key, bytes,
#   a set, nesting deeper than 255 (it raises).
# So its bytes are taken only when neither `e-` nor `0.0000` appears in them, and when
# `null` does, only if the data's marshal image holds no non-finite float (`_NONFINITE`: in
# a format-2 image every float is `g` and its 8 IEEE 754 bytes, little-endian, and a NaN's
# or an infinity's exponent is all ones; other bytes may look the same, which only costs
# the C encoder); otherwise (a string holding a mark, say) the C encoder writes them: only
# the speed differs. Held by tests/test_digests.py: every code
# point, every binary exponent of the floats, hypothesis-generated nested objects; and
# checked at import (`_orjson_floats_agree`): an orjson whose float text differs anywhere
# else is never given a float.
try:
    from orjson import OPT_SORT_KEYS as _SORT_KEYS
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - orjson is a dependency; without it, the C encoder
    _orjson_dumps = None  # type: ignore[assignment]
_FLAT_EXACT = frozenset({str, int, bool, type(None)})
# the values a flat action's frozen copy may share with the caller's: immutable, and written
# by the canonical encoder from their value alone (exact types: a subclass is marshalled, or
# refused)
_ATOMS = frozenset({str, int, float, bool, type(None)})
_atoms_only = _ATOMS.issuperset
_dumps = marshal.dumps
_loads = marshal.loads
_sha256 = hashlib.sha256
_exact_values = _FLAT_EXACT.issuperset
_str_keys = frozenset({str}).issuperset

# floats whose text orjson must write as Python does (each binary exponent's extremes, the
# powers of ten and their neighbours around both switches to the exponent form, the
# largest and smallest): if any differs, this orjson is never given a float
_FLOAT_PROBES = (0.0, -0.0, 1.0, -1.5, 0.1, 0.2 + 0.1, 1 / 3, 0.0001, 0.00010000000000000002, 0.0009765625,
                 123.456, 1e15, 999999999999999.9, 9999999999999998.0, 1e16, 1.0000000000000002e16, 1.5e16,
                 1e17, 1e21, 1e22, 1e100, 1e-10, 1e-100, 5e-324, 2.2250738585072014e-308,
                 1.7976931348623157e308, 4503599627370496.5, 9007199254740993.0, 1e-4 * 3, 2 ** 53 + 0.0)


def _orjson_floats_agree() -> bool:
    if _orjson_dumps is None:
        return False
    try:
        for x in _FLOAT_PROBES:
            for v in (x, -x):
                if _orjson_dumps(v) != _canonical(v).encode():
                    return False
    except Exception:  # noqa: BLE001 - an orjson that cannot say: never given a float
        return False
    return True


_ORJSON_FLOATS = _orjson_floats_agree()


_NONFINITE = re.compile(rb"g[\x00-\xff]{6}[\xf0-\xff][\x7f\xff]")  # a float whose exponent is all ones


def _orjson_marked(data: Any, image: bytes | None = None) -> bytes | None:
    """orjson's canonical JSON of exact plain data that may hold a float, or None when it
    refuses it or its text holds a mark of a float it writes otherwise (see above).
    `image`: the data's marshal image (format 2) when the caller has it."""
    try:
        blob = _orjson_dumps(data, option=_SORT_KEYS)
    except Exception:  # noqa: BLE001 - not for orjson: the C encoder decides
        return None
    if b"e-" in blob or b"0.0000" in blob:
        return None
    if b"null" in blob:  # a None, or a NaN or an infinity that orjson wrote as null?
        try:
            if _NONFINITE.search(image if image is not None else _dumps(data, 2)):
                return None
        except Exception:  # noqa: BLE001 - (exact plain data marshals; anything else: the C encoder)
            return None
    return blob


def flat_canonical(data: dict) -> bytes | None:
    """The canonical JSON of `data`, UTF-8 encoded, by orjson when it is a flat object it
    writes exactly as the C encoder does (see above), else None (the caller encodes it)."""
    if _orjson_dumps is not None and type(data) is dict and _str_keys(map(type, data)):
        if _exact_values(map(type, data.values())):  # no float: orjson's text is the C encoder's
            try:
                return _orjson_dumps(data, option=_SORT_KEYS)
            except Exception:  # noqa: BLE001 - a big int, a lone surrogate: the C encoder decides
                return None
        if _ORJSON_FLOATS and _atoms_only(map(type, data.values())):
            return _orjson_marked(data)
    return None


def exact_canonical(data: Any, image: bytes | None = None) -> bytes:
    """The canonical JSON of exact plain data (what a marshal image loads back as: nothing
    but exact dict, list, tuple, str, int, float, bool, None, bytes, set, frozenset,
    complex), UTF-8 encoded: by orjson where it writes the C encoder's bytes (see above),
    else by the C encoder. Raises as the canonical JSON does (TypeError, ValueError,
    RecursionError). `image`: its marshal image (format 2), when the caller has it."""
    if _ORJSON_FLOATS:
        blob = _orjson_marked(data, image)
        if blob is not None:
            return blob
    return _canonical(data).encode("utf-8", "surrogatepass")


def plan_hash(plan: RollbackPlan | Mapping[str, Any]) -> str:
    """sha256 of the plan's canonical JSON, without `plan_hash` and `evaluated_at`, and with
    every source `location` (`file:line:col` of a prerequisite or an error) null.

    Approvals bind to this hash: any change to what the plan does, who must authorize
    it, or the policy that made it gives a different hash. Where the policy's files were
    found (a relative or an absolute path, a symlink, the current directory, the server's
    relocated names) is not part of it: equal policies (`policy_hash`) and equal requests
    give equal hashes however the policies were loaded. The plan still shows its locations."""
    return _plan_digest(plan, True)


def legacy_plan_hash(plan: RollbackPlan | Mapping[str, Any]) -> str:
    """The plan hash as earlier versions computed it: with the locations as the
    plan shows them. A plan recorded then carries it (`plan_matches_hash`)."""
    return _plan_digest(plan, False)


def plan_matches_hash(plan: RollbackPlan | Mapping[str, Any], claimed: Any) -> bool:
    """Whether `claimed` is the plan's hash: `plan_hash`, or, for a plan that shows a
    location, `legacy_plan_hash` (a plan recorded before locations left the hash; its
    approvals name that hash). Both are over every other field, so a plan edited after
    classification matches neither."""
    if type(claimed) is not str:
        return False
    data = _plan_data(plan)
    if claimed == _digest_of(_without_locations(data)):
        return True
    return _has_location(data) and claimed == _digest_of(data)


def _plan_digest(plan: RollbackPlan | Mapping[str, Any], canonical_locations: bool) -> str:
    data = _plan_data(plan)
    return _digest_of(_without_locations(data) if canonical_locations else data)


def _plan_data(plan: RollbackPlan | Mapping[str, Any]) -> dict:
    data = plan.model_dump(mode="json") if isinstance(plan, BaseModel) else dict(plan)
    data.pop("plan_hash", None)
    data.pop("evaluated_at", None)
    if not data.get("duties"):  # (added later: a plan without conditional duties keeps its hash)
        data.pop("duties", None)
    return data


# Where a plan holds source locations: its errors, its original's prerequisites
# (`feasibility`) and each cascade step's (tests/test_s22_plan_hash_paths.py holds that there
# are no others).
def _located(rows: Any) -> bool:
    return isinstance(rows, list) and any(isinstance(r, dict) and r.get("location") is not None for r in rows)


def _unlocated(rows: list) -> list:
    return [{**r, "location": None} if isinstance(r, dict) and r.get("location") is not None else r for r in rows]


def _steps(data: dict) -> Any:
    cascade = data.get("cascade")
    return cascade.get("steps") if isinstance(cascade, dict) else None


def _has_location(data: dict) -> bool:
    feas = data.get("feasibility")
    steps = _steps(data)
    return (_located(data.get("errors")) or (isinstance(feas, dict) and _located(feas.get("prerequisites")))
            or (isinstance(steps, list) and any(isinstance(s, dict) and _located(s.get("prerequisites"))
                                                for s in steps)))


def _without_locations(data: dict) -> dict:
    """The plan's data with every source `location` null (of an error, of a prerequisite of
    the original and of each cascade step): it names the file by the path it was loaded
    by, which is not the plan's content. Copied only where one is set: a plan without one
    is returned as it is, and hashes as it always did."""
    out = data
    if _located(data.get("errors")):
        out = {**out, "errors": _unlocated(data["errors"])}
    feas = data.get("feasibility")
    if isinstance(feas, dict) and _located(feas.get("prerequisites")):
        out = {**out, "feasibility": {**feas, "prerequisites": _unlocated(feas["prerequisites"])}}
    steps = _steps(data)
    if isinstance(steps, list) and any(isinstance(s, dict) and _located(s.get("prerequisites")) for s in steps):
        steps = [{**s, "prerequisites": _unlocated(s["prerequisites"])}
                 if isinstance(s, dict) and _located(s.get("prerequisites")) else s for s in steps]
        out = {**out, "cascade": {**data["cascade"], "steps": steps}}
    return out


def _digest_of(data: Any) -> str:
    blob = None
    if _ORJSON_FLOATS:
        try:  # marshal takes exact plain data only (in C): then orjson may write it
            image = _dumps(data, 2)
        except Exception:  # noqa: BLE001 - a subclass, an object, too deep: the C encoder (which may refuse it)
            image = None
        if image is not None:
            blob = _orjson_marked(data, image)
    if blob is None:
        blob = _canonical(data).encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def action_digest(action: Any) -> str | None:
    """`sha256:` + hex of the action's canonical JSON (as `plan_hash`), or None when the
    action is not plain JSON (a value of another type, a non-finite number, a cycle,
    nesting too deep). A require_approval decision carries it (`Decision.action_digest`),
    computed when the gate decides (what was decided, not what the action later becomes);
    an approval names it, so an approval of one action never releases another
    (`Engine.authorize_action`)."""
    data = as_dict(action)  # a model as the gate reads it (an `Action` without an id has `id: null`)
    blob = flat_canonical(data) if type(data) is dict else None
    if blob is None:
        try:
            try:  # marshal takes exact plain data only (in C): then orjson may write it
                image: bytes | None = _dumps(data, 2)
            except Exception:  # noqa: BLE001 - a subclass, an object, too deep: the C encoder
                image = None
            blob = exact_canonical(data, image) if image is not None else \
                _canonical(data).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError, RecursionError):
            return None
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def digest_now(action: dict) -> str | None:
    """`action_digest` of a plain dict (a fused gate's action: no model to dump), at once:
    for `Engine.evaluate_json`, which writes the decision at once (see `deferred_digest`
    for the deferred form)."""
    blob = flat_canonical(action)
    if blob is None:
        return action_digest(action)
    return "sha256:" + _sha256(blob).hexdigest()


def digest_exact(action: dict) -> str | None:
    """`action_digest` of exact plain data whose keys are exact `str`s (nothing but exact
    dict, list, str, int, float, bool and None: a fused gate function proved it, see
    `shapes.frozen_copy`), at once: no look at each value's type first, no marshal image.
    The same bytes as `action_digest`: `exact_canonical` writes the C encoder's."""
    try:
        blob = exact_canonical(action)
    except (TypeError, ValueError, RecursionError):
        return None
    return "sha256:" + _sha256(blob).hexdigest()


def digest_now_nested(action: dict) -> str | None:
    """`digest_now` for an action known to hold a list or an object (a fused gate whose
    type reads one): its marshal image at once (the proof that it is plain data), without
    looking for a flat one first."""
    try:
        image = _dumps(action, 2)
    except Exception:  # noqa: BLE001 - not plain data: the C encoder decides (or refuses)
        return action_digest(action)
    try:
        blob = exact_canonical(action, image)
    except (TypeError, ValueError, RecursionError):
        return None
    return "sha256:" + _sha256(blob).hexdigest()


class PendingDigest(Deferred):
    """An action digest not computed yet (`Decision.action_digest` resolves it on first
    read): the action as it was when the gate decided, frozen (see `deferred_digest`):
    a flat action's copy (its values immutable); an action a fused gate function proved
    of its shapes, copied with its objects and lists of strings (`shapes.frozen_copy`:
    exact plain data, but for its keys, which may be of a `str` subclass); or for anything
    else a `marshal` image (a copy
    made in C, exact for the plain types: dict, list, tuple, str, int, float, bool, None;
    format 2: no reference table). Later changes to the caller's action dict do not reach
    it: the digest names what was decided. Both forms keep every value and type the
    canonical JSON sees (key order, -0.0, NaN, big ints, lone surrogates, tuples), so the
    resolved digest is exactly `action_digest(action)` at decision time (property tests
    hold this)."""

    __slots__ = ("snap",)

    def __init__(self, snap: bytes | dict) -> None:
        self.snap = snap

    def resolve(self) -> str | None:
        try:
            blob = self._blob(self.snap)
        except (TypeError, ValueError, RecursionError):
            return None
        return "sha256:" + _sha256(blob).hexdigest()

    @staticmethod
    def _blob(snap: bytes | dict) -> bytes:
        if type(snap) is bytes:  # a marshal image: exact plain data
            return exact_canonical(_loads(snap), snap)
        # a copy: flat, or of a fused gate's proven shapes (exact plain data but its keys)
        return flat_canonical(snap) or _copy_canonical(snap)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return "<pending action digest>"


def snapshot_digest(snap: dict) -> str | None:
    """The digest of a frozen copy a fused gate function stored in a decision's
    `action_digest` as it is (`construct.SNAPSHOT_DIGEST`): what `PendingDigest(snap).resolve()`
    gives, without the object."""
    try:
        blob = flat_canonical(snap) or _copy_canonical(snap)
    except (TypeError, ValueError, RecursionError):
        return None
    return "sha256:" + _sha256(blob).hexdigest()


_construct.SNAPSHOT_DIGEST = snapshot_digest


def _copy_canonical(snap: dict) -> bytes:
    """The canonical JSON of a frozen copy, exact plain data but for its keys (a flat
    action's, or one a fused gate function proved): by `exact_canonical` when its keys
    are exact `str`s, else by the C encoder."""
    if _str_keys(map(type, snap)):
        return exact_canonical(snap)
    return _canonical(snap).encode("utf-8", "surrogatepass")


def deferred_digest(action: Any) -> str | None | PendingDigest:
    """The `action_digest` of a decision on `action`, to be computed on first read (a
    `PendingDigest` holding a frozen copy), or computed now when no frozen copy can be
    made (the action holds a non-plain value). Never raises. A flat action (every value
    one of `_ATOMS`) is frozen by `dict.copy()`: cheaper to make than a marshal image and,
    unlike it, written by the canonical encoder without being loaded back first (a nested
    one is marshalled: a copy in Python of even one level of lists costs more than the
    image and its load together)."""
    try:
        if type(action) is not dict:
            return action_digest(action)
        if _atoms_only(map(type, action.values())):
            return PendingDigest(action.copy())
        return PendingDigest(_dumps(action, 2))
    except Exception:  # noqa: BLE001 - not plain (a subclass, an object), too deep: decided at once
        return action_digest(action)


def deferred_digest_nested(action: Any) -> str | None | PendingDigest:
    """`deferred_digest` for an action known to hold a list or an object (a fused gate
    whose type reads one): the marshal image at once, without looking for a flat one."""
    try:
        return PendingDigest(_dumps(action, 2)) if type(action) is dict else action_digest(action)
    except Exception:  # noqa: BLE001 - as deferred_digest
        return action_digest(action)


def set_digest(d: dict, action: Any) -> None:
    """Fill the `action_digest` of a require_approval decision's fields `d` (every path):
    deferred (see `deferred_digest`). None when the action is not plain JSON:
    `authorize_action` then says why it refuses."""
    d["action_digest"] = deferred_digest(action)
