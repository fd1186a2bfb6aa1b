"""Every sample of every registered loss, on both backends, against the spec's independent
reference (torch.nn.functional for torch.nn's losses): values and gradients w.r.t. every
differentiable input (and the sample weight).

float64: every sample. float32: the edge cases (empty batches, infinities, NaN, extreme
logits, ties, zeros) and every third other sample of each grid, which keeps the CI run
within its time (79 losses); ``MULTILOSS_PARITY=full`` runs every float32 sample here, and
``multiloss parity --dtype both --full`` always does.

A test is one loss in one dtype, up to ``BATCH`` samples of its grid (``float64-huber[0:32]``):
their JAX values and gradients are computed in one XLA program (``testing.prepare_jax``: each
sample's own jitted loss, vjp and cotangent side by side), since compilation, not arithmetic,
is the cost of a small sample on CPU (measured 0.30-0.65x the time of compiling them one by
one); torch and the reference run sample by sample. A failure lists every failing sample by
its id with its errors; ``multiloss parity --loss NAME --full`` reports them one per row."""

import os

import pytest

from multiloss import testing

FULL = os.environ.get("MULTILOSS_PARITY") == "full"


def _float32_subset(samples):
    return [s for i, s in enumerate(samples) if FULL or i % 3 == 0 or testing.is_edge(s)]


#: samples of one loss and dtype compiled together (testing.prepare_jax) and run by one test
BATCH = 32


def _items():
    for dtype in ("float64", "float32"):
        for spec in testing.all_specs():
            samples = testing.samples_for(spec, dtype)
            if dtype == "float32":
                samples = _float32_subset(samples)
            for start in range(0, len(samples), BATCH):
                part = samples[start:start + BATCH]
                yield pytest.param(spec, part, dtype,
                                   id=f"{dtype}-{spec.name}[{start}:{start + len(part)}]")


@pytest.mark.parametrize("spec,samples,dtype", list(_items()))
def test_parity(spec, samples, dtype):
    testing.prepare_jax(spec, samples, batch=BATCH)
    tol = testing.TOLERANCE[dtype]
    failures = []
    for sample in samples:
        result = testing.compare(spec, sample, dtype)
        bad = {k: v for k, v in result.errors.items() if not v <= tol}
        # both backends and every gradient compared
        missing = {"jax/value", "torch/value"} - set(result.errors)
        if result.message or bad or missing:
            failures.append(f"{sample.id}: {result.message} errors above {tol:.1e}: {bad}"
                            + (f"; not compared: {sorted(missing)}" if missing else ""))
    assert not failures, f"{len(failures)} of {len(samples)} samples:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", ["cross_entropy", "ctc", "linear_dpo"])
def test_batched_compilation_gives_each_cases_own_numbers(name):
    """prepare_jax's one program for many cases returns, bit for bit, what each case's own
    compilation returns (values and gradients, NaN where NaN), and each prepared result is
    taken once."""
    import numpy as np

    spec = next(s for s in testing.all_specs() if s.name == name)
    for dtype in ("float64", "float32"):
        samples = testing.samples_for(spec, dtype)[:4]
        alone = [testing.run_jax(spec, s) for s in samples]
        assert testing.prepare_jax(spec, samples, batch=BATCH) > 0
        for sample, (value, grads, _, out_dtype) in zip(samples, alone):
            v, g, _, d = testing.run_jax(spec, sample)
            assert d == out_dtype
            np.testing.assert_array_equal(v, value, err_msg=sample.id)
            for a, b in zip(g, grads, strict=True):
                np.testing.assert_array_equal(a, b, err_msg=sample.id)
        assert not any(testing._result_key(spec, s) in testing._PREPARED for s in samples)


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
