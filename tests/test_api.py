"""The public API on both backends: names, option validation, ``info``, the JAX callable under
jit/grad/vmap, the torch module, the quick start, lazy imports and missing backends."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import multiloss

jax.config.update("jax_enable_x64", True)

BACKENDS = ("jax", "torch")

# every canonical name and the torch.nn.functional function that defines it
TORCH_FUNCTIONAL = {
    "binary_cross_entropy": "binary_cross_entropy",
    "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
    "cross_entropy": "cross_entropy",
    "huber": "huber_loss",
    "kl_div": "kl_div",
    "l1": "l1_loss",
    "mse": "mse_loss",
    "nll": "nll_loss",
    "smooth_l1": "smooth_l1_loss",
    "multi_margin": "multi_margin_loss",
    "multilabel_margin": "multilabel_margin_loss",
    "soft_margin": "soft_margin_loss",
    "multilabel_soft_margin": "multilabel_soft_margin_loss",
    "poisson_nll": "poisson_nll_loss",
    "gaussian_nll": "gaussian_nll_loss",
    "ctc": "ctc_loss",
    "margin_ranking": "margin_ranking_loss",
    "hinge_embedding": "hinge_embedding_loss",
    "cosine_embedding": "cosine_embedding_loss",
    "triplet_margin": "triplet_margin_loss",
    "triplet_margin_with_distance": "triplet_margin_with_distance_loss",
}

# names users type, and the canonical loss each must give
EXPECTED_NAMES = {
    # short names
    "ce": "cross_entropy",
    "nll": "nll",
    "bce": "binary_cross_entropy",
    "bce_with_logits": "binary_cross_entropy_with_logits",
    "mse": "mse",
    "l1": "l1",
    "mae": "l1",
    "smooth_l1": "smooth_l1",
    "huber": "huber",
    "kld": "kl_div",
    # torch.nn class names
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll",
    "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
    "MSELoss": "mse",
    "L1Loss": "l1",
    "SmoothL1Loss": "smooth_l1",
    "HuberLoss": "huber",
    "KLDivLoss": "kl_div",
    # torch.nn.functional names
    **{fn: name for name, fn in TORCH_FUNCTIONAL.items()},
    # spelling variants (case, dashes, spaces)
    "crossentropyloss": "cross_entropy",
    "Cross-Entropy": "cross_entropy",
    "MSE": "mse",
    "smooth l1": "smooth_l1",
}


def _all_names():
    return [(alias, name) for name in multiloss.available()
            for alias in (name, *multiloss.info(name)["aliases"])]


def _kw(name):
    # kl_div's default reduction="mean" warns (as torch does); use the KL divergence itself
    return {"reduction": "batchmean"} if name == "kl_div" else {}


# ---------------------------------------------------------------------------------------------
# names


def test_available_lists_the_losses():
    names = multiloss.available()
    assert names == sorted(names)
    assert set(TORCH_FUNCTIONAL) <= set(names)
    regression = multiloss.available("regression")
    assert regression == sorted(regression)
    assert {"gaussian_nll", "huber", "l1", "mse", "poisson_nll", "smooth_l1"} <= set(regression)
    assert all(multiloss.info(n)["family"] == "regression" for n in regression)
    assert "cross_entropy" not in regression
    assert "cross_entropy" in multiloss.available("classification")
    assert "cross_entropy" not in multiloss.available("regression")


@pytest.mark.parametrize(("alias", "name"), _all_names())
def test_every_alias_resolves_to_its_spec(alias, name):
    spec = multiloss.resolve(alias)
    assert spec is multiloss.resolve(name)
    assert spec.name == name


@pytest.mark.parametrize(("alias", "name"), sorted(EXPECTED_NAMES.items()))
def test_user_names_resolve(alias, name):
    assert multiloss.resolve(alias) is multiloss.resolve(name)
    assert multiloss.resolve(alias).name == name


def test_aliases_are_unique():
    seen = {}
    for alias, name in _all_names():
        assert seen.setdefault(alias, name) == name, alias


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alias", ["ce", "CrossEntropyLoss", "cross_entropy", "mse_loss", "kld"])
def test_get_by_alias_on_both_backends(backend, alias):
    loss = multiloss.get(alias, backend=backend, **_kw(multiloss.resolve(alias).name))
    assert loss.spec is multiloss.resolve(alias)
    assert loss.backend == backend


def test_resolve_rejects_a_non_string():
    with pytest.raises(TypeError, match=r"name: expected a loss name \(str\), got int"):
        multiloss.resolve(3)


# ---------------------------------------------------------------------------------------------
# unknown names, options and bad option values


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("typo", "close"),
    [("cross_entropi", "cross_entropy"), ("CrossEntropyLos", "CrossEntropyLoss"),
     ("mse_los", "mse_loss"), ("hubber", "huber")],
)
def test_unknown_loss_lists_close_names(backend, typo, close):
    with pytest.raises(ValueError, match=rf"unknown loss '{typo}'.*closest: .*\b{close}\b") as e:
        multiloss.get(typo, backend=backend)
    assert "multiloss.available()" in str(e.value)
    with pytest.raises(ValueError, match=rf"\b{close}\b"):
        multiloss.resolve(typo)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_option_lists_valid_options(backend):
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'smoothing'") as e:
        multiloss.get("cross_entropy", backend=backend, smoothing=0.1)
    msg = str(e.value)
    assert "valid options are" in msg
    for opt in ("reduction", "weight", "ignore_index", "label_smoothing", "empty_reduction"):
        assert opt in msg
    # torch's deprecated size_average / reduce are not options
    with pytest.raises(TypeError, match=r"'size_average'.*valid options are: .*reduction"):
        multiloss.get("mse", backend=backend, size_average=True)


BAD_VALUES = [
    ("cross_entropy", {"reduction": "avg"}, "reduction", r"expected one of \[.*'mean'.*\], got 'avg'"),
    ("mse", {"reduction": "avg"}, "reduction", r"expected one of .*got 'avg'"),
    ("cross_entropy", {"label_smoothing": 1.5}, "label_smoothing", r"expected a value in \[0\.0, 1\.0\], got 1\.5"),
    ("cross_entropy", {"label_smoothing": -0.1}, "label_smoothing", r"expected a value in .*got -0\.1"),
    ("huber", {"delta": 0}, "delta", r"expected a value in \(0\.0, inf\], got 0"),
    ("huber", {"delta": -1.0}, "delta", r"expected a value in .*got -1\.0"),
    ("smooth_l1", {"beta": -1}, "beta", r"expected a value in \[0\.0, inf\], got -1"),
    ("mse", {"empty_reduction": "x"}, "empty_reduction", r"expected one of \['nan', 'zero'\], got 'x'"),
    ("cross_entropy", {"empty_reduction": "x"}, "empty_reduction", r"expected one of .*got 'x'"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "options", "option", "pattern"), BAD_VALUES,
                         ids=[f"{n}-{o}={v[o]!r}" for n, v, o, _ in BAD_VALUES])
def test_bad_option_value_names_the_option(backend, name, options, option, pattern):
    with pytest.raises(ValueError, match=rf"^{option}: {pattern}"):
        multiloss.get(name, backend=backend, **options)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "options", "option"),
    [("cross_entropy", {"label_smoothing": "0.1"}, "label_smoothing"),
     ("cross_entropy", {"ignore_index": 1.5}, "ignore_index"),
     ("kl_div", {"log_target": 1, "reduction": "batchmean"}, "log_target"),
     ("mse", {"validate": "yes"}, "validate")],
)
def test_option_of_wrong_type_raises_typeerror(backend, name, options, option):
    with pytest.raises(TypeError, match=rf"^{option}: expected an? .*, got "):
        multiloss.get(name, backend=backend, **options)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(TORCH_FUNCTIONAL))
def test_batchmean_only_for_kl_div(backend, name):
    if name == "kl_div":
        loss = multiloss.get(name, backend=backend, reduction="batchmean")
        assert loss.options["reduction"] == "batchmean"
    else:
        with pytest.raises(ValueError, match=r"^reduction: expected one of .*got 'batchmean'"):
            multiloss.get(name, backend=backend, reduction="batchmean")


def test_kl_div_mean_warns_like_torch():
    with pytest.warns(UserWarning, match="batchmean"):
        multiloss.get("kl_div", backend="jax")


@pytest.mark.parametrize("backend", ["tensorflow", "JAX", "", None])
def test_unknown_backend(backend):
    with pytest.raises(ValueError, match=r"backend: expected one of \['jax', 'torch'\], got "):
        multiloss.get("mse", backend=backend)


# ---------------------------------------------------------------------------------------------
# info


@pytest.mark.parametrize("name", sorted(TORCH_FUNCTIONAL))
def test_info_describes_every_loss(name):
    info = multiloss.info(name)
    assert info["name"] == name
    assert info["family"] in {"classification", "regression", "distribution", "ranking",
                              "sequence"}
    assert name in multiloss.available(info["family"])
    assert isinstance(info["aliases"], list) and info["aliases"]
    assert isinstance(info["formula"], str) and info["formula"].strip()
    assert isinstance(info["reference"], str)
    assert info["reference"].startswith(f"torch.nn.functional.{TORCH_FUNCTIONAL[name]} ")
    assert info["summary"]
    # torch's positional inputs, in torch's order
    sig = inspect.signature(getattr(F, TORCH_FUNCTIONAL[name]))
    positional = [k for k, p in sig.parameters.items() if p.default is inspect.Parameter.empty]
    assert [i["name"] for i in info["inputs"]] == positional
    # info by an alias is the same
    for alias in info["aliases"]:
        assert multiloss.info(alias) == info

    opts = {o["name"]: o for o in info["options"]}
    for o in info["options"]:
        assert set(o) >= {"name", "default", "allowed", "doc"}
        assert o["doc"]
    assert opts["reduction"]["default"] == "mean"
    assert opts["empty_reduction"]["default"] == "nan"
    assert opts["validate"]["default"] is True
    assert info["reductions"][:4] == ["mean", "sum", "none", "sum_over_batch_size"]
    assert ("batchmean" in info["reductions"]) == (name == "kl_div")

    # torch's option names and defaults: every option torch.nn.functional has (but the
    # deprecated size_average / reduce) is an option here, with torch's default
    torch_opts = {
        k: p.default for k, p in sig.parameters.items()
        if k not in positional and k not in ("size_average", "reduce")
    }
    for k, default in torch_opts.items():
        assert k in opts, f"{name}: torch's option {k!r} is missing"
        assert opts[k]["default"] == default, (name, k)
    # and nothing beyond torch's but the contract's own two (and the opt-in torch.compile mode
    # of cross_entropy, issue 7's ``compile=True``, and its causal-LM ``shift``, issue 17's:
    # transformers' ForCausalLMLoss)
    extras = {"cross_entropy": {"compile", "shift"}}.get(name, set())
    assert set(opts) - set(torch_opts) == {"empty_reduction", "validate"} | extras


# ---------------------------------------------------------------------------------------------
# JAX


def _ce_problem(rng, n=4, c=3):
    x = rng.normal(size=(n, c))
    t = rng.integers(0, c, size=n)
    return x, t


def test_jax_result_is_a_jax_array_and_numpy_equals_jax_inputs():
    rng = np.random.default_rng(0)
    x, t = _ce_problem(rng)
    ce = multiloss.get("cross_entropy", backend="jax", weight=np.array([1.0, 2.0, 0.5]))
    out_np = ce(x, t)
    out_jax = ce(jnp.asarray(x), jnp.asarray(t))
    assert isinstance(out_np, jax.Array)
    assert isinstance(out_jax, jax.Array)
    assert out_np.shape == ()
    assert out_np.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out_np), np.asarray(out_jax), rtol=1e-14)
    # and mixed numpy / jax
    np.testing.assert_allclose(np.asarray(ce(jnp.asarray(x), t)), np.asarray(out_np), rtol=1e-14)
    mse = multiloss.get("mse", backend="jax", reduction="none")
    y = rng.normal(size=(2, 3))
    out = mse(y, np.zeros((2, 3)))
    assert isinstance(out, jax.Array)
    np.testing.assert_allclose(np.asarray(out), y**2, rtol=1e-14)


def test_jax_under_jit_equals_eager():
    rng = np.random.default_rng(1)
    x, t = _ce_problem(rng)
    t[1] = -100
    sw = rng.uniform(0.5, 1.5, size=4)
    ce = multiloss.get("ce", backend="jax", label_smoothing=0.2, weight=np.array([1.0, 0.5, 2.0]))

    @jax.jit
    def user(x, t, sw):
        return 2.0 * ce(x, t, sample_weight=sw)

    np.testing.assert_allclose(np.asarray(user(x, t, sw)), 2.0 * np.asarray(ce(x, t, sample_weight=sw)),
                               rtol=1e-12)


def test_jax_grad_of_a_user_function():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 2))
    y = rng.normal(size=(3, 2))
    mse = multiloss.get("mse", backend="jax")

    def user(x):
        return 3.0 * mse(x, y)

    g = jax.grad(user)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g), 3.0 * 2.0 * (x - y) / x.size, rtol=1e-12)
    # under jit as well, and value_and_grad's value equals the eager value
    v, g2 = jax.jit(jax.value_and_grad(user))(x)
    np.testing.assert_allclose(np.asarray(g2), np.asarray(g), rtol=1e-12)
    np.testing.assert_allclose(float(v), 3.0 * float(mse(x, y)), rtol=1e-12)


def test_jax_grad_matches_torch_autograd():
    rng = np.random.default_rng(3)
    x, t = _ce_problem(rng, n=5, c=4)
    t[2] = -100
    w = np.array([1.0, 2.0, 0.5, 1.5])
    opts = dict(weight=w, label_smoothing=0.1)
    ce_j = multiloss.get("cross_entropy", backend="jax", **opts)
    g_j = jax.grad(lambda x: ce_j(x, t))(jnp.asarray(x))
    xt = torch.tensor(x, requires_grad=True)
    F.cross_entropy(xt, torch.as_tensor(t), weight=torch.as_tensor(w), label_smoothing=0.1).backward()
    np.testing.assert_allclose(np.asarray(g_j), xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_jax_vmap_equals_per_example_calls():
    rng = np.random.default_rng(4)
    # per-example cross-entropy: unbatched input (C,) with a scalar class index
    x, t = _ce_problem(rng, n=5, c=3)
    ce = multiloss.get("cross_entropy", backend="jax", weight=np.array([1.0, 2.0, 0.5]))
    per = jax.vmap(lambda xi, ti: ce(xi, ti))(x, t)
    assert per.shape == (5,)
    expected = [float(ce(x[i], t[i])) for i in range(5)]
    np.testing.assert_allclose(np.asarray(per), expected, rtol=1e-12)
    # per-example mse over rows, inside jit
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    mse = multiloss.get("mse", backend="jax")
    per = jax.jit(jax.vmap(mse))(a, b)
    np.testing.assert_allclose(np.asarray(per), [float(mse(a[i], b[i])) for i in range(4)],
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(per), ((a - b) ** 2).mean(axis=1), rtol=1e-12)
    # per-example gradients
    g = jax.vmap(jax.grad(mse))(a, b)
    np.testing.assert_allclose(np.asarray(g), 2 * (a - b) / 3, rtol=1e-12)


def test_jax_does_not_retrace_on_same_shapes(monkeypatch):
    from multiloss.losses.classification import _jax as impl

    traces = []
    original = impl.cross_entropy

    def counting(*args, **kwargs):
        traces.append(1)  # a Python side effect: runs only when JAX traces
        return original(*args, **kwargs)

    monkeypatch.setattr(impl, "cross_entropy", counting)
    ce = multiloss.get("cross_entropy", backend="jax", weight=np.array([1.0, 2.0, 0.5]))
    rng = np.random.default_rng(5)
    x1, t1 = _ce_problem(rng)
    x2, t2 = _ce_problem(rng)
    ce(x1, t1)
    ce(x2, t2)
    assert len(traces) == 1
    cache_size = getattr(ce._plain, "_cache_size", None)
    if cache_size is not None:  # jax's compiled-call cache: one entry for the one signature
        assert cache_size() == 1
    # jax arrays of the same shapes and dtypes reuse the trace (the C++ dispatch cache may
    # hold a second entry for them, but Python does not trace again)
    ce(jnp.asarray(x1), jnp.asarray(t1))
    ce(jnp.asarray(x2), jnp.asarray(t2))
    assert len(traces) == 1
    # the counter counts: a new shape traces again
    ce(rng.normal(size=(6, 3)), np.zeros(6, np.int64))
    assert len(traces) == 2


def test_jax_array_option_is_not_baked_into_the_trace(monkeypatch):
    """Two losses that differ only in ``weight`` values give different numbers (the weight is
    a jit argument), and a user's jit over the loss traces once for repeated calls."""
    rng = np.random.default_rng(6)
    x, t = _ce_problem(rng)
    a = multiloss.get("ce", backend="jax", weight=np.array([1.0, 1.0, 1.0]))
    b = multiloss.get("ce", backend="jax", weight=np.array([1.0, 5.0, 0.1]))
    assert not np.isclose(float(a(x, t)), float(b(x, t)))
    traced = []

    @jax.jit
    def user(x, t):
        traced.append(1)
        return b(x, t)

    user(x, t)
    user(x + 1.0, t)
    assert len(traced) == 1


