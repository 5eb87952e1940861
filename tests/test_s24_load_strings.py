"""Loading decodes a policy's quoted strings with one JSON decoder, made once (issue 16,
goal 5, without timing anything): `json.loads(text, strict=False)` built a decoder and its
scanner for every string of the policy (1,154 of them in the 1,000-rule benchmark text).
The values decoded are the same: escapes, a surrogate pair, a tab typed in the string; a
bad escape is still E002."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from policy_engine.language.loader import load_text


def _policy(n_actions: int, system: str = "s") -> str:
    actions = "".join(
        f'  action a{i} {{\n    system "{system}{i}"\n    irreversible\n    deny big when `action.n > 3`\n  }}\n'
        for i in range(n_actions)
    )
    return f'roles [r]\nworkflow "w" {{\n  version "1"\n  owners {{ business "b" technical "t" }}\n' \
           f'  default deny\n{actions}}}\n'


@pytest.fixture
def decoders_made(monkeypatch):
    made = []
    init = json.JSONDecoder.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(json.JSONDecoder, "__init__", counting)
    return made


def test_no_decoder_is_made_per_string(decoders_made):
    load_text(_policy(1))  # (the first load imports the lowering, which makes its decoder)
    decoders_made.clear()
    assert load_text(_policy(2)).policy_set is not None
    few = len(decoders_made)
    decoders_made.clear()
    assert load_text(_policy(40)).policy_set is not None
    assert len(decoders_made) == few  # (was one more per string: 38 more systems here)


def _systems(text: str) -> list[str]:
    res = load_text(text)
    assert res.policy_set is not None, res.diagnostics
    (wf,) = [w for f in res.policy_set.files for w in f.workflows]
    return [a.system for a in wf.actions]


def test_the_strings_decode_as_before():
    text = _policy(1, system=r"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \t" + "\t")
    assert _systems(text) == ['café \U0001F600 "q" \\ / \t\t0']


def test_a_bad_escape_is_still_an_error_at_it():
    res = load_text(_policy(1, system=r"evil\.com"))
    assert res.policy_set is None
    assert [d.code for d in res.errors] == ["E002"]


# ---------------------------------------------------------------- acknowledge.py and fmt.py, only when used
_FRESH = """
import sys
from policy_engine.language import load_text
res = load_text(sys.argv[1])
print(res.policy_set is not None, "policy_engine.language.acknowledge" in sys.modules,
      "policy_engine.language.fmt" in sys.modules, *[d.code for d in res.diagnostics])
"""


def _fresh(text: str) -> str:
    r = subprocess.run([sys.executable, "-c", _FRESH, text], capture_output=True, text=True, check=True,
                       env={**os.environ, "STOPLINE_CACHE_DIR": ""})
    return r.stdout.strip()


def test_a_policy_without_directives_loads_without_importing_acknowledge_or_the_formatter():
    assert _fresh(_policy(2)) == "True False False"


def test_a_directive_still_acknowledges_in_a_fresh_process():
    text = _policy(1).replace("    deny big", "    # stopline: acknowledge W202 -- a test\n    deny big")
    assert _fresh(text) == "True True False W215"  # (read: no W202 here to acknowledge, so it is stale)


def test_the_loader_marker_is_acknowledge_marker():
    from policy_engine.language import acknowledge, loader

    assert loader._ACK_MARKER == acknowledge.MARKER


def test_the_formatter_names_are_still_the_language_packages():
    import policy_engine.language as language
    from policy_engine.language import fmt

    for name in ("FormatError", "FormatResult", "format_path", "format_source", "format_text", "unified_diff"):
        assert getattr(language, name) is getattr(fmt, name)
    assert language.format_text('roles [r]\n') == fmt.format_text('roles [r]\n')
    with pytest.raises(AttributeError):
        language.no_such_name  # noqa: B018
