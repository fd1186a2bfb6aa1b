"""linear_cross_entropy on both backends against torch 2.13's F.linear_cross_entropy (its
reference path, options=None): values and gradients with respect to input, linear_weight and
linear_bias; softcap and z_loss against their formula written on torch's ops; the class
weight's gradient; the tiles (chunks of rows, blocks of classes) and their memory; bfloat16;
the checks. The registry's sample grid runs through tests/test_parity.py as well."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import multiloss
from multiloss import testing

RNG = np.random.default_rng(11)
TOL = {"float64": 1e-12, "float32": testing.TOLERANCE["float32"]}
FLOOR = testing.SCALE_FLOOR


def _problem(n, d, c, out=(), prob=False, dtype="float64", bias=True, ignore=-100):
    batch = (n,) if n is not None else ()
    x = RNG.normal(size=batch + (d,)).astype(dtype)
    wl = RNG.normal(size=(c,) + out + (d,)).astype(dtype) * 0.7
    b = (RNG.normal(size=(c,) + out) * 0.5).astype(dtype) if bias else None
    if prob:
        t = RNG.dirichlet(np.ones(c), size=(batch + out) or None)
        t = np.moveaxis(np.asarray(t), -1, len(batch)).astype(dtype)
    else:
        t = RNG.integers(0, c, size=batch + out)
        if t.size > 2:
            t.flat[::4] = ignore
    return x, wl, t, b


def _formula(x, wl, t, b, w, ignore_index, ls, softcap, z_loss, reduction):
    """The definition on torch's ops (docs of the spec): F.linear, the cap, F.cross_entropy,
    z_loss * w[t] * logsumexp^2 (unweighted for probabilities); torch's 'mean'."""
    c, out = wl.shape[0], tuple(wl.shape[1:-1])
    y = F.linear(x, wl.reshape(-1, wl.shape[-1]), None if b is None else b.reshape(-1))
    y = y.reshape(tuple(x.shape[:-1]) + (c,) + out)
    if softcap is not None:
        y = softcap * torch.tanh(y / softcap)
    ignore = -100 if ignore_index is None else ignore_index
    loss = F.cross_entropy(y, t, weight=w, ignore_index=ignore, reduction="none",
                           label_smoothing=ls)
    prob = t.is_floating_point()
    if prob:
        wt, den = None, torch.tensor(float(loss.numel()), dtype=loss.dtype)
    else:
        counts = t != ignore
        wt = torch.ones_like(loss) if w is None else w[torch.where(counts, t, 0)]
        wt = torch.where(counts, wt, torch.zeros_like(wt))
        den = wt.sum()
    if z_loss:
        lse = torch.logsumexp(y, dim=0 if x.dim() == 1 else 1)
        loss = loss + z_loss * lse * lse * (1.0 if prob else wt)
    return {"none": lambda: loss, "sum": loss.sum, "mean": lambda: loss.sum() / den}[reduction]()


def _rel(a, b, dtype):
    return testing.rel_error(np.asarray(a, np.float64), np.asarray(b, np.float64), FLOOR[dtype])


def _torch_ref(x, wl, t, b, w, opts):
    red = opts.get("reduction", "mean")
    if opts.get("softcap") is None and not opts.get("z_loss"):
        return F.linear_cross_entropy(x, wl, t, linear_bias=b, weight=w, reduction=red,
                                      ignore_index=opts.get("ignore_index"),
                                      label_smoothing=opts.get("label_smoothing", 0.0))
    return _formula(x, wl, t, b, w, opts.get("ignore_index"), opts.get("label_smoothing", 0.0),
                    opts.get("softcap"), opts.get("z_loss", 0.0), red)


