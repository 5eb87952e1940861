"""A/B of the runtime's common paths (CPU per call, median of 5 rounds in one process):
``gate`` (allowed), a held ``gate``, ``approve``, ``workflow_status`` and a kept ``queue``.

    python benchmarks/ab_runtime_paths.py sqlite|pg [POLICY_FILE]

Run it with two checkouts' interpreters in turn (each imports its own package, so run it
from outside both checkouts) and compare the medians; it prints one JSON object. Session 19
used it for the fold of entries appended beside the runtime
(benchmarks/results/2026-11-28-session19.md). Asserts no timing.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

POLICY = """\
roles [ops]

workflow "w" {
  version "1"
  owners {
    business "B"
    technical "T"
  }
  default deny

  action ping {
    system "s"
    description "A ping"
    reversible full via "ping.undo" within 1h
    receipt [id]
    require_approval loud by 1 ops when `action.loud`
    allow quiet when `!action.loud`
  }
}
"""


def _url(backend: str, d: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{d}/l.db?durability=normal"
    import psycopg

    schema = "ab_" + uuid.uuid4().hex[:8]
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}&durability=normal"


def main() -> None:
    from policy_engine import Runtime

    backend = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    d = tempfile.mkdtemp()
    policy = Path(d) / "w.policy"
    policy.write_text(Path(sys.argv[2]).read_text() if len(sys.argv) > 2 else POLICY)
    res: dict[str, float] = {}
    with Runtime.open(str(policy), ledger=_url(backend, d)) as rt:

        def timed(name: str, f, n: int) -> None:
            xs = []
            for r in range(5):
                c = time.process_time()
                for i in range(n):
                    f(r, i)
                xs.append((time.process_time() - c) / n * 1e6)
            res[name] = statistics.median(xs)

        def act(tag: str, r: int, i: int, loud: bool) -> dict:
            return {"type": "ping", "workflow": "w", "id": f"{tag}{r}-{i}", "loud": loud, "count": 1}

        held: list[str] = []
        timed("gate", lambda r, i: rt.gate(act("a", r, i, False)), 300)
        timed("gate_held", lambda r, i: held.append(rt.gate(act("h", r, i, True)).decision_id), 100)
        subjects = iter(held)
        timed("approve", lambda r, i: rt.approve(next(subjects), principal="olga", roles=["ops"]), 100)
        timed("workflow_status", lambda r, i: rt.workflow_status("w"), 300)
        timed("queue", lambda r, i: rt.queue(), 300)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
