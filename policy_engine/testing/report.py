"""Output formats: text, JUnit XML and JSON reports."""

from __future__ import annotations

import re

from ..diagnostics import sort_diagnostics
from .expect import render_diff, show_value
from .runner import Report, printable

# =============================================================================== output formats


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml(text: str) -> str:
    """`text` as XML 1.0 can hold it: a character it cannot (a control character of a case name,
    a value or a message, `"\\x07"` in YAML) as U+FFFD. Written as is, it made the whole
    report not well-formed, and CI's JUnit reader refused every result in it."""
    return _NOT_XML.sub("\ufffd", text)


def junit_xml(report: Report) -> str:
    """JUnit XML: one <testsuite> per suite file, one <testcase> per case. A suite that cannot
    run is one <testcase> `<suite>` with an <error>, and a path given that holds no suite one
    <testcase> `<path>` with an <error>; each counts in `tests` (as JUnit readers count an
    errored test among the tests), so every `tests`/`errors` count is of the elements below it.
    (A missing path was counted in `errors` with no element saying which or why, and an
    errored suite was not counted in `tests`.)"""
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name="stopline", tests=str(len(report.results) + report.errors),
                      failures=str(report.failed), skipped=str(report.skipped), errors=str(report.errors))
    for p in report.missing_paths:
        ts = ET.SubElement(root, "testsuite", name=p, tests="1", failures="0", skipped="0", errors="1")
        tc = ET.SubElement(ts, "testcase", classname=p, name="<path>", file=p)
        ET.SubElement(tc, "error", message=_why_missing(p)).text = f"error: {_why_missing(p)}: {p}"
    for sr in report.suites:
        ts = ET.SubElement(root, "testsuite", name=sr.suite.display, tests=str(len(sr.results) + sr.errored),
                           failures=str(sum(r.status == "failed" for r in sr.results)),
                           skipped=str(sum(r.status == "skipped" for r in sr.results)),
                           errors="1" if sr.errored else "0")
        if sr.errored:
            tc = ET.SubElement(ts, "testcase", classname=sr.suite.display, name="<suite>", file=sr.suite.display)
            ET.SubElement(tc, "error", message="the suite could not run").text = sr.error
        for r in sr.results:
            tc = ET.SubElement(ts, "testcase", classname=sr.suite.display, name=r.name, file=sr.suite.display,
                               line=str(r.case.line))
            if r.status == "failed":
                text = render_diff(r.differences) if r.differences else r.message
                msg = (
                    "; ".join(
                        f"{d.key}: expected {show_value(d.expected)}, got {show_value(d.actual)}" for d in r.differences
                    )
                    or r.message
                )
                el = ET.SubElement(tc, "failure", message=msg)
                el.text = text + ("\n\nexplain:\n" + r.explain if r.explain else "")
            elif r.status == "skipped":
                ET.SubElement(tc, "skipped", message=r.message)
    for el in root.iter():
        el.attrib = {k: _xml(v) for k, v in el.attrib.items()}
        if el.text:
            el.text = _xml(el.text)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def json_report(report: Report, coverage: bool = False) -> dict:
    out: dict = {
        "passed": report.passed,
        "failed": report.failed,
        "skipped": report.skipped,
        "errors": report.errors,
        "suites": [],
    }
    for sr in report.suites:
        out["suites"].append(
            {
                "file": sr.suite.display,
                "title": sr.suite.title,
                "error": sr.error or None,
                "diagnostics": [d.to_json() for d in sort_diagnostics(sr.suite.diagnostics)],
                "cases": [
                    {
                        "name": r.name,
                        "line": r.case.line,
                        "question": r.case.kind,
                        "status": r.status,
                        "message": r.message or None,
                        "differences": [
                            {
                                "key": d.key,
                                "expected": d.expected,
                                "actual": None if d.missing else d.actual,
                                "missing": d.missing,
                            }
                            for d in r.differences
                        ],
                    }
                    for r in sr.results
                ],
            }
        )
    out["missing_paths"] = list(report.missing_paths)  # (always there: a stable set of keys)
    if coverage:
        out["coverage"] = report.coverage.to_json()
    return out


def _why_missing(path: str) -> str:
    """Why a path given to `stopline test` was not read (not always "no such file")."""
    import os

    if path == "":
        return "an empty path names no file or directory (an unset variable?)"
    if os.path.exists(path):  # a FIFO, a device, a socket
        return "not a file or a directory"
    if os.path.islink(path):
        return "a symbolic link to nothing (its target is missing, or a loop of links)"
    return "no such file or directory"


def render_text(report: Report, *, color: bool = False) -> str:
    """Failures (with diff and trace), suite errors, then the summary line."""
    parts = []
    for p in report.missing_paths:
        parts.append(f"error: {_why_missing(p)}: {p}")
    for sr in report.suites:
        if sr.errored:
            parts.append(f"ERROR {printable(sr.suite.display)}\n{sr.error}")
        for r in sr.results:
            if r.status == "failed":
                parts.append(f"{r.title()}\n{r.render_failure()}")
    return "\n\n".join(parts)