def _check_both(x, wl, t, b, w, opts, dtype):
    """Value and gradients (input, linear_weight, linear_bias) of both backends vs torch."""
    tt = torch.from_numpy(np.asarray(t))
    tx, tw = (torch.from_numpy(a).requires_grad_(True) for a in (x, wl))
    tb = None if b is None else torch.from_numpy(b).requires_grad_(True)
    tcw = None if w is None else torch.from_numpy(w)
    ref = _torch_ref(tx, tw, tt, tb, tcw, opts)
    ct = torch.from_numpy(RNG.uniform(0.5, 1.5, size=tuple(ref.shape)).astype(dtype))
    leaves = [tx, tw] + ([tb] if tb is not None else [])
    rgrads = torch.autograd.grad(ref, leaves, ct)

    # jax: the bias is an option; a traced one differentiates like an input
    def f(x, wl, b):
        loss = multiloss.get("linear_cross_entropy", backend="jax", linear_bias=b,
                             weight=w, **opts)
        return loss(x, wl, t)

    args = (jnp.asarray(x), jnp.asarray(wl), None if b is None else jnp.asarray(b))
    val, vjp = jax.vjp(f, *args)
    jgrads = [g for g in vjp(jnp.asarray(ct.numpy())) if g is not None]
    errs = {"jax/value": _rel(val, ref.detach(), dtype)}
    errs.update({f"jax/d{i}": _rel(g, r, dtype) for i, (g, r) in enumerate(zip(jgrads, rgrads))})

    # torch: a Parameter assigned to the module's linear_bias buffer trains it
    mod = multiloss.get("linear_cross_entropy", backend="torch", weight=w, **opts)
    lx, lw = (torch.from_numpy(a).requires_grad_(True) for a in (x, wl))
    if b is not None:
        mod.linear_bias = torch.nn.Parameter(torch.from_numpy(b.copy()))
    out = mod(lx, lw, tt)
    tl = [lx, lw] + ([mod.linear_bias] if b is not None else [])
    tgrads = torch.autograd.grad(out, tl, ct)
    errs["torch/value"] = _rel(out.detach(), ref.detach(), dtype)
    errs.update({f"torch/d{i}": _rel(g, r, dtype) for i, (g, r) in enumerate(zip(tgrads, rgrads))})
    bad = {k: v for k, v in errs.items() if not v <= TOL[dtype]}
    assert not bad, bad
    assert len(jgrads) == len(rgrads) == len(tgrads)
    return errs


TILES = {"chunk_size": 3, "memory_budget": 64}  # chunks of 3 rows of 7, blocks of 1 class
OVERLAP = {"chunk_size": 3, "memory_budget": 150}  # blocks of 2 (f64) or 4 (f32) of 5 classes
ROWS = {"chunk_size": 3}  # chunks of rows spanning every class (the last one shifted back)