# ---------------------------------------------------------------------------------------------
# torch


def test_torch_loss_is_a_module_with_array_options_as_buffers():
    w = np.array([1.0, 2.0, 0.5], np.float32)
    ce = multiloss.get("CrossEntropyLoss", backend="torch", weight=w)
    assert isinstance(ce, torch.nn.Module)
    assert "weight" in dict(ce.named_buffers())
    sd = ce.state_dict()
    assert set(sd) == {"weight"}
    np.testing.assert_array_equal(sd["weight"].numpy(), w)

    bce = multiloss.get("bce_with_logits", backend="torch", weight=np.ones(3), pos_weight=np.full(3, 2.0))
    assert set(bce.state_dict()) == {"weight", "pos_weight"}
    # no array option given: nothing in the state dict
    assert set(multiloss.get("ce", backend="torch").state_dict()) == set()
    assert list(multiloss.get("mse", backend="torch").parameters()) == []


def test_torch_state_dict_round_trip():
    src = multiloss.get("ce", backend="torch", weight=np.array([1.0, 2.0, 0.5]))
    dst = multiloss.get("ce", backend="torch", weight=np.ones(3))
    dst.load_state_dict(src.state_dict())
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(dst(x, t), src(x, t))


def test_torch_buffer_does_not_alias_a_numpy_option():
    w = np.ones(3)
    ce = multiloss.get("ce", backend="torch", weight=w)
    src = multiloss.get("ce", backend="torch", weight=np.array([1.0, 2.0, 0.5]))
    ce.load_state_dict(src.state_dict())  # writes into the buffer in place
    w_user_after_load = w.copy()
    w[:] = 7.0
    np.testing.assert_array_equal(w_user_after_load, np.ones(3))
    torch.testing.assert_close(ce.weight, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))


