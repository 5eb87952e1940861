"""The one thing pyproject.toml does not say: the fused gate functions' native helpers
(`policy_engine/engine/accel/_speedups.c`, issue 16), an optional extension. Without a C
compiler the build goes on and the engine runs on the generated Python alone
(`policy_engine.engine.accel.native`); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("policy_engine.engine.accel._speedups",
                             sources=["policy_engine/engine/accel/_speedups.c"], optional=True)])