CASES = [
    ("plain", {}, {}),
    ("none", {"reduction": "none"}, {}),
    ("sum,weight", {"reduction": "sum"}, {"weight": True}),
    ("weight,mean", {}, {"weight": True}),
    ("ignore_index", {"ignore_index": 2}, {"ignore": 2}),
    ("label_smoothing", {"label_smoothing": 0.2}, {"weight": True}),
    ("tiles", TILES, {}),
    ("rows", {**ROWS, "label_smoothing": 0.1, "z_loss": 0.01}, {"weight": True}),
    ("rows,none", {**ROWS, "reduction": "none", "softcap": 2.0}, {}),
    ("blocks-overlap", {**OVERLAP, "label_smoothing": 0.1, "softcap": 3.0}, {"weight": True}),
    ("blocks-overlap,prob", {**OVERLAP, "reduction": "none"}, {"prob": True, "weight": True}),
    ("tiles,none,ls", {**TILES, "reduction": "none", "label_smoothing": 0.1}, {"weight": True}),
    ("softcap", {"softcap": 2.0}, {}),
    ("z_loss", {"z_loss": 0.05}, {"weight": True}),
    ("softcap+z_loss,tiles,none", {**TILES, "softcap": 3.0, "z_loss": 0.01,
                                   "reduction": "none", "label_smoothing": 0.1}, {"weight": True}),
    ("kdim", {"reduction": "none"}, {"out": (2, 3)}),
    ("kdim,tiles,everything", {**TILES, "softcap": 3.0, "z_loss": 0.01, "label_smoothing": 0.1},
     {"out": (2,), "weight": True}),
    ("unbatched", {"label_smoothing": 0.1}, {"n": None}),
    ("prob", {"reduction": "none"}, {"prob": True, "weight": True}),
    ("prob,tiles,everything", {**TILES, "softcap": 2.0, "z_loss": 0.02, "label_smoothing": 0.2},
     {"prob": True, "weight": True}),
    ("prob,kdim", {"reduction": "sum"}, {"prob": True, "out": (2,)}),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opts,setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_values_and_gradients_against_torch(opts, setup, dtype):
    n = setup.get("n", 7)
    x, wl, t, b = _problem(n, 4, 5, setup.get("out", ()), setup.get("prob", False), dtype,
                           ignore=setup.get("ignore", -100))
    w = RNG.uniform(0.3, 2.0, 5).astype(dtype) if setup.get("weight") else None
    _check_both(x, wl, t, b, w, opts, dtype)
    _check_both(x, wl, t, None, w, opts, dtype)


def test_class_weight_gradient_on_jax():
    """The custom VJP's cotangent of the class weight (a traced option) against autodiff of
    the naive formula."""
    x, wl, t, b = _problem(9, 3, 6)
    w = RNG.uniform(0.3, 2.0, 6)
    for opts in ({}, {"label_smoothing": 0.2, "z_loss": 0.1, "softcap": 2.0, **TILES}):
        def ours(w, opts=opts):
            loss = multiloss.get("linear_cross_entropy", backend="jax", weight=w,
                                 linear_bias=b, reduction="sum", **opts)
            return loss(x, wl, t)

        def naive(w, opts=opts):
            y = x @ wl.T + b
            if opts.get("softcap"):
                y = opts["softcap"] * jnp.tanh(y / opts["softcap"])
            logp = jax.nn.log_softmax(y)
            e = opts.get("label_smoothing", 0.0)
            counts = t != -100
            safe = jnp.where(counts, t, 0)
            nll = -jnp.take_along_axis(logp, safe[:, None], 1)[:, 0] * w[safe]
            smooth = -jnp.sum(logp * w, 1)
            lse = jax.nn.logsumexp(y, 1)
            loss = (1 - e) * nll + e / 6 * smooth + opts.get("z_loss", 0.0) * lse**2 * w[safe]
            return jnp.sum(jnp.where(counts, loss, 0.0))

        g1, g2 = jax.grad(ours)(jnp.asarray(w)), jax.grad(naive)(jnp.asarray(w))
        assert testing.rel_error(g1, g2) < 1e-12


def test_non_uniform_cotangent_recomputes():
    """A sample_weight makes the cotangent differ per row: the saved gradients (for a uniform
    one) are not used, the tiles are recomputed; both agree with torch."""
    x, wl, t, b = _problem(10, 4, 6)
    sw = RNG.uniform(0.0, 2.0, 10)
    tx, tw = (torch.from_numpy(a).requires_grad_(True) for a in (x, wl))
    ref = F.linear_cross_entropy(tx, tw, torch.from_numpy(t), linear_bias=torch.from_numpy(b),
                                 reduction="none")
    counts = torch.from_numpy(t != -100).double()
    s = torch.from_numpy(sw)
    ref = (ref * s).sum() / (counts * s).sum()
    rg = torch.autograd.grad(ref, [tx, tw])
    for opts in ({}, TILES):
        loss = multiloss.get("linear_cross_entropy", backend="jax", linear_bias=b, **opts)
        v, g = jax.value_and_grad(lambda x, wl, loss=loss: loss(x, wl, t, sample_weight=sw),
                                  (0, 1))(x, wl)
        assert testing.rel_error(v, ref.detach().numpy()) < 1e-12
        assert all(testing.rel_error(a, r.numpy()) < 1e-12 for a, r in zip(g, rg))


def test_tiles_keep_memory_within_the_budget():
    """XLA's compiled temporaries of the jitted forward+backward: the tiles' few MiB, not the
    (N, C) logits (16 MiB here) nor its gradient."""
    n, d, c = 512, 64, 8192
    shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((c, d), jnp.float32),
              jax.ShapeDtypeStruct((n,), jnp.int32))
    loss = multiloss.get("linear_cross_entropy", backend="jax", memory_budget=2**20)

    def f(x, wl, t):
        return loss(x, wl, t)

    both = jax.jit(jax.value_and_grad(f, (0, 1))).lower(*shapes).compile().memory_analysis()
    fwd = jax.jit(f).lower(*shapes).compile().memory_analysis()
    if both is None or fwd is None:
        pytest.skip("this XLA backend has no memory analysis")
    logits = n * c * 4
    assert fwd.temp_size_in_bytes < logits / 4
    assert both.temp_size_in_bytes < logits / 4
    naive = jax.jit(jax.value_and_grad(
        lambda x, wl, t: jnp.mean(jax.nn.logsumexp(x @ wl.T, 1)), (0, 1))).lower(*shapes)
    nm = naive.compile().memory_analysis()
    assert both.temp_size_in_bytes < nm.temp_size_in_bytes / 4


