"""Hypothesis profiles: `dev` (default, more examples) and `ci` (fewer examples, no deadline).

Select with HYPOTHESIS_PROFILE=ci (what .ci/run does)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile("ci", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
