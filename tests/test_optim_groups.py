"""Parameter groups, parameters without a gradient, gradient clipping and from_torch, against
torch itself: 100-step trajectories in float64 and float32, the naive optax port diverging
where it does, and the errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import multiloss.optim as mo
from multiloss.optim import schedules as S

jax.config.update("jax_enable_x64", True)

# The 100-step trajectories of the group, clipping and from_torch cases against torch run in
# test_optim.py (all of multiloss.optim.testing's cases).


# ---------------------------------------------------------------------------------------------
# no gradient: untouched, as torch's .grad is None


def _params():
    return {"w": jnp.asarray(np.arange(12.0).reshape(3, 4) / 10), "b": jnp.ones(4)}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta",
                                  "adamax", "nadam", "radam", "asgd", "rprop", "sparse_adam",
                                  "adafactor"])
def test_no_gradient_leaves_parameter_and_state_untouched(name):
    hyper = {"weight_decay": 0.1} if "weight_decay" in mo.resolve(name).hyperparameters else {}
    if name == "sgd":
        hyper["momentum"] = 0.9
    tx = mo.get(name, lr=0.1, **hyper)
    p = _params()
    state = tx.init(p)
    g = {"w": jnp.full((3, 4), 0.3), "b": jnp.full(4, -0.2)}
    _, state = tx.update(g, state, p)
    before = state
    u_none, s_none = tx.update({"w": g["w"], "b": None}, state, p)
    u_mask, s_mask = jax.jit(tx.update)(g, state, p, has_grad={"w": True, "b": jnp.array(False)})
    for u, s in ((u_none, s_none), (u_mask, s_mask)):
        assert np.all(np.asarray(u["b"]) == 0.0)  # no decay, no move
        assert int(s.step["b"]) == int(before.step["b"]) == 1  # no step count
        assert int(s.step["w"]) == 2
        for key, buf in s.buffers.items():  # no moment update
            np.testing.assert_array_equal(np.asarray(buf["b"]), np.asarray(before.buffers[key]["b"]))
    for k in p:
        np.testing.assert_allclose(np.asarray(u_none[k]), np.asarray(u_mask[k]), rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# labels


def test_label_forms_give_the_same_update():
    groups = {"decay": {}, "no_decay": {"weight_decay": 0.0, "lr": 0.5}}
    p = _params()
    g = {"w": jnp.full((3, 4), 0.3), "b": jnp.full(4, -0.2)}
    forms = [{"w": "decay", "b": "no_decay"}, mo.decay_labels,
             lambda params: jax.tree_util.tree_map(lambda x: "decay" if x.ndim > 1 else "no_decay",
                                                   params),
             ["no_decay", "decay"]]  # leaf order of a dict: sorted keys b, w
    outs = []
    for labels in forms:
        tx = mo.get("adamw", lr=0.1, param_groups=groups, labels=labels)
        outs.append(tx.update(g, tx.init(p), p)[0])
    for o in outs[1:]:
        for k in p:
            np.testing.assert_array_equal(np.asarray(o[k]), np.asarray(outs[0][k]))
    # the no_decay group really used lr 0.5 and no decay: Adam's first step is -lr * sign(g)
    np.testing.assert_allclose(np.asarray(outs[0]["b"]), 0.5, rtol=1e-7)


def test_decay_labels_recipe_on_nested_params():
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
              "norm": {"scale": jnp.ones(4)}, "embed": jnp.ones((5, 3))}
    labels = mo.decay_labels(params)
    assert labels == {"dense": {"kernel": "decay", "bias": "no_decay"},
                      "norm": {"scale": "no_decay"}, "embed": "decay"}
    custom = mo.decay_labels(params, no_decay=lambda path, p: "embed" in jax.tree_util.keystr(path))
    assert custom["embed"] == "no_decay" and custom["dense"]["bias"] == "decay"


def test_group_errors():
    p = _params()
    with pytest.raises(ValueError, match=r"labels: unknown parameter group 'head'; groups are "
                                         r"\['decay', 'no_decay'\]"):
        tx = mo.get("adam", param_groups={"decay": {}, "no_decay": {}},
                    labels={"w": "decay", "b": "head"})
        tx.init(p)
    with pytest.raises(ValueError, match=r"labels: 2 parameter groups need labels"):
        mo.get("adam", param_groups=[{}, {}]).init(p)
    with pytest.raises(ValueError, match=r"labels: expected a pytree with the parameters' "
                                         r"structure"):
        mo.get("adam", param_groups=[{}, {}], labels={"w": 0}).init(p)
    with pytest.raises(ValueError, match=r"labels: given without param_groups"):
        mo.get("adam", labels={"w": 0, "b": 0})
    with pytest.raises(TypeError, match=r"param_groups\[0\]: 'params' is not a key here"):
        mo.get("adam", param_groups=[{"params": []}])
    with pytest.raises(ValueError, match=r"param_groups\['head'\]: adam: lr: expected a value in "
                                         r"\[0.0, inf\], got -0.1"):
        mo.get("adam", param_groups={"body": {}, "head": {"lr": -0.1}}, labels={"w": "body",
                                                                                 "b": "head"})
    with pytest.raises(TypeError, match=r"param_groups\[1\]: adam: unknown hyperparameter\(s\) "
                                        r"'momentum'"):
        mo.get("adam", param_groups=[{}, {"momentum": 0.9}], labels=[0, 1])
    with pytest.raises(ValueError, match=r"param_groups\[0\]: sgd: nesterov: Nesterov momentum "
                                         r"requires"):
        mo.get("sgd", param_groups=[{"nesterov": True}], labels=[0, 0])
    with pytest.raises(ValueError, match=r"lbfgs: param_groups: LBFGS doesn't support "
                                         r"per-parameter options"):
        mo.get("lbfgs", param_groups=[{}, {}], labels=[0, 1])
    with pytest.raises(TypeError, match=r"param_groups: expected a list of dicts or a dict"):
        mo.get("adam", param_groups="decay")


# ---------------------------------------------------------------------------------------------
# clipping


def _torch_clip(grads, clip):
    ts = [torch.tensor(np.asarray(g), requires_grad=True) for g in grads.values()]
    for t, g in zip(ts, grads.values()):
        t.grad = torch.tensor(np.asarray(g))
    if clip[0] == "norm":
        torch.nn.utils.clip_grad_norm_(ts, clip[1], norm_type=clip[2])
    else:
        torch.nn.utils.clip_grad_value_(ts, clip[1])
    return {k: t.grad.numpy() for k, t in zip(grads, ts)}


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("scale", [0.5, 1.0, 1 - 1e-8, 3.0])  # below, at, just below, above
def test_clip_grad_norm_is_torchs(norm_type, scale):
    g = {"w": jnp.asarray(np.linspace(-1, 2, 12).reshape(3, 4)), "b": jnp.asarray([0.5, -3, 1, 0])}
    total = float(np.linalg.norm(np.concatenate([np.ravel(v) for v in g.values()]), ord=norm_type))
    max_norm = total / scale
    tx = mo.clip_grad_norm(max_norm, "inf" if norm_type == math.inf else norm_type)
    ours, _ = jax.jit(tx.update)(g, tx.init(g))
    ref = _torch_clip(g, ("norm", max_norm, norm_type))
    for k in g:
        np.testing.assert_allclose(np.asarray(ours[k]), ref[k], rtol=1e-14, atol=1e-16)
    if scale == 1 - 1e-8:
        # torch's factor max / (norm + 1e-6) is < 1 just below the threshold; optax leaves it
        assert np.all(np.abs(ref["w"]) <= np.abs(np.asarray(g["w"])))
        assert not np.array_equal(ref["w"], np.asarray(g["w"]))
        if norm_type == 2.0:
            naive, _ = optax.clip_by_global_norm(max_norm).update(g, optax.EmptyState())
            np.testing.assert_array_equal(np.asarray(naive["w"]), np.asarray(g["w"]))


def test_clip_grad_value_and_none_leaves():
    g = {"w": jnp.asarray(np.linspace(-3, 3, 12).reshape(3, 4)), "b": None}
    ours, _ = mo.clip_grad_value(1.0).update(g, optax.EmptyState())
    assert ours["b"] is None
    np.testing.assert_array_equal(np.asarray(ours["w"]), np.clip(np.asarray(g["w"]), -1, 1))
    # a None leaf (no .grad) takes no part in the norm, as torch skips it
    g2 = {"w": jnp.full((3, 4), 2.0), "b": None}
    clipped, _ = mo.clip_grad_norm(1.0).update(g2, optax.EmptyState())
    ref = _torch_clip({"w": g2["w"]}, ("norm", 1.0, 2.0))
    np.testing.assert_allclose(np.asarray(clipped["w"]), ref["w"], rtol=1e-14)


def test_clip_errors():
    with pytest.raises(ValueError, match=r"clip_grad_norm, clip_grad_value: give one"):
        mo.get("sgd", clip_grad_norm=1.0, clip_grad_value=1.0)
    with pytest.raises(ValueError, match=r"clip_grad_norm: expected a finite value >= 0, got -1"):
        mo.get("sgd", clip_grad_norm=-1)
    with pytest.raises(ValueError, match=r"clip_norm_type: expected a value in \(0, inf\], got 0"):
        mo.get("sgd", clip_grad_norm=1.0, clip_norm_type=0)
    with pytest.raises(TypeError, match=r"clip_norm_type: expected a real number or 'inf', got "
                                        r"'max'"):
        mo.clip_grad_norm(1.0, "max")
    with pytest.raises(TypeError, match=r"clip_value: expected a real number, got str"):
        mo.clip_grad_value("1")


# ---------------------------------------------------------------------------------------------
# from_torch


def test_from_torch_labels_and_module():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).double()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    tx, labels = mo.from_torch(opt, sched, params=model)
    assert labels == {"0.weight": 0, "0.bias": 1, "1.weight": 1, "1.bias": 1}
    assert [g["weight_decay"] for g in tx.param_groups] == [0.01, 0.0]
    assert isinstance(tx.schedule, S.StepLR) and tx.schedule.step_size == 5
    # without names: one label per parameter in param_groups order
    assert mo.from_torch(opt).labels == [0, 1, 1, 1]
    # one step on a flat dict of JAX parameters keyed by torch's names equals torch's
    jparams = {k: jnp.asarray(v.detach().numpy()) for k, v in model.named_parameters()}
    grads = {k: jnp.full(v.shape, 0.1) for k, v in jparams.items()}
    u, _ = tx.update(grads, tx.init(jparams), jparams)
    for _, p in model.named_parameters():
        p.grad = torch.full(p.shape, 0.1, dtype=torch.float64)
    opt.step()
    for k, p in model.named_parameters():
        np.testing.assert_allclose(np.asarray(jparams[k] + u[k]), p.detach().numpy(), rtol=1e-14)


def test_from_torch_named_parameters_optimizer():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.named_parameters(), lr=0.1)
    assert mo.from_torch(opt).labels == {"weight": 0, "bias": 0}


def test_from_torch_errors():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match=r"optimizer: expected a torch.optim.Optimizer, got list"):
        mo.from_torch([w])
    class Custom(torch.optim.SGD):  # a subclass may change the update: not converted
        pass

    with pytest.raises(ValueError, match=r"optimizer: torch.optim.Custom has no multiloss "
                                         r"equivalent"):
        mo.from_torch(Custom([w]))
    # stepped optimizers and schedulers convert with their state (test_optim_state.py)
    opt = torch.optim.SGD([w], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 3)
    with pytest.raises(ValueError, match=r"scheduler: expected a scheduler of the given "
                                         r"optimizer"):
        mo.from_torch(torch.optim.SGD([w], lr=0.1), sched)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    L = torch.optim.lr_scheduler

    class MyStep(L.StepLR):
        pass

    with pytest.raises(ValueError, match=r"scheduler: MyStep has no multiloss equivalent"):
        mo.from_torch(opt, MyStep(opt, 3))
    # a chain holding a scheduler multiloss lacks names that one
    chained = L.ChainedScheduler([L.StepLR(opt, 3), MyStep(opt, 10)])
    with pytest.raises(ValueError, match=r"scheduler: MyStep has no multiloss equivalent"):
        mo.from_torch(opt, chained)