def test_torch_buffer_does_not_alias_a_tensor_option():
    w = torch.ones(3, dtype=torch.float64)
    ce = multiloss.get("ce", backend="torch", weight=w)
    w[0] = 5.0
    torch.testing.assert_close(ce.weight, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("convert", ["to", "double"])
def test_torch_module_follows_dtype_conversion(convert):
    w = np.array([1.0, 2.0, 0.5], np.float32)
    ce = multiloss.get("cross_entropy", backend="torch", weight=w, label_smoothing=0.1)
    x32 = torch.randn(4, 3)
    t = torch.tensor([0, 2, -100, 1])
    out32 = ce(x32, t)
    assert out32.dtype == torch.float32
    ce2 = ce.to(torch.float64) if convert == "to" else ce.double()
    assert ce2 is ce
    assert ce.weight.dtype == torch.float64
    x64 = x32.double()
    out64 = ce(x64, t)
    assert out64.dtype == torch.float64
    ref = F.cross_entropy(x64, t, weight=torch.as_tensor(w, dtype=torch.float64), label_smoothing=0.1)
    torch.testing.assert_close(out64, ref)


def test_torch_numpy_inputs_give_a_tensor():
    rng = np.random.default_rng(7)
    x, t = _ce_problem(rng)
    ce = multiloss.get("ce", backend="torch")
    out = ce(x, t)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.cross_entropy(torch.as_tensor(x), torch.as_tensor(t)))
    mse = multiloss.get("mse", backend="torch")
    out = mse(np.ones(3), np.zeros(3), sample_weight=np.array([1.0, 0.0, 1.0]))
    assert isinstance(out, torch.Tensor)
    assert float(out) == pytest.approx(1.0)
    # a mix of tensor and numpy
    assert isinstance(mse(torch.ones(3, dtype=torch.float64), np.zeros(3)), torch.Tensor)


