"""Every sample of every registered loss, on both backends, against the spec's independent
reference (torch.nn.functional for torch.nn's losses): values and gradients w.r.t. every
differentiable input (and the sample weight).

float64: every sample. float32: the edge cases (empty batches, infinities, NaN, extreme
logits, ties, zeros) and every third other sample of each grid, which keeps the CI run
within its time (79 losses); ``MULTILOSS_PARITY=full`` runs every float32 sample here, and
``multiloss parity --dtype both`` (the README's first command) always does."""

import os

import pytest

from multiloss import testing

FULL = os.environ.get("MULTILOSS_PARITY") == "full"


def _float32_subset(samples):
    return [s for i, s in enumerate(samples) if FULL or i % 3 == 0 or testing.is_edge(s)]


CASES = [
    pytest.param(spec, sample, dtype, id=f"{dtype}-{sample.id}")
    for dtype in ("float64", "float32")
    for spec in testing.all_specs()
    for sample in (testing.samples_for(spec, dtype) if dtype == "float64"
                   else _float32_subset(testing.samples_for(spec, dtype)))
]


@pytest.mark.parametrize("spec,sample,dtype", CASES)
def test_parity(spec, sample, dtype):
    result = testing.compare(spec, sample, dtype)
    assert not result.message, result.message
    tol = testing.TOLERANCE[dtype]
    bad = {k: v for k, v in result.errors.items() if not v <= tol}
    assert not bad, f"errors above {tol:.1e}: {bad}"
    # both backends and every gradient were compared
    assert "jax/value" in result.errors and "torch/value" in result.errors


def test_every_loss_has_edge_cases_and_gradients():
    for spec in testing.all_specs():
        samples = testing.samples_for(spec, "float64")
        ids = " ".join(s.id for s in samples)
        assert "empty" in ids, spec.name  # an empty batch or a nothing-counts mean
        assert any(testing._diff_positions(spec, s) for s in samples), spec.name


def test_rel_error_detects_mismatches():
    import numpy as np

    nan, inf = float("nan"), float("inf")
    assert testing.rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert testing.rel_error([1.0, 2.0 + 1e-9], [1.0, 2.0]) == pytest.approx(5e-10)
    assert testing.rel_error([nan], [0.0]) == inf
    assert testing.rel_error([0.0], [nan]) == inf
    assert testing.rel_error([nan, 1.0], [nan, 1.0]) == 0.0
    assert testing.rel_error([inf], [-inf]) == inf
    assert testing.rel_error(np.zeros(3), np.zeros(2)) == inf