def test_bfloat16_matches_float32_within_its_precision():
    """bfloat16 inputs: computed in float32 on JAX (the backend upcasts), in bfloat16 with
    float32 accumulation on torch (as F.linear_cross_entropy's reference path); the result matches the float32 loss of the same (rounded)
    inputs within 2^-7 relative (bfloat16's rounding of the result and of the logits)."""
    x, wl, t, _ = _problem(16, 8, 12, dtype="float32", bias=False)
    xb = jnp.asarray(x).astype(jnp.bfloat16)
    wb = jnp.asarray(wl).astype(jnp.bfloat16)
    ref = multiloss.get("linear_cross_entropy", backend="jax")(
        xb.astype(jnp.float32), wb.astype(jnp.float32), t)
    ours = multiloss.get("linear_cross_entropy", backend="jax")(xb, wb, t)
    assert ours.dtype == jnp.bfloat16
    assert abs(float(ours) - float(ref)) <= 2**-7 * abs(float(ref))
    tx = torch.from_numpy(np.array(xb.astype(jnp.float32))).bfloat16()
    tw = torch.from_numpy(np.array(wb.astype(jnp.float32))).bfloat16()
    out = multiloss.get("linear_cross_entropy", backend="torch")(tx, tw, torch.from_numpy(t))
    assert out.dtype == torch.bfloat16
    assert abs(float(out) - float(ref)) <= 2**-7 * abs(float(ref))


def test_torch_path_choice():
    """multiloss's chunked function (torch's chunked op, LinearCrossEntropyOptions, is not
    called: a zero Hessian, no autocast, NaN from ignored rows) gives torch's numbers, in one
    chunk and in several."""
    x, wl, t, b = _problem(6, 3, 4, dtype="float64")
    tx, tw, tt = torch.from_numpy(x), torch.from_numpy(wl), torch.from_numpy(t)
    ref = F.linear_cross_entropy(tx, tw, tt, linear_bias=torch.from_numpy(b))
    for opts in ({}, {"chunk_size": 2}):
        out = multiloss.get("linear_cross_entropy", backend="torch", linear_bias=b, **opts)(
            tx, tw, tt)
        assert torch.allclose(out, ref, rtol=1e-13, atol=0)


