"""Random shapes, values and options on top of the fixed grid: each loss's random sample
generator, driven by hypothesis, through both backends against the reference.

CI runs the "ci" profile (a few examples per loss and dtype); the long campaign is
``HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_hypothesis.py``."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiloss import testing


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", testing.all_specs(), ids=lambda s: s.name)
@given(seed=st.integers(0, 2**63 - 1))
def test_random_samples(spec, dtype, seed):
    sample = spec.random_sample(np.random.default_rng(seed), np.dtype(dtype))
    result = testing.compare(spec, sample, dtype)
    assert not result.message, f"{sample.id}: {result.message}"
    tol = testing.TOLERANCE[dtype]
    bad = {k: v for k, v in result.errors.items() if not v <= tol}
    assert not bad, f"{sample.id}: errors above {tol:.1e}: {bad}"
