"""Baselines the engine is compared with (hand-written Python, cel-python, Cedar)."""
