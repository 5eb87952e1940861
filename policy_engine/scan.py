"""Stream a few body fields of many ledger entries, in pages, without parsing whole bodies.

    from policy_engine.scan import scan
    for seq, eid, workflow, time, (action, now) in scan(led, [E.c.kind == "decision"], ["action", "now"]):
        ...

Replay, the report and bulk rollback read 10^4 to 10^5 entries of which they need a few
fields; a decision's body is ~2 KB of which the replay needs ~100 bytes. On SQLite and
PostgreSQL the database picks the fields out (``json_extract`` with several paths,
``json_build_array`` over ``#>``), in C, and Python parses one small JSON array per entry;
other backends (none today) parse each body. A missing field is ``None``. The values are
the stored JSON as it was written (the database copies each field's text).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Text, cast, func, literal_column, select

from .ledger import LedgerError, schema
from .ledger.canonical import parse_body

__all__ = ["scan", "PAGE"]

E = schema.entries
PAGE = 5000
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check(paths: Sequence[str]) -> list[list[str]]:
    out = []
    for p in paths:
        parts = p.split(".")
        if not all(_KEY.match(k) for k in parts):  # they become SQL text: plain names only
            raise ValueError(f"a field path is dotted plain names, not {p!r}")
        out.append(parts)
    return out


def _fields_expr(backend: str, paths: list[list[str]]) -> Any:
    if backend == "sqlite":
        return func.json_extract(E.c.body, *("$." + ".".join(p) for p in paths))
    if backend == "postgresql":  # the names were checked: plain identifiers only
        parts: list[Any] = [literal_column(f"CAST({E.name}.body AS json) #> '{{{','.join(p)}}}'") for p in paths]
        return cast(func.json_build_array(*parts), Text)
    return None


def _pick(body: Any, parts: list[str]) -> Any:
    for k in parts:
        if not isinstance(body, dict):
            return None
        body = body.get(k)
    return body


def scan(led: Any, where: Sequence[Any], paths: Sequence[str], *, page: int = PAGE,
         after: int = -1, upto: int | None = None) -> Iterator[tuple[int, str, str | None, str, list]]:
    """``(seq, id, workflow, time, [value of each path])`` for every entry matching the
    SQLAlchemy ``where`` clauses over ``schema.entries`` with ``after < seq <= upto``, in
    ``seq`` order, one read transaction per page of ``page`` entries."""
    parts = _check(paths)
    n = len(parts)
    # json_extract with one path gives an SQL value, with several a JSON array: always several
    expr = _fields_expr(led.backend, parts if n > 1 else parts * 2)
    while True:
        bounds = [E.c.seq > after] + ([E.c.seq <= upto] if upto is not None else [])
        q = (select(E.c.seq, E.c.id, E.c.workflow, E.c.time, expr if expr is not None else E.c.body)
             .where(*where, *bounds).order_by(E.c.seq).limit(page))
        whole = expr is None
        try:
            with led.reading() as c:
                rows = c.execute(q).all()
        except LedgerError as e:
            # PostgreSQL's `json` cannot make text of a body holding \u0000 anywhere in the page
            # (SQLSTATE 22P05, a NUL recorded as given): that page's bodies are read whole and
            # picked here, so one such entry does not make the scan (a report, a replay) impossible
            if expr is None or getattr(getattr(e.__context__, "orig", None), "sqlstate", None) != "22P05":
                raise
            whole = True
            with led.reading() as c:
                rows = c.execute(q.with_only_columns(E.c.seq, E.c.id, E.c.workflow, E.c.time, E.c.body)).all()
        if not rows:
            return
        loads = parse_body  # (as every reader reads a stored body: a double written in integer digits is a double)
        if whole:
            for seq, eid, wf, t, v in rows:
                b = parse_body(v)
                yield seq, eid, wf, t, [_pick(b, p) for p in parts]
        else:
            for seq, eid, wf, t, v in rows:
                vals = loads(v) if isinstance(v, str) else v
                yield seq, eid, wf, t, vals if n > 1 else vals[:1]
        if len(rows) < page:
            return
        after = rows[-1][0]
