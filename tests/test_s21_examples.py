"""The agent-framework examples as a new user meets them (session 21 audit).

Each is already run to its end by its adapter's test (tests/test_integrations_*.py); here:
what a user on the core install (`pip install -e .`, no extra) sees when running one, and
that the OpenAI Agents example, which says it makes no network call, sends nothing when
the user's environment holds an OpenAI key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# a core install: the extra's packages are not there (a real missing package raises
# ModuleNotFoundError, naming it)
_WITHOUT = """
import importlib.abc, runpy, sys
MISSING = set(sys.argv.pop(1).split(","))
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize(("example", "modules", "extra"), [
    ("langgraph_agent.py", "langgraph,langchain_core", "langgraph"),
    ("openai_agents_guardrail.py", "agents,openai", "openai-agents"),
    ("mcp_gateway.py", "mcp,anyio", "mcp"),
])
def test_an_example_without_its_extra_names_the_extra(example, modules, extra):
    """On the core install the example was a ModuleNotFoundError traceback (its docstring
    said only `python examples/X.py`): now one line naming the extra to install."""
    proc = subprocess.run([sys.executable, "-c", _WITHOUT, modules, str(ROOT / "examples" / example)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"pip install 'stopline[{extra}]'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"pip install -e '.[{extra}]'" in (ROOT / "examples" / example).read_text(encoding="utf-8")


def test_the_openai_agents_example_sends_no_trace_with_a_key_set():
    """"No network, no model": with OPENAI_API_KEY in the environment (a user who has one),
    the SDK's default tracing exported the run's spans (tool names and arguments: the
    refunds) to OpenAI; without network it printed `[non-fatal] Tracing request failed`.
    The run turns tracing off: nothing about tracing on stderr, and the story unchanged."""
    pytest.importorskip("agents")
    env = {**os.environ, "OPENAI_API_KEY": "sk-not-a-real-key-stopline-test"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "openai_agents_guardrail.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Tracing" not in proc.stderr and "trace export" not in proc.stderr, proc.stderr
    assert "run halted: Stopline stopped workflow `shop-support`" in proc.stdout
