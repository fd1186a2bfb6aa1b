"""The weighting contract (docs/weighting.md), checked against formulas worked out here in
NumPy, independently of both backends and of torch: sample weights, the contract's own
reductions, the nothing-counts rule, and that both backends agree on result dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss

BACKENDS = ["jax", "torch"]


def _log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _value_and_grad(backend, loss, x, t, sw=None):
    """Value and gradient w.r.t. the first input, on either backend."""
    if backend == "jax":
        v, g = jax.value_and_grad(lambda z: loss(z, t, sample_weight=sw))(jnp.asarray(x))
        return float(v), np.asarray(g)
    xt = torch.tensor(x, requires_grad=True)
    v = loss(xt, torch.as_tensor(t), sample_weight=None if sw is None else torch.as_tensor(sw))
    (g,) = torch.autograd.grad(v, xt)
    return v.item(), g.numpy()


X = np.array([[1.0, -0.5, 2.0], [0.3, 0.1, -1.2], [-2.0, 0.4, 0.9], [0.5, 0.5, 0.5]])
T = np.array([2, 0, -100, 1])
W = np.array([0.5, 2.0, 1.0])
S = np.array([1.0, 0.5, 2.0, 3.0])


def _ce_by_hand(ls=0.0):
    logp = _log_softmax(X)
    valid = T != -100
    t = np.where(valid, T, 0)
    nll = -W[t] * logp[np.arange(4), t]
    smooth = -(logp * W).sum(axis=1)
    loss = np.where(valid, (1 - ls) * nll + ls / 3 * smooth, 0.0)
    d = np.where(valid, W[t], 0.0)
    return loss, d, valid


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_class_weighted_sample_weighted_reductions(backend, ls):
    loss, d, valid = _ce_by_hand(ls)
    expected = {
        "none": S * loss,
        "sum": (S * loss).sum(),
        "mean": (S * loss).sum() / (S * d).sum(),  # effective weight s * w[t]
        "sum_over_batch_size": (S * loss).sum() / valid.sum(),  # Keras' default
    }
    for reduction, want in expected.items():
        ce = multiloss.get("cross_entropy", backend, weight=W, label_smoothing=ls,
                           reduction=reduction)
        out = ce(X, T, sample_weight=S)
        got = out.detach().numpy() if backend == "torch" else np.asarray(out)
        np.testing.assert_allclose(got, want, rtol=1e-13, err_msg=reduction)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mean_without_sample_weight_is_torch_weighted_mean(backend):
    loss, d, _ = _ce_by_hand()
    ce = multiloss.get("cross_entropy", backend, weight=W)
    v, _ = _value_and_grad(backend, ce, X, T)
    assert v == pytest.approx(loss.sum() / d.sum(), rel=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,opts,normalised", [
    ("mse", {}, True), ("l1", {}, True), ("huber", {"delta": 0.5}, False),
    ("binary_cross_entropy_with_logits", {}, False),
])
def test_element_weight_normalisation(backend, name, opts, normalised):
    """mse/l1's weight is normalised in the mean (torch 2.13), huber's and BCE's are not;
    a sample weight multiplies both numerator and denominator of the mean."""
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(3, 4)), rng.uniform(size=(3, 4))
    w = rng.uniform(0.5, 2.0, size=(4,))
    s = np.array([[1.0], [0.0], [2.5]])  # one weight per row, broadcast over the columns
    unweighted = np.asarray(multiloss.get(name, "jax", reduction="none", **opts)(x, t))
    lw = unweighted * w
    d = np.broadcast_to(w, lw.shape) if normalised else np.ones(lw.shape)
    for reduction, want in {
        "mean": (s * lw).sum() / (s * d).sum(),
        "sum": (s * lw).sum(),
        "sum_over_batch_size": (s * lw).sum() / lw.size,
    }.items():
        got = multiloss.get(name, backend, weight=w, reduction=reduction, **opts)(
            x, t, sample_weight=s)
        got = got.item() if backend == "torch" else float(got)
        assert got == pytest.approx(want, rel=1e-13), reduction
    # without a sample weight: torch's weighted mean
    got = multiloss.get(name, backend, weight=w, **opts)(x, t)
    got = got.item() if backend == "torch" else float(got)
    assert got == pytest.approx(lw.sum() / d.sum(), rel=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("empty,want", [("nan", np.nan), ("zero", 0.0)])
@pytest.mark.parametrize("case", ["all-ignored", "zero-class-weights", "zero-sample-weights",
                                  "empty-batch"])
def test_nothing_counts(backend, empty, want, case):
    """A mean over nothing that counts: NaN (torch) or 0, and a zero gradient either way."""
    x, t, opts, sw = X, T, {}, None
    if case == "all-ignored":
        t = np.full(4, -100)
    elif case == "zero-class-weights":
        t, opts = np.array([0, 0, -100, 0]), {"weight": np.array([0.0, 1.0, 1.0])}
    elif case == "zero-sample-weights":
        sw = np.zeros(4)
    else:
        x, t = np.zeros((0, 3)), np.zeros(0, np.int64)
    ce = multiloss.get("cross_entropy", backend, empty_reduction=empty, **opts)
    v, g = _value_and_grad(backend, ce, x, t, sw)
    np.testing.assert_equal(v, want)
    np.testing.assert_array_equal(g, np.zeros_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sum_over_batch_size_counts_non_ignored_elements(backend):
    loss, _, valid = _ce_by_hand()
    ce = multiloss.get("cross_entropy", backend, weight=W, reduction="sum_over_batch_size")
    v, _ = _value_and_grad(backend, ce, X, T)
    assert v == pytest.approx(loss.sum() / 3, rel=1e-13)
    assert valid.sum() == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchmean_with_sample_weight(backend):
    rng = np.random.default_rng(1)
    x = _log_softmax(rng.normal(size=(3, 4)))
    p = np.exp(_log_softmax(rng.normal(size=(3, 4))))
    s = np.array([[2.0], [0.0], [1.0]])
    elem = p * np.log(p) - p * x
    kl = multiloss.get("kl_div", backend, reduction="batchmean")
    v, _ = _value_and_grad(backend, kl, x, p, s)
    assert v == pytest.approx((s * elem).sum() / 3, rel=1e-13)


@pytest.mark.filterwarnings("ignore:kl_div. reduction='mean'")
@pytest.mark.parametrize("name", ["mse", "l1", "smooth_l1", "huber", "kl_div",
                                  "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("dtypes", [("float32", "float64"), ("float64", "float32")])
def test_mixed_float_dtypes_agree_across_backends(name, dtypes):
    """Mixed float32/float64 inputs promote to float64 on both backends (torch's own kernels
    disagree among themselves: huber keeps the input's dtype; binary_cross_entropy raises, and
    so does multiloss: tests/test_torch_dtypes.py)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0.1, 0.9, size=(3, 2)).astype(dtypes[0])
    t = rng.uniform(0.1, 0.9, size=(3, 2)).astype(dtypes[1])
    a = multiloss.get(name, "jax")(x, t)
    b = multiloss.get(name, "torch")(torch.from_numpy(x), torch.from_numpy(t))
    assert str(a.dtype) == str(b.dtype).replace("torch.", "") == "float64"
    assert float(a) == pytest.approx(b.item(), rel=1e-6)


