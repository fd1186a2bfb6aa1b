"""multiloss.optim with NaN and infinities: every optimizer (and its option variants) with a NaN,
+inf or -inf in a gradient (at the first step and at a later one), in a parameter, and in every
hyperparameter torch accepts such a value for, against torch.optim itself, on both backends
(the torch backend is torch.optim built through ``multiloss.optim.get``). A value matches when
NaN, the infinities and their signs sit in the same places and the finite entries agree to
1e-12 relative (float64).

Found by this sweep (issue 14): the JAX transform returned ``new_p - p`` as the update, so a
parameter that torch keeps at -inf became NaN (-inf - -inf) the step after an infinite
gradient (``optim.get("sgd", momentum=0.9)`` and every optimizer with an infinite parameter);
LBFGS's first step length used ``jnp.minimum(1, 1/|g|_1)``, NaN for a NaN gradient, where
torch's Python ``min(1.0, ...)`` gives 1.0; SGD refused NaN lr / momentum / weight_decay /
dampening and LBFGS NaN tolerances, which torch accepts.

Deliberate difference: LBFGS's integer options (max_iter, max_eval, history_size) must be ints
on both backends; torch does not check them and a NaN or infinite count never ends its loop
or bounds its history.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import multiloss.optim as mo
from multiloss.optim import testing as T

jax.config.update("jax_enable_x64", True)

STEPS = 4

#: every optimizer, and the option variants that take another code path
CONFIGS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5, "maximize": True}),
    ("adam", {"lr": 0.1}),
    ("adam", {"lr": 0.1, "amsgrad": True, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.1, "amsgrad": True}),
    ("rmsprop", {"lr": 0.1}),
    ("rmsprop", {"lr": 0.1, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1,
                 "initial_accumulator_value": 0.5}),
    ("adadelta", {"weight_decay": 0.1}),
    ("adamax", {"lr": 0.1, "weight_decay": 0.1}),
    ("nadam", {"lr": 0.1}),
    ("nadam", {"lr": 0.1, "decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("radam", {"lr": 0.1, "weight_decay": 0.1}),
    ("lbfgs", {"lr": 0.1, "max_iter": 1}),
    ("asgd", {"lr": 0.1, "t0": 1.0, "weight_decay": 0.1}),
    ("rprop", {"lr": 0.1}),
    ("sparse_adam", {"lr": 0.1, "maximize": True}),
    ("adafactor", {"lr": 0.1}),
    ("adafactor", {"lr": 0.1, "weight_decay": 0.1, "maximize": True, "eps": (1e-6, 1e-2),
                   "d": 1.5}),
    ("muon", {"lr": 0.1}),  # a (5, 2) matrix: Muon takes 2-D parameters only
    ("muon", {"lr": 0.1, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"}),
]
VALUES = (math.nan, math.inf, -math.inf)


def _problem(seed=0, shape=(5,)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), [rng.normal(size=shape) for _ in range(STEPS)]


def _torch_run(name, hyper, p0, grads):
    p = torch.tensor(p0, requires_grad=True)
    opt = mo.get(name, backend="torch", params=[p], **hyper)
    assert type(opt) is getattr(torch.optim, mo.resolve(name).torch_class)
    out = []
    for g in grads:
        p.grad = T.torch_grad(name, torch.tensor(g))  # SparseAdam takes sparse gradients
        if name == "lbfgs":
            opt.step(lambda: 0.0)
        else:
            opt.step()
        out.append(p.detach().numpy().copy())
    return out


def _reference_run(name, hyper, p0, grads):
    """torch.optim called directly (the reference of the torch backend's validation too)."""
    p = torch.tensor(p0, requires_grad=True)
    opt = getattr(torch.optim, mo.resolve(name).torch_class)([p], **hyper)
    out = []
    for g in grads:
        p.grad = T.torch_grad(name, torch.tensor(g))
        opt.step((lambda: 0.0) if name == "lbfgs" else None)
        out.append(p.detach().numpy().copy())
    return out


def _jax_runner(name, hyper, jit=True):
    tx = mo.get(name, **hyper)
    step = jax.jit(tx.update) if jit else tx.update

    def run(p0, grads):
        p = {"p": jnp.asarray(p0)}
        s = tx.init(p)
        out = []
        for g in grads:
            u, s = step({"p": jnp.asarray(g)}, s, p)
            p = optax.apply_updates(p, u)
            out.append(np.asarray(p["p"]))
        return out

    return run


FLIPS = []  # (what, step): torch turned an infinite parameter into the opposite infinity


def _assert_same(ours, ref, what, p0, additive=True):
    """Ours equals torch's trajectory; where torch turns an infinite parameter into the
    opposite infinity (decoupled decay with lr * weight_decay > 1 multiplies by a negative
    number), an additive optax update cannot follow (-inf + u is never +inf): ours is NaN
    there, as documented, and the comparison stops at that step."""
    prev = np.asarray(p0, np.float64)
    for k, (a, b) in enumerate(zip(ours, ref)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        where = f"{what}, after step {k + 1}: ours {a}, torch {b}"
        flip = np.isinf(prev) & np.isinf(b) & (np.sign(prev) != np.sign(b)) & additive
        if flip.any():
            assert np.isnan(a[flip]).all(), where
            b = np.where(flip, np.nan, b)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=where)
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=where)
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=where)
        fin = np.isfinite(b)
        np.testing.assert_allclose(a[fin], b[fin], rtol=1e-12, atol=0, err_msg=where)
        if flip.any():
            FLIPS.append((what, k + 1))
            return
        prev = b


