"""A/B of the runtime's common paths (CPU per call, median of 5 rounds in one process):
``gate`` (allowed), a held ``gate``, ``approve``, ``workflow_status`` and a kept ``queue``.

    python benchmarks/ab_runtime_paths.py POLICY_FILE sqlite|pg

Run it with two checkouts' interpreters in turn (each imports its own package) and compare
the medians; it prints one JSON object. Session 19 used it for the fold of entries appended
beside the runtime (benchmarks/results/2026-11-28-session19.md). Asserts no timing."""
import sys, time, statistics, tempfile, json, os
from pathlib import Path
from policy_engine import Runtime
POLICY = Path(sys.argv[1]).read_text()
backend = sys.argv[2]
d = tempfile.mkdtemp()
p = Path(d) / "w.policy"; p.write_text(POLICY)
if backend == "sqlite":
    url = f"sqlite:///{d}/l.db?durability=normal"
else:
    import uuid, psycopg
    sch = "ab_" + uuid.uuid4().hex[:8]
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {sch}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{sch}&durability=normal"
res = {}
with Runtime.open(str(p), ledger=url) as rt:
    def t(name, f, n):
        xs = []
        for r in range(5):
            c = time.process_time(); w = time.perf_counter()
            for i in range(n): f(r, i)
            xs.append((time.process_time() - c) / n * 1e6)
        res[name] = statistics.median(xs)
    t("gate", lambda r, i: rt.gate({"type": "ping", "workflow": "w", "id": f"{r}-{i}", "loud": False, "count": 1}), 300)
    ids = []
    t("gate_held", lambda r, i: ids.append(rt.gate({"type": "ping", "workflow": "w", "id": f"h{r}-{i}", "loud": True, "count": 1}).decision_id), 100)
    it = iter(ids)
    t("approve", lambda r, i: rt.approve(next(it), principal="olga", roles=["ops"]), 100)
    t("workflow_status", lambda r, i: rt.workflow_status("w"), 300)
    t("queue", lambda r, i: rt.queue(), 300)
print(json.dumps(res))
