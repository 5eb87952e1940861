"""Policy test suites (`*.policy-test.yaml`): loading, checking, running, coverage.

The fixture format is documented in docs/testing.md. This package is a consumer of the
layers above it (language, engine, explain); `cli.py` (`stopline test`) and the pytest
plugin (`testing/plugin.py`) drive it.

    runner = Runner()
    report = runner.run(["policies/"], keyword="reviewer")
    report.passed, report.failed, report.skipped, report.errors

A suite is read with PyYAML's `compose`, so every key and value keeps its position:
problems in a suite are `Diagnostic`s located at `file:line:col`, rendered like policy
diagnostics, and never tracebacks.

    suites     the format's keys and T codes, YAML with positions, the suite model, load_suite
    resolve    a case's inputs (named inputs, `with` merges) -> the question's arguments
    index      the names a suite may use, checked against the loaded policy set
    expect     comparing an answer with the expectation; the diff and explain shown on failure
    coverage   rules, triggers, scenarios and criteria the cases reached
    runner     Runner: policies loaded once per set, every case answered, results collected
    report     text, JUnit XML and JSON reports
    plugin     the pytest plugin (entry point `stopline`)
"""

from __future__ import annotations

from .coverage import Coverage, CoverageItem
from .expect import Difference, actual_view, compare, diff_expectation, explain_answer, render_diff
from .index import PolicyIndex
from .report import json_report, junit_xml, render_text
from .runner import CaseResult, Loaded, Report, Runner, SuiteResult, keyword_matches, load_policies
from .suites import (
    CASE_KEYS,
    INPUT_KINDS,
    OUTPUT_MODEL,
    QUESTION_KEYS,
    QUESTIONS,
    ROW_KEYS,
    SHORTHANDS,
    SPECIAL_RULES,
    SUITE_KEYS,
    SUITE_SUFFIX,
    T_CODES,
    Case,
    Doc,
    Suite,
    deep_merge,
    discover_suites,
    expect_keys,
    load_suite,
    parse_time,
    parse_yaml,
)

__all__ = [
    "CASE_KEYS", "INPUT_KINDS", "OUTPUT_MODEL", "QUESTION_KEYS", "QUESTIONS", "ROW_KEYS", "SHORTHANDS",
    "SPECIAL_RULES", "SUITE_KEYS", "SUITE_SUFFIX", "T_CODES",
    "Case", "Doc", "Suite", "deep_merge", "discover_suites", "expect_keys", "load_suite", "parse_time", "parse_yaml",
    "PolicyIndex", "Difference", "actual_view", "compare", "diff_expectation", "explain_answer", "render_diff",
    "Coverage", "CoverageItem", "CaseResult", "Loaded", "Report", "Runner", "SuiteResult", "keyword_matches",
    "load_policies", "json_report", "junit_xml", "render_text",
]