def _ids(config):
    name, hyper = config
    return name + "".join(f"-{k}={v}" for k, v in hyper.items() if k != "lr")


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_nonfinite_gradients_and_parameters_propagate_as_in_torch(config):
    name, hyper = config
    jax_run = _jax_runner(name, hyper)
    threads = torch.get_num_threads()
    if name == "muon":  # torch's bfloat16 matmul: ~30 ms a call with 2 threads, us with one
        torch.set_num_threads(1)
    try:
        _nonfinite(name, hyper, jax_run)
    finally:
        torch.set_num_threads(threads)


def _nonfinite(name, hyper, jax_run):
    n = 0
    for v in VALUES:
        for where in ("grad@1", "grad@3", "param"):
            p0, grads = _problem(shape=(5, 2) if name == "muon" else (5,))
            if where == "param":
                p0.flat[1] = v
            else:
                grads[int(where[-1]) - 1].flat[1] = v
            ref = _reference_run(name, hyper, p0, grads)
            what = f"{name} {hyper} {v} in {where}"
            _assert_same(_torch_run(name, hyper, p0, grads), ref, what + " (torch backend)", p0,
                         additive=False)
            _assert_same(jax_run(p0, grads), ref, what + " (jax backend)", p0)
            n += 1
    assert n == 9


def test_sgd_momentum_infinite_gradient_is_minus_inf_as_torch():
    """The case of issue 14: torch's SGD keeps -inf after an infinite gradient; the JAX update
    used to be -inf - -inf = NaN the step after."""
    p0, grads = _problem()
    grads[0][1] = math.inf
    out = _jax_runner("sgd", {"lr": 0.1, "momentum": 0.9})(p0, grads)
    assert all(o[1] == -math.inf for o in out)
    assert _reference_run("sgd", {"lr": 0.1, "momentum": 0.9}, p0, grads)[-1][1] == -math.inf


def _option_cases():
    out = []
    for name in mo.available():
        spec = mo.resolve(name)
        for o in spec.options:
            if not isinstance(o.default, (float, tuple)) and o.name not in (
                    "max_iter", "max_eval", "history_size"):
                continue  # booleans, the kernel choices, line_search_fn
            for v in VALUES:
                if isinstance(o.default, tuple):  # betas, Rprop's etas and step_sizes,
                    # Adafactor's eps, Muon's coefficients
                    # (Muon's three coefficients take one code path: the first only, CI time)
                    out += [(name, o.name, o.default[:i] + (v,) + o.default[i + 1:])
                            for i in range(len(o.default) if len(o.default) == 2 else 1)]
                else:
                    out.append((name, o.name, v))
    return out


OPTION_CASES = _option_cases()
_INT_OPTIONS = ("max_iter", "max_eval", "history_size")


def _build(make, *args, **kwargs):
    try:
        make(*args, **kwargs)
    except (TypeError, ValueError) as e:
        return type(e)
    return None


