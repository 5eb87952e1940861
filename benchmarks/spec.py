"""The benchmark policy set, written once per language.

Every gate rule and stop trigger is written three times, by hand:

* ``cel``   -- the condition in our policy language (goes into ``policies/*.policy``);
* ``py``    -- the same condition as plain Python over the action dict ``a``
               (goes into the hand-written baseline ``baselines/handwritten.py``);
* ``cedar`` -- the same condition in Cedar over ``context`` (goes into
               ``baselines/policies.cedar``).  Cedar has no floats, no string length,
               no regular expressions and no quantifiers over sets of records; such
               conditions read a precomputed ``context.derived.NAME`` whose Python
               definition is in ``derive`` (that Python runs inside the timed Cedar
               path).  Money and other floats are passed to Cedar as integer
               hundredths (``500.0`` -> ``50000``); constants are written ``$name``
               and rendered the same way.

``gen_policies.py`` turns this module into the committed files; ``requests.py`` makes
the request mix.  Change a rule here, then run ``python benchmarks/gen_policies.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    effect: str  # allow | require_approval | deny
    name: str
    cel: str
    py: str
    cedar: str
    by: str | None = None  # "1 reviewer" or "2 of [a, b]"
    derive: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    name: str
    system: str
    reversible: str  # the `reversible ...` / `irreversible` declaration
    rules: tuple[Rule, ...]
    side_effects: tuple[str, ...] = ()
    receipt: tuple[str, ...] = ("policy_rule", "reviewer_decision")
    description: str = ""


@dataclass(frozen=True)
class Stop:
    name: str
    types: tuple[str, ...]  # action types the trigger can fire on (its CEL guards on action.type)
    cel: str
    py: str
    cedar: str
    severity: str
    owner: str
    affects: tuple[str, ...]
    rollback: str
    notify: tuple[str, ...]
    resume: tuple[tuple[str, str], ...]
    derive: dict[str, str] = field(default_factory=dict)
    # the `evidence { ... }` block: (field, type) for each field the re-enable criteria read
    evidence: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Workflow:
    name: str
    file: str
    version: str
    business: str
    technical: str
    default: str
    consts: dict
    actions: tuple[Action, ...]
    stops: tuple[Stop, ...]


ROLES = (
    "reviewer", "support_manager", "customer_service", "incident_commander", "policy_owner",
    "legal", "executive", "finance_manager", "security_admin", "content_editor",
    "data_protection_officer",
)

GLOBAL_CONSTS = {
    "refund_limit": 500.0,
    "internal_domain": "acme.example",
    "sanctioned_countries": ["KP", "IR", "SY", "CU"],
    "privileged_roles": ["admin", "billing_admin", "security_admin", "owner"],
}

A, D, R = "allow", "deny", "require_approval"

# --------------------------------------------------------------------------- support
SUPPORT = Workflow(
    name="support-replies", file="support.policy", version="2026.3.1",
    business="Support operations lead", technical="Support platform", default=R,
    consts={
        "blocked_domains": ["competitor.example", "leaks.example", "pastebin.example"],
        "max_reply_chars": 4000,
        "goodwill_credit_limit": 50.0,
        "escalation_teams": ["tier2", "billing", "engineering", "executive-relations"],
    },
    actions=(
        Action("send_customer_reply", "helpdesk", 'reversible partial via "email.recall" within 60s', (
            Rule(D, "blocked_domain", "action.recipient.domain in policy.blocked_domains",
                 'a["recipient"]["domain"] in BLOCKED_DOMAINS',
                 "$blocked_domains.contains(context.recipient.domain)"),
            Rule(D, "too_long", "size(action.body) > policy.max_reply_chars",
                 'len(a["body"]) > MAX_REPLY_CHARS',
                 "context.derived.body_len > $max_reply_chars", derive={"body_len": 'len(a["body"])'}),
            Rule(R, "legal_language", 'action.body.matches("(?i)(lawsuit|attorney|legal action)")',
                 'LEGAL_RE.search(a["body"]) is not None',
                 "context.derived.legal_language", by="1 legal",
                 derive={"legal_language": 'LEGAL_RE.search(a["body"]) is not None'}),
            Rule(R, "promises_money", "action.promised_amount > 0.0",
                 'a["promised_amount"] > 0.0', "context.promised_amount > 0", by="1 support_manager"),
            Rule(R, "many_recipients", "size(action.cc) > 3", 'len(a["cc"]) > 3',
                 "context.derived.cc_count > 3", by="1 reviewer", derive={"cc_count": 'len(a["cc"])'}),
            Rule(A, "routine",
                 'action.claims.all(c, c.sourced) && action.sentiment != "angry" && action.recipient.verified',
                 'all(c["sourced"] for c in a["claims"]) and a["sentiment"] != "angry" and a["recipient"]["verified"]',
                 'context.derived.all_sourced && context.sentiment != "angry" && context.recipient.verified',
                 derive={"all_sourced": 'all(c["sourced"] for c in a["claims"])'}),
        ), side_effects=("log_crm_activity",), receipt=("final_message", "reviewer_decision", "policy_rule", "source_excerpts"),
            description="An AI-drafted reply to a customer ticket"),
        Action("close_ticket", "helpdesk", 'reversible full via "helpdesk.reopen"', (
            Rule(D, "unconfirmed_enterprise", 'action.customer_tier == "enterprise" && !action.customer_confirmed',
                 'a["customer_tier"] == "enterprise" and not a["customer_confirmed"]',
                 'context.customer_tier == "enterprise" && !context.customer_confirmed'),
            Rule(R, "reopened_often", "action.reopen_count >= 3", 'a["reopen_count"] >= 3',
                 "context.reopen_count >= 3", by="1 support_manager"),
            Rule(A, "confirmed", "action.customer_confirmed", 'a["customer_confirmed"]', "context.customer_confirmed"),
            Rule(A, "stale", 'action.days_inactive > 14 && action.customer_tier != "enterprise"',
                 'a["days_inactive"] > 14 and a["customer_tier"] != "enterprise"',
                 'context.days_inactive > 14 && context.customer_tier != "enterprise"'),
        )),
        Action("escalate_ticket", "helpdesk", 'reversible full via "helpdesk.deescalate"', (
            Rule(D, "unknown_team", "!(action.team in policy.escalation_teams)",
                 'a["team"] not in ESCALATION_TEAMS', "!$escalation_teams.contains(context.team)"),
            Rule(R, "executive_relations", 'action.team == "executive-relations"',
                 'a["team"] == "executive-relations"', 'context.team == "executive-relations"', by="1 support_manager"),
            Rule(R, "p1", 'action.priority == "p1"', 'a["priority"] == "p1"', 'context.priority == "p1"',
                 by="1 incident_commander"),
            Rule(A, "normal", 'action.priority in ["p2", "p3", "p4"]', 'a["priority"] in ("p2", "p3", "p4")',
                 '["p2", "p3", "p4"].contains(context.priority)'),
        )),
        Action("issue_goodwill_credit", "billing", 'reversible full via "billing.void_credit" within 30d', (
            Rule(D, "over_limit", "action.amount > policy.refund_limit", 'a["amount"] > REFUND_LIMIT',
                 "context.amount > $refund_limit"),
            Rule(R, "above_goodwill", "action.amount > policy.goodwill_credit_limit",
                 'a["amount"] > GOODWILL_CREDIT_LIMIT', "context.amount > $goodwill_credit_limit", by="1 support_manager"),
            Rule(R, "repeat_credits", "action.credits_last_90d.filter(c, c > 20.0).size() >= 2",
                 'sum(1 for c in a["credits_last_90d"] if c > 20.0) >= 2', "context.derived.big_credits >= 2",
                 by="1 reviewer", derive={"big_credits": 'sum(1 for c in a["credits_last_90d"] if c > 20.0)'}),
            Rule(A, "small", "action.amount <= policy.goodwill_credit_limit && action.customer_tenure_days > 30",
                 'a["amount"] <= GOODWILL_CREDIT_LIMIT and a["customer_tenure_days"] > 30',
                 "context.amount <= $goodwill_credit_limit && context.customer_tenure_days > 30"),
        )),
        Action("tag_ticket", "helpdesk", 'reversible full via "helpdesk.untag"', (
            Rule(D, "reserved_tag", 'action.tags.exists(t, t.startsWith("internal-"))',
                 'any(t.startswith("internal-") for t in a["tags"])', "context.derived.reserved_tag",
                 derive={"reserved_tag": 'any(t.startswith("internal-") for t in a["tags"])'}),
            Rule(A, "short_tags", "action.tags.all(t, size(t) <= 32)", 'all(len(t) <= 32 for t in a["tags"])',
                 "context.derived.short_tags", derive={"short_tags": 'all(len(t) <= 32 for t in a["tags"])'}),
        )),
    ),
    stops=(
        Stop("unsupported_promise", ("send_customer_reply",),
             'action.type == "send_customer_reply" && action.claims.exists(c, !c.sourced && c.kind == "promise")',
             'any(not c["sourced"] and c["kind"] == "promise" for c in a["claims"])',
             "context.derived.unsourced_promise",
             "high", "Support operations lead", ("helpdesk", "email", "crm_activity"),
             "Send correction, amend CRM note, reopen ticket if needed", ("customer", "account_owner", "support_manager"),
             (("claim_source_visible", "evidence.reviewer_screen.shows_claim_source"),
              ("promises_blocked", "size(evidence.blocked_promises) > 0")),
             derive={"unsourced_promise": 'any(not c["sourced"] and c["kind"] == "promise" for c in a["claims"])'},
             evidence=(("reviewer_screen", "{ shows_claim_source: bool }"), ("blocked_promises", "list<string>"))),
        Stop("pii_in_reply", ("send_customer_reply",),
             'action.type == "send_customer_reply" && action.body.matches("[0-9]{3}-[0-9]{2}-[0-9]{4}")',
             'SSN_RE.search(a["body"]) is not None', "context.derived.ssn",
             "critical", "Support operations lead", ("helpdesk", "email"),
             "Recall the message and notify the privacy team", ("support_manager", "data_protection_officer"),
             (("redaction_deployed", "evidence.redaction_filter_enabled"),),
             derive={"ssn": 'SSN_RE.search(a["body"]) is not None'},
             evidence=(("redaction_filter_enabled", "bool"),)),
    ),
)

# --------------------------------------------------------------------------- CRM
CRM = Workflow(
    name="crm-updates", file="crm.policy", version="2026.3.1",
    business="Revenue operations lead", technical="CRM platform", default=R,
    consts={
        "protected_fields": ["owner_id", "account_tier", "billing_email", "tax_id"],
        "export_row_limit": 10000,
        "pii_columns": ["email", "phone", "address", "date_of_birth"],
    },
    actions=(
        Action("update_contact", "crm", 'reversible full via "crm.restore_field" within 30d', (
            Rule(D, "protected_field", "action.fields.exists(f, f in policy.protected_fields)",
                 'any(f in PROTECTED_FIELDS for f in a["fields"])', "context.fields.containsAny($protected_fields)"),
            Rule(D, "competitor_email", 'action.new_email.endsWith("@competitor.example")',
                 'a["new_email"].endswith("@competitor.example")', 'context.new_email like "*@competitor.example"'),
            Rule(R, "many_fields", "size(action.fields) > 5", 'len(a["fields"]) > 5',
                 "context.derived.n_fields > 5", by="1 reviewer", derive={"n_fields": 'len(a["fields"])'}),
            Rule(R, "inferred", 'action.source == "agent_inferred"', 'a["source"] == "agent_inferred"',
                 'context.source == "agent_inferred"', by="1 customer_service"),
            Rule(A, "verified_source", 'action.source in ["customer_portal", "verified_call"]',
                 'a["source"] in ("customer_portal", "verified_call")',
                 '["customer_portal", "verified_call"].contains(context.source)'),
        )),
        Action("merge_accounts", "crm", "irreversible", (
            Rule(D, "cross_tenant", "action.left.tenant != action.right.tenant",
                 'a["left"]["tenant"] != a["right"]["tenant"]', "context.left.tenant != context.right.tenant"),
            Rule(D, "low_confidence", "action.confidence < 0.6", 'a["confidence"] < 0.6', "context.confidence < 60"),
            Rule(R, "enterprise", 'action.left.tier == "enterprise" || action.right.tier == "enterprise"',
                 'a["left"]["tier"] == "enterprise" or a["right"]["tier"] == "enterprise"',
                 'context.left.tier == "enterprise" || context.right.tier == "enterprise"',
                 by="2 of [support_manager, policy_owner]"),
            Rule(R, "standard", "action.confidence >= 0.6", 'a["confidence"] >= 0.6', "context.confidence >= 60",
                 by="1 reviewer"),
        )),
        Action("delete_contact", "crm", "irreversible", (
            Rule(D, "legal_hold", "action.legal_hold", 'a["legal_hold"]', "context.legal_hold"),
            Rule(D, "open_orders", "action.open_orders > 0", 'a["open_orders"] > 0', "context.open_orders > 0"),
            Rule(R, "gdpr", 'action.reason == "gdpr_erasure"', 'a["reason"] == "gdpr_erasure"',
                 'context.reason == "gdpr_erasure"', by="1 data_protection_officer"),
            Rule(R, "other_reason", 'action.reason != "gdpr_erasure"', 'a["reason"] != "gdpr_erasure"',
                 'context.reason != "gdpr_erasure"', by="2 of [support_manager, data_protection_officer]"),
        )),
        Action("export_contacts", "crm", "irreversible", (
            Rule(D, "too_many_rows", "action.row_count > policy.export_row_limit",
                 'a["row_count"] > EXPORT_ROW_LIMIT', "context.row_count > $export_row_limit"),
            Rule(D, "external_destination", "!action.destination.endsWith(policy.internal_domain)",
                 'not a["destination"].endswith(INTERNAL_DOMAIN)', '!(context.destination like "*acme.example")'),
            Rule(R, "pii", "action.columns.exists(c, c in policy.pii_columns)",
                 'any(c in PII_COLUMNS for c in a["columns"])', "context.columns.containsAny($pii_columns)",
                 by="1 data_protection_officer"),
            Rule(R, "bulk", "action.row_count > 1000", 'a["row_count"] > 1000', "context.row_count > 1000",
                 by="1 reviewer"),
        )),
        Action("log_crm_activity", "crm", 'reversible full via "crm.delete_activity"', (
            Rule(D, "secrets", 'action.note.matches("(api[_-]?key|password|secret)[:=]")',
                 'SECRET_RE.search(a["note"]) is not None', "context.derived.secret",
                 derive={"secret": 'SECRET_RE.search(a["note"]) is not None'}),
            Rule(R, "long_customer_note", 'action.visibility == "customer" && size(action.note) > 500',
                 'a["visibility"] == "customer" and len(a["note"]) > 500',
                 'context.visibility == "customer" && context.derived.note_len > 500', by="1 reviewer",
                 derive={"note_len": 'len(a["note"])'}),
            Rule(A, "internal", 'action.visibility == "internal"', 'a["visibility"] == "internal"',
                 'context.visibility == "internal"'),
            Rule(A, "short_customer_note", 'action.visibility == "customer" && size(action.note) <= 500',
                 'a["visibility"] == "customer" and len(a["note"]) <= 500',
                 'context.visibility == "customer" && context.derived.note_len <= 500',
                 derive={"note_len": 'len(a["note"])'}),
        )),
    ),
    stops=(
        Stop("mass_update", ("update_contact",), 'action.type == "update_contact" && action.batch_size > 500',
             'a["batch_size"] > 500', "context.batch_size > 500",
             "high", "Revenue operations lead", ("crm",), "Restore the changed fields from the audit log",
             ("account_owner", "support_manager"),
             (("batch_reviewed", "evidence.batch_review.approved"),),
             evidence=(("batch_review", "{ approved: bool }"),)),
        Stop("export_exfiltration", ("export_contacts",),
             'action.type == "export_contacts" && action.row_count > 100000',
             'a["row_count"] > 100000', "context.row_count > 100000",
             "critical", "Security operations", ("crm", "data_warehouse"), "Revoke the export link and rotate credentials",
             ("security_admin", "data_protection_officer"),
             (("link_revoked", "evidence.export_link_revoked"), ("incident_filed", 'evidence.incident_id != ""')),
             evidence=(("export_link_revoked", "bool"), ("incident_id", "string"))),
    ),
)

# --------------------------------------------------------------------------- CMS
CMS = Workflow(
    name="cms-publishing", file="cms.policy", version="2026.3.1",
    business="Head of content", technical="Web platform", default=R,
    consts={
        "banned_phrases": ["guaranteed returns", "miracle cure", "risk-free"],
        "trusted_authors": ["editorial-bot", "newsroom-agent", "docs-agent"],
        "sensitive_tags": ["legal", "lawsuit", "regulatory", "earnings"],
        "media_types": ["image/png", "image/jpeg", "image/webp", "video/mp4"],
    },
    actions=(
        Action("publish_article", "cms", 'reversible partial via "cms.unpublish" within 1h', (
            Rule(D, "banned_phrase", "policy.banned_phrases.exists(p, action.body.contains(p))",
                 'any(p in a["body"] for p in BANNED_PHRASES)', "context.derived.banned_phrase",
                 derive={"banned_phrase": 'any(p in a["body"] for p in BANNED_PHRASES)'}),
            Rule(D, "embargoed", "timestamp(action.embargo_until) > now",
                 'parse_ts(a["embargo_until"]) > now', "context.derived.embargoed",
                 derive={"embargoed": 'parse_ts(a["embargo_until"]) > now'}),
            Rule(R, "unsourced_claims", "action.claims.exists(c, !c.sourced)",
                 'any(not c["sourced"] for c in a["claims"])', "context.derived.unsourced", by="1 content_editor",
                 derive={"unsourced": 'any(not c["sourced"] for c in a["claims"])'}),
            Rule(R, "sensitive_topic", "action.tags.exists(t, t in policy.sensitive_tags)",
                 'any(t in SENSITIVE_TAGS for t in a["tags"])', "context.tags.containsAny($sensitive_tags)",
                 by="1 legal"),
            Rule(R, "homepage", 'action.section == "homepage"', 'a["section"] == "homepage"',
                 'context.section == "homepage"', by="1 content_editor"),
            Rule(A, "trusted",
                 'action.author in policy.trusted_authors && action.claims.all(c, c.sourced) && action.section != "homepage"',
                 'a["author"] in TRUSTED_AUTHORS and all(c["sourced"] for c in a["claims"]) and a["section"] != "homepage"',
                 '$trusted_authors.contains(context.author) && !context.derived.unsourced && context.section != "homepage"',
                 derive={"unsourced": 'any(not c["sourced"] for c in a["claims"])'}),
        ), side_effects=("post_social",)),
        Action("edit_article", "cms", 'reversible full via "cms.revert_revision"', (
            Rule(D, "locked", "action.locked", 'a["locked"]', "context.locked"),
            Rule(R, "headline", "action.changes_headline", 'a["changes_headline"]', "context.changes_headline",
                 by="1 content_editor"),
            Rule(R, "large_edit", "action.diff_chars >= 2000", 'a["diff_chars"] >= 2000', "context.diff_chars >= 2000",
                 by="1 content_editor"),
            Rule(A, "small_fix", "action.diff_chars < 200 && !action.changes_headline",
                 'a["diff_chars"] < 200 and not a["changes_headline"]',
                 "context.diff_chars < 200 && !context.changes_headline"),
        )),
        Action("unpublish_article", "cms", 'reversible full via "cms.republish"', (
            Rule(D, "no_reason", 'action.reason == ""', 'a["reason"] == ""', 'context.reason == ""'),
            Rule(R, "high_traffic", "action.views_last_24h > 100000", 'a["views_last_24h"] > 100000',
                 "context.views_last_24h > 100000", by="1 content_editor"),
            Rule(A, "correction", 'action.reason in ["error", "legal_request", "duplicate"]',
                 'a["reason"] in ("error", "legal_request", "duplicate")',
                 '["error", "legal_request", "duplicate"].contains(context.reason)'),
        )),
        Action("upload_media", "cms", 'reversible full via "cms.delete_media"', (
            Rule(D, "too_large", "action.size_bytes > 50000000", 'a["size_bytes"] > 50000000',
                 "context.size_bytes > 50000000"),
            Rule(D, "bad_type", "!(action.mime_type in policy.media_types)", 'a["mime_type"] not in MEDIA_TYPES',
                 "!$media_types.contains(context.mime_type)"),
            Rule(R, "faces", "action.detected_faces > 0 && !action.model_release",
                 'a["detected_faces"] > 0 and not a["model_release"]',
                 "context.detected_faces > 0 && !context.model_release", by="1 content_editor"),
            Rule(A, "licensed", 'action.license in ["owned", "cc-by", "licensed"]',
                 'a["license"] in ("owned", "cc-by", "licensed")', '["owned", "cc-by", "licensed"].contains(context.license)'),
        )),
        Action("post_social", "social", "irreversible", (
            Rule(D, "mentions_competitor", 'action.text.contains("@competitor")', '"@competitor" in a["text"]',
                 'context.text like "*@competitor*"'),
            Rule(R, "brand_channel", 'action.channel in ["twitter", "linkedin"]',
                 'a["channel"] in ("twitter", "linkedin")', '["twitter", "linkedin"].contains(context.channel)',
                 by="1 content_editor"),
            Rule(R, "sponsored", 'action.hashtags.filter(h, h.startsWith("#ad")).size() > 0',
                 'any(h.startswith("#ad") for h in a["hashtags"])', "context.derived.sponsored", by="1 legal",
                 derive={"sponsored": 'any(h.startswith("#ad") for h in a["hashtags"])'}),
            Rule(R, "long_text", "size(action.text) > 280", 'len(a["text"]) > 280', "context.derived.text_len > 280",
                 by="1 content_editor", derive={"text_len": 'len(a["text"])'}),
            Rule(R, "big_audience", "action.scheduled && action.audience_size > 100000",
                 'a["scheduled"] and a["audience_size"] > 100000', "context.scheduled && context.audience_size > 100000",
                 by="2 of [content_editor, executive]"),
        )),
    ),
    stops=(
        Stop("defamation_risk", ("publish_article", "edit_article"),
             'action.type in ["publish_article", "edit_article"] && action.tags.exists(t, t == "named_individual") && action.claims.exists(c, !c.sourced)',
             '"named_individual" in a["tags"] and any(not c["sourced"] for c in a["claims"])',
             'context.tags.contains("named_individual") && context.derived.unsourced',
             "critical", "Head of content", ("cms", "social"), "Unpublish, publish a correction, notify legal",
             ("legal", "executive"),
             (("legal_review", "evidence.legal_review.cleared"), ("sources_attached", "size(evidence.sources) > 0")),
             derive={"unsourced": 'any(not c["sourced"] for c in a["claims"])'},
             evidence=(("legal_review", "{ cleared: bool }"), ("sources", "list<string>"))),
        Stop("mass_unpublish", ("unpublish_article",), 'action.type == "unpublish_article" && action.batch_size > 50',
             'a["batch_size"] > 50', "context.batch_size > 50",
             "high", "Head of content", ("cms",), "Republish the affected articles",
             ("content_editor",), (("batch_confirmed", "evidence.batch_confirmed_by_editor"),),
             evidence=(("batch_confirmed_by_editor", "bool"),)),
    ),
)

# --------------------------------------------------------------------------- access
ACCESS = Workflow(
    name="access-management", file="access.policy", version="2026.3.1",
    business="CISO", technical="Identity platform", default=D,
    consts={
        "allowed_email_domains": ["acme.example", "contractor.acme.example"],
        "max_grant_hours": 720,
    },
    actions=(
        Action("grant_role", "iam", 'reversible full via "iam.revoke_role" within 30d', (
            Rule(D, "external_user", "!(action.user_domain in policy.allowed_email_domains)",
                 'a["user_domain"] not in ALLOWED_EMAIL_DOMAINS', "!$allowed_email_domains.contains(context.user_domain)"),
            Rule(D, "self_grant", "action.requested_by == action.user_id", 'a["requested_by"] == a["user_id"]',
                 "context.requested_by == context.user_id"),
            Rule(R, "privileged", "action.role in policy.privileged_roles", 'a["role"] in PRIVILEGED_ROLES',
                 "$privileged_roles.contains(context.role)", by="2 of [security_admin, executive]"),
            Rule(R, "long_lived", "action.duration_hours > policy.max_grant_hours",
                 'a["duration_hours"] > MAX_GRANT_HOURS', "context.duration_hours > $max_grant_hours",
                 by="1 security_admin"),
            Rule(R, "off_hours", "now.getHours() < 6 || now.getHours() >= 22", "now.hour < 6 or now.hour >= 22",
                 "context.derived.hour < 6 || context.derived.hour >= 22", by="1 incident_commander",
                 derive={"hour": "now.hour"}),
            Rule(A, "standard", 'action.role in ["viewer", "commenter", "editor"] && action.duration_hours <= policy.max_grant_hours',
                 'a["role"] in ("viewer", "commenter", "editor") and a["duration_hours"] <= MAX_GRANT_HOURS',
                 '["viewer", "commenter", "editor"].contains(context.role) && context.duration_hours <= $max_grant_hours'),
        )),
        Action("revoke_role", "iam", 'reversible full via "iam.grant_role"', (
            Rule(D, "last_owner", 'action.role == "owner" && action.remaining_owners <= 1',
                 'a["role"] == "owner" and a["remaining_owners"] <= 1',
                 'context.role == "owner" && context.remaining_owners <= 1'),
            Rule(R, "privileged", "action.role in policy.privileged_roles", 'a["role"] in PRIVILEGED_ROLES',
                 "$privileged_roles.contains(context.role)", by="1 security_admin"),
            Rule(A, "non_privileged", "!(action.role in policy.privileged_roles)", 'a["role"] not in PRIVILEGED_ROLES',
                 "!$privileged_roles.contains(context.role)"),
        )),
        Action("create_api_key", "iam", 'reversible full via "iam.delete_key"', (
            Rule(D, "no_expiry", "action.expires_in_days == 0", 'a["expires_in_days"] == 0', "context.expires_in_days == 0"),
            Rule(D, "wildcard_scope", 'action.scopes.exists(s, s.endsWith(":*"))',
                 'any(s.endswith(":*") for s in a["scopes"])', "context.derived.wildcard",
                 derive={"wildcard": 'any(s.endswith(":*") for s in a["scopes"])'}),
            Rule(R, "write_scopes", 'action.scopes.exists(s, s.startsWith("write:") || s.startsWith("admin:"))',
                 'any(s.startswith("write:") or s.startswith("admin:") for s in a["scopes"])',
                 "context.derived.write_scope", by="1 security_admin",
                 derive={"write_scope": 'any(s.startswith("write:") or s.startswith("admin:") for s in a["scopes"])'}),
            Rule(A, "read_only", 'action.scopes.all(s, s.startsWith("read:")) && action.expires_in_days <= 90',
                 'all(s.startswith("read:") for s in a["scopes"]) and a["expires_in_days"] <= 90',
                 "context.derived.read_only && context.expires_in_days <= 90",
                 derive={"read_only": 'all(s.startswith("read:") for s in a["scopes"])'}),
        )),
        Action("reset_password", "iam", "irreversible", (
            Rule(D, "unverified", "!action.identity_verified", 'not a["identity_verified"]', "!context.identity_verified"),
            Rule(R, "admin_account", "action.target_roles.exists(r, r in policy.privileged_roles)",
                 'any(r in PRIVILEGED_ROLES for r in a["target_roles"])',
                 "context.target_roles.containsAny($privileged_roles)", by="1 security_admin"),
            Rule(R, "phone_channel", 'action.channel == "phone"', 'a["channel"] == "phone"', 'context.channel == "phone"',
                 by="1 customer_service"),
            Rule(R, "verified", "action.identity_verified", 'a["identity_verified"]', "context.identity_verified",
                 by="1 reviewer"),
        )),
        Action("disable_account", "iam", 'reversible full via "iam.enable_account"', (
            Rule(D, "own_account", "action.user_id == action.requested_by", 'a["user_id"] == a["requested_by"]',
                 "context.user_id == context.requested_by"),
            Rule(R, "employee", 'action.user_type == "employee" && action.reason != "compromised"',
                 'a["user_type"] == "employee" and a["reason"] != "compromised"',
                 'context.user_type == "employee" && context.reason != "compromised"', by="1 security_admin"),
            Rule(R, "other", 'action.user_type != "employee" && action.reason != "compromised"',
                 'a["user_type"] != "employee" and a["reason"] != "compromised"',
                 'context.user_type != "employee" && context.reason != "compromised"', by="1 reviewer"),
            Rule(A, "compromised", 'action.reason == "compromised" && action.alert_id.startsWith("SEC-")',
                 'a["reason"] == "compromised" and a["alert_id"].startswith("SEC-")',
                 'context.reason == "compromised" && context.alert_id like "SEC-*"'),
        )),
    ),
    stops=(
        Stop("privilege_escalation", ("grant_role",),
             'action.type == "grant_role" && action.role in policy.privileged_roles && action.requested_by_agent',
             'a["role"] in PRIVILEGED_ROLES and a["requested_by_agent"]',
             "$privileged_roles.contains(context.role) && context.requested_by_agent",
             "critical", "CISO", ("iam",), "Revoke the grant and review the agent's session",
             ("security_admin", "incident_commander"),
             (("session_reviewed", "evidence.session_review.clean"), ("grant_revoked", "evidence.grant_revoked")),
             evidence=(("session_review", "{ clean: bool }"), ("grant_revoked", "bool"))),
        Stop("mass_revocation", ("revoke_role", "disable_account"),
             'action.type in ["revoke_role", "disable_account"] && action.batch_size > 20',
             'a["batch_size"] > 20', "context.batch_size > 20",
             "high", "Identity platform on-call", ("iam",), "Restore access from the last IAM snapshot",
             ("security_admin",), (("snapshot_verified", "evidence.snapshot_id != \"\""),),
             evidence=(("snapshot_id", "string"),)),
    ),
)

# --------------------------------------------------------------------------- refunds
REFUNDS = Workflow(
    name="refunds", file="refunds.policy", version="2026.3.1",
    business="Finance controller", technical="Payments platform", default=R,
    consts={
        "auto_refund_limit": 100.0,
        "fraud_score_limit": 0.8,
        "max_discount_percent": 50,
    },
    actions=(
        Action("issue_refund", "payments", 'reversible partial via "payments.reverse_refund" within 24h', (
            Rule(D, "over_limit", "action.amount > policy.refund_limit", 'a["amount"] > REFUND_LIMIT',
                 "context.amount > $refund_limit"),
            Rule(D, "sanctioned", "action.customer.country in policy.sanctioned_countries",
                 'a["customer"]["country"] in SANCTIONED_COUNTRIES',
                 "$sanctioned_countries.contains(context.customer.country)"),
            Rule(D, "fraud", "action.fraud_score > policy.fraud_score_limit", 'a["fraud_score"] > FRAUD_SCORE_LIMIT',
                 "context.fraud_score > $fraud_score_limit"),
            Rule(R, "above_auto", "action.amount > policy.auto_refund_limit", 'a["amount"] > AUTO_REFUND_LIMIT',
                 "context.amount > $auto_refund_limit", by="1 finance_manager"),
            Rule(R, "repeat_customer", "action.prior_refunds.filter(r, r.days_ago < 30).size() >= 2",
                 'sum(1 for r in a["prior_refunds"] if r["days_ago"] < 30) >= 2', "context.derived.recent_refunds >= 2",
                 by="1 reviewer", derive={"recent_refunds": 'sum(1 for r in a["prior_refunds"] if r["days_ago"] < 30)'}),
            Rule(R, "method_mismatch", "action.method != action.original_payment_method",
                 'a["method"] != a["original_payment_method"]', "context.method != context.original_payment_method",
                 by="1 finance_manager"),
            Rule(A, "auto", "action.amount <= policy.auto_refund_limit && action.order_age_days <= 60",
                 'a["amount"] <= AUTO_REFUND_LIMIT and a["order_age_days"] <= 60',
                 "context.amount <= $auto_refund_limit && context.order_age_days <= 60"),
        )),
        Action("cancel_subscription", "billing", 'reversible full via "billing.reactivate" within 30d', (
            Rule(D, "enterprise_contract", 'action.contract_type == "enterprise" && action.contract_end_days > 0',
                 'a["contract_type"] == "enterprise" and a["contract_end_days"] > 0',
                 'context.contract_type == "enterprise" && context.contract_end_days > 0'),
            Rule(R, "annual_prorated", 'action.plan_interval == "annual" && action.prorate',
                 'a["plan_interval"] == "annual" and a["prorate"]',
                 'context.plan_interval == "annual" && context.prorate', by="1 customer_service"),
            Rule(A, "monthly", 'action.plan_interval == "monthly"', 'a["plan_interval"] == "monthly"',
                 'context.plan_interval == "monthly"'),
        )),
        Action("apply_discount", "billing", 'reversible full via "billing.remove_discount"', (
            Rule(D, "too_deep", "action.percent > policy.max_discount_percent", 'a["percent"] > MAX_DISCOUNT_PERCENT',
                 "context.percent > $max_discount_percent"),
            Rule(R, "medium", "action.percent > 20", 'a["percent"] > 20', "context.percent > 20", by="1 finance_manager"),
            Rule(R, "stacking", "size(action.existing_discounts) > 0", 'len(a["existing_discounts"]) > 0',
                 "context.existing_discounts != []", by="1 finance_manager"),
            Rule(A, "small", "action.percent <= 20 && action.duration_months <= 3",
                 'a["percent"] <= 20 and a["duration_months"] <= 3', "context.percent <= 20 && context.duration_months <= 3"),
        )),
        Action("respond_chargeback", "payments", "irreversible", (
            Rule(D, "past_deadline", "action.days_to_deadline < 0", 'a["days_to_deadline"] < 0',
                 "context.days_to_deadline < 0"),
            Rule(R, "verified_evidence", "action.evidence.all(e, e.verified)", 'all(e["verified"] for e in a["evidence"])',
                 "!context.derived.unverified", by="1 finance_manager",
                 derive={"unverified": 'any(not e["verified"] for e in a["evidence"])'}),
            Rule(R, "unverified_evidence", "action.evidence.exists(e, !e.verified)",
                 'any(not e["verified"] for e in a["evidence"])', "context.derived.unverified",
                 by="2 of [finance_manager, legal]", derive={"unverified": 'any(not e["verified"] for e in a["evidence"])'}),
        )),
        Action("update_payout_account", "payments", "irreversible", (
            Rule(D, "unverified_bank", "!action.bank_verified", 'not a["bank_verified"]', "!context.bank_verified"),
            Rule(D, "country_change", "action.new_country != action.old_country", 'a["new_country"] != a["old_country"]',
                 "context.new_country != context.old_country"),
            Rule(R, "verified_bank", "action.bank_verified", 'a["bank_verified"]', "context.bank_verified",
                 by="2 of [finance_manager, security_admin]"),
        )),
    ),
    stops=(
        Stop("refund_spike", ("issue_refund",), 'action.type == "issue_refund" && action.refunds_last_hour > 50',
             'a["refunds_last_hour"] > 50', "context.refunds_last_hour > 50",
             "high", "Finance controller", ("payments",), "Pause refunds and reconcile the last hour",
             ("finance_manager", "incident_commander"), (("reconciled", "evidence.reconciliation.balanced"),),
             evidence=(("reconciliation", "{ balanced: bool }"),)),
        Stop("duplicate_refund", ("issue_refund",), 'action.type == "issue_refund" && action.order_already_refunded',
             'a["order_already_refunded"]', "context.order_already_refunded",
             "medium", "Finance controller", ("payments",), "Reverse the duplicate refund",
             ("finance_manager",), (("dedupe_fixed", "evidence.dedupe_check_enabled"),),
             evidence=(("dedupe_check_enabled", "bool"),)),
        Stop("payout_hijack", ("update_payout_account",),
             'action.type == "update_payout_account" && action.changed_within_days < 7',
             'a["changed_within_days"] < 7', "context.changed_within_days < 7",
             "critical", "Finance controller", ("payments", "iam"), "Freeze payouts and verify the account owner",
             ("finance_manager", "security_admin", "executive"),
             (("owner_verified", "evidence.owner_verification.passed"), ("payouts_frozen", "evidence.payouts_frozen")),
             evidence=(("owner_verification", "{ passed: bool }"), ("payouts_frozen", "bool"))),
    ),
)

WORKFLOWS: tuple[Workflow, ...] = (SUPPORT, CRM, CMS, ACCESS, REFUNDS)

# Regular expressions the hand-written baseline and the Cedar request builder use
# (same patterns as the CEL `matches` calls above; CEL `matches` is a search).
REGEXES = {
    "LEGAL_RE": "(?i)(lawsuit|attorney|legal action)",
    "SSN_RE": "[0-9]{3}-[0-9]{2}-[0-9]{4}",
    "SECRET_RE": "(api[_-]?key|password|secret)[:=]",
}


def all_actions():
    for w in WORKFLOWS:
        for a in w.actions:
            yield w, a


def counts() -> dict:
    return {
        "workflows": len(WORKFLOWS),
        "action_types": sum(len(w.actions) for w in WORKFLOWS),
        "rules": sum(len(a.rules) for w in WORKFLOWS for a in w.actions),
        "stops": sum(len(w.stops) for w in WORKFLOWS),
    }