def test_torch_autograd():
    rng = np.random.default_rng(8)
    x, t = _ce_problem(rng, n=5, c=4)
    t[0] = -100
    w = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    ce = multiloss.get("ce", backend="torch", weight=w, label_smoothing=0.1)
    xa = torch.tensor(x, requires_grad=True)
    ce(xa, torch.as_tensor(t)).backward()
    xb = torch.tensor(x, requires_grad=True)
    F.cross_entropy(xb, torch.as_tensor(t), weight=w, label_smoothing=0.1).backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    # through a sample weight and a float target, too
    mse = multiloss.get("mse", backend="torch")
    a = torch.tensor(rng.normal(size=(2, 3)), requires_grad=True)
    b = torch.tensor(rng.normal(size=(2, 3)), requires_grad=True)
    sw = torch.tensor([[1.0], [0.5]], dtype=torch.float64)
    mse(a, b, sample_weight=sw).backward()
    d = a.detach() - b.detach()
    denom = (sw.expand(2, 3)).sum()
    torch.testing.assert_close(a.grad, 2 * sw * d / denom)
    torch.testing.assert_close(b.grad, -2 * sw * d / denom)


def test_torch_module_in_a_model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3).double())
    model.loss = multiloss.get("ce", backend="torch", weight=np.array([1.0, 2.0, 0.5]))
    assert "loss.weight" in model.state_dict()
    x = torch.randn(4, 2, dtype=torch.float64)
    model.loss(model[0](x), torch.tensor([0, 1, 2, 0])).backward()
    assert model[0].weight.grad is not None