def test_alias_info_and_cli():
    assert multiloss.resolve("LinearCrossEntropyLoss").name == "linear_cross_entropy"
    info = multiloss.info("linear_cross_entropy")
    assert [i["name"] for i in info["inputs"]] == ["input", "linear_weight", "target"]
    names = {o["name"] for o in info["options"]}
    assert {"linear_bias", "weight", "ignore_index", "label_smoothing", "softcap", "z_loss",
            "chunk_size", "memory_budget"} <= names


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_checks(backend):
    def get(**o):
        return multiloss.get("linear_cross_entropy", backend=backend, **o)

    x, wl, t, _ = _problem(4, 3, 5, dtype="float32", bias=False)
    if backend == "torch":
        x, wl, t = torch.from_numpy(x), torch.from_numpy(wl), torch.from_numpy(t)
    with pytest.raises(ValueError, match="in_features"):
        get()(x, wl[:, :2], t)
    with pytest.raises(ValueError, match="class indices in \\[0, 5\\)"):
        get()(x, wl, t * 0 + 7)
    with pytest.raises(ValueError, match="linear_bias"):
        get(linear_bias=np.zeros(4, np.float32))(x, wl, t)
    with pytest.raises(ValueError, match="needs a batched input"):
        get()(x[0], wl.reshape(5, 1, 3) if backend == "jax" else wl.reshape(5, 1, 3), t[0])
    prob = np.full((4, 5), 0.2, np.float32)
    prob = torch.from_numpy(prob) if backend == "torch" else prob
    with pytest.raises(ValueError, match="ignore_index: must be None"):
        get(ignore_index=-100)(x, wl, prob)
    with pytest.raises(ValueError, match="softcap"):
        get(softcap=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        get(chunk_size=0)


# ---------------------------------------------------------------------------------------------
# shard_map, and non-finite inputs (found by tests/test_robustness.py's fuzzing)


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_under_shard_map_the_loop_carries_vary(kind):
    """Inside shard_map (check_vma) the loops' carries must vary like the inputs: a one-device
    mesh is enough to type-check them. Chunks of rows and blocks of classes both run."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:  # pragma: no cover - JAX before jax.shard_map
        pytest.skip("jax.shard_map is not available")
    x, wl, t, b = _problem(7, 4, 5, prob=kind == "prob", ignore=-100)
    w = RNG.uniform(0.5, 2.0, 5)
    opts = dict(chunk_size=3, memory_budget=200, linear_bias=b, weight=w, z_loss=0.01,
                label_smoothing=0.1)
    sw = RNG.uniform(0.5, 2.0, 7)
    plain = multiloss.get("linear_cross_entropy", "jax", **opts)
    dist = multiloss.get("linear_cross_entropy", "jax", axis_name="b", **opts)
    mesh = Mesh(np.array(jax.devices()[:1]), ("b",))
    rows = P("b")

    def loss(x, wl, sw):
        return dist(x, wl, t, sample_weight=sw)

    mapped = shard_map(jax.value_and_grad(loss, argnums=(0, 1)), mesh=mesh,
                       in_specs=(rows, P(), rows), out_specs=(P(), (rows, P())))
    v, (gx, gw) = mapped(x, wl, sw)
    v0, (gx0, gw0) = jax.value_and_grad(lambda x, wl: plain(x, wl, t, sample_weight=sw),
                                        argnums=(0, 1))(x, wl)
    for a, b_ in ((v, v0), (gx, gx0), (gw, gw0)):
        assert testing.rel_error(a, b_) <= 1e-12


def _inf_sample(seed, feature, value, prob, opts):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 3))
    x[1, feature] = value
    wl = rng.normal(size=(3, 3))
    t = rng.dirichlet(np.ones(3), size=4) if prob else np.array([-100, 0, 2, 1])
    from multiloss._registry import Sample

    return Sample(f"inf[{seed}]", (x, wl, t), {"reduction": "sum", **opts},
                  rng.uniform(0.5, 2.0, 4))


@pytest.mark.parametrize("prob", [False, True], ids=["index", "prob"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("opts", [{}, {"z_loss": 0.1, "weight": np.array([1.3, 0.4, 2.0])},
                                  {"chunk_size": 2, "memory_budget": 60}],
                         ids=["plain", "z_loss+weight", "tiles"])
def test_non_finite_features_give_the_references_nan_and_inf(prob, value, opts):
    """A feature of +-inf or NaN makes a row's logits +-inf (a NaN row, as log_softmax gives
    for a +inf logit) or NaN; an ignored row stays 0 (its z_loss too); the gradients are the
    reference's, NaN and inf included."""
    spec = multiloss.resolve("linear_cross_entropy")
    for feature in range(3):
        sample = _inf_sample(feature, feature, value, prob, opts)
        result = testing.compare(spec, sample, "float64")
        assert not result.message, result.message
        bad = {k: v for k, v in result.errors.items() if not v <= TOL["float64"]}
        assert not bad, (sample.id, bad)
