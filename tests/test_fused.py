"""The single-pass cross-entropy, nll and bce-with-logits of the JAX backend
(multiloss/losses/classification/_fused_jax.py): both log-sum-exp paths against the plain
log_softmax formulas, the class weight's and the probability target's gradients, no
logits-sized temporaries, NaN under a trace, vmap, and the ``compile`` option.

Parity with torch itself is tests/test_parity.py and tests/test_hypothesis.py (every existing
case of cross_entropy, nll and binary_cross_entropy_with_logits runs through these paths)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss.losses.classification import _fused_jax as fused

RNG = np.random.default_rng(7)


def _ref_index(x, t, w, ignore, eps, axis=1):
    """torch's cross_entropy (class indices, reduction 'none') on jax.nn.log_softmax."""
    logp = jax.nn.log_softmax(x, axis=axis)
    c = x.shape[axis]
    counts = (t != ignore) & (t >= 0) & (t < c)
    safe = jnp.where(counts, t, 0)
    picked = jnp.squeeze(jnp.take_along_axis(logp, jnp.expand_dims(safe, axis), axis), axis)
    wt = 1.0 if w is None else w[safe]
    loss = -picked * wt
    if eps:
        shape = [1] * x.ndim
        shape[axis] = c
        wb = 1.0 if w is None else w.reshape(shape)
        loss = (1 - eps) * loss + eps / c * (-jnp.sum(logp * wb, axis))
    return jnp.where(counts, loss, 0.0)


def _ref_prob(x, t, w, eps, axis=1):
    c = x.shape[axis]
    logp = jax.nn.log_softmax(x, axis=axis)
    ts = t * (1 - eps) + eps / c
    shape = [1] * x.ndim
    shape[axis] = c
    wb = 1.0 if w is None else w.reshape(shape)
    return -jnp.sum(logp * ts * wb, axis)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _problem(shape, extreme=False, dtype=np.float64):
    x = RNG.normal(size=shape) * 3
    if extreme:  # a logit of 1e4 forces the exact (shifted) log-sum-exp on the whole batch
        x.flat[0] = 1e4
    c = shape[1] if len(shape) > 1 else shape[0]
    t_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    t = RNG.integers(0, c, size=t_shape)
    if np.ndim(t):
        t.flat[::3] = -100
    return jnp.asarray(x.astype(dtype)), jnp.asarray(t), jnp.asarray(
        RNG.uniform(0.2, 2.0, c).astype(dtype))


@pytest.mark.parametrize("extreme", [False, True], ids=["fast", "exact"])
@pytest.mark.parametrize("shape", [(8, 7), (3, 5, 2, 2), (6,)], ids=["2d", "kdim", "unbatched"])
@pytest.mark.parametrize("opts", [(False, 0.0), (True, 0.0), (True, 0.3), (False, 0.2)],
                         ids=["plain", "weight", "weight+ls", "ls"])
def test_index_paths_match_log_softmax_formula(extreme, shape, opts):
    use_w, eps = opts
    x, t, w = _problem(shape, extreme)
    w = w if use_w else None
    axis = 0 if x.ndim == 1 else 1
    ct = jnp.asarray(RNG.uniform(0.5, 1.5, size=t.shape))

    def ours(x, w):
        return jnp.sum(fused.ce_index(x, t, w, axis, -100, eps) * ct)

    def ref(x, w):
        return jnp.sum(_ref_index(x, t, w, -100, eps, axis) * ct)

    argnums = (0, 1) if use_w else (0,)
    v1, g1 = jax.value_and_grad(ours, argnums)(x, w)
    v2, g2 = jax.value_and_grad(ref, argnums)(x, w)
    assert _rel(v1, v2) < 1e-12
    for a, b in zip(g1, g2):
        assert _rel(a, b) < 1e-12


@pytest.mark.parametrize("extreme", [False, True], ids=["fast", "exact"])
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_prob_targets_gradients_wrt_logits_target_and_weight(extreme, eps):
    x, _, w = _problem((6, 5), extreme)
    t = jnp.asarray(RNG.dirichlet(np.ones(5), size=6))
    ct = jnp.asarray(RNG.uniform(0.5, 1.5, size=6))

    def ours(x, t, w):
        return jnp.sum(fused.ce_prob(x, t, w, 1, eps) * ct)

    def ref(x, t, w):
        return jnp.sum(_ref_prob(x, t, w, eps) * ct)

    v1, g1 = jax.value_and_grad(ours, (0, 1, 2))(x, t, w)
    v2, g2 = jax.value_and_grad(ref, (0, 1, 2))(x, t, w)
    assert _rel(v1, v2) < 1e-12
    for a, b in zip(g1, g2):
        assert _rel(a, b) < 1e-12


def test_nll_gradients_wrt_input_and_weight():
    x, t, w = _problem((8, 6))
    logp = jax.nn.log_softmax(x)
    ct = jnp.asarray(RNG.uniform(0.5, 1.5, size=8))

    def ours(x, w):
        return jnp.sum(fused.nll_index(x, t, w, 1, -100) * ct)

    def ref(x, w):
        counts = t != -100
        safe = jnp.where(counts, t, 0)
        picked = jnp.take_along_axis(x, safe[:, None], 1)[:, 0]
        return jnp.sum(jnp.where(counts, -picked * w[safe], 0.0) * ct)

    v1, g1 = jax.value_and_grad(ours, (0, 1))(logp, w)
    v2, g2 = jax.value_and_grad(ref, (0, 1))(logp, w)
    assert _rel(v1, v2) < 1e-12
    assert _rel(g1[0], g2[0]) < 1e-12 and _rel(g1[1], g2[1]) < 1e-12


