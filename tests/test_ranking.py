"""The ranking losses (margin_ranking, hinge_embedding, cosine_embedding, triplet_margin,
triplet_margin_with_distance): values worked out by hand from the formulas, the gradient at an
exact tie of each hinge against torch, a user-supplied distance function on both backends, and
bad inputs and options (the message names the argument)."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import multiloss
from multiloss import testing

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")
EPS12 = float(np.float32(1e-12))  # torch's cosine_embedding EPSILON, a C++ float


def _run(backend, name, inputs, wrt=(), sample_weight=None, **options):
    """Value and gradients (w.r.t. the inputs at positions ``wrt``) of the summed output."""
    value, grads = testing.value_and_grads(backend, name, inputs, wrt,
                                           sample_weight=sample_weight, **options)
    return float(np.sum(value)), grads


def _torch_grads(fn, inputs, wrt):
    tensors = [torch.tensor(np.asarray(x), requires_grad=i in wrt) for i, x in enumerate(inputs)]
    out = fn(*tensors).sum()
    return out.item(), [g.numpy() for g in torch.autograd.grad(out, [tensors[i] for i in wrt])]


# ---------------------------------------------------------------------------------------------
# values by hand


@pytest.mark.parametrize("backend", BACKENDS)
def test_margin_ranking_by_hand(backend):
    x1, x2 = np.array([1.0, 2.0, -1.0, 0.5]), np.array([0.5, 3.0, 1.0, 0.5])
    y = np.array([1.0, 1.0, -1.0, 2.0])  # a target outside +-1 is used as is
    # max(0, -y (x1 - x2) + 0.2): -0.3 -> 0, 1.2, -1.8 -> 0, 0.2
    want = np.array([0.0, 1.2, 0.0, 0.2])
    loss = multiloss.get("MarginRankingLoss", backend=backend, margin=0.2, reduction="none")
    np.testing.assert_allclose(np.asarray(loss(x1, x2, y).tolist()), want, rtol=1e-15)
    v, (gy,) = _run(backend, "margin_ranking", (x1, x2, y), wrt=(2,), margin=0.2)
    assert v == pytest.approx(want.mean(), rel=1e-15)
    # torch differentiates the target: -(x1 - x2) / N where the hinge is active
    np.testing.assert_allclose(gy, [0.0, 0.25, 0.0, 0.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_hinge_embedding_by_hand(backend):
    x = np.array([0.3, 2.0, 0.5, 1.5, -0.5])
    y = np.array([1.0, -1.0, -1.0, 0.0, 3.0])
    # y = 1: x; y = -1: max(0, 1 - x); otherwise both terms
    want = np.array([0.3, 0.0, 0.5, 0.0 + 1.5, 1.5 - 0.5])
    v, (g,) = _run(backend, "hinge_embedding_loss", (x, y), wrt=(0,), reduction="sum")
    assert v == pytest.approx(want.sum(), rel=1e-15)
    np.testing.assert_array_equal(g, [1.0, 0.0, -1.0, 1.0, 0.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cosine_embedding_by_hand(backend):
    x1 = np.array([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    x2 = np.array([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([1.0, -1.0, -1.0, 0.5])  # a target other than +-1 gives 0
    cos = np.array([1.0, 0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)])
    want = np.array([1 - cos[0], 0.0, cos[2] - 0.5, 0.0])
    loss = multiloss.get("CosineEmbeddingLoss", backend=backend, margin=0.5, reduction="none")
    got = np.asarray(loss(x1, x2, y).tolist())
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)  # the 1e-12 in each norm
    # unbatched: (D,) inputs, a 0-d target, a 0-d loss
    one = multiloss.get("cosine_embedding", backend=backend, reduction="none")
    assert float(one(x1[2], x2[2], np.array(1.0))) == pytest.approx(1 - cos[2], rel=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cosine_embedding_zero_vector_uses_torchs_float_epsilon(backend):
    # x1 = 0, y = 1: l = 1 - 0 = 1, d l / d x1 = -x2 / sqrt(e (|x2|^2 + e)) with e = float32(1e-12)
    x1, x2, y = np.zeros((1, 2)), np.array([[1.0, 0.0]]), np.array([1.0])
    v, (g,) = _run(backend, "cosine_embedding", (x1, x2, y), wrt=(0,))
    assert v == 1.0
    want = -1 / math.sqrt(EPS12 * (1 + EPS12))
    assert want == pytest.approx(-1000000.0019974014, rel=1e-15)  # not -1e6 (e = 1e-12)
    assert g[0, 0] == pytest.approx(want, rel=1e-14) and g[0, 1] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_triplet_margin_by_hand(backend):
    a = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    p = np.array([[3.0, 4.0], [6.0, 8.0], [3.0, 0.0]])
    n = np.array([[6.0, 8.0], [3.0, 4.0], [4.0, 0.0]])
    # p=2, eps=0: d(a,p) = 5, 10, 3; d(a,n) = 10, 5, 4; d(p,n) = 5, 5, 1
    cases = [
        ({}, [0.0, 6.0, 0.0]),
        ({"swap": True}, [1 + 5 - 5, 6.0, 1 + 3 - 1]),
        ({"p": 1.0}, [max(0, 1 + 7 - 14), 1 + 14 - 7, 0.0]),
        ({"p": math.inf, "margin": 2.0}, [0.0, 2 + 8 - 4, 2 + 3 - 4]),
    ]
    for opts, want in cases:
        loss = multiloss.get("triplet", backend=backend, eps=0.0, reduction="none", **opts)
        np.testing.assert_allclose(np.asarray(loss(a, p, n).tolist()), want, rtol=1e-15,
                                   err_msg=str(opts))
    # eps is added to the difference inside the norm: d = ||a - b + eps||
    loss = multiloss.get("triplet_margin", backend=backend, eps=0.5, margin=6.0)
    want = 6.0 + math.hypot(-3 + 0.5, -4 + 0.5) - math.hypot(-6 + 0.5, -8 + 0.5)
    assert float(loss(a[0], p[0], n[0])) == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_triplet_margin_with_distance_by_hand(backend):
    a = np.array([[1.0, 0.0], [2.0, 0.0]])
    p = np.array([[0.0, 1.0], [0.0, 3.0]])
    n = np.array([[-1.0, 0.0], [1.0, 1.0]])
    # cosine distance: d(a,p) = 1 (orthogonal), d(a,n) = 2, 1 - 1/sqrt(2)
    loss = multiloss.get("TripletMarginWithDistanceLoss", backend=backend,
                         distance_function="cosine", margin=1.5, reduction="none")
    want = [1.5 + 1 - 2, 1.5 + 1 - (1 - 1 / math.sqrt(2))]
    np.testing.assert_allclose(np.asarray(loss(a, p, n).tolist()), want, rtol=1e-15)
    # the default distance is torch.pairwise_distance (eps=1e-6)
    for dist in (None, "pairwise"):
        loss = multiloss.get("triplet_margin_with_distance", backend=backend,
                             distance_function=dist, reduction="none")
        d = lambda u, v: np.linalg.norm(u - v + 1e-6, axis=-1)  # noqa: E731
        np.testing.assert_allclose(np.asarray(loss(a, p, n).tolist()),
                                   np.maximum(0, 1 + d(a, p) - d(a, n)), rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_weight_mean_is_a_weighted_average(backend):
    a, p, n = (np.random.default_rng(i).normal(size=(4, 3)) for i in range(3))
    s = np.array([0.0, 1.0, 2.0, 0.5])
    none = multiloss.get("triplet_margin", backend=backend, margin=3.0, reduction="none")
    ln = np.asarray(none(a, p, n).tolist())
    v, _ = _run(backend, "triplet_margin", (a, p, n), sample_weight=s, margin=3.0)
    assert v == pytest.approx((s * ln).sum() / s.sum(), rel=1e-14)


# ---------------------------------------------------------------------------------------------
# gradients at exact ties, against torch


TIES = {
    # name: (inputs with the hinge argument exactly 0, options, torch's function, wrt)
    "margin_ranking": (
        (np.array([1.5, -0.5]), np.array([1.0, 0.0]), np.array([1.0, -1.0])), {"margin": 0.5},
        lambda x1, x2, y: F.margin_ranking_loss(x1, x2, y, margin=0.5, reduction="none"),
        (0, 1, 2)),
    "hinge_embedding": (
        (np.array([0.5, 1.0]), np.array([-1.0, -1.0])), {"margin": 0.5},
        lambda x, y: F.hinge_embedding_loss(x, y, margin=0.5, reduction="none"), (0,)),
    "cosine_embedding": (
        (np.array([[1.0, 2.0, 0.0]]), np.array([[2.0, -1.0, 5.0]]), np.array([-1.0])), {},
        lambda x1, x2, y: F.cosine_embedding_loss(x1, x2, y, reduction="none"), (0, 1)),
    "triplet_margin": (
        (np.array([[2.0, -1.0]]), np.array([[5.0, 3.0]]), np.array([[-4.0, 7.0]])),
        {"margin": 5.0, "eps": 0.0},
        lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=5.0, eps=0.0, reduction="none"),
        (0, 1, 2)),
    "triplet_margin_with_distance": (
        (np.array([[0.0, 2.0]]), np.array([[0.0, 2.0]]), np.array([[-3.0, 0.0]])),
        {"distance_function": "cosine"},
        lambda a, p, n: F.triplet_margin_with_distance_loss(
            a, p, n, distance_function=lambda u, v: 1 - F.cosine_similarity(u, v, dim=-1),
            reduction="none"), (0, 2)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(TIES))
def test_tie_gradient_passes_as_in_torch(backend, name):
    inputs, opts, ref, wrt = TIES[name]
    v_ref, g_ref = _torch_grads(ref, inputs, wrt)
    assert v_ref == 0.0  # an exact tie: the hinge is at 0
    assert any(np.abs(g).max() > 0.1 for g in g_ref)  # torch passes the gradient there
    v, g = _run(backend, name, inputs, wrt=wrt, reduction="none", **opts)
    assert v == 0.0
    for got, want in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_swap_tie_splits_the_gradient_as_torch_minimum(backend):
    # anchor == positive: d(a, n) == d(p, n) exactly; torch.minimum gives each half
    a = np.array([[1.0, 2.0]])
    n = np.array([[0.0, 0.0]])
    ref = lambda a_, p_, n_: F.triplet_margin_loss(a_, p_, n_, margin=3.0, swap=True)  # noqa: E731
    _, g_ref = _torch_grads(ref, (a, a.copy(), n), (0, 1, 2))
    _, g = _run(backend, "triplet_margin", (a, a.copy(), n), wrt=(0, 1, 2), margin=3.0, swap=True)
    for got, want in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-14)
    # the negative's gradient is -(a - n)/|a - n| / 2 from each distance: the full unit vector
    np.testing.assert_allclose(g[2], (a - n) / np.linalg.norm(a - n + 1e-6), rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 1.5, 0.5, math.inf])
def test_zero_distance_gradient_is_torchs(backend, p):
    # eps=0 and anchor == positive: the norm of a zero vector, whose torch gradient is 0
    a = np.array([[1.0, -1.0, 0.5]])
    n = np.array([[4.0, 2.0, -3.0]])
    ref = lambda a_, p_, n_: F.triplet_margin_loss(a_, p_, n_, margin=40.0, p=p, eps=0.0)  # noqa: E731
    v_ref, g_ref = _torch_grads(ref, (a, a.copy(), n), (0, 1, 2))
    assert v_ref > 0  # the hinge is active
    v, g = _run(backend, "triplet_margin", (a, a.copy(), n), wrt=(0, 1, 2), margin=40.0, p=p,
                eps=0.0)
    assert v == pytest.approx(v_ref, rel=1e-14)
    for got, want in zip(g, g_ref, strict=True):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# a user-supplied distance function


def _l1_jax(x1, x2):
    return jnp.sum(jnp.abs(x1 - x2), axis=-1)


def _l1_torch(x1, x2):
    return (x1 - x2).abs().sum(dim=-1)


def test_callable_distance_on_both_backends():
    rng = np.random.default_rng(0)
    a, p, n = (rng.normal(size=(5, 3)) for _ in range(3))
    results = {}
    for backend, fn in (("jax", _l1_jax), ("torch", _l1_torch)):
        results[backend] = _run(backend, "triplet_margin_with_distance", (a, p, n), wrt=(0, 1, 2),
                                distance_function=fn, margin=2.0, swap=True)
    ref = _torch_grads(lambda *t: F.triplet_margin_with_distance_loss(
        *t, distance_function=_l1_torch, margin=2.0, swap=True), (a, p, n), (0, 1, 2))
    for backend, (v, g) in results.items():
        assert v == pytest.approx(ref[0], rel=1e-14), backend
        for got, want in zip(g, ref[1], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15, err_msg=backend)
    # under jax.jit and with unbatched inputs (the callable receives (D,) and returns ())
    loss = multiloss.get("triplet_margin_with_distance", backend="jax", distance_function=_l1_jax,
                         margin=2.0, swap=True)
    assert float(jax.jit(loss)(a, p, n)) == pytest.approx(results["jax"][0], rel=1e-14)
    d = lambda u, v: np.abs(u - v).sum()  # noqa: E731
    want = max(0.0, 2 + d(a[0], p[0]) - min(d(a[0], n[0]), d(p[0], n[0])))
    assert float(loss(a[0], p[0], n[0])) == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_callable_distance_of_the_wrong_shape_raises(backend):
    fn = (lambda x, y: jnp.abs(x - y)) if backend == "jax" else (lambda x, y: (x - y).abs())
    loss = multiloss.get("triplet_margin_with_distance", backend=backend, distance_function=fn)
    x = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"^distance_function: expected distances of shape "
                       r"\(3,\) for inputs of shape \(3, 2\).*got shape \(3, 2\)"):
        loss(x, x, x)


# ---------------------------------------------------------------------------------------------
# bad inputs and options


def esc(s) -> str:
    return re.escape(str(s))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "inputs", "exc", "pattern"), [
    ("margin_ranking", ((3,), (4,), (3,)), ValueError,
     r"^input2: expected the shape of input1, \(3,\), got \(4,\)"),
    ("margin_ranking", ((3,), (3,), (1,)), ValueError,
     r"^target: expected the shape of input1, \(3,\), got \(1,\)"),
    ("hinge_embedding", ((2, 3), (3,)), ValueError,
     r"^target: expected the shape of input, \(2, 3\), got \(3,\)"),
    ("cosine_embedding", ((2, 3, 4), (2, 3, 4), (2,)), ValueError,
     r"^input1: expected shape \(N, D\) or \(D,\), got shape \(2, 3, 4\)"),
    ("cosine_embedding", ((3, 4), (1, 4), (3,)), ValueError,
     r"^input2: expected the shape of input1, \(3, 4\), got \(1, 4\)"),
    ("cosine_embedding", ((3, 4), (3, 4), (2,)), ValueError,
     r"^target: expected shape \(3,\) \(one label per pair\) for input1 of shape \(3, 4\), "
     r"got shape \(2,\)"),
    ("cosine_embedding", ((4,), (4,), (1,)), ValueError,
     r"^target: expected shape \(\) \(one label per pair\) for input1 of shape \(4,\), got "
     r"shape \(1,\)"),
    ("triplet_margin", ((), (), ()), ValueError,
     r"^anchor: expected shape \(N, D\) or \(D,\) \(the last axis is the embedding\), got "
     r"shape \(\)"),
    ("triplet_margin", ((3, 4), (3, 4), (3, 5)), ValueError,
     r"^negative: expected the shape of anchor, \(3, 4\), got \(3, 5\)"),
    ("triplet_margin_with_distance", ((3, 4), (4,), (3, 4)), ValueError,
     r"^positive: expected the shape of anchor, \(3, 4\), got \(4,\)"),
])
def test_bad_shapes(backend, name, inputs, exc, pattern):
    loss = multiloss.get(name, backend=backend)
    with pytest.raises(exc, match=pattern):
        loss(*(np.ones(s) for s in inputs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_dtypes(backend):
    x = np.ones(3)
    with pytest.raises(TypeError, match=r"^target: expected a floating-point or signed integer "
                       r"array of labels \(\+1 / -1\), got bool array of shape \(3,\)"):
        multiloss.get("margin_ranking", backend=backend)(x, x, np.ones(3, bool))
    with pytest.raises(TypeError, match=r"^input: expected a floating-point array, got int64 "
                       r"array of shape \(3,\)"):
        multiloss.get("hinge_embedding", backend=backend)(np.ones(3, np.int64), x)
    # what torch converts is accepted with torch's number (the whole table:
    # tests/test_torch_dtypes.py): uint8 targets of hinge_embedding, integer triplets
    t = torch.ones(3, dtype=torch.float64)
    assert float(multiloss.get("hinge_embedding", backend=backend)(x, np.ones(3, np.uint8))) \
        == F.hinge_embedding_loss(t, torch.ones(3, dtype=torch.uint8)).item()
    a, p = np.ones((2, 3)), np.arange(6).reshape(2, 3)
    assert float(multiloss.get("triplet_margin", backend=backend)(a, p, a)) == pytest.approx(
        F.triplet_margin_loss(torch.tensor(a), torch.tensor(p), torch.tensor(a)).item(),
        rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_targets_match_torch(backend):
    x1, x2 = np.array([1.0, -0.5, 0.3]), np.array([0.2, 0.4, 0.3])
    y = np.array([1, -1, 2])
    cases = [
        ("margin_ranking", (x1, x2, y), F.margin_ranking_loss),
        ("hinge_embedding", (x1, y), F.hinge_embedding_loss),
        ("cosine_embedding", (np.stack([x1, x2]), np.stack([x2, x1]), y[:2]),
         F.cosine_embedding_loss),
    ]
    for name, inputs, ref in cases:
        want = ref(*(torch.as_tensor(v) for v in inputs), reduction="none").numpy()
        got = multiloss.get(name, backend=backend, reduction="none")(*inputs)
        np.testing.assert_allclose(np.asarray(got.tolist()), want, rtol=1e-15, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inf_norm_of_an_empty_axis_raises(backend):
    loss = multiloss.get("triplet_margin", backend=backend, p=math.inf)
    z = np.zeros((3, 0))
    with pytest.raises(ValueError, match=r"^anchor: p=inf needs a non-empty last axis"):
        loss(z, z, z)


class _Unhashable:
    __hash__ = None

    def __call__(self, x1, x2):
        return x1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "options", "exc", "pattern"), [
    ("triplet_margin", {"margin": 0.0}, ValueError,
     r"^margin: expected a value in \(0\.0, inf\], got 0\.0"),
    ("triplet_margin", {"margin": -1.0}, ValueError, r"^margin: expected a value in \(0\.0, inf\]"),
    ("triplet_margin_with_distance", {"margin": 0}, ValueError,
     r"^margin: expected a value in \(0\.0, inf\], got 0"),
    ("triplet_margin", {"p": 0.0}, ValueError, r"^p: expected a value in \(0\.0, inf\], got 0\.0"),
    ("triplet_margin", {"p": -2.0}, ValueError, r"^p: expected a value in \(0\.0, inf\]"),
    ("triplet_margin", {"p": math.nan}, ValueError, r"^p: expected a value in"),
    ("triplet_margin", {"swap": 1}, TypeError, r"^swap: expected a bool, got int 1"),
    ("margin_ranking", {"margin": "1"}, TypeError, r"^margin: expected a real number, got str"),
    ("triplet_margin_with_distance", {"distance_function": "euclidean"}, ValueError,
     r"^distance_function: expected None, a callable or one of \['pairwise', 'cosine'\], got "
     r"'euclidean'"),
    ("triplet_margin_with_distance", {"distance_function": 2.0}, TypeError,
     r"^distance_function: expected None, a callable \(x1, x2\) -> distances or one of "
     r"\['pairwise', 'cosine'\], got float 2\.0"),
    ("triplet_margin_with_distance", {"distance_function": _Unhashable()}, TypeError,
     r"^distance_function: expected a hashable callable"),
])
def test_bad_options_raise_at_construction(backend, name, options, exc, pattern):
    with pytest.raises(exc, match=pattern):
        multiloss.get(name, backend=backend, **options)


def test_margins_torch_accepts_are_accepted():
    # torch checks no margin of these three (cosine_embedding's doc suggests [-1, 1])
    for name in ("margin_ranking", "hinge_embedding", "cosine_embedding"):
        for m in (-2.0, 0.0, 3.0):
            multiloss.get(name, backend="jax", margin=m)
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        F.triplet_margin_loss(*(torch.ones(2, 3) for _ in range(3)), margin=0.0)
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        F.triplet_margin_with_distance_loss(*(torch.ones(2, 3) for _ in range(3)), margin=0.0)


def test_names_resolve():
    for alias, name in [("margin_ranking_loss", "margin_ranking"),
                        ("MarginRankingLoss", "margin_ranking"),
                        ("HingeEmbeddingLoss", "hinge_embedding"),
                        ("cosine_embedding_loss", "cosine_embedding"),
                        ("TripletMarginLoss", "triplet_margin"), ("triplet", "triplet_margin"),
                        ("triplet_margin_with_distance_loss", "triplet_margin_with_distance"),
                        ("TripletMarginWithDistanceLoss", "triplet_margin_with_distance")]:
        assert multiloss.resolve(alias).name == name
    assert multiloss.available("ranking") == [
        "cosine_embedding", "hinge_embedding", "margin_ranking", "triplet_margin",
        "triplet_margin_with_distance"]


@pytest.mark.parametrize("name", ["margin_ranking", "hinge_embedding", "cosine_embedding",
                                  "triplet_margin", "triplet_margin_with_distance"])
def test_options_are_torchs_with_torchs_defaults(name):
    import inspect

    fn = getattr(F, multiloss.info(name)["reference"].split()[0].rsplit(".", 1)[1])
    sig = inspect.signature(fn)
    torch_opts = {k: p.default for k, p in sig.parameters.items()
                  if p.default is not inspect.Parameter.empty
                  and k not in ("size_average", "reduce")}
    opts = {o["name"]: o["default"] for o in multiloss.info(name)["options"]}
    assert set(opts) - set(torch_opts) == {"empty_reduction", "validate"}
    for k, default in torch_opts.items():
        assert opts[k] == default, (name, k)
