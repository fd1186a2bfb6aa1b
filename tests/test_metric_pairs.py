"""contrastive (pair margins over every pair of the batch) and multi_similarity: against
pytorch-metric-learning's ContrastiveLoss and MultiSimilarityLoss called directly (their default
reducers, AvgNonZeroReducer and MeanReducer, and SumReducer), values worked out by hand from
Hadsell et al.'s and Wang et al.'s formulas, the hinges' ties, the weighting contract and bad
input. The parity over the sample grid is in
tests/test_parity.py and tests/test_hypothesis.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers

import multiloss
from multiloss.losses.metric import contrastive_weights

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")
TOL = 1e-12


def _run(backend, e, y, sample_weight=None, **options):
    loss = multiloss.get("contrastive", backend=backend, **options)
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


def _pml(e, y, reducer=None, **margins):
    x = torch.tensor(e, requires_grad=True)
    out = pml_losses.ContrastiveLoss(reducer=reducer, **margins)(x, torch.as_tensor(y))
    (g,) = torch.autograd.grad(out, x)
    return out.item(), g.numpy()


def _batch(seed=0, n_groups=3, per_group=3, d=4):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n_groups, d))
    e = np.repeat(c, per_group, 0) + 0.8 * rng.normal(size=(n_groups * per_group, d))
    return e * rng.uniform(0.5, 2, size=(len(e), 1)), np.repeat(np.arange(n_groups), per_group)


def _by_hand(e, y, pos_margin=0.0, neg_margin=1.0):
    """Hadsell et al.'s pair losses on normalised embeddings: (N, N), 0 on the diagonal."""
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    d = np.linalg.norm(u[:, None] - u[None], axis=-1)
    same = y[:, None] == y[None, :]
    eye = np.eye(len(y), dtype=bool)
    return np.where(same & ~eye, np.maximum(d - pos_margin, 0),
                    np.where(~same, np.maximum(neg_margin - d, 0), 0.0)), same & ~eye, ~same


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("margins", ({}, {"pos_margin": 0.25, "neg_margin": 1.4}))
def test_default_is_pml_avg_non_zero(backend, margins):
    e, y = _batch(1)
    want, want_g = _pml(e, y, **margins)
    value, g = _run(backend, e, y, **margins)
    np.testing.assert_allclose(value, want, rtol=TOL)
    np.testing.assert_allclose(g, want_g, rtol=1e-11, atol=1e-13 * np.abs(want_g).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_sum_is_pml_sum_reducer(backend):
    e, y = _batch(2)
    want, want_g = _pml(e, y, reducers.SumReducer(), neg_margin=1.2)
    value, g = _run(backend, e, y, reduction="sum", neg_margin=1.2)
    np.testing.assert_allclose(value, want, rtol=TOL)
    np.testing.assert_allclose(g, want_g, rtol=1e-11, atol=1e-13 * np.abs(want_g).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_by_hand(backend):
    e, y = _batch(3)
    loss, pos, neg = _by_hand(e, y, 0.1, 1.3)
    value, _ = _run(backend, e, y, reduction="none", pos_margin=0.1, neg_margin=1.3)
    np.testing.assert_allclose(value, loss, rtol=TOL, atol=1e-15)
    # 'mean': AvgNonZero per sub-loss (positive pairs, negative pairs), summed
    lp, ln = loss[pos], loss[neg]
    want = lp.sum() / max((lp > 0).sum(), 1) + ln.sum() / max((ln > 0).sum(), 1)
    value, _ = _run(backend, e, y, pos_margin=0.1, neg_margin=1.3)
    np.testing.assert_allclose(value, want, rtol=TOL)
    value, _ = _run(backend, e, y, reduction="sum_over_batch_size", pos_margin=0.1,
                    neg_margin=1.3)
    np.testing.assert_allclose(value, loss.sum() / (9 * 8), rtol=TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_weight(backend):
    e, y = _batch(4)
    loss, _, _ = _by_hand(e, y)
    d, _, r = contrastive_weights(loss, y)
    assert np.isclose(d.sum(), 1.0)
    plain, _ = _run(backend, e, y)
    # a constant weight changes nothing; per-anchor weights s[:, None]: sum(s r l) / sum(s d)
    value, _ = _run(backend, e, y, sample_weight=np.full((9, 1), 3.0))
    np.testing.assert_allclose(value, plain, rtol=TOL)
    s = np.linspace(0.0, 2.0, 9)[:, None]
    value, _ = _run(backend, e, y, sample_weight=s)
    np.testing.assert_allclose(value, (s * r * loss).sum() / (s * d).sum(), rtol=TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hinge_ties(backend):
    """Exact distances: identical positives (d = 0 = pos_margin) and opposite negatives (d = 2 =
    neg_margin): loss 0, not counted by the mean, and a zero gradient (F.relu, cdist at 0)."""
    e = np.array([[2.0, 0.0], [0.5, 0.0], [-1.0, 0.0], [0.0, 3.0]])
    y = np.array([0, 0, 1, 2])
    want, want_g = _pml(e, y, neg_margin=2.0)
    value, g = _run(backend, e, y, neg_margin=2.0)
    np.testing.assert_allclose(value, want, rtol=TOL)
    np.testing.assert_allclose(g, want_g, rtol=TOL, atol=1e-15)
    loss, _ = _run(backend, e, y, reduction="none", neg_margin=2.0)
    assert loss[0, 1] == 0 and loss[0, 2] == 0 and loss[1, 2] == 0


@pytest.mark.filterwarnings("ignore:contrastive. neg_margin")
@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_counts(backend):
    """Every pair loss 0: pytorch-metric-learning's 0 (the default empty_reduction='zero');
    'nan' gives NaN; zero gradients."""
    e, y = _batch(5)
    want, _ = _pml(e, y, pos_margin=2.0, neg_margin=0.0)
    assert want == 0.0
    value, g = _run(backend, e, y, pos_margin=2.0, neg_margin=0.0)
    assert value == 0.0 and np.all(g == 0)
    value, g = _run(backend, e, y, pos_margin=2.0, neg_margin=0.0, empty_reduction="nan")
    assert np.isnan(value) and np.all(g == 0)
    value, _ = _run(backend, np.zeros((0, 3)), np.zeros(0, np.int64))
    assert value == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_embedding_propagates(backend):
    """pytorch-metric-learning's AvgNonZeroReducer drops NaN pair losses (NaN > 0 is false);
    multiloss does not hide the NaN (documented)."""
    e, y = _batch(6)
    e[0, 0] = np.nan
    want, _ = _pml(e, y)
    assert np.isfinite(want)
    value, _ = _run(backend, e, y)
    assert np.isnan(value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    with pytest.raises(ValueError, match=r"pos_margin: expected a value in \[0"):
        multiloss.get("contrastive", backend=backend, pos_margin=-0.1)
    with pytest.raises(ValueError, match="neg_margin: expected a finite value"):
        multiloss.get("contrastive", backend=backend, neg_margin=float("inf"))
    with pytest.warns(UserWarning, match="neg_margin=0.5 <= pos_margin=0.5"):
        multiloss.get("contrastive", backend=backend, pos_margin=0.5, neg_margin=0.5)
    loss = multiloss.get("contrastive", backend=backend)
    with pytest.raises(TypeError, match=r"labels: expected an integer array .* got float32"):
        loss(np.zeros((3, 2)), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"labels: expected shape \(3,\) .* got shape \(3, 1\)"):
        loss(np.zeros((3, 2)), np.zeros((3, 1), np.int64))
    with pytest.raises(ValueError, match=r"embeddings: expected shape \(N, D\)"):
        loss(np.zeros((3, 2, 1)), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"sample_weight: expected an array that broadcasts"):
        loss(np.ones((3, 2)), np.zeros(3, np.int64), sample_weight=np.ones(4))


def test_arcface_cosface_unchanged_and_info():
    assert {"arcface", "cosface", "contrastive"} <= set(multiloss.available("metric"))
    info = multiloss.info("contrastive")
    assert "ContrastiveLoss" in info["reference"] and "AvgNonZeroReducer" in info["reference"]
    assert [o["name"] for o in info["options"]][1:3] == ["pos_margin", "neg_margin"]
    assert multiloss.resolve("contrastive").batch_coupled


# ---------------------------------------------------------------------------------------------
# multi_similarity


def _ms_by_hand(e, y, alpha=2.0, beta=50.0, base=0.5):
    """Wang et al.'s multi-similarity loss per anchor, without mining."""
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    s = u @ u.T
    out = np.zeros(len(y))
    for i in range(len(y)):
        pos = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [k for k in range(len(y)) if y[k] != y[i]]
        if pos:
            out[i] += np.log1p(sum(np.exp(-alpha * (s[i, p] - base)) for p in pos)) / alpha
        if neg:
            out[i] += np.log1p(sum(np.exp(beta * (s[i, k] - base)) for k in neg)) / beta
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opts", ({}, {"alpha": 1.0, "beta": 20.0, "base": 0.2}))
def test_multi_similarity_is_pml_and_by_hand(backend, opts):
    e, y = _batch(9)
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 5])  # anchor 8 has no positive
    x = torch.tensor(e, requires_grad=True)
    want = pml_losses.MultiSimilarityLoss(**opts)(x, torch.as_tensor(y))
    (want_g,) = torch.autograd.grad(want, x)
    value, g = _multi(backend, e, y, **opts)
    np.testing.assert_allclose(value, want.item(), rtol=TOL)
    np.testing.assert_allclose(g, want_g.numpy(), rtol=1e-11,
                               atol=1e-13 * np.abs(want_g.numpy()).max())
    per_anchor, _ = _multi(backend, e, y, reduction="none", **opts)
    np.testing.assert_allclose(per_anchor, _ms_by_hand(e, y, **opts), rtol=TOL)
    np.testing.assert_allclose(value, per_anchor.mean(), rtol=TOL)  # MeanReducer


def _multi(backend, e, y, **options):
    loss = multiloss.get("multi_similarity", backend=backend, **options)
    if backend == "jax":
        def f(x):
            return jnp.sum(loss(x, y))

        return np.asarray(loss(e, y)), np.asarray(jax.grad(f)(e))
    x = torch.tensor(e, requires_grad=True)
    out = loss(x, torch.as_tensor(y))
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach().numpy(), g.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_similarity_bad_input_and_empty(backend):
    for name, bad in (("alpha", 0.0), ("beta", -1.0), ("alpha", float("inf"))):
        with pytest.raises(ValueError, match=f"{name}: expected a"):
            multiloss.get("multi_similarity", backend=backend, **{name: bad})
    with pytest.raises(ValueError, match=r"base: expected a value in \[-inf, inf\], got nan"):
        multiloss.get("multi_similarity", backend=backend, base=float("nan"))
    with pytest.raises(ValueError, match="base: expected a finite value, got inf"):
        multiloss.get("multi_similarity", backend=backend, base=float("inf"))
    value, _ = _multi(backend, np.zeros((0, 3)), np.zeros(0, np.int64))
    assert value == 0.0  # pytorch-metric-learning's 0 (empty_reduction="zero")
    assert multiloss.resolve("multi_similarity").batch_coupled