def test_the_fast_path_is_a_cond_with_the_exact_one():
    x, t, _ = _problem((4, 3))
    jaxpr = str(jax.make_jaxpr(lambda x: fused.ce_index(x, t, None, 1, -100, 0.0))(x))
    assert "cond" in jaxpr


@pytest.mark.parametrize("name,make", [
    ("cross_entropy", lambda n, c: (np.float32(3) * RNG.normal(size=(n, c)).astype(np.float32),
                                    RNG.integers(0, c, n).astype(np.int32))),
    ("nll", lambda n, c: (np.log(RNG.dirichlet(np.ones(c), n)).astype(np.float32),
                          RNG.integers(0, c, n).astype(np.int32))),
    ("binary_cross_entropy_with_logits", lambda n, c: (
        RNG.normal(size=(n, c)).astype(np.float32),
        (RNG.random((n, c)) < 0.5).astype(np.float32))),
])
def test_no_logits_sized_temporaries(name, make):
    """Forward and forward+backward keep nothing of the logits' size but the gradient itself:
    XLA's compiled temporaries stay far below one (N, C) array."""
    n, c = 256, 4096
    x, t = make(n, c)
    loss = multiloss.get(name, backend="jax")
    big = n * c * 4
    fwd = jax.jit(lambda x, t: loss(x, t)).lower(x, t).compile().memory_analysis()
    both = jax.jit(jax.value_and_grad(lambda x, t: loss(x, t))).lower(x, t).compile()
    mem = both.memory_analysis()
    if fwd is None or mem is None:
        pytest.skip("this XLA backend has no memory analysis")
    assert fwd.temp_size_in_bytes < big / 8
    assert mem.temp_size_in_bytes < big / 8
    assert mem.output_size_in_bytes < big * 1.01  # the gradient (and the value)


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_out_of_range_index_under_a_trace_is_nan(name):
    x = jnp.asarray(RNG.normal(size=(4, 3)))
    t = jnp.asarray([0, 5, 1, -100])
    loss = multiloss.get(name, backend="jax", reduction="none", weight=np.ones(3),
                         **({"label_smoothing": 0.1} if name == "cross_entropy" else {}))
    v = np.asarray(jax.jit(lambda x, t: loss(x, t))(x, t))
    g = np.asarray(jax.jit(jax.grad(lambda x, t: jnp.sum(loss(x, t))))(x, t))
    assert np.isnan(v[1]) and np.isfinite(v[[0, 2, 3]]).all() and v[3] == 0
    # cross_entropy: the whole row (its softmax); nll: the entry it reads (as before the fast
    # path: the gradient of a gather)
    assert (np.isnan(g[1]).all() if name == "cross_entropy" else np.isnan(g[1]).any())
    assert np.isfinite(g[[0, 2, 3]]).all()


def test_vmap_matches_a_loop():
    xs = jnp.asarray(RNG.normal(size=(3, 5, 4)) * 3)
    xs = xs.at[1, 0, 0].set(1e4)  # one problem on the exact path: under vmap both run
    ts = jnp.asarray(RNG.integers(0, 4, size=(3, 5)))
    loss = multiloss.get("cross_entropy", backend="jax", label_smoothing=0.1)
    f = jax.value_and_grad(lambda x, t: loss(x, t))
    vv, gv = jax.vmap(f)(xs, ts)
    for i in range(3):
        v, g = f(xs[i], ts[i])
        assert _rel(vv[i], v) < 1e-12 and _rel(gv[i], g) < 1e-12


def test_log_sigmoid_is_torchs():
    x = np.array([-np.inf, -1e4, -50.0, -3.0, -1e-8, 0.0, 1e-8, 2.0, 40.0, 1e4, np.inf, np.nan])
    ours = np.asarray(fused.log_sigmoid(jnp.asarray(x)))
    ref = torch.nn.functional.logsigmoid(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-15, atol=0)


# ---------------------------------------------------------------------------------------------
# compile=True


def test_compile_option_has_no_effect_on_jax():
    x, t = RNG.normal(size=(5, 4)), RNG.integers(0, 4, 5)
    a = multiloss.get("cross_entropy", backend="jax", compile=True)(x, t)
    b = multiloss.get("cross_entropy", backend="jax")(x, t)
    assert float(a) == float(b)


def test_compile_option_is_checked_and_from_torch_ignores_the_module_method():
    with pytest.raises(TypeError, match="compile: expected a bool"):
        multiloss.get("cross_entropy", backend="torch", compile="yes")
    # a torch module's ``compile`` attribute is its method: from_torch must not read it as set
    loss = multiloss.from_torch(torch.nn.CrossEntropyLoss(label_smoothing=0.1), backend="torch")
    assert loss.options["compile"] is False
    assert any(o["name"] == "compile" for o in multiloss.info("cross_entropy")["options"])


def test_torch_compiled_cross_entropy_matches_eager():
    """compile=True: torch.compile of F.cross_entropy (needs a C compiler on CPU)."""
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 4, 2, -100, 1, 3])
    w = torch.rand(5, dtype=torch.float64) + 0.5
    for red in ("mean", "none"):
        ours = multiloss.get("cross_entropy", backend="torch", compile=True, reduction=red,
                             label_smoothing=0.1, weight=w)(x, t)
        ref = torch.nn.functional.cross_entropy(x, t, weight=w, reduction=red,
                                                label_smoothing=0.1)
        ct = torch.rand_like(ref) + 0.5
        (g1,) = torch.autograd.grad(ours, x, ct)
        (g2,) = torch.autograd.grad(ref, x, ct)
        assert torch.allclose(ours, ref, rtol=1e-12, atol=0)
        assert torch.allclose(g1, g2, rtol=1e-12, atol=1e-15)
