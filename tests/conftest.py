"""Hypothesis profiles: `dev` (default, more examples) and `ci` (fewer examples, no deadline).

Select with HYPOTHESIS_PROFILE=ci (what .ci/run does)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile("ci", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# Worst gradient-check errors per layer: tests/helpers.py records them; with NPGPT_GRADCHECK_REPORT=path set,
# they are written there as JSON when the session ends (helpers is importable: tests/ is on sys.path).
def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("NPGPT_GRADCHECK_REPORT")
    if path:
        import helpers

        helpers.write_gradcheck_report(path)
