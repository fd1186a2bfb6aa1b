"""multiloss.combine (fixed weights) and multiloss.nn's uncertainty weighting on both backends:
values against hand-computed sums, per-part values, gradients, nnx versus torch parity of the
learnable log-variances, parameter conversion both ways and the errors."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import multiloss
import multiloss.nn as mnn

jax.config.update("jax_enable_x64", True)

TOL = 1e-12
W = {"ce": 0.5, "mse": 0.3, "l1": 0.2}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(8, 3)),
        "y": np.array([0, 2, 1, -100, 2, 0, 1, 1]),
        "p": rng.normal(size=(8, 4)),
        "t": rng.normal(size=(8, 4)),
        "cw": np.array([1.0, 2.0, 0.5]),
        "sw": rng.uniform(0.1, 1.0, size=(8, 1)),
    }


def parts_for(data):
    return {"ce": multiloss.get("cross_entropy", backend="jax", weight=data["cw"],
                                label_smoothing=0.1),
            "mse": "mse", "l1": "l1"}


def inputs_for(data, to=np.asarray):
    return {"ce": (to(data["x"]), to(data["y"])), "mse": (to(data["p"]), to(data["t"])),
            "l1": (to(data["p"]), to(data["t"]))}


def hand(data):
    """0.5 * ce + 0.3 * mse + 0.2 * l1 by torch.nn.functional."""
    x, y, p, t = (torch.tensor(data[k]) for k in "xypt")
    ce = F.cross_entropy(x, y, weight=torch.tensor(data["cw"]), label_smoothing=0.1).item()
    mse, l1 = F.mse_loss(p, t).item(), F.l1_loss(p, t).item()
    return 0.5 * ce + 0.3 * mse + 0.2 * l1, {"ce": ce, "mse": mse, "l1": l1}


# ---------------------------------------------------------------------------------------------
# combine: values, per-part values, gradients


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_combine_value_and_parts_match_hand_sum(data, backend):
    loss = multiloss.combine(parts_for(data), W, backend=backend)
    total, parts = loss(inputs_for(data, np.asarray if backend == "jax" else torch.tensor))
    ref_total, ref_parts = hand(data)
    assert list(parts) == ["ce", "mse", "l1"]
    assert rel(total, ref_total) < TOL
    for k in ref_parts:
        assert rel(parts[k], ref_parts[k]) < TOL, k
    assert rel(total, sum(W[k] * float(parts[k]) for k in W)) < TOL


def test_combine_default_weights_are_one(data):
    loss = multiloss.combine({"mse": "mse", "l1": "l1"})
    total, parts = loss({"mse": (data["p"], data["t"]), "l1": (data["p"], data["t"])})
    assert rel(total, float(parts["mse"]) + float(parts["l1"])) < TOL


def test_combine_gradients_match_torch(data):
    jl = multiloss.combine(parts_for(data), W, backend="jax")
    tl = multiloss.combine(parts_for(data), W, backend="torch")

    def f(x, p):
        ins = inputs_for(data)
        ins["ce"] = (x, data["y"])
        ins["mse"] = (p, data["t"])
        ins["l1"] = (p, data["t"])
        return jl(ins)

    (total, parts), (gx, gp) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
        data["x"], data["p"])
    x = torch.tensor(data["x"], requires_grad=True)
    p = torch.tensor(data["p"], requires_grad=True)
    t, y = torch.tensor(data["t"]), torch.tensor(data["y"])
    tt, _ = tl({"ce": (x, y), "mse": (p, t), "l1": (p, t)})
    tx, tp = torch.autograd.grad(tt, (x, p))
    assert rel(total, tt.item()) < TOL
    assert rel(gx, tx) < TOL and rel(gp, tp) < TOL
    assert float(jnp.abs(gx[3]).sum()) == 0.0  # the ignored target gets no gradient
    # the gradient of the total is the weighted sum of the parts' gradients
    gx_ce = jax.grad(lambda x: jl.losses["ce"](x, data["y"]))(data["x"])
    assert rel(gx, 0.5 * gx_ce) < TOL


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_combine_sample_weight_per_part(data, backend):
    loss = multiloss.combine({"mse": "mse", "l1": "l1"}, {"mse": 2.0, "l1": 1.0}, backend=backend)
    to = np.asarray if backend == "jax" else torch.tensor
    ins = {"mse": (to(data["p"]), to(data["t"])), "l1": (to(data["p"]), to(data["t"]))}
    total, parts = loss(ins, sample_weight={"mse": to(data["sw"])})
    p, t, s = data["p"], data["t"], data["sw"]
    mse_ref = np.sum(s * (p - t) ** 2) / np.sum(np.broadcast_to(s, p.shape))
    assert rel(parts["mse"], mse_ref) < TOL
    assert rel(parts["l1"], np.mean(np.abs(p - t))) < TOL
    assert rel(total, 2 * mse_ref + np.mean(np.abs(p - t))) < TOL


def test_combine_jax_parts_of_every_kind(data):
    """A torch criterion, a multiloss torch loss (its buffers), a name and a callable, on JAX."""
    crit = torch.nn.CrossEntropyLoss(weight=torch.tensor(data["cw"]), label_smoothing=0.1)
    tl = multiloss.get("mse", backend="torch", weight=np.ones(4))
    with torch.no_grad():
        tl.weight.mul_(3.0)  # a changed buffer is what is converted

    def my_l1(a, b):
        return jnp.mean(jnp.abs(a - b))

    loss = multiloss.combine({"ce": crit, "mse": tl, "l1": my_l1}, W)
    total, parts = loss(inputs_for(data))
    ref_total, ref = hand(data)
    assert rel(parts["ce"], ref["ce"]) < TOL and rel(parts["l1"], ref["l1"]) < TOL
    assert rel(parts["mse"], ref["mse"]) < TOL  # weight 3 everywhere: normalised away
    assert rel(total, ref_total) < TOL
    jitted = jax.jit(lambda ins: loss(ins))
    assert rel(jitted(inputs_for(data)).total, ref_total) < TOL


def test_combine_torch_module_carries_buffers(data):
    loss = multiloss.combine(parts_for(data), W, backend="torch")
    assert isinstance(loss, torch.nn.Module)
    assert "parts.ce.weight" in loss.state_dict()
    loss = loss.to(torch.float32)
    total, _ = loss(inputs_for(data, lambda a: torch.tensor(a).float()
                               if np.asarray(a).dtype.kind == "f" else torch.tensor(a)))
    assert total.dtype == torch.float32
    assert abs(total.item() - hand(data)[0]) < 1e-5


# ---------------------------------------------------------------------------------------------
# combine: bad input


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("parts, weights, exc, match", [
    (["mse"], None, TypeError, r"parts: expected a dict"),
    ({}, None, ValueError, r"parts: expected at least one part"),
    ({"a.b": "mse"}, None, TypeError, r"parts: expected part names"),
    ({"mse": 3}, None, TypeError, r"parts\['mse'\]: expected a loss name"),
    ({"mse": "msee"}, None, ValueError, r"parts\['mse'\]: name: unknown loss 'msee'"),
    ({"mse": "mse", "l1": "l1"}, {"mse": 1.0}, ValueError, r"weights: .*missing \['l1'\]"),
    ({"mse": "mse"}, {"mse": 1.0, "x": 2.0}, ValueError, r"weights: .*unknown \['x'\]"),
    ({"mse": "mse"}, {"mse": float("nan")}, ValueError, r"weights\['mse'\]: expected a finite"),
    ({"mse": "mse"}, {"mse": True}, TypeError, r"weights\['mse'\]: expected a real number"),
    ({"mse": "mse"}, [1.0], TypeError, r"weights: expected a dict"),
])
def test_combine_bad_construction(backend, parts, weights, exc, match):
    with pytest.raises(exc, match=match):
        multiloss.combine(parts, weights, backend=backend)


def test_combine_bad_backend_and_per_element_part():
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        multiloss.combine({"mse": "mse"}, backend="tf")
    for backend in ("jax", "torch"):
        with pytest.raises(ValueError, match=r"parts\['mse'\]: mse has reduction='none'"):
            multiloss.combine({"mse": multiloss.get("mse", backend=backend, reduction="none")},
                              backend=backend)
    with pytest.raises(ValueError, match=r"parts\['ce'\]: the criterion has reduction='none'"):
        multiloss.combine({"ce": torch.nn.CrossEntropyLoss(reduction="none")})

    class Custom(torch.nn.MSELoss):
        def forward(self, a, b):
            return super().forward(a, b) * 2

    with pytest.raises(TypeError, match=r"parts\['m'\]: criterion: .*Custom subclasses torch.nn.MSELoss but overrides forward"):
        multiloss.combine({"m": Custom()})


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_combine_bad_call(data, backend):
    to = np.asarray if backend == "jax" else torch.tensor
    p, t = to(data["p"]), to(data["t"])
    loss = multiloss.combine({"mse": "mse", "l1": "l1"}, backend=backend)
    with pytest.raises(TypeError, match=r"inputs: expected a dict"):
        loss([(p, t), (p, t)])
    with pytest.raises(ValueError, match=r"inputs: .*missing \['l1'\]"):
        loss({"mse": (p, t)})
    with pytest.raises(TypeError, match=r"inputs\['l1'\]: expected a tuple"):
        loss({"mse": (p, t), "l1": p})
    with pytest.raises(ValueError, match=r"sample_weight: .*unknown \['ce'\]"):
        loss({"mse": (p, t), "l1": (p, t)}, sample_weight={"ce": p})
    with pytest.raises(TypeError, match=r"sample_weight: expected a dict"):
        loss({"mse": (p, t), "l1": (p, t)}, sample_weight=p)
    with pytest.raises(ValueError, match=r"mse: expected|input|shape"):
        loss({"mse": (p, t[:, :2]), "l1": (p, t)})  # the part's own check
    vec = multiloss.combine({"v": (lambda a, b: (a - b) ** 2)}, backend=backend)
    with pytest.raises(ValueError, match=r"parts\['v'\]: returned an array of shape \(8, 4\)"):
        vec({"v": (p, t)})


# ---------------------------------------------------------------------------------------------
# uncertainty weighting: nnx versus torch


KINDS = ["plain", "regression", "classification",
         {"seg": "classification", "depth": "regression", "aux": "plain"}]
TASKS = ["seg", "depth", "aux"]


def _both(kinds, init=0.0, dtype="float64"):
    return (mnn.UncertaintyWeighting(TASKS, init=init, kinds=kinds, dtype=dtype),
            mnn.TorchUncertaintyWeighting(TASKS, init=init, kinds=kinds, dtype=dtype))


def test_uncertainty_parameters_match():
    j, t = mnn.UncertaintyWeighting(TASKS), mnn.TorchUncertaintyWeighting(TASKS)
    jn = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(j, nnx.Param))]
    tn = [n for n, _ in t.named_parameters()]
    assert jn == tn == ["log_vars"]
    assert j.log_vars[...].dtype == jnp.float32 and t.log_vars.dtype == torch.float32
    assert np.array_equal(np.asarray(j.log_vars[...]), t.log_vars.detach().numpy())
    assert np.all(np.asarray(j.log_vars[...]) == 0)
    init = {"seg": 0.3, "depth": -0.2, "aux": 1.0}
    j, t = _both("plain", init)
    assert np.array_equal(np.asarray(j.log_vars[...]), t.log_vars.detach().numpy())
    assert np.array_equal(np.asarray(j.log_vars[...]), [0.3, -0.2, 1.0])


@pytest.mark.parametrize("kinds", KINDS, ids=["plain", "regression", "classification", "mixed"])
def test_uncertainty_value_and_gradients_match(kinds):
    rng = np.random.default_rng(1)
    s = rng.normal(size=3)
    losses = rng.uniform(0.1, 3.0, size=3)
    j, t = _both(kinds)
    j.log_vars[...] = jnp.asarray(s)
    with torch.no_grad():
        t.log_vars.copy_(torch.tensor(s))

    def f(module, ls):
        out = module(dict(zip(TASKS, ls)))
        return out.total, out.parts

    (jt, jparts), (gm, gl) = nnx.value_and_grad(f, argnums=(0, 1), has_aux=True)(
        j, jnp.asarray(losses))
    tl = torch.tensor(losses, requires_grad=True)
    tt, tparts = t(dict(zip(TASKS, tl)))
    ts, tlg = torch.autograd.grad(tt, (t.log_vars, tl))
    assert rel(jt, tt.item()) < TOL
    for k in TASKS:
        assert rel(jparts[k], tparts[k].item()) < TOL
    assert rel(gm["log_vars"][...], ts) < TOL
    assert rel(gl, tlg) < TOL
    # the formula, by hand
    kk = [kinds] * 3 if isinstance(kinds, str) else [kinds[k] for k in TASKS]
    ab = {"plain": (1, 1), "regression": (0.5, 0.5), "classification": (1, 0.5)}
    a = np.array([ab[k][0] for k in kk])
    b = np.array([ab[k][1] for k in kk])
    assert rel(jt, np.sum(a * np.exp(-s) * losses + b * s)) < TOL
    assert rel(gl, a * np.exp(-s)) < TOL
    assert rel(ts, -a * np.exp(-s) * losses + b) < TOL
    assert rel(np.array(list(j.weights().values())), a * np.exp(-s)) < TOL
    assert rel(torch.stack(list(t.weights().values())), a * np.exp(-s)) < TOL


def test_uncertainty_trains_with_combine(data):
    """combine's parts into the weighting; one nnx step and one torch step agree."""
    import optax

    jl = multiloss.combine({"ce": "cross_entropy", "mse": "mse"}, backend="jax")
    tl = multiloss.combine({"ce": "cross_entropy", "mse": "mse"}, backend="torch")
    ins = {"ce": (data["x"], np.abs(data["y"]) % 3), "mse": (data["p"], data["t"])}
    uw = mnn.UncertaintyWeighting(["ce", "mse"], dtype="float64")
    uwt = mnn.to_torch(uw)
    opt = nnx.Optimizer(uw, optax.sgd(0.1), wrt=nnx.Param)
    grads = nnx.grad(lambda m: m(jl(ins).parts).total)(uw)
    opt.update(uw, grads)
    topt = torch.optim.SGD(uwt.parameters(), lr=0.1)
    uwt(tl({k: tuple(torch.tensor(a) for a in v) for k, v in ins.items()}).parts).total.backward()
    topt.step()
    assert rel(uw.log_vars[...], uwt.log_vars.detach()) < TOL
    assert not np.allclose(np.asarray(uw.log_vars[...]), 0)


