import os

import jax
from hypothesis import HealthCheck, settings

# float64 parity needs JAX's 64-bit mode; float32 cases pass float32 arrays explicitly.
jax.config.update("jax_enable_x64", True)

# "ci" bounds the generated examples so that CI stays short; "fuzz" is the long campaign
# (HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_hypothesis.py, see README).
settings.register_profile(
    "ci", max_examples=8, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
