"""ntxent (= info_nce) and supcon: against their reference libraries called directly
(optax.ntxent; pytorch-metric-learning's SupConLoss with its default AvgNonZeroReducer), values
worked out by hand from the papers' formulas (Chen et al. 2020; Khosla et al. 2020), the
temperature 0.01 (finite values and gradients, also where optax's float32 gradient is NaN),
the weighting contract, and bad input. The parity over the sample grid is in
tests/test_parity.py and tests/test_hypothesis.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

import multiloss
from multiloss import testing
from multiloss.losses.self_supervised import optax_finite

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")
TOL = 1e-12


def _run(backend, name, e, y, sample_weight=None, **options):
    """(value, gradient of the summed value w.r.t. the embeddings)."""
    loss = multiloss.get(name, backend=backend, **options)
    e = np.asarray(e)
    if backend == "jax":
        def f(x):
            return jnp.sum(loss(x, y, sample_weight=sample_weight))

        return np.asarray(loss(e, y, sample_weight=sample_weight)), np.asarray(jax.grad(f)(e))
    x = torch.tensor(e, requires_grad=True)
    sw = None if sample_weight is None else torch.as_tensor(sample_weight)
    out = loss(x, torch.as_tensor(y), sample_weight=sw)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach().numpy(), g.numpy()


def _batch(seed=0, n_groups=3, per_group=2, d=5, spread=0.5):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n_groups, d))
    e = np.repeat(c, per_group, 0) + spread * rng.normal(size=(n_groups * per_group, d))
    return e * rng.uniform(0.5, 2, size=(len(e), 1)), np.repeat(np.arange(n_groups), per_group)


def _unit(e):
    return e / np.linalg.norm(e, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# ntxent


def _ntxent_by_hand(e, y, t):
    """SimCLR's NT-Xent over the positive ordered pairs: per anchor, the sum over its positives
    of -log(e^{s_ij} / (e^{s_ij} + sum_{k: y_k != y_i} e^{s_ik}))."""
    s = _unit(e) @ _unit(e).T / t
    n = len(y)
    per_anchor = np.zeros(n)
    n_pos = np.zeros(n)
    for i in range(n):
        negs = [k for k in range(n) if y[k] != y[i]]
        for j in range(n):
            if j != i and y[j] == y[i]:
                den = np.exp(s[i, j]) + sum(np.exp(s[i, k]) for k in negs)
                per_anchor[i] -= s[i, j] - np.log(den)
                n_pos[i] += 1
    return per_anchor, n_pos


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("t", (0.07, 0.5))
def test_ntxent_is_optax(backend, t):
    e, y = _batch(1, 3, 3)
    want, want_g = jax.value_and_grad(lambda x: optax.ntxent(x, jnp.asarray(y), t))(e)
    value, g = _run(backend, "ntxent", e, y, temperature=t)
    np.testing.assert_allclose(value, want, rtol=TOL)
    np.testing.assert_allclose(g, want_g, rtol=1e-11, atol=1e-13 * np.abs(want_g).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_ntxent_by_hand_and_none(backend):
    e, y = _batch(2, 2, 3)
    y = np.array([0, 0, 0, 1, 1, 5])  # a group of 3, one of 2, a singleton (no positive)
    per_anchor, n_pos = _ntxent_by_hand(e, y, 0.2)
    value, _ = _run(backend, "ntxent", e, y, reduction="none", temperature=0.2)
    np.testing.assert_allclose(value, per_anchor, rtol=TOL)
    assert value[-1] == 0.0
    mean, _ = _run(backend, "ntxent", e, y, temperature=0.2)
    np.testing.assert_allclose(mean, per_anchor.sum() / n_pos.sum(), rtol=TOL)
    # a sample weight per anchor: sum s l / sum s |P|
    sw = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0])
    mean, _ = _run(backend, "ntxent", e, y, sample_weight=sw, temperature=0.2)
    np.testing.assert_allclose(mean, (sw * per_anchor).sum() / (sw * n_pos).sum(), rtol=TOL)


def test_info_nce_alias():
    assert multiloss.resolve("info_nce").name == "ntxent"
    assert multiloss.resolve("InfoNCE").name == "ntxent"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", (np.float64, np.float32))
def test_ntxent_temperature_001_is_finite(backend, dtype):
    e, y = _batch(3, 4, 2, d=8, spread=0.2)
    value, g = _run(backend, "ntxent", e.astype(dtype), y, temperature=0.01)
    assert np.isfinite(value) and np.all(np.isfinite(g))
    ref, ref_g = _run(backend, "ntxent", e, y, temperature=0.01)
    if dtype == np.float32:  # the positives nearly certain: the loss is 1e-12 in float64
        np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(value, ref, rtol=TOL)


def test_ntxent_float32_gradient_where_optax_is_nan():
    """float32, temperature 0.01, the positives much nearer than every negative: every
    negative's e^{s - max} underflows, and optax's log of the masked entries' zero denominators
    turns their zero cotangent into 0 / 0 = NaN. The gradient is finite there; multiloss's is,
    and equals the float64 gradient (where nothing underflows) to float32's range."""
    e = np.array([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.02]])
    y = np.array([0, 0, 1, 1])
    g32 = jax.grad(lambda x: optax.ntxent(x, jnp.asarray(y), 0.01))(e.astype(np.float32))
    assert np.isnan(np.asarray(g32)).any()
    assert not optax_finite(e, y, 0.01, np.float32)
    _, g64 = _run("jax", "ntxent", e, y, temperature=0.01)
    for backend in BACKENDS:
        value, g = _run(backend, "ntxent", e.astype(np.float32), y, temperature=0.01)
        assert np.isfinite(value) and np.all(np.isfinite(g))
        # the exact gradient is about 1e-87 (below float32's range): 0 in float32
        np.testing.assert_allclose(g, g64, rtol=1e-4, atol=1e-37)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ntxent_edge_batches(backend):
    e, _ = _batch(4)
    # no positive pair: optax's 0 / 0 = NaN, with a zero gradient
    value, g = _run(backend, "ntxent", e, np.arange(6))
    assert np.isnan(value) and np.all(g == 0)
    value, g = _run(backend, "ntxent", e, np.arange(6), empty_reduction="zero")
    assert value == 0 and np.all(g == 0)
    # one label for the whole batch: no negatives, every pair's probability 1, loss 0
    value, g = _run(backend, "ntxent", e, np.zeros(6, np.int64))
    assert abs(value) < 1e-15 and np.all(np.abs(g) < 1e-12)
    # an empty batch (optax raises there)
    value, _ = _run(backend, "ntxent", np.zeros((0, 3)), np.zeros(0, np.int64))
    assert np.isnan(value)


