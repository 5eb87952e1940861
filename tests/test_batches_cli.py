"""An incident's batch of rollbacks driven from the shell alone, on SQLite and PostgreSQL:
executions recorded with `stopline rt gate`/`executed`, the batch planned with `stopline
rollback` (whose text says what to run next), approved with `stopline rt approve_batch`
by the digest it printed, steps reported with `stopline rt batch_step`, and where it stands
read with `stopline rt batch_status`/`batch_counts` and `stopline rollback --status`; the
ledger verifies. Errors are one line and exit 2; `--dry-run` records nothing. The printed
lines themselves are run by a real shell (`bash`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url, one_line_error  # noqa: F401  (fixture)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import bench_incidents as B  # noqa: E402
from policy_engine.cli import main  # noqa: E402
from policy_engine.runtime.cli import OPS, READ_ONLY  # noqa: E402

LEAD = ["incident_lead"]
RUN = 'original.receipt.run == "run-7" && original.type == "a0"'
DONE, CLOSED = ("completed", "verified"), ("denied", "cancelled", "expired")


def _cli(*args: str, stdin: str | None = None):
    r = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)
    assert "Traceback" not in r.output, r.output
    return r


class Shell:
    """`stopline` against one ledger and policy, as an operator types it."""

    def __init__(self, url: str, policy: str) -> None:
        self.url, self.policy = url, policy

    def rt(self, op: str, args: dict, *, policies: bool = True):
        where = ["-p", self.policy] if policies else []
        return _cli("rt", op, *where, "--ledger", self.url, "-i", "-", stdin=json.dumps(args))

    def ok(self, op: str, args: dict, **kw) -> dict:
        r = self.rt(op, args, **kw)
        assert r.exit_code == 0, (op, r.output)
        return json.loads(r.stdout)

    def rollback(self, *args: str):
        return _cli("rollback", *args, "-p", self.policy, "--ledger", self.url)


@pytest.fixture
def shell(tmp_path, ledger_url):  # noqa: F811
    (tmp_path / "ops.policy").write_text(B.POLICY)
    sh = Shell(ledger_url, str(tmp_path / "ops.policy"))
    assert _cli("ledger", "init", "--ledger", ledger_url).exit_code == 0
    return sh


def _execute(sh: Shell, roots: int, run: str = "run-7") -> list[str]:
    """`roots` chains a0 -> a1, gated and executed from the shell: the a0 execution ids."""
    out = []
    for _ in range(roots):
        ids = []
        for t in ("a0", "a1"):
            d = sh.ok("gate", {"action": {"workflow": "ops", "type": t, "amount": 5.0}})
            assert d["decision"]["effect"] == "allow", d
            x = sh.ok("executed", {"decision": d["decision_id"], "receipt": {"run": run},
                                   **({"caused_by": ids[-1]} if ids else {})})
            ids.append(x["execution_id"])
        out.append(ids[0])
    return out


def _printed(text: str, op: str) -> dict:
    """The JSON input of the `stopline rt OP` line that `stopline rollback` printed."""
    line = next(ln for ln in text.splitlines() if f"| stopline rt {op} " in ln)
    words = shlex.split(line)
    assert words[0] == "echo" and words[2:5] == ["|", "stopline", "rt"], line
    return json.loads(words[1])


def _per_plan(sh: Shell, rollbacks: list[str], now: str | None = None) -> dict:
    args = {"now": now} if now else {}
    sts = [sh.ok("authorization", {"subject": r, **args})["status"] for r in rollbacks]
    return dict(sorted(Counter(sts).items()))


def test_an_incident_from_the_shell_alone_plan_approve_steps_status(shell):
    sh = shell
    originals = _execute(sh, 4)
    _execute(sh, 1, run="run-8")  # not selected
    plan = sh.rollback("--select", RUN, "--scenario", "incident", "--requested-by", "ops", "--reason", "run-7")
    assert plan.exit_code == 0, plan.output
    # the text says what to run next: the approval's input (the batch id and its digest), a step, the status
    approve = _printed(plan.output, "approve_batch")
    batch, digest = approve["batch"], approve["batch_hash"]
    assert f"batch {batch}: 4 rollback(s) over 8 record(s)" in plan.output
    assert f"approve it by its digest: {digest}" in plan.output
    assert "it needs 1 incident_lead" in plan.output and approve["roles"] == LEAD
    assert f"stopline rollback --status {batch}" in plan.output
    step = _printed(plan.output, "batch_step")
    assert (step["batch"], step["status"]) == (batch, "completed") and step["duty"] in originals
    # approved from the shell by the printed digest (the placeholder principal replaced)
    a = sh.ok("approve_batch", {**approve, "principal": "lee", "note": "checked the run"})
    assert (a["batch_id"], a["plans"], a["counted"], a["statuses"]) == (batch, 4, 4, {"approved": 4})
    counts = sh.ok("batch_counts", {"batch": batch}, policies=False)
    duties = _plans(sh, batch)
    rollbacks = sorted(duties)
    assert len(rollbacks) == 4 and counts["by_status"] == {"approved": 4} == _per_plan(sh, rollbacks)
    assert all(sh.ok("authorization", {"subject": r})["duties"] == duties[r] for r in rollbacks)
    # steps per record: plan 0 verified, plan 1 completed, plan 2 partial (a step failed), plan 3 cancelled
    r0, r1, r2, r3 = rollbacks
    for d in duties[r0]:
        sh.ok("batch_step", {"batch": batch, "duty": d, "status": "completed", "key": f"c-{d}"})
        sh.ok("batch_step", {"batch": batch, "duty": d, "status": "verified"})
    for d in duties[r1]:
        s = sh.ok("batch_step", {"batch": batch, "duty": d, "status": "completed", "key": f"k-{d}",
                                 "detail": {"by": "bot"}})
        assert s["recorded"] and s["authorized"]
    d = duties[r1][0]
    again = sh.ok("batch_step", {"batch": batch, "duty": d, "status": "completed", "key": f"k-{d}"})
    assert again["recorded"] is False  # the same report with its key: nothing new
    r = sh.rt("batch_step", {"batch": batch, "duty": d, "status": "failed", "key": f"k-{d}"})
    one_line_error(r.exit_code, r.stdout, r.stderr, f"`k-{d}`")  # a key names one report, never another
    sh.ok("batch_step", {"batch": batch, "duty": duties[r2][0], "status": "completed"})
    sh.ok("batch_step", {"batch": batch, "duty": duties[r2][1], "status": "failed"})
    assert sh.ok("cancel", {"subject": r3, "principal": "ops", "reason": "done by hand"})["recorded"]
    # where it stands: every view says what each plan says; the cancelled plan is not `remaining`
    by = _per_plan(sh, rollbacks)
    assert by == {"cancelled": 1, "completed": 1, "partial": 1, "verified": 1}
    counts = sh.ok("batch_counts", {"batch": batch}, policies=False)
    status = sh.ok("batch_status", {"batch": batch}, policies=False)
    assert counts["by_status"] == by == status["by_status"]
    assert (counts["rollbacks"], counts["done"], counts["closed"], counts["partial"], counts["remaining"]) \
        == (4, 2, 1, 1, 1)
    assert {k: v for k, v in status.items() if k != "duties"} == counts
    assert status["duties"] == {"total": 8, "done": 5, "failed": 1, "remaining": 3}
    # (with the policies too: the same)
    assert sh.ok("batch_counts", {"batch": batch}) == counts
    text = _cli("rollback", "--status", batch, "--ledger", sh.url)
    assert text.exit_code == 0, text.output
    assert "4 rollback(s), 2 done, 1 partial, 1 remaining, 1 closed" in text.output
    assert "by status: cancelled 1, completed 1, partial 1, verified 1" in text.output
    v = _cli("ledger", "verify", "--ledger", sh.url)
    assert v.exit_code == 0, v.output


def _plans(sh: Shell, batch: str) -> dict[str, list[str]]:
    """The batch's plans and each one's duties, as the shell lists them (`stopline ledger log
    --kind rollback --link BATCH`: the rollback entries linked to the batch)."""
    r = _cli("ledger", "log", "--ledger", sh.url, "--kind", "rollback", "--link", batch, "--limit", "1000",
             "--format", "json")
    assert r.exit_code == 0, r.output
    return {e["id"]: e["body"]["duties"] for e in json.loads(r.stdout)}


def test_a_batch_approval_lapses_after_expires_in_and_a_deny_closes_the_batch(shell):
    sh = shell
    _execute(sh, 2)
    b = json.loads(sh.rollback("--select", RUN, "--scenario", "incident", "--requested-by", "ops", "--reason", "r",
                               "--format", "json").stdout)
    # the JSON keeps its fields and adds `next`: the approval's input and the lines to run
    assert b["next"]["approve_batch"] == {"batch": b["batch_id"], "batch_hash": b["batch_hash"]}
    assert b["next"]["slots"] == [{"count": 1, "roles": LEAD, "any_of": False}]
    assert set(b["next"]["commands"]) == {"approve_batch", "batch_step", "status"}
    a = sh.ok("approve_batch", {**b["next"]["approve_batch"], "principal": "lee", "roles": LEAD, "expires_in": 60})
    assert a["statuses"] == {"approved": 2}
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    # an hour on, the approval lapsed (an hour is well inside the default `approval_ttl` of a day)
    lapsed = sh.ok("batch_counts", {"batch": b["batch_id"], "now": later}, policies=False)
    assert lapsed["by_status"] == {"pending": 2} == _per_plan(sh, list(b["rollbacks"]), later)
    assert sh.ok("batch_counts", {"batch": b["batch_id"]}, policies=False)["by_status"] == {"approved": 2}
    d = sh.ok("approve_batch", {**b["next"]["approve_batch"], "principal": "dee", "roles": LEAD, "verdict": "deny"})
    assert (d["counted"], d["statuses"]) == (2, {"denied": 2})
    c = sh.ok("batch_counts", {"batch": b["batch_id"]}, policies=False)
    assert (c["by_status"], c["done"], c["closed"], c["remaining"]) == ({"denied": 2}, 0, 2, 0)


def test_dry_run_records_nothing_and_says_nothing_to_approve(shell):
    sh = shell
    _execute(sh, 2)
    size = _ledger_size(sh)
    j = sh.rollback("--select", RUN, "--scenario", "incident", "--requested-by", "ops", "--reason", "r", "--dry-run",
                    "--format", "json")
    assert j.exit_code == 0, j.output
    d = json.loads(j.stdout)
    assert (d["batch_id"], d["next"], len(d["originals"])) == (None, None, 2)
    t = sh.rollback("--select", RUN, "--scenario", "incident", "--requested-by", "ops", "--reason", "r", "--dry-run")
    assert t.exit_code == 0 and "dry run, nothing recorded" in t.output and "approve_batch" not in t.output
    assert _ledger_size(sh) == size


def _ledger_size(sh: Shell) -> int:
    from policy_engine.ledger import Ledger

    led = Ledger.open(sh.url)
    try:
        return len(led.entries())
    finally:
        led.close()


def test_batch_op_errors_are_one_line_and_exit_2(shell):
    sh = shell
    x = _execute(sh, 1)[0]
    b = json.loads(sh.rollback("--select", RUN, "--scenario", "incident", "--requested-by", "ops", "--reason", "r",
                               "--format", "json").stdout)
    bid, h = b["batch_id"], b["batch_hash"]
    size = _ledger_size(sh)
    cases = [
        ("approve_batch", {"batch": "nope", "batch_hash": h, "principal": "lee"}, ("no entry `nope`",)),
        ("approve_batch", {"batch": bid, "batch_hash": "sha256:00", "principal": "lee", "roles": LEAD},
         ("not sha256:00", "binds to the batch")),
        ("approve_batch", {"batch": x, "batch_hash": h, "principal": "lee"}, ("is a `execution`, not a `batch`",)),
        ("approve_batch", {"batch": bid, "batch_hash": h, "principal": "lee", "verdict": "maybe"}, ("`verdict`",)),
        ("approve_batch", {"batch": bid, "batch_hash": h, "principal": ""}, ("`principal` is a non-empty string",)),
        ("approve_batch", {"batch": bid, "batch_hash": h, "principal": "lee", "roles": "incident_lead"},
         ("`roles` is a list",)),
        ("approve_batch", {"batch": bid, "batch_hash": h, "principal": "lee", "expires_in": -5}, ("`expires_in`",)),
        ("approve_batch", {"batch": bid, "principal": "lee", "reason": "r", "batch_hash": h},
         ("takes no argument `reason`", "`note`")),
        ("approve_batch", {"batch_hash": h, "principal": "lee"}, ("`approve_batch` needs `batch`",)),
        ("batch_status", {"batch": "nope"}, ("no entry `nope`",)),
        ("batch_counts", {"batch": bid, "now": "yesterday"}, ("`now` is not an RFC 3339 time",)),
        ("batch_step", {"batch": bid, "duty": "nope", "status": "completed"}, ("`nope` is not a duty",)),
        ("batch_step", {"batch": bid, "duty": 5, "status": "completed"}, ("`duty` is a non-empty string",)),
        ("batch_step", {"batch": bid, "duty": x, "status": "done"}, ("started, completed, failed or verified",)),
        ("batch_step", {"batch": bid, "duty": x}, ("`batch_step` needs `status`",)),
    ]
    for op, args, needles in cases:
        r = sh.rt(op, args, policies=op not in READ_ONLY)
        one_line_error(r.exit_code, r.stdout, r.stderr, *needles)
    for op in ("approve_batch", "batch_step", "batch_counts"):  # not JSON; not an object
        r = _cli("rt", op, "-p", sh.policy, "--ledger", sh.url, "-i", "-", stdin='{"batch": ')
        one_line_error(r.exit_code, r.stdout, r.stderr, "not JSON")
        r = _cli("rt", op, "-p", sh.policy, "--ledger", sh.url, "-i", "-", stdin='["x"]')
        one_line_error(r.exit_code, r.stdout, r.stderr, "a JSON object")
    for op in ("approve_batch", "batch_step"):  # they record: the policies are needed
        r = sh.rt(op, {"batch": bid, "duty": x, "status": "completed", "batch_hash": h, "principal": "lee"},
                  policies=False)
        one_line_error(r.exit_code, r.stdout, r.stderr, "needs the policies")
    assert _ledger_size(sh) == size  # nothing was recorded by any of them


def test_the_rt_help_lists_every_op_and_the_batch_reads_need_no_policies():
    text = _cli("rt", "--help").output
    for op in OPS:
        assert f"{op} {{" in text, op
    assert {"batch_status", "batch_counts"} <= READ_ONLY
    assert not {"approve_batch", "batch_step"} & READ_ONLY


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_lines_stopline_rollback_prints_run_in_a_shell(shell, tmp_path):
    """The printed approve, step and status lines, pasted into bash (the principal filled in)."""
    sh = shell
    _execute(sh, 2)
    plan = sh.rollback("--select", RUN, "--scenario", "incident", "--requested-by", "ops", "--reason", "r")
    lines = [ln.strip() for ln in plan.output.splitlines() if ln.startswith("  ") and "stopline " in ln]
    assert len(lines) == 3, plan.output
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("STOPLINE_LEDGER", None)
    env.pop("STOPLINE_POLICIES", None)
    outs = []
    for ln in lines:
        p = subprocess.run(["bash", "-c", ln.replace("YOUR-NAME", "lee")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and p.stderr == "", (ln, p.stdout, p.stderr)
        outs.append(p.stdout)
    assert json.loads(outs[0])["statuses"] == {"approved": 2}
    assert json.loads(outs[1])["recorded"] is True
    assert "2 rollback(s), 0 done, 0 partial, 2 remaining, 0 closed" in outs[2]


def test_the_printed_lines_never_show_a_ledger_password():
    from policy_engine.runtime.bulk_cli import _shown_url

    shown = _shown_url("postgresql+psycopg://ops:s3cret@db.internal:5432/stopline")
    assert "s3cret" not in shown and shown.startswith("postgresql+psycopg://ops:***@db.internal")
    assert _shown_url("sqlite:///l.db") == "sqlite:///l.db"


def test_rt_gate_many_takes_keys_and_a_caller(tmp_path):
    """`stopline rt gate_many`: a batch gated in one transaction, its keys making a retry
    record nothing, the caller recorded (the CLI's caller is the operator's word: whoever
    may run it may write the ledger)."""
    from policy_engine.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'l.db'}"
    pol = str(Path(__file__).resolve().parent.parent / "policies")
    acts = [{"workflow": "support-replies", "type": "send_customer_reply", "id": f"m{i}", "confidence": 0.97,
             "recipient": {"domain": "customer.example"}, "customer": {"tier": "standard"},
             "claims": [{"kind": "how_to", "sourced": True}]} for i in range(2)]
    body = json.dumps({"actions": acts, "keys": ["k-0", None], "caller": "queue-7",
                       "now": "2026-11-24T10:00:00Z"})
    init = CliRunner().invoke(main, ["ledger", "init", "--ledger", url])
    assert init.exit_code == 0, init.output
    run = CliRunner().invoke(main, ["rt", "gate_many", "-p", pol, "--ledger", url, "-i", "-"], input=body)
    assert run.exit_code == 0, run.output
    first = json.loads(run.output)
    assert [g["decision"]["effect"] for g in first] == ["allow", "allow"]
    again = json.loads(CliRunner().invoke(main, ["rt", "gate_many", "-p", pol, "--ledger", url, "-i", "-"],
                                          input=body).output)
    assert again[0]["decision_id"] == first[0]["decision_id"] and again[0]["replayed"]
    assert again[1]["decision_id"] != first[1]["decision_id"]  # no key: gated again
    with Ledger.open(url) as led:
        ds = led.entries(kind="decision")
        assert len(ds) == 3 and {e.body["caller"] for e in ds} == {"queue-7"}