def test_torch_backend_calls_torch_kernels():
    """With nothing of the contract asked for beyond torch's reduction, the torch backend's
    graph is torch's own kernel; with a sample weight it reduces torch's unreduced output."""
    x = torch.randn(4, 3, requires_grad=True)
    t = torch.tensor([0, 1, 2, 1])
    native = multiloss.get("cross_entropy", "torch")(x, t)
    assert "NllLoss" in native.grad_fn.name()
    assert "NllLoss" in multiloss.get("nll", "torch")(x, t).grad_fn.name()
    assert "MseLoss" in multiloss.get("mse", "torch")(x, x.detach()).grad_fn.name()
    weighted = multiloss.get("cross_entropy", "torch")(x, t, sample_weight=torch.ones(4))
    assert "NllLoss" not in weighted.grad_fn.name()
    assert weighted.item() == pytest.approx(native.item(), rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_inputs_are_floating(backend):
    """bfloat16 (NumPy kind "V" in JAX's ml_dtypes) passes the dtype checks on both backends;
    the value stays near the float32 one (mixed-precision accuracy is its own topic)."""
    x32 = X.astype(np.float32)
    t = np.array([2, 0, 1, 1])
    ref = multiloss.get("cross_entropy", backend)(x32, t)
    if backend == "jax":
        out = multiloss.get("cross_entropy", backend)(jnp.asarray(x32, jnp.bfloat16), t)
    else:
        out = multiloss.get("cross_entropy", backend)(torch.from_numpy(x32).bfloat16(),
                                                      torch.from_numpy(t))
    assert "bfloat16" in str(out.dtype)
    assert float(out) == pytest.approx(float(ref), rel=2e-2)
