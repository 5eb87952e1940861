"""CEL conditions (being split into modules; see compile.py for now)."""

from . import compile as _impl
from .compile import *  # noqa: F401,F403
from .compile import __all__  # noqa: F401

# names other modules and tests import today (kept importable during the move)
for _name in dir(_impl):
    if not _name.startswith("__"):
        globals().setdefault(_name, getattr(_impl, _name))
del _name
