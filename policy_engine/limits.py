"""Every limit of the package, once: a named constant with a one-line meaning.

A leaf module: it imports nothing of the package, so every stage may read it. docs/limits.md
lists each constant here (tests/test_docs.py compares the two both ways), and the modules that
enforce a limit import it from here rather than restating the number.
"""

from __future__ import annotations

# --- policy files (language front end) ---------------------------------------------------------
MAX_FILES = 1000  # policy files in one policy set (a usage error beyond)
MAX_FILE_BYTES = 1_000_000  # bytes of one policy file (E005 at file:1:1)
MAX_NESTING = 32  # nesting of `{`/`[` in a policy file (E005 at the bracket)
MAX_SYNTAX_ERRORS = 20  # syntax errors reported per file before the parser stops
MAX_RULES_PER_FILE = 10_000  # rules in one policy file (E005)
MAX_CONDITIONS_PER_SET = 10_000  # conditions in one policy set, refused before compiling (E005)
MAX_EXPRESSION_LENGTH = 4096  # characters of one CEL condition (also the CEL compile default)
MAX_APPROVERS = 100  # approvers one `require_approval` rule or rollback slot may ask for (E108)
MAX_CASCADE_DEPTH = 64  # the largest `cascade_depth` a rollback declaration may give (E108)
MAX_WINDOW_SECONDS = 100 * 365 * 86400  # a reversal window: at most 100 years (E108)
INT64_MIN = -(2**63)  # smallest integer literal in a policy and in CEL
INT64_MAX = 2**63 - 1  # largest integer literal in a policy and in CEL

# --- CEL budgets (defaults of policy_engine.cel.Limits) ----------------------------------------
CEL_MAX_EXPRESSION_LENGTH = MAX_EXPRESSION_LENGTH  # characters of CEL source
CEL_MAX_NESTING_DEPTH = 64  # brackets/parentheses/braces, checked before parsing
CEL_MAX_ITERATIONS = 100_000  # comprehension iterations per evaluation
CEL_MAX_SIZE = 1_000_000  # length of any string/bytes/list an evaluation produces
REGEX_MAX_COST = 1_000_000_000  # one RE2 match: text length x program size

# --- evaluator input (checked before any conversion or evaluation) ----------------------------
MAX_INPUT_ITEMS = 100_000  # values in containers (dict entries + list items), whole input
MAX_INPUT_DEPTH = 200  # container nesting
MAX_INPUT_CHARS = 4_000_000  # total characters of all strings (keys and values)
MAX_CASCADE_RECORDS = 10_000  # steps + checkpoint records of one rollback plan
MAX_LOOPS_LISTED = 100  # dependency loops listed in one rollback plan
MAX_STEPS_NAMED = 20  # record ids named per kind in a plan's feasibility reasons (the fields list all)
MAX_APPROVALS = 1_000  # approvals read per authorization (the rest ignored, not satisfied)
MAX_CLOCK_SKEW_SECONDS = 60  # a recorded time (executed_at, stopped_at) after `now` by more is refused, not believed

# --- command line and test suites --------------------------------------------------------------
MAX_INPUT_BYTES = 16_000_000  # bytes of one `stopline eval`/`explain` input file
MAX_SUITE_BYTES = 2_000_000  # bytes of one test suite file
MAX_SUITE_NODES = 200_000  # YAML nodes of one test suite file