# ---------------------------------------------------------------------------------------------
# uncertainty weighting: conversion and bad input


def test_conversion_both_ways():
    j = mnn.UncertaintyWeighting(TASKS, init={"seg": 0.1, "depth": 0.2, "aux": 0.3},
                                 kinds={"seg": "classification", "depth": "regression",
                                        "aux": "plain"}, dtype="float64")
    t = mnn.to_torch(j)
    assert isinstance(t, mnn.TorchUncertaintyWeighting) and t.log_vars.dtype == torch.float64
    assert t.kinds == j.kinds and t.tasks == j.tasks
    assert np.array_equal(t.log_vars.detach().numpy(), [0.1, 0.2, 0.3])
    with torch.no_grad():
        t.log_vars.add_(1.0)
    back = mnn.from_torch(t)
    assert isinstance(back, mnn.UncertaintyWeighting)
    assert np.array_equal(np.asarray(back.log_vars[...]), [1.1, 1.2, 1.3])
    # into existing modules (cast to their dtype)
    j32 = mnn.UncertaintyWeighting(TASKS, kinds=dict(zip(TASKS, j.kinds)))
    assert mnn.from_torch(t, into=j32) is j32 and j32.log_vars[...].dtype == jnp.float32
    assert rel(j32.log_vars[...], [1.1, 1.2, 1.3]) < 1e-7
    t32 = mnn.TorchUncertaintyWeighting(TASKS, kinds=dict(zip(TASKS, j.kinds)))
    assert mnn.to_torch(j, into=t32) is t32 and t32.log_vars.dtype == torch.float32
    assert rel(t32.log_vars.detach(), [0.1, 0.2, 0.3]) < 1e-7


