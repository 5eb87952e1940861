"""Session 23: "(again: you had already approved it ...)" knows the reviewer by every spelling.

The page's "(you)" markers count ``Casey`` and ``casey`` as one person, as the engine does
(``canonical_principal``: one person fills one slot), but the note after an approval
compared spellings exactly: a reviewer who had approved as ``casey\u200b`` (a JWT's ``sub``,
a renamed token) and approved again as ``casey`` read "approved by casey" with no word that
the two count once; one who had approved as ``Casey`` read "recorded, but it does not
count", as if their approval were lost. Both now read "(again: you had already approved it
as `...`, and one reviewer's approvals count once)". Over HTTP, SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (SQLite and PostgreSQL)
from test_audit_s19_ui import app, decide, plan_of, policy_dir, sign_in  # noqa: E402,F401  (fixtures)

AGAIN = "(again: you had already approved it as `{}`, and one reviewer's approvals count once)"


def _approved_before(c, subject: str, spelling: str) -> None:
    """An approval by another spelling of casey (recorded by the runtime, as the API would)."""
    r = c.app.state.runtime.approve(subject, principal=spelling, roles=("customer_service",), verdict="approve")
    assert r.recorded and r.counted


@pytest.mark.parametrize("spelling", ["casey\u200b", "Casey"])
def test_approving_again_under_another_spelling_says_you_had_already_approved(app, spelling):  # noqa: F811
    c = app
    rb = plan_of(c, 1)
    _approved_before(c, rb, spelling)
    sign_in(c, "casey")
    msg = decide(c, f"/ui/plans/{rb}", verdict="approve")
    shown = spelling.replace("\u200b", "\\u200b")  # (the page writes a character no one sees as its escape)
    assert msg == f"approved by casey {AGAIN.format(shown)}; status approved", msg
    # one person counted once, whichever spelling the engine kept
    st = c.app.state.runtime.authorization(rb).verdict
    assert len(st.accepted) == 1 and st.accepted[0] in ("casey", spelling)


def test_someone_else_approving_after_the_reviewer_is_not_again(app):  # noqa: F811
    c = app
    rb = plan_of(c, 2)
    _approved_before(c, rb, "cleo")
    sign_in(c, "casey")  # one slot, two people: one of them counts; casey had not approved before
    msg = decide(c, f"/ui/plans/{rb}", verdict="approve")
    assert "again" not in msg and "status approved" in msg, msg
