"""The data kept beside the checkout, in ``../shared/``: the CEL conformance suite
(``cel-conformance/*.json``) and the AuthZEN interop cases (``authzen-interop/``).

A fresh clone has no ``../shared/``: a test that reads it skips, with the path it looked
for, so the README's test command passes for a new user. ``STOPLINE_REQUIRE_SHARED=1``
(for CI, which has ``../shared/`` beside the checkout) makes such a test fail instead, as
``STOPLINE_REQUIRE_BROWSER`` and ``STOPLINE_REQUIRE_POSTGRES`` do for theirs. Not a test
module itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CEL_CONFORMANCE = SHARED / "cel-conformance"
AUTHZEN_INTEROP = SHARED / "authzen-interop"
REQUIRE_ENV = "STOPLINE_REQUIRE_SHARED"


def present(path: Path, pattern: str = "*.json") -> bool:
    """`path` is there: a file, or a directory holding at least one `pattern` file."""
    return path.is_file() or (path.is_dir() and any(path.glob(pattern)))


def require(path: Path, pattern: str = "*.json") -> Path:
    """`path` when it is there (see `present`); otherwise skip the calling test, or fail it
    under STOPLINE_REQUIRE_SHARED=1."""
    if present(path, pattern):
        return path
    what = path if path.suffix else path / pattern
    reason = f"the data kept beside the checkout is absent ({what})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")  # (pytest.skip raises)