def test_conversion_mismatch_errors():
    j = mnn.UncertaintyWeighting(TASKS)
    t = mnn.TorchUncertaintyWeighting(TASKS)
    with pytest.raises(ValueError, match=r"into: parameter shapes differ .*log_vars: \(3,\) vs "
                                         r"\(2,\)"):
        mnn.to_torch(j, into=mnn.TorchUncertaintyWeighting(["seg", "depth"]))
    with pytest.raises(ValueError, match=r"into: parameter shapes differ .*log_vars: \(3,\) vs "
                                         r"\(4,\)"):
        mnn.from_torch(t, into=mnn.UncertaintyWeighting(TASKS + ["x"]))
    with pytest.raises(ValueError, match=r"into: tasks differ"):
        mnn.to_torch(j, into=mnn.TorchUncertaintyWeighting(["depth", "seg", "aux"]))
    with pytest.raises(ValueError, match=r"into: kinds differ"):
        mnn.from_torch(t, into=mnn.UncertaintyWeighting(TASKS, kinds="regression"))
    with pytest.raises(ValueError, match=r"into: the parameter trees differ: .*\['log_vars'\].*"
                                         r"\['bias', 'weight'\]"):
        mnn.to_torch(j, into=torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"into: the parameter trees differ"):
        mnn.from_torch(t, into=nnx.Linear(3, 1, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match=r"module: expected a multiloss.nn flax.nnx module"):
        mnn.to_torch(t)
    with pytest.raises(TypeError, match=r"module: expected a multiloss.nn torch module"):
        mnn.from_torch(torch.nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match=r"into: expected a torch.nn.Module"):
        mnn.to_torch(j, into=j)
    with pytest.raises(TypeError, match=r"into: expected a flax.nnx.Module"):
        mnn.from_torch(t, into=t)


@pytest.mark.parametrize("cls", ["UncertaintyWeighting", "TorchUncertaintyWeighting"])
@pytest.mark.parametrize("args, kw, exc, match", [
    ("seg", {}, TypeError, r"tasks: expected a list of task names"),
    ([], {}, ValueError, r"tasks: expected at least one"),
    (["a", "a"], {}, ValueError, r"tasks: expected distinct names, got \['a'\]"),
    (["a", 1], {}, TypeError, r"tasks: expected non-empty strings"),
    (["a"], {"kinds": "regresion"}, ValueError, r"kinds\['a'\]: expected one of"),
    (["a", "b"], {"kinds": {"a": "plain"}}, ValueError, r"kinds: .*missing \['b'\]"),
    (["a"], {"kinds": 3}, TypeError, r"kinds: expected one of"),
    (["a"], {"init": float("inf")}, ValueError, r"init: expected a finite number"),
    (["a"], {"init": {"b": 0.0}}, ValueError, r"init: .*unknown \['b'\]"),
    (["a"], {"dtype": "int32"}, ValueError, r"dtype: expected one of"),
])
def test_uncertainty_bad_construction(cls, args, kw, exc, match):
    with pytest.raises(exc, match=match):
        getattr(mnn, cls)(args, **kw)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_uncertainty_bad_call(backend):
    uw = (mnn.UncertaintyWeighting if backend == "jax" else mnn.TorchUncertaintyWeighting)(
        ["a", "b"])
    to = jnp.asarray if backend == "jax" else torch.tensor
    with pytest.raises(ValueError, match=r"losses: .*missing \['b'\]"):
        uw({"a": to(1.0)})
    with pytest.raises(ValueError, match=r"losses: expected 2 losses"):
        uw([to(1.0)])
    with pytest.raises(ValueError, match=r"losses\['b'\]: expected a scalar loss, got shape "
                                         r"\(3,\)"):
        uw({"a": to(1.0), "b": to([1.0, 2.0, 3.0])})
    with pytest.raises(TypeError, match=r"losses: expected a dict"):
        uw(to(1.0))
    total, terms = uw([to(1.0), to(2.0)])  # a list in task order
    total = total.detach() if backend == "torch" else total
    assert list(terms) == ["a", "b"] and abs(float(total) - 3.0) < 1e-6


def test_nn_import_is_lazy():
    code = ("import sys, multiloss, multiloss.nn; "
            "assert 'torch' not in sys.modules and 'jax' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'jax')); "
            "assert callable(multiloss.combine)")
    subprocess.run([sys.executable, "-c", code], check=True)