# ---------------------------------------------------------------------------------------------
# the quick start


def test_quick_start_matches_torch():
    ce = multiloss.get("cross_entropy", backend="jax", weight=np.array([1.0, 2.0, 0.5]),
                       ignore_index=-100, label_smoothing=0.1)
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(6, 3)) * 2
    labels = np.array([0, 2, -100, 1, 1, -100])

    value = ce(logits, labels)
    grad = jax.grad(lambda z: ce(z, labels))(jnp.asarray(logits))

    xt = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    ref = F.cross_entropy(xt, torch.as_tensor(labels), weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64),
                          ignore_index=-100, label_smoothing=0.1)
    ref.backward()
    assert value.dtype == jnp.float64
    np.testing.assert_allclose(float(value), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad), xt.grad.numpy(), rtol=1e-10, atol=1e-15)
    # the ignored rows get no gradient
    assert np.all(np.asarray(grad)[[2, 5]] == 0.0)

    # the torch twin of the quick start gives the same number
    ce_t = multiloss.get("CrossEntropyLoss", backend="torch", weight=np.array([1.0, 2.0, 0.5]),
                         ignore_index=-100, label_smoothing=0.1)
    torch.testing.assert_close(ce_t(torch.as_tensor(logits), torch.as_tensor(labels)), ref.detach())