# ---------------------------------------------------------------------------------------------
# supcon


def _supcon_by_hand(e, y, t):
    """Khosla et al.'s L_out per anchor: -(1/|P(i)|) sum_p log(e^{s_ip} / sum_{k != i} e^{s_ik});
    0 for an anchor without positive."""
    s = _unit(e) @ _unit(e).T / t
    n = len(y)
    out = np.zeros(n)
    for i in range(n):
        others = [k for k in range(n) if k != i]
        lse = np.log(sum(np.exp(s[i, k]) for k in others))
        pos = [j for j in others if y[j] == y[i]]
        if pos:
            out[i] = -np.mean([s[i, p] - lse for p in pos])
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("t", (0.1, 0.01))
def test_supcon_is_pytorch_metric_learning(backend, t):
    e, y = _batch(5, 3, 3)
    x = torch.tensor(e, requires_grad=True)
    want = pml_losses.SupConLoss(temperature=t)(x, torch.as_tensor(y))
    (want_g,) = torch.autograd.grad(want, x)
    value, g = _run(backend, "supcon", e, y, temperature=t)
    np.testing.assert_allclose(value, want.item(), rtol=TOL)
    np.testing.assert_allclose(g, want_g.numpy(), rtol=1e-11,
                               atol=1e-13 * np.abs(want_g.numpy()).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_supcon_by_hand_avg_non_zero(backend):
    e, _ = _batch(6, 2, 4)
    y = np.array([0, 0, 0, 1, 1, 2, 3, 3])  # anchor 5 has no positive: loss 0, not counted
    per_anchor = _supcon_by_hand(e, y, 0.1)
    value, _ = _run(backend, "supcon", e, y, reduction="none")
    np.testing.assert_allclose(value, per_anchor, rtol=TOL)
    assert value[5] == 0.0
    mean, _ = _run(backend, "supcon", e, y)
    np.testing.assert_allclose(mean, per_anchor.sum() / 7, rtol=TOL)  # AvgNonZeroReducer
    sw = np.array([1.0, 2.0, 0.0, 0.5, 1.0, 4.0, 1.0, 3.0])
    mean, _ = _run(backend, "supcon", e, y, sample_weight=sw)
    nz = per_anchor > 0
    np.testing.assert_allclose(mean, (sw * per_anchor).sum() / sw[nz].sum(), rtol=TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_supcon_nothing_counts(backend):
    """No positive pair (or no negative pair): pytorch-metric-learning's 0, the default
    empty_reduction='zero'; 'nan' gives the contract's NaN. Zero gradients both ways."""
    e, _ = _batch(7)
    x = torch.tensor(e)
    assert pml_losses.SupConLoss()(x, torch.arange(6)).item() == 0.0
    for labels in (np.arange(6), np.zeros(6, np.int64)):
        value, g = _run(backend, "supcon", e, labels)
        assert value == 0.0 and np.all(g == 0)
        value, g = _run(backend, "supcon", e, labels, empty_reduction="nan")
        assert np.isnan(value) and np.all(g == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_supcon_nan_embedding_propagates(backend):
    """A NaN embedding is in every anchor's denominator: every anchor's loss is NaN, and so is
    the mean, in pytorch-metric-learning (its zero_loss of NaN embeddings) and in multiloss."""
    e, y = _batch(8)
    e[0, 0] = np.nan
    assert np.isnan(pml_losses.SupConLoss()(torch.tensor(e), torch.as_tensor(y)).item())
    value, _ = _run(backend, "supcon", e, y)
    assert np.isnan(value)


# ---------------------------------------------------------------------------------------------
# both


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ("ntxent", "supcon"))
def test_bad_input(backend, name):
    for bad in (0.0, -0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature: expected a"):
            multiloss.get(name, backend=backend, temperature=bad)
    loss = multiloss.get(name, backend=backend)
    e = np.zeros((4, 3))
    with pytest.raises(TypeError, match=r"labels: expected an integer array .* got float64"):
        loss(e, np.zeros(4))
    with pytest.raises(ValueError, match=r"labels: expected shape \(4,\) .* got shape \(5,\)"):
        loss(e, np.zeros(5, np.int64))
    with pytest.raises(ValueError, match=r"embeddings: expected shape \(N, D\), got shape \(4,\)"):
        loss(np.zeros(4), np.zeros(4, np.int64))
    with pytest.raises(TypeError, match="embeddings: expected a floating-point array"):
        loss(np.zeros((4, 3), np.int64), np.zeros(4, np.int64))


@pytest.mark.parametrize("name", ("ntxent", "supcon"))
def test_batch_coupled(name):
    spec = multiloss.resolve(name)
    assert spec.batch_coupled and spec.family == "self_supervised"
    sample = testing.samples_for(spec, "float64")[0]
    assert testing.batch_layout(spec, sample) is None
    assert "batch" in multiloss.info(name)["notes"]
