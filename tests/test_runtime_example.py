"""examples/agent_runtime.py tells the whole story on the Runtime and ends with a
ledger that verifies."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agent_runtime.py"


def test_the_runtime_example_tells_the_whole_story(tmp_path):
    db = tmp_path / "stopline.db"
    p = subprocess.run([sys.executable, str(EXAMPLE), str(db)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for line in ["gate reply-1: require_approval", "sam (reviewer) approves: the decision is approved",
                 "authorized=True flags=[]", "flagged: ['unauthorized']", "receipt lacks ['ticket_id']",
                 "gate reply-2: stop by `unsupported_promise`; workflow stopped", "next gate, no state passed: stop",
                 "cascade from the record: ['send_customer_reply', 'log_crm_activity']",
                 "casey claims it: claimed", "counted=False; status pending", "approves: approved",
                 "failed -> rollback partial, remaining ['compensate:send_correction'",
                 "the same report again: recorded=False", "every step verified: rollback verified",
                 "already rolled back by", "resume refused (recorded): unmet ['blocked_promises_configured']",
                 "resume allowed: workflow running", "rollbacks [('unsupported_promise', 'verified')]",
                 "$ stopline ledger verify", "ok: "]:
        assert line in out, line
    assert "Traceback" not in p.stderr
    # the story's clock never runs backwards (what it prints is what the ledger records)
    times = re.findall(r"^\[(\d\d:\d\d:\d\d)\]", out, re.M)
    assert len(times) > 15 and times == sorted(times), times
