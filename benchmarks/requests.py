"""The request mix: deterministic, realistic actions across every benchmark action type.

``make_mix(n, seed)`` returns ``n`` requests ``(action, workflow_state, now)``. Most are
ordinary traffic that the allow rules let through; a share hit approval rules, deny
rules and stop triggers; a few come from a stopped workflow or name an undeclared
action type.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from benchmarks import spec

DAY = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
NIGHT = datetime(2026, 3, 2, 23, 15, tzinfo=UTC)

WORDS = ("thanks for reaching out we have looked into your order and the replacement ships today "
         "please let us know if anything else comes up our team is happy to help with your account").split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _p(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def _claims(rng: random.Random, p_unsourced: float, p_promise: float = 0.3) -> list:
    out = []
    for i in range(rng.randint(0, 4)):
        out.append({"text": f"claim {i}", "kind": "promise" if _p(rng, p_promise) else "fact",
                    "sourced": not _p(rng, p_unsourced), "source": f"kb://{rng.randint(1, 999)}"})
    return out


def send_customer_reply(rng):
    body = _text(rng, rng.randint(20, 120))
    if _p(rng, 0.08):
        body += " if this continues we will consult an attorney"
    if _p(rng, 0.03):
        body += " your SSN 123-45-6789 is on file"
    if _p(rng, 0.03):
        body = body * 40
    return {"recipient": {"email": "jo@customer.example",
                          "domain": "competitor.example" if _p(rng, 0.05) else "customer.example",
                          "verified": not _p(rng, 0.1)},
            "body": body, "claims": _claims(rng, 0.06), "promised_amount": 25.0 if _p(rng, 0.1) else 0.0,
            "cc": ["a@customer.example"] * (5 if _p(rng, 0.05) else rng.randint(0, 2)),
            "sentiment": "angry" if _p(rng, 0.1) else rng.choice(["neutral", "positive"]),
            "ticket_id": f"T-{rng.randint(1000, 99999)}"}


def close_ticket(rng):
    tier = rng.choice(["free", "pro", "pro", "enterprise"])
    return {
        "customer_tier": tier,
        "customer_confirmed": _p(rng, 0.6),
        "reopen_count": 4 if _p(rng, 0.1) else rng.randint(0, 2),
        "days_inactive": rng.randint(0, 30),
        "ticket_id": f"T-{rng.randint(1000, 99999)}",
    }


def escalate_ticket(rng):
    return {
        "team": "marketing"
        if _p(rng, 0.1)
        else rng.choice(["tier2", "tier2", "billing", "engineering", "executive-relations"]),
        "priority": rng.choice(["p1", "p2", "p2", "p3", "p3", "p4"]),
        "ticket_id": f"T-{rng.randint(1000, 99999)}",
    }


def issue_goodwill_credit(rng):
    amount = rng.choice([10.0, 25.0, 40.0, 49.99, 50.0, 75.0, 120.0, 600.0])
    return {
        "amount": amount,
        "currency": "USD",
        "customer_tenure_days": rng.randint(0, 900),
        "credits_last_90d": [rng.choice([5.0, 15.0, 30.0]) for _ in range(rng.randint(0, 3))],
    }


def tag_ticket(rng):
    tags = [rng.choice(["billing", "shipping", "refund", "bug", "vip"]) for _ in range(rng.randint(1, 3))]
    if _p(rng, 0.08):
        tags.append("internal-escalation")
    if _p(rng, 0.05):
        tags.append("x" * 40)
    return {"tags": tags, "ticket_id": f"T-{rng.randint(1000, 99999)}"}


def update_contact(rng):
    fields = rng.sample(
        ["phone", "address", "title", "company", "notes", "timezone", "language", "website"], rng.randint(1, 3)
    )
    if _p(rng, 0.08):
        fields.append("billing_email")
    if _p(rng, 0.05):
        fields += ["city", "zip", "country", "state"]
    return {
        "contact_id": f"C-{rng.randint(1, 99999)}",
        "fields": fields,
        "new_email": "x@competitor.example" if _p(rng, 0.04) else "jo@customer.example",
        "source": rng.choice(["customer_portal", "verified_call", "agent_inferred", "import"]),
        "batch_size": 800 if _p(rng, 0.04) else rng.randint(1, 20),
    }


def merge_accounts(rng):
    t = rng.choice(["t1", "t2"])
    return {
        "left": {"id": "A1", "tenant": t, "tier": rng.choice(["pro", "enterprise"])},
        "right": {"id": "A2", "tenant": t if not _p(rng, 0.1) else "t9", "tier": "pro"},
        "confidence": rng.choice([0.55, 0.7, 0.85, 0.95, 0.99]),
    }


def delete_contact(rng):
    return {
        "contact_id": f"C-{rng.randint(1, 99999)}",
        "legal_hold": _p(rng, 0.08),
        "open_orders": 1 if _p(rng, 0.1) else 0,
        "reason": rng.choice(["gdpr_erasure", "gdpr_erasure", "duplicate", "customer_request"]),
    }


def export_contacts(rng):
    rows = rng.choice([50, 200, 800, 2500, 9000, 20000])
    if _p(rng, 0.04):
        rows = 250000
    return {
        "row_count": rows,
        "destination": "s3://exports.acme.example" if not _p(rng, 0.1) else "https://files.partner.example",
        "columns": rng.sample(["name", "company", "email", "phone", "title", "industry"], rng.randint(1, 3)),
    }


def log_crm_activity(rng):
    note = _text(rng, rng.randint(5, 110))
    if _p(rng, 0.05):
        note += " api_key=sk_live_123"
    return {"visibility": rng.choice(["internal", "internal", "customer"]), "note": note, "account_id": "A-1"}


def publish_article(rng):
    tags = rng.sample(["product", "release", "howto", "earnings", "community", "named_individual"], rng.randint(1, 2))
    body = _text(rng, rng.randint(100, 300))
    if _p(rng, 0.05):
        body += " with guaranteed returns"
    return {
        "title": "Release notes",
        "author": rng.choice(["editorial-bot", "newsroom-agent", "guest-writer"]),
        "section": "homepage" if _p(rng, 0.1) else rng.choice(["blog", "docs", "news"]),
        "body": body,
        "tags": tags,
        "claims": _claims(rng, 0.1),
        "embargo_until": "2026-03-05T09:00:00+00:00" if _p(rng, 0.08) else "2026-03-01T09:00:00+00:00",
    }


def edit_article(rng):
    return {
        "article_id": f"P-{rng.randint(1, 9999)}",
        "locked": _p(rng, 0.06),
        "changes_headline": _p(rng, 0.15),
        "diff_chars": rng.choice([12, 80, 150, 600, 2400]),
        "tags": rng.sample(["product", "howto", "named_individual"], 1),
        "claims": _claims(rng, 0.1),
    }


def unpublish_article(rng):
    return {
        "article_id": f"P-{rng.randint(1, 9999)}",
        "reason": rng.choice(["error", "duplicate", "legal_request", "outdated", ""]),
        "views_last_24h": rng.choice([100, 5000, 250000]),
        "batch_size": 120 if _p(rng, 0.05) else 1,
    }


def upload_media(rng):
    return {
        "file_name": "hero.png",
        "size_bytes": rng.choice([20000, 800000, 4000000, 90000000]),
        "mime_type": rng.choice(["image/png", "image/jpeg", "image/webp", "video/mp4", "application/x-msdownload"]),
        "detected_faces": rng.choice([0, 0, 0, 2]),
        "model_release": _p(rng, 0.5),
        "license": rng.choice(["owned", "cc-by", "licensed", "unknown"]),
    }


def post_social(rng):
    text = _text(rng, rng.randint(8, 60))
    if _p(rng, 0.05):
        text += " better than @competitor"
    return {
        "channel": rng.choice(["twitter", "linkedin", "mastodon", "facebook"]),
        "text": text,
        "hashtags": ["#release"] + (["#ad"] if _p(rng, 0.1) else []),
        "scheduled": _p(rng, 0.3),
        "audience_size": rng.choice([2000, 50000, 400000]),
    }


def grant_role(rng):
    user = f"u{rng.randint(1, 500)}"
    return {
        "user_id": user,
        "user_domain": "gmail.example" if _p(rng, 0.06) else rng.choice(["acme.example", "contractor.acme.example"]),
        "requested_by": user if _p(rng, 0.04) else "u900",
        "role": rng.choice(["viewer", "viewer", "commenter", "editor", "admin", "billing_admin"]),
        "duration_hours": rng.choice([8, 72, 720, 2000]),
        "requested_by_agent": _p(rng, 0.3),
    }


def revoke_role(rng):
    return {
        "user_id": f"u{rng.randint(1, 500)}",
        "role": rng.choice(["viewer", "editor", "admin", "owner"]),
        "remaining_owners": rng.choice([1, 2, 3]),
        "batch_size": 40 if _p(rng, 0.05) else 1,
    }


def create_api_key(rng):
    scopes = rng.sample(
        ["read:orders", "read:customers", "read:invoices", "read:products", "write:orders", "admin:billing", "read:*"],
        rng.randint(1, 2),
    )
    return {"name": "integration", "scopes": scopes, "expires_in_days": rng.choice([0, 30, 30, 90, 90, 365])}


def reset_password(rng):
    return {
        "user_id": f"u{rng.randint(1, 500)}",
        "identity_verified": _p(rng, 0.85),
        "target_roles": rng.sample(["viewer", "editor", "admin"], 1),
        "channel": rng.choice(["chat", "email", "phone"]),
    }


def disable_account(rng):
    user = f"u{rng.randint(1, 500)}"
    reason = rng.choice(["compromised", "compromised", "offboarding", "abuse"])
    return {
        "user_id": user,
        "requested_by": user if _p(rng, 0.04) else "secbot",
        "user_type": rng.choice(["employee", "customer", "customer"]),
        "reason": reason,
        "alert_id": rng.choice(["SEC-4411", "SEC-9", "OPS-12"]),
        "batch_size": 30 if _p(rng, 0.04) else 1,
    }


def issue_refund(rng):
    method = rng.choice(["card", "card", "card", "paypal"])
    return {
        "order_id": f"O-{rng.randint(1, 999999)}",
        "amount": rng.choice([12.5, 49.0, 89.99, 100.0, 240.0, 780.0]),
        "currency": "USD",
        "customer": {
            "id": f"cus_{rng.randint(1, 9999)}",
            "country": "IR" if _p(rng, 0.03) else rng.choice(["US", "DE", "GB"]),
        },
        "fraud_score": rng.choice([0.02, 0.1, 0.3, 0.5, 0.92]) if _p(rng, 0.9) else 0.95,
        "prior_refunds": [{"days_ago": rng.choice([3, 10, 45, 200])} for _ in range(rng.randint(0, 3))],
        "method": method if not _p(rng, 0.08) else "store_credit",
        "original_payment_method": method,
        "order_age_days": rng.choice([2, 20, 45, 90]),
        "refunds_last_hour": 80 if _p(rng, 0.03) else rng.randint(0, 20),
        "order_already_refunded": _p(rng, 0.03),
    }


def cancel_subscription(rng):
    return {
        "subscription_id": f"S-{rng.randint(1, 9999)}",
        "plan_interval": rng.choice(["monthly", "monthly", "annual"]),
        "prorate": _p(rng, 0.5),
        "contract_type": rng.choice(["self_serve", "self_serve", "enterprise"]),
        "contract_end_days": rng.choice([0, 0, 120]),
    }


def apply_discount(rng):
    return {
        "percent": rng.choice([5, 10, 15, 20, 30, 60]),
        "duration_months": rng.choice([1, 3, 6, 12]),
        "existing_discounts": ["SPRING"] if _p(rng, 0.15) else [],
    }


def respond_chargeback(rng):
    return {
        "dispute_id": f"D-{rng.randint(1, 9999)}",
        "days_to_deadline": rng.choice([-1, 2, 5, 9]),
        "evidence": [
            {"kind": k, "verified": not _p(rng, 0.2)}
            for k in rng.sample(["receipt", "tracking", "chat_log"], rng.randint(1, 3))
        ],
    }


def update_payout_account(rng):
    return {
        "bank_verified": _p(rng, 0.9),
        "old_country": "US",
        "new_country": "US" if not _p(rng, 0.05) else "NG",
        "changed_within_days": rng.choice([2, 30, 90, 400, 800]),
    }


GENERATORS = {
    name: fn
    for name, fn in globals().items()
    if callable(fn) and not name.startswith("_") and name in {a.name for _, a in spec.all_actions()}
}
WORKFLOW_OF = {a.name: w.name for w, a in spec.all_actions()}
assert set(GENERATORS) == set(WORKFLOW_OF), set(WORKFLOW_OF) - set(GENERATORS)


def make_mix(n: int = 200, seed: int = 20260302) -> list[tuple[dict, dict | None, datetime]]:
    rng = random.Random(seed)
    order = sorted(GENERATORS) * (n // len(GENERATORS) + 1)
    rng.shuffle(order)
    out = []
    for i in range(n):
        now = NIGHT if _p(rng, 0.15) else DAY
        t = order[i]
        action = {"workflow": WORKFLOW_OF[t], "type": t, "id": f"act-{i:04d}", **GENERATORS[t](rng)}
        state = None
        if i % 50 == 17:  # a workflow already stopped by a trigger
            state = {"name": WORKFLOW_OF[t], "status": "stopped", "stopped_by": _first_stop(t)}
        if i % 50 == 41:  # an action type no policy declares
            action = {"workflow": WORKFLOW_OF[t], "type": "wire_transfer", "id": f"act-{i:04d}", "amount": 9000.0}
        out.append((action, state, now))
    return out


def _first_stop(action_type: str) -> str:
    for w in spec.WORKFLOWS:
        if any(a.name == action_type for a in w.actions):
            return w.stops[0].name
    raise KeyError(action_type)
