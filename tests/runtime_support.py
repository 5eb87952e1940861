"""Shared pieces of the runtime tests: a small policy (one gate with an approval rule, a
repair action, a stop trigger with one re-enable criterion, a side effect and an
undeclared one, one rollback scenario) and a pinned clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
WF = "replies"

POLICY = '''roles [reviewer, customer_service]

workflow "replies" {
  version "1.0"
  owners {
    business "Support lead"
    technical "Platform"
  }
  default require_approval

  action send {
    system "helpdesk"
    reversible partial via "email.recall" within 60s
    prerequisite not_opened `!original.opened`
    side_effects [log]
    receipt [message, ticket]

    deny blocked when `action.amount > 1000.0`
    require_approval big by 1 reviewer when `action.amount > 100.0`
    allow small when `action.amount <= 100.0`
  }

  action log {
    system "crm"
    runs_while_stopped
    reversible full via "crm.amend"
    receipt [note]

    allow any when `true`
  }

  action other {
    system "crm"
    reversible full via "crm.undo"
    receipt [note]

    allow any when `true`
  }

  stop bad_promise {
    when `action.type == "send" && action.promise`
    severity high
    owner "Support lead"
    affects [helpdesk]
    receipt [message]
    rollback "Send a correction"
    notify [customer]
    resume when {
      fixed: `evidence.fixed == true` "the fix is deployed"
    }
  }

  rollback customer_request {
    route customer_service
    authorize 1 customer_service distinct from request.requested_by
    notify [customer]
    compensate ["send a correction"]
    cascade depth 2
  }
}
'''


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def send(amount: float = 50.0, promise: bool = False, **extra) -> dict:
    return {"workflow": WF, "type": "send", "amount": amount, "promise": promise, **extra}


def write_policy(tmp_path, text: str = POLICY):
    p = tmp_path / "replies.policy"
    p.write_text(text, encoding="utf-8")
    return p


RECEIPT = {"message": "hello", "ticket": "T-1"}  # the receipt of a `send` (POLICY's receipt fields)


@pytest.fixture
def policy_path(tmp_path):
    """POLICY written to a file."""
    return write_policy(tmp_path)


@pytest.fixture
def rt(ledger_url, policy_path):
    """A Runtime on POLICY and the test's ledger (SQLite and PostgreSQL: `ledger_url`,
    which the test module imports from ledger_fixtures)."""
    from policy_engine import Runtime

    with Runtime.open(str(policy_path), ledger=ledger_url) as r:
        yield r
