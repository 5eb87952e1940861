"""The native decision maker (`_speedups.Maker`): the object it makes is the one
`object.__new__` and the two slot setters make (read, copied, pickled, compared alike),
its template is never changed, and it refuses, when made, a class its slot descriptors do
not belong to (it allocated an object of any class first, `type` included)."""

from __future__ import annotations

import copy
import os
import pickle

import pytest
from engine_support import engine_from_texts
from pydantic import BaseModel

from policy_engine.engine.accel import _speedups as S
from policy_engine.engine.accel import native
from policy_engine.models import Decision

OFF = os.environ.get("STOPLINE_NATIVE", "1").strip() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(OFF, reason="STOPLINE_NATIVE=0: the native helpers are switched off")

D, FS = BaseModel.__dict__["__dict__"], BaseModel.__dict__["__pydantic_fields_set__"]
POLICY = """workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action tag {
    allow tagging when `size(action.tags) < 10`
  }
}
"""


def _python(fields: dict, fs: set) -> Decision:
    dec = object.__new__(Decision)
    D.__set__(dec, fields)
    FS.__set__(dec, fs)
    return dec


def test_maker_refuses_a_class_its_descriptors_are_not_of():
    for cls in (type, int, dict, object):
        with pytest.raises(TypeError):
            S.Maker(cls, D, FS, None)
    with pytest.raises(TypeError):
        S.Maker(Decision, D, int.__dict__["real"], None)  # (not a setter)
    assert native.maker(Decision, None) is not None


def test_what_maker_makes_is_what_the_python_lines_make():
    made = engine_from_texts({"p.policy": POLICY}, accelerate=False).evaluate(
        {"workflow": "w", "type": "tag", "id": "a1", "tags": []}, None, "2026-03-01T12:00:00Z")
    fields = dict(made.__dict__)
    mk, mkx = S.Maker(Decision, D, FS, None), S.Maker(Decision, D, FS, "action_id")
    tpl = dict(fields)
    fs = set(made.__pydantic_fields_set__)
    a, b = mk(dict(tpl), fs), mkx((tpl, fs, False), "a2")
    want = _python(dict(tpl), fs)
    assert tpl == fields  # (the template: copied, not changed)
    assert b.__dict__ is not tpl and b.action_id == "a2" and a.action_id == "a1"
    assert a.__pydantic_fields_set__ is fs and b.__pydantic_fields_set__ is fs
    assert a == want and a.model_dump() == want.model_dump() and a.model_dump_json() == want.model_dump_json()
    for d in (a, b):
        assert type(d) is Decision and vars(d) is d.__dict__
        assert pickle.loads(pickle.dumps(d)) == d
        assert copy.deepcopy(d) == d and copy.copy(d) == d
        assert d.model_copy(update={"reason": "x"}).reason == "x"
    for bad in ((1, fs), ([], fs)):
        with pytest.raises(TypeError):
            mk(*bad)
    for bad in (((), "a"), ((tpl,), "a"), (([tpl, fs],), "a"), ((fs, tpl), "a")):
        with pytest.raises(TypeError):
            mkx(*bad)
