"""arcface and cosface: values computed by hand, the learnable-parameter module pairs
(multiloss.nn.ArcFace / TorchArcFace, CosFace / TorchCosFace) and their parameter conversion,
bad input on both backends. The parity with pytorch-metric-learning over the sample grid is in
tests/test_parity.py and tests/test_hypothesis.py."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import multiloss
import multiloss.nn as mnn
from multiloss import testing

BACKENDS = ("jax", "torch")
LOSSES = ("arcface", "cosface")
TOL = 1e-12


def _call(loss, backend, *inputs, sample_weight=None):
    if backend == "torch":
        inputs = [torch.from_numpy(np.asarray(x)) for x in inputs]
        if sample_weight is not None:
            sample_weight = torch.from_numpy(np.asarray(sample_weight))
        return loss(*inputs, sample_weight=sample_weight).detach().numpy()
    return np.asarray(loss(*inputs, sample_weight=sample_weight))


# ---------------------------------------------------------------------------------------------
# values by hand (independent of pytorch-metric-learning and of multiloss's code)

# class 0 along the first axis, class 1 along the second (the columns of W), not unit norm
W = np.array([[2.0, 0.0], [0.0, 0.5]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_arcface_by_hand(backend):
    s = 2.0  # and the margin 45 degrees: m = pi / 4
    # row 0: theta = pi/4 to class 0 (its target), cos = 1/sqrt(2) to class 1:
    #   t = cos(pi/4 + pi/4) = 0, so l = log(1 + exp(s / sqrt(2)))
    # row 1: theta = pi > pi - m to class 0: t = cos(pi) - m sin(m) = -1 - (pi/4)(sqrt(2)/2),
    #   cos = 0 to class 1: l = log(1 + exp(s (1 + pi sqrt(2) / 8)))
    # row 2: label 1, cosines (0.6, 0.8) of (3, 4) to the classes: the target angle is
    #   acos(0.8), t = cos(acos(0.8) + pi/4) = 0.8 cos(m) - 0.6 sin(m) = 0.2 / sqrt(2)
    e = np.array([[1.0, 1.0], [-3.0, 0.0], [3.0, 4.0]])
    y = np.array([0, 0, 1])
    want = np.array([
        math.log1p(math.exp(s / math.sqrt(2))),
        math.log1p(math.exp(s * (1 + math.pi * math.sqrt(2) / 8))),
        math.log1p(math.exp(s * (0.6 - 0.2 / math.sqrt(2)))),
    ])
    loss = multiloss.get("arcface", backend, margin=45.0, scale=s, reduction="none")
    np.testing.assert_allclose(_call(loss, backend, e, y, W), want, rtol=1e-13)
    mean = multiloss.get("arcface", backend, margin=45.0, scale=s)
    np.testing.assert_allclose(_call(mean, backend, e, y, W), want.mean(), rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cosface_by_hand(backend):
    s, m = 3.0, 0.35
    # cosines (1/sqrt(2), 1/sqrt(2)), (-1, 0), (0.6, 0.8); targets 0, 0, 1
    e = np.array([[1.0, 1.0], [-3.0, 0.0], [3.0, 4.0]])
    y = np.array([0, 0, 1])
    want = np.array([
        math.log1p(math.exp(s * m)),                  # s (c - (c - m))
        math.log1p(math.exp(s * (0.0 - (-1.0 - m)))),
        math.log1p(math.exp(s * (0.6 - (0.8 - m)))),
    ])
    sw = np.array([0.5, 0.0, 2.0])
    loss = multiloss.get("cosface", backend, margin=m, scale=s, reduction="none")
    np.testing.assert_allclose(_call(loss, backend, e, y, W), want, rtol=1e-13)
    mean = multiloss.get("cosface", backend, margin=m, scale=s)
    np.testing.assert_allclose(_call(mean, backend, e, y, W, sample_weight=sw),
                               (sw * want).sum() / sw.sum(), rtol=1e-13)


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(3)
    e, y, w = rng.normal(size=(4, 3)), np.array([0, 2, 1, 2]), rng.normal(size=(3, 3))
    loss = multiloss.get(name, "jax", scale=4.0)
    ge, gw = jax.grad(lambda a, b: loss(a, y, b), argnums=(0, 1))(e, w)
    for x, g, which in ((e, ge, 0), (w, gw, 1)):
        num = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            step = np.zeros_like(x)
            step[idx] = 1e-6
            args = [e, w]
            args[which] = x + step
            hi = float(loss(args[0], y, args[1]))
            args[which] = x - step
            lo = float(loss(args[0], y, args[1]))
            num[idx] = (hi - lo) / 2e-6
        np.testing.assert_allclose(np.asarray(g), num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exactly_aligned_embedding_has_a_non_finite_gradient_in_its_row_only(backend):
    # theta = 0: acos'(1) = -inf (pytorch-metric-learning's clamp has no epsilon); arcface's
    # gradient is NaN in that row and that class's column, finite elsewhere; cosface's finite
    e = np.array([[1.5, 0.0], [0.3, -0.7]])
    y = np.array([0, 1])
    for name, finite in (("arcface", False), ("cosface", True)):
        loss = multiloss.get(name, backend)
        if backend == "jax":
            ge, gw = jax.grad(lambda a, b, f=loss: f(a, y, b), argnums=(0, 1))(e, W)
            ge, gw = np.asarray(ge), np.asarray(gw)
        else:
            a, b = (torch.tensor(x, requires_grad=True) for x in (e, W))
            ge, gw = (g.numpy() for g in torch.autograd.grad(loss(a, torch.tensor(y), b), (a, b)))
        assert np.isfinite(ge[1]).all() and np.isfinite(gw[:, 1]).all()
        assert np.isfinite(ge[0]).all() == finite and np.isfinite(gw[:, 0]).all() == finite


# ---------------------------------------------------------------------------------------------
# the reference itself


def test_defaults_and_state_dict_are_pytorch_metric_learnings():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    import inspect

    for name, head_cls, ref_cls in (("arcface", mnn.TorchArcFace, pml.ArcFaceLoss),
                                    ("cosface", mnn.TorchCosFace, pml.CosFaceLoss)):
        params = inspect.signature(ref_cls).parameters
        defaults = {o["name"]: o["default"] for o in multiloss.info(name)["options"]}
        head = head_cls(4, 5)
        for key in ("margin", "scale"):
            assert defaults[key] == params[key].default
            assert getattr(head, key) == params[key].default
        ref = ref_cls(num_classes=5, embedding_size=4)
        head.load_state_dict(ref.state_dict())  # the same name and layout: W (D, C)
        e = torch.randn(6, 4)
        y = torch.tensor([0, 1, 2, 3, 4, 0])
        torch.testing.assert_close(head(e, y), ref(e, y), rtol=1e-6, atol=0)
        # and the other way: our W into the reference
        other = head_cls(4, 5)
        ref.load_state_dict(other.state_dict())
        torch.testing.assert_close(other(e, y), ref(e, y), rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------
# the module pairs


def _pair(cls_name, rng_seed=0, **kw):
    nnx_cls = getattr(mnn, cls_name)
    head = nnx_cls(5, 4, dtype="float64", rngs=nnx.Rngs(rng_seed), **kw)
    return head, mnn.to_torch(head)


def _module_grads(head, twin, e, y, sw):
    def f(module, emb):
        return jnp.sum(module(emb, y, sample_weight=sw) * ct)

    out = head(e, y, sample_weight=sw)
    ct = np.linspace(0.5, 1.5, out.size).reshape(out.shape)
    g_mod, g_e = nnx.grad(f, argnums=(0, 1))(head, jnp.asarray(e))
    twin.zero_grad()
    et = torch.tensor(e, requires_grad=True)
    out_t = twin(et, torch.from_numpy(y),
                 sample_weight=None if sw is None else torch.from_numpy(sw))
    (out_t * torch.from_numpy(ct)).sum().backward()
    return (np.asarray(out), np.asarray(g_e), np.asarray(g_mod.W[...]),
            out_t.detach().numpy(), et.grad.numpy(), twin.W.grad.numpy())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "sum_over_batch_size"])
@pytest.mark.parametrize("cls_name", ["ArcFace", "CosFace"])
def test_module_pair_same_values_and_gradients(cls_name, reduction):
    head, twin = _pair(cls_name, reduction=reduction, scale=16.0)
    np.testing.assert_array_equal(twin.W.detach().numpy(), np.asarray(head.W[...]))
    rng = np.random.default_rng(1)
    e, y = rng.normal(size=(7, 5)), rng.integers(0, 4, size=7)
    for sw in (None, rng.uniform(0, 2, size=7)):
        v, ge, gw, vt, get, gwt = _module_grads(head, twin, e, y, sw)
        assert testing.rel_error(v, vt) <= TOL
        assert testing.rel_error(ge, get) <= TOL
        assert testing.rel_error(gw, gwt) <= TOL
    # the logits (no margin) agree too
    lt = twin.logits(torch.from_numpy(e)).detach().numpy()
    assert testing.rel_error(np.asarray(head.logits(e)), lt) <= TOL


@pytest.mark.parametrize("cls_name", ["ArcFace", "CosFace"])
def test_conversion_both_ways(cls_name):
    twin = getattr(mnn, f"Torch{cls_name}")(3, 6, margin=0.2 if cls_name == "CosFace" else 20.0,
                                            scale=30.0, dtype="float64")
    head = mnn.from_torch(twin)
    assert type(head).__name__ == cls_name
    assert head.config() == twin.config()
    np.testing.assert_array_equal(np.asarray(head.W[...]), twin.W.detach().numpy())
    # into existing modules: values copied, cast to the destination's dtype
    other = getattr(mnn, cls_name)(3, 6, rngs=nnx.Rngs(7))  # float32
    assert mnn.from_torch(twin, into=other) is other
    assert other.W[...].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(other.W[...]), twin.W.detach().numpy(), rtol=1e-7)
    back = getattr(mnn, f"Torch{cls_name}")(3, 6, dtype="float64")
    assert mnn.to_torch(head, into=back) is back
    np.testing.assert_array_equal(back.W.detach().numpy(), twin.W.detach().numpy())


def test_mismatched_trees_raise():
    head = mnn.ArcFace(4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"parameter shapes differ.*W: \(4, 3\) vs \(4, 5\)"):
        mnn.to_torch(head, into=mnn.TorchArcFace(4, 5))
    with pytest.raises(ValueError, match=r"parameter shapes differ.*W: \(3, 4\) vs \(4, 3\)"):
        mnn.from_torch(mnn.TorchCosFace(3, 4), into=head)
    with pytest.raises(ValueError, match=r"parameter trees differ.*\['W'\].*\['log_vars'\]"):
        mnn.to_torch(head, into=mnn.TorchUncertaintyWeighting(["a", "b"]))
    with pytest.raises(ValueError, match=r"parameter trees differ"):
        mnn.from_torch(mnn.TorchArcFace(4, 3), into=mnn.UncertaintyWeighting(["a"]))
    with pytest.raises(TypeError, match=r"ArcFace, CosFace"):
        mnn.to_torch(mnn.TorchArcFace(4, 3))
    with pytest.raises(TypeError, match=r"TorchArcFace"):
        mnn.from_torch(head)
    # the same tree: an arcface class matrix loads into a cosface head (only W is copied)
    cos = mnn.to_torch(head, into=mnn.TorchCosFace(4, 3))
    np.testing.assert_allclose(cos.W.detach().numpy(), np.asarray(head.W[...]))
    assert cos.margin == 0.35


def test_initialisation_is_standard_normal():
    head = mnn.CosFace(64, 512, rngs=nnx.Rngs(0))
    twin = mnn.TorchCosFace(64, 512)
    for w in (np.asarray(head.W[...]), twin.W.detach().numpy()):
        assert w.shape == (64, 512) and w.dtype == np.float32
        assert abs(w.mean()) < 0.03 and abs(w.std() - 1) < 0.03


def test_module_under_nnx_jit_and_training_step():
    head = mnn.ArcFace(4, 3, scale=8.0, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    e = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    y = jnp.asarray([0, 1, 2, 0, 1, 2])

    @nnx.jit
    def step(m):
        loss, g = nnx.value_and_grad(lambda m: m(e, y))(m)
        m.W[...] = m.W[...] - 0.5 * g.W[...]
        return loss

    first = step(head)
    for _ in range(20):
        last = step(head)
    assert float(last) < float(first)
    # under a trace the labels are not checked: out of range gives NaN
    bad = nnx.jit(lambda m, lab: m(e, lab))(head, jnp.asarray([0, 1, 2, 0, 1, 3]))
    assert np.isnan(float(bad))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_dtypes_promote(backend):
    rng = np.random.default_rng(0)
    e, y, w = rng.normal(size=(3, 4)), np.array([0, 1, 2]), rng.normal(size=(4, 3))
    out = _call(multiloss.get("cosface", backend), backend, e.astype(np.float32), y, w)
    assert out.dtype == np.float64
    ref = _call(multiloss.get("cosface", backend), backend,
                e.astype(np.float32).astype(np.float64), y, w)
    np.testing.assert_allclose(out, ref, rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# bad input


def _inputs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 3)), np.array([0, 1, 2, 1]), rng.normal(size=(3, 5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LOSSES)
def test_bad_inputs(backend, name):
    e, y, w = _inputs()
    loss = multiloss.get(name, backend)
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 5\).*got 5 at "
                                         r"index 2"):
        _call(loss, backend, e, np.array([0, 1, 5, 1]), w)
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 5\).*got -1"):
        _call(loss, backend, e, np.array([-1, 1, 2, 1]), w)
    with pytest.raises(ValueError, match=r"class_weight: expected shape \(D, C\).*D = 3.*got "
                                         r"shape \(5, 3\).*pass its transpose"):
        _call(loss, backend, e, y, w.T.copy())
    with pytest.raises(ValueError, match=r"class_weight: expected shape \(D, C\)"):
        _call(loss, backend, e, y, w[:, :, None])
    with pytest.raises(ValueError, match=r"class_weight: expected at least one class"):
        _call(loss, backend, e, y, w[:, :0])
    with pytest.raises(TypeError, match=r"labels: expected an integer array"):
        _call(loss, backend, e, y.astype(np.float64), w)
    with pytest.raises(ValueError, match=r"labels: expected shape \(4,\)"):
        _call(loss, backend, e, y[:3], w)
    with pytest.raises(ValueError, match=r"embeddings: expected shape \(N, D\)"):
        _call(loss, backend, e[0], y, w)
    with pytest.raises(TypeError, match=r"embeddings: expected a floating-point array"):
        _call(loss, backend, e.astype(np.int64), y, w)
    with pytest.raises(ValueError, match=r"sample_weight"):
        _call(loss, backend, e, y, w, sample_weight=np.ones(3))
    # validate=False skips the value check (the shapes are still checked)
    unchecked = multiloss.get(name, backend, validate=False)
    if backend == "jax":
        out = _call(unchecked, backend, e, np.array([0, 1, 5, 1]), w)
        assert np.isnan(out)
    else:
        with pytest.raises((IndexError, RuntimeError)):
            _call(unchecked, backend, e, np.array([0, 1, 5, 1]), w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_options(backend):
    for name, margin in (("arcface", 90.5), ("arcface", -1.0), ("arcface", float("nan")),
                         ("cosface", 1.5), ("cosface", -0.1)):
        with pytest.raises(ValueError, match=r"margin: expected a value in"):
            multiloss.get(name, backend, margin=margin)
    for name in LOSSES:
        for scale in (0.0, -1.0, float("inf")):
            with pytest.raises(ValueError, match=r"scale: expected a"):
                multiloss.get(name, backend, scale=scale)
        with pytest.raises(TypeError, match=r"margin: expected a real number"):
            multiloss.get(name, backend, margin="0.5")
    with pytest.warns(UserWarning, match=r"in degrees.*margin=28\.65"):
        multiloss.get("arcface", backend, margin=0.5)


def test_bad_module_arguments():
    with pytest.raises(ValueError, match=r"embedding_size: expected a positive int, got 0"):
        mnn.ArcFace(0, 3, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"num_classes: expected a positive int, got float"):
        mnn.TorchCosFace(4, 3.0)
    with pytest.raises(ValueError, match=r"margin: expected a value in \[0.0, 90.0\]"):
        mnn.TorchArcFace(4, 3, margin=120.0)
    with pytest.raises(ValueError, match=r"reduction: expected one of"):
        mnn.CosFace(4, 3, reduction="avg", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"rngs: expected a flax.nnx.Rngs"):
        mnn.ArcFace(4, 3, rngs=0)
    with pytest.raises(ValueError, match=r"dtype: expected one of"):
        mnn.TorchArcFace(4, 3, dtype="int32")
