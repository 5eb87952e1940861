"""The accelerators: everything that makes a gate decision faster and nothing that changes
it. Built by the engine from the compiled policy (never stored inside it) and switched off
by `load(path, accelerate=False)`.

- `shapes`: shape speculation and the fused gate function's prologue (the input check);
- `fused`: `FusedGate`, one generated function per action type (via `cel.fuse`);
- `faults`: the conditions that raised in it (a field the action lacks, an error),
  evaluated alone, their values kept per the fields they read;
- `templates`: decision templates per outcome and per `now`, the function's epilogue;
- `lanes`: `Accelerator`, the fast lane in front of the reference gate.
"""

from .fused import FUSE_AFTER, REBUILDS_MAX, FusedGate
from .lanes import Accelerator
from .shapes import ShapeMiss, lane_prologue, shape_of, widen
from .templates import NOW_CACHE_MAX, PATTERNS_MAX, PER_NOW_MAX, SEEN_MAX, lane_epilogue

__all__ = ["Accelerator", "FusedGate", "ShapeMiss", "FUSE_AFTER", "REBUILDS_MAX", "PATTERNS_MAX", "NOW_CACHE_MAX",
           "PER_NOW_MAX", "SEEN_MAX", "lane_prologue", "lane_epilogue", "shape_of", "widen"]