# ---------------------------------------------------------------------------------------------
# imports


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_import_multiloss_imports_neither_torch_nor_jax():
    proc = _run_python(
        """
        import sys
        import multiloss
        def frameworks():
            return sorted(m for m in sys.modules
                          if m.split(".")[0] in ("torch", "jax", "jaxlib", "flax", "optax"))
        assert frameworks() == [], ("import", frameworks())
        names = multiloss.available()
        assert "cross_entropy" in names
        for name in names:
            info = multiloss.info(name)
            for alias in info["aliases"]:
                assert multiloss.resolve(alias).name == name
        multiloss.resolve("CrossEntropyLoss")
        multiloss.available("regression")
        try:
            multiloss.resolve("cross_entropi")
        except ValueError:
            pass
        assert frameworks() == [], ("registry", frameworks())
        print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


_BLOCK = """
import sys
import importlib.abc

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {blocked!r} or name.startswith({blocked!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Block())
for m in [m for m in sys.modules if m == {blocked!r} or m.startswith({blocked!r} + ".")]:
    del sys.modules[m]

import multiloss
assert multiloss.available()  # the registry works without the framework
try:
    multiloss.get("mse", backend={blocked!r})
except ImportError as e:
    print("MESSAGE:", e)
else:
    raise SystemExit("no ImportError")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_backend_names_the_extra(backend):
    proc = _run_python(_BLOCK.format(blocked=backend))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    msg = proc.stdout
    assert "MESSAGE:" in msg
    assert f"multiloss[{backend}]" in msg
    assert re.search(rf"pip install 'multiloss\[{backend}\]'", msg)
    assert f"backend '{backend}' needs {backend}" in msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_backend_via_sys_modules_none(backend):
    proc = _run_python(
        f"""
        import sys
        sys.modules[{backend!r}] = None
        import multiloss
        try:
            multiloss.get("cross_entropy", backend={backend!r})
        except ImportError as e:
            assert "multiloss[{backend}]" in str(e), str(e)
            print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


def test_no_warning_on_plain_construction():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in TORCH_FUNCTIONAL:
            for backend in BACKENDS:
                multiloss.get(name, backend=backend, **_kw(name))


def test_every_torch_nn_loss_class_has_a_twin():
    import torch.nn.modules.loss as torch_losses

    classes = sorted(
        name for name, cls in vars(torch_losses).items()
        if inspect.isclass(cls) and issubclass(cls, torch_losses._Loss) and not name.startswith("_")
    )
    # LinearCrossEntropyLoss (new in torch 2.13) is multiloss's linear_cross_entropy
    missing = [name for name in classes if not _resolves(name)]
    assert not missing, f"torch.nn loss classes without a multiloss twin: {missing}"
    assert len(classes) >= 22


def _resolves(name):
    try:
        multiloss.resolve(name)
    except ValueError:
        return False
    return True


def test_torch_hot_path_keeps_tensor_subclass_dispatch():
    """cross_entropy and nll call torch's op directly for plain tensors (the small-call hot
    path); a tensor subclass still goes through torch.nn.functional and its
    __torch_function__, with the same numbers."""
    calls = []

    class Logged(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append(getattr(func, "__name__", str(func)))
            return super().__torch_function__(func, types, args, kwargs or {})

    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0])
    for name, fn, inp in (("cross_entropy", F.cross_entropy, x),
                          ("nll", F.nll_loss, x.log_softmax(1))):
        loss = multiloss.get(name, backend="torch")
        plain = loss(inp, t)  # the direct op (and the signature's cached plan)
        calls.clear()
        sub = loss(inp.as_subclass(Logged), t)
        assert fn.__name__ in calls, (name, calls)
        assert torch.equal(sub.as_subclass(torch.Tensor), plain)
        assert torch.equal(plain, fn(inp, t))


def _hot_calls(loss, *inputs):
    """Call twice: the first call checks the signature and caches the hot path, the second
    takes it."""
    loss(*inputs)
    return loss(*inputs)


def test_torch_hot_path_runs_module_hooks():
    """The torch module's own __call__ (the hot path) hands over to torch.nn.Module.__call__
    as soon as a hook is registered: forward hooks, pre-hooks that change the inputs, global
    hooks."""
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0])
    loss = multiloss.get("cross_entropy", backend="torch")
    _hot_calls(loss, x, t)
    seen = []
    handle = loss.register_forward_hook(lambda m, i, o: seen.append(o))
    out = loss(x, t)
    assert len(seen) == 1 and seen[0] is out
    handle.remove()
    handle = loss.register_forward_pre_hook(lambda m, i: (2 * i[0], i[1]))
    assert torch.equal(loss(x, t), F.cross_entropy(2 * x, t))
    handle.remove()
    assert torch.equal(loss(x, t), F.cross_entropy(x, t))
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append("global"))
    try:
        loss(x, t)
    finally:
        handle.remove()
    assert seen[-1] == "global"


def test_torch_hot_path_reads_a_reassigned_class_weight():
    """The hot path reads the class-weight buffer on every call: assigning a new weight after
    the plan was cached changes the result."""
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0, 2])
    for reduction in ("sum", "mean", "none"):
        loss = multiloss.get("cross_entropy", backend="torch", reduction=reduction)
        assert torch.equal(_hot_calls(loss, x, t), F.cross_entropy(x, t, reduction=reduction))
        w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
        loss.weight = w
        torch.testing.assert_close(loss(x, t), F.cross_entropy(x, t, weight=w,
                                                               reduction=reduction),
                                   rtol=1e-14, atol=0)
        loss.weight = None
        assert torch.equal(loss(x, t), F.cross_entropy(x, t, reduction=reduction))


def test_torch_hot_path_under_torch_compile():
    """A multiloss module called inside torch.compile (dynamo traces its __call__) gives
    F.cross_entropy's value and gradient."""
    loss = multiloss.get("cross_entropy", backend="torch")
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 0, 1])
    _hot_calls(loss, x, t)
    compiled = torch.compile(lambda x, t: loss(x, t), backend="eager", fullgraph=False)
    out = compiled(x, t)
    (gx,) = torch.autograd.grad(out, x)
    ref = F.cross_entropy(x, t)
    (rx,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(out, ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(gx, rx, rtol=1e-14, atol=0)


def test_values_on_an_accelerator_are_not_read():
    """The value checks read NumPy arrays, JAX arrays on CPU and torch CPU tensors; an array
    on another platform is not read (that would synchronise the device on every call)."""
    from multiloss.backends import _jax as bj
    from multiloss.backends import _torch as bt

    class OnGPU:
        def platform(self):
            return "gpu"

    assert bj._read_array_impl(OnGPU()) is None
    assert bj._read_array_impl(jnp.arange(3)).tolist() == [0, 1, 2]
    assert bj._reader(np.arange(3)) is bj._same
    assert bt._reader(torch.arange(3)) is bt._read_cpu
    assert bt._reader(torch.empty(3, device="meta")) is None
    assert bt._concrete(torch.empty(3, device="meta")) is None
