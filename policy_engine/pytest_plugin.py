"""pytest plugin (entry point `stopline`): collects `*.policy-test.yaml` suites.

Imports nothing heavy at import time so it never slows or breaks unrelated pytest runs.
"""

from __future__ import annotations