def test_nonfinite_options_are_accepted_where_torch_accepts_them_and_give_torchs_steps():
    """Every real hyperparameter of every optimizer at NaN, +inf and -inf: accepted by
    multiloss (both backends) exactly where torch.optim accepts it, and then the same
    trajectory; refused with a ValueError naming the argument where torch refuses."""
    accepted = 0
    crashes = []
    for name, key, v in OPTION_CASES:
        base = {"max_iter": 1} if name == "lbfgs" and key != "max_iter" else {}
        hyper = {**base, key: v}
        w = torch.zeros((2, 2) if name == "muon" else 2, requires_grad=True)  # Muon: 2-D only
        ref = _build(getattr(torch.optim, mo.resolve(name).torch_class), [w], **hyper)
        ours_t = _build(mo.get, name, backend="torch", params=[w], **hyper)
        ours_j = _build(mo.get, name, backend="jax", **hyper)
        if key in _INT_OPTIONS:
            # deliberate: torch does not validate LBFGS's counts; multiloss wants ints
            assert ref is None and ours_t is ours_j is TypeError, (name, key, v)
            continue
        assert (ours_t is None) == (ref is None) == (ours_j is None), (name, key, v, ref, ours_t)
        if ref is not None:
            with pytest.raises(ValueError, match=rf"^{name}: {key}(\[\d\])?: expected"):
                mo.get(name, backend="jax", **hyper)
            continue
        accepted += 1
        p0, grads = _problem(1, (5, 2) if name == "muon" else (5,))
        try:
            ref_traj = _reference_run(name, hyper, p0, grads)
        except ZeroDivisionError:
            # torch accepts the value, then its step divides by zero in Python floats
            # (ASGD's eta = lr / (1 + lambd lr t) ** alpha with alpha = -inf): no reference
            crashes.append((name, key, v))
            continue
        what = f"{name} {key}={v}"
        _assert_same(_torch_run(name, hyper, p0, grads), ref_traj, what + " (torch backend)",
                     p0, additive=False)
        _assert_same(_jax_runner(name, hyper, jit=name == "lbfgs")(p0, grads), ref_traj, what + " (jax backend)",
                     p0)
    # torch accepts: inf lr / eps / weight_decay everywhere, NaN in SGD's and LBFGS's
    # unchecked options, ...; the count keeps the sweep from silently shrinking
    assert accepted >= 40, accepted
    assert crashes == [("asgd", "alpha", -math.inf)], crashes
    # the one place an additive update cannot follow torch: decoupled decay p * (1 - lr * wd)
    # < 0 (AdamW, Muon, Adafactor; Muon's default weight_decay is 0.1, Adafactor's 0)
    assert {w for w, _ in FLIPS} == {"adamw lr=inf (jax backend)",
                                     "adamw weight_decay=inf (jax backend)",
                                     "muon lr=inf (jax backend)",
                                     "muon weight_decay=inf (jax backend)",
                                     "adafactor weight_decay=inf (jax backend)"}, FLIPS


@pytest.mark.parametrize("clip", [("norm", 2.0), ("norm", "inf"), ("norm", 1.0), ("value", None)],
                         ids=["norm2", "norm_inf", "norm1", "value"])
def test_nonfinite_gradients_through_clipping(clip):
    """clip_grad_norm / clip_grad_value before the step, a non-finite entry in one of two
    parameters: torch.nn.utils' NaN / inf total norm scales every gradient (inf: by 0, so the
    infinite entry becomes NaN and the other parameter's gradient 0); ours the same."""
    kind, norm_type = clip
    extra = ({"clip_grad_norm": 0.5, "clip_norm_type": norm_type} if kind == "norm"
             else {"clip_grad_value": 0.5})
    tx = mo.get("sgd", lr=0.1, momentum=0.9, **extra)
    update = jax.jit(tx.update)
    for v in VALUES:
        rng = np.random.default_rng(2)
        p0 = {"w": rng.normal(size=3), "b": rng.normal(size=2)}
        grads = [{k: rng.normal(size=x.shape) for k, x in p0.items()} for _ in range(STEPS)]
        grads[1]["w"][0] = v
        tp = {k: torch.tensor(x, requires_grad=True) for k, x in p0.items()}
        opt = torch.optim.SGD(list(tp.values()), lr=0.1, momentum=0.9)
        jp = {k: jnp.asarray(x) for k, x in p0.items()}
        s = tx.init(jp)
        ref, ours = [], []
        for g in grads:
            for k, t in tp.items():
                t.grad = torch.tensor(g[k])
            if kind == "norm":
                nt = math.inf if norm_type == "inf" else norm_type
                torch.nn.utils.clip_grad_norm_(list(tp.values()), 0.5, norm_type=nt)
            else:
                torch.nn.utils.clip_grad_value_(list(tp.values()), 0.5)
            opt.step()
            ref.append(np.concatenate([tp["w"].detach().numpy(), tp["b"].detach().numpy()]))
            u, s = update({k: jnp.asarray(x) for k, x in g.items()}, s, jp)
            jp = optax.apply_updates(jp, u)
            ours.append(np.concatenate([np.asarray(jp["w"]), np.asarray(jp["b"])]))
        _assert_same(ours, ref, f"sgd clip {clip} {v}",
                     np.concatenate([p0["w"], p0["b"]]))
