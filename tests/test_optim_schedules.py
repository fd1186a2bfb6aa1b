"""multiloss.optim.schedules against torch.optim.lr_scheduler itself: the learning rates (and
OneCycleLR's momenta) step by step, 100-step trajectories of every schedule in float64 and
float32, optax's same-named schedules diverging (off by one, flat past T_max, float32 under
x64, one step late on a plateau), and validation."""

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
from multiloss.optim import testing as T

jax.config.update("jax_enable_x64", True)

L = torch.optim.lr_scheduler
BASE = [0.05, 0.02]  # two parameter groups


def _mult(epoch):  # MultiplicativeLR's factor, plain Python
    return 0.95 if epoch % 3 else 1.02

# The 100-step trajectories of every schedule against torch run in test_optim.py (all of
# multiloss.optim.testing's cases).


# ---------------------------------------------------------------------------------------------
# the learning rates themselves, step by step (two groups, no compilation)


def _torch_opt(kind="sgd"):
    ps = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(ps, BASE)]
    if kind == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    return torch.optim.Adam(groups)


def _torch_lrs(build, steps, kind="sgd", metrics=None):
    opt = _torch_opt(kind)
    sched = build(opt)
    lrs, moms = [], []
    for k in range(steps):
        lrs.append([g["lr"] for g in opt.param_groups])
        moms.append([g["betas"][0] if kind == "adam" else g["momentum"] for g in opt.param_groups])
        if k == steps - 1:
            break
        opt.step()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics(k))
    return np.array(lrs), np.array(moms)


def _rel(ours, ref):
    return float(np.max(np.abs(ours - ref) / np.max(np.abs(ref), axis=0)))


def _ours(schedule, steps):
    b = schedule.bind(BASE)
    t = jnp.arange(steps, dtype=jnp.float64)
    lrs = np.stack([np.asarray(x) for x in b.lrs((), t)], axis=1)
    m = b.momenta((), t)
    return lrs, None if m is None else np.stack([np.asarray(x) for x in m], axis=1)


SEQUENCES = [
    ("StepLR", S.StepLR(7, 0.5), lambda o: L.StepLR(o, 7, 0.5)),
    ("MultiStepLR", S.MultiStepLR([5, 20, 20, 60]), lambda o: L.MultiStepLR(o, [5, 20, 20, 60])),
    ("ExponentialLR", S.ExponentialLR(0.95), lambda o: L.ExponentialLR(o, 0.95)),
    ("CosineAnnealingLR", S.CosineAnnealingLR(25, 1e-3),
     lambda o: L.CosineAnnealingLR(o, 25, 1e-3)),
    ("LinearLR", S.LinearLR(0.2, 0.9, 30), lambda o: L.LinearLR(o, 0.2, 0.9, 30)),
    ("LinearLR/decay_to_0", S.LinearLR(1.0, 0.0, 40), lambda o: L.LinearLR(o, 1.0, 0.0, 40)),
    ("ConstantLR", S.ConstantLR(0.5, 12), lambda o: L.ConstantLR(o, 0.5, 12)),
    ("PolynomialLR", S.PolynomialLR(50, 0.9), lambda o: L.PolynomialLR(o, 50, 0.9)),
    ("LambdaLR", S.LambdaLR(T._lambda), lambda o: L.LambdaLR(o, T._lambda)),
    ("LambdaLR/list", S.LambdaLR([T._lambda, T._lambda_b]),
     lambda o: L.LambdaLR(o, [T._lambda, T._lambda_b])),
    ("CosineAnnealingWarmRestarts", S.CosineAnnealingWarmRestarts(5, 3, 1e-4),
     lambda o: L.CosineAnnealingWarmRestarts(o, 5, 3, 1e-4)),
    ("CosineAnnealingWarmRestarts/T_mult=1", S.CosineAnnealingWarmRestarts(9),
     lambda o: L.CosineAnnealingWarmRestarts(o, 9)),
    ("SequentialLR", S.SequentialLR([S.ConstantLR(0.1, 3), S.ExponentialLR(0.9),
                                     S.CosineAnnealingWarmRestarts(10)], [5, 30]),
     lambda o: L.SequentialLR(o, [L.ConstantLR(o, 0.1, 3), L.ExponentialLR(o, 0.9),
                                  L.CosineAnnealingWarmRestarts(o, 10)], [5, 30])),
    ("OneCycleLR", S.OneCycleLR([0.1, 0.3], total_steps=120),
     lambda o: L.OneCycleLR(o, [0.1, 0.3], total_steps=120)),
    ("OneCycleLR/epochs_linear_3phase", S.OneCycleLR(0.1, epochs=10, steps_per_epoch=12,
                                                     anneal_strategy="linear", three_phase=True,
                                                     div_factor=10.0, final_div_factor=100.0),
     lambda o: L.OneCycleLR(o, 0.1, epochs=10, steps_per_epoch=12, anneal_strategy="linear",
                            three_phase=True, div_factor=10.0, final_div_factor=100.0)),
    # issue 18
    ("MultiplicativeLR/list", S.MultiplicativeLR([_mult, lambda e: 0.99]),
     lambda o: L.MultiplicativeLR(o, [_mult, lambda e: 0.99])),
    ("MultiplicativeLR/traceable", S.MultiplicativeLR(lambda e: 0.97, traceable=True),
     lambda o: L.MultiplicativeLR(o, lambda e: 0.97)),
    ("CyclicLR/triangular_momentum", S.CyclicLR(0.01, 0.1, step_size_up=7, step_size_down=5),
     lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=7, step_size_down=5)),
    ("CyclicLR/triangular2_lists", S.CyclicLR([0.01, 0.02], [0.1, 0.2], step_size_up=6,
                                              mode="triangular2", base_momentum=[0.7, 0.8],
                                              max_momentum=0.95),
     lambda o: L.CyclicLR(o, [0.01, 0.02], [0.1, 0.2], step_size_up=6, mode="triangular2",
                          base_momentum=[0.7, 0.8], max_momentum=0.95)),
    ("CyclicLR/exp_range_down0", S.CyclicLR(0.01, 0.1, step_size_up=5, step_size_down=0,
                                            mode="exp_range", gamma=0.98),
     lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=5, step_size_down=0, mode="exp_range",
                          gamma=0.98)),
    ("CyclicLR/scale_fn_cycle", S.CyclicLR(0.01, 0.1, step_size_up=4, step_size_down=3,
                                           scale_fn=T._cyclic_scale),
     lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=4, step_size_down=3,
                          scale_fn=T._cyclic_scale)),
    ("CyclicLR/scale_fn_iterations_traceable",
     S.CyclicLR(0.01, 0.1, step_size_up=9, scale_fn=lambda x: 0.99**x, scale_mode="iterations",
                traceable=True),
     lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=9, scale_fn=lambda x: 0.99**x,
                          scale_mode="iterations")),
    ("ChainedScheduler", S.ChainedScheduler([S.ConstantLR(0.1, 20), S.ExponentialLR(0.9),
                                             S.LinearLR(0.5, 1.0, 10), S.MultiplicativeLR(_mult)]),
     lambda o: L.ChainedScheduler([L.ConstantLR(o, 0.1, 20), L.ExponentialLR(o, 0.9),
                                   L.LinearLR(o, 0.5, 1.0, 10), L.MultiplicativeLR(o, _mult)])),
    ("ChainedScheduler/step_milestone0_poly_nested",
     S.ChainedScheduler([S.StepLR(7, 0.5), S.ChainedScheduler([S.MultiStepLR([0, 5, 30]),
                                                               S.PolynomialLR(90, 1.5)])]),
     lambda o: L.ChainedScheduler([L.StepLR(o, 7, 0.5), L.ChainedScheduler(
         [L.MultiStepLR(o, [0, 5, 30]), L.PolynomialLR(o, 90, 1.5)])])),
]


@pytest.mark.parametrize(("name", "ours", "build"), SEQUENCES, ids=[s[0] for s in SEQUENCES])
def test_learning_rates_match_torch(name, ours, build):
    steps = 121
    ref, ref_m = _torch_lrs(build, steps)
    lrs, moms = _ours(ours, steps)
    assert lrs.dtype == np.float64
    # torch steps most schedulers recursively (lr *= ratio) and computes cos with libm; the
    # closed form with XLA's cos agrees to rounding, relative to each group's largest lr
    assert _rel(lrs, ref) <= 1e-13, _rel(lrs, ref)
    if moms is not None:
        assert _rel(moms, ref_m) <= 1e-14
    assert np.all(np.asarray(ours.torch(_torch_opt()).get_last_lr()) == ref[0])


# ---------------------------------------------------------------------------------------------
# ChainedScheduler of any schedulers: the lr replayed through each one's recursive torch step


def _swalr(o, *a, **kw):
    return torch.optim.swa_utils.SWALR(o, *a, **kw)


CHAINS = [
    # CosineAnnealingLR's step is affine in the lr (and additive at its restarts)
    ("cosine_exponential", lambda M: [M.CosineAnnealingLR(10, 1e-3), M.ExponentialLR(0.97)]),
    # LambdaLR and CyclicLR set the lr from their bases; CyclicLR first starts at initial_lr
    ("step_lambda_cyclic_momentum",
     lambda M: [M.MultiStepLR([3, 9], 0.5), M.LambdaLR(_mult),
                M.CyclicLR([0.01, 0.02], [0.1, 0.2], step_size_up=5, mode="triangular2"),
                M.ConstantLR(0.5, 7)]),
    # OneCycleLR overwrites initial_lr, read by the schedulers made after it; OneCycleLR's
    # momentum bounds are the groups', written by the CyclicLR made after it (which cycles last)
    ("linear_onecycle_cyclic_cosine",
     lambda M: [M.LinearLR(0.5, 1.0, 10), M.OneCycleLR(0.2, total_steps=150, three_phase=True),
                M.CyclicLR(0.01, 0.1, step_size_up=10, max_momentum=0.95),
                M.CosineAnnealingLR(13)]),
    # nested: SequentialLR (restarting a stage from its closed form) and ChainedScheduler
    ("nested_sequential_chained_warm_restarts",
     lambda M: [M.ExponentialLR(0.99),
                M.SequentialLR([M.LinearLR(0.1, 1.0, 5), M.CosineAnnealingLR(20, 1e-3),
                                M.CosineAnnealingWarmRestarts(7, 2, 1e-4)], [5, 40]),
                M.ChainedScheduler([M.MultiStepLR([0, 30, 30, 60]), M.PolynomialLR(200, 0.7),
                                    M.MultiplicativeLR(_mult)])]),
    # SWALR anneals from the lr it finds (torch.optim.swa_utils), alone and as a stage
    ("swalr", lambda M: [M.StepLR(10, 0.8), M.SWALR(0.01, anneal_epochs=15),
                         M.SequentialLR([M.CosineAnnealingLR(30),
                                         M.SWALR([0.003, 0.002], 0, "linear")], [25])]),
    # SequentialLR alone, with the stages it restarts from the lr and momenta they find:
    # MultiplicativeLR (lr * lr_lambda(0)), CyclicLR and OneCycleLR (momenta left as they were
    # by the next stage); OneCycleLR, made last but one, sets initial_lr, where SequentialLR
    # starts and the base of MultiplicativeLR made after it
    ("sequential_multiplicative_cyclic_onecycle",
     lambda M: M.SequentialLR([M.MultiplicativeLR(_mult), M.CyclicLR(0.01, 0.1, step_size_up=6),
                               M.ExponentialLR(0.97), M.OneCycleLR(0.1, total_steps=60),
                               M.MultiplicativeLR(lambda e: 0.98)], [20, 45, 70, 110])),
]


class _Ours:
    """The multiloss schedules by torch's names (as CHAINS spell them)."""

    def __getattr__(self, name):
        if name == "SWALR":
            return mo.swa.SWALR
        if name in ("SequentialLR", "ChainedScheduler"):
            return lambda parts, *a: getattr(S, name)(parts, *a)
        return getattr(S, name)


class _Theirs:
    """torch's schedulers on one optimizer, made as the arguments are evaluated (in order)."""

    def __init__(self, opt):
        self.opt = opt

    def __getattr__(self, name):
        if name == "SWALR":
            return lambda *a, **kw: _swalr(self.opt, *a, **kw)
        if name == "ChainedScheduler":
            return lambda parts: L.ChainedScheduler(parts, self.opt)
        return lambda *a, **kw: getattr(L, name)(self.opt, *a, **kw)


def _replayed(schedule, steps):
    """The bound schedule's lrs and momenta, stepped as the transform steps it (one scan)."""
    b = schedule.bind(BASE)

    def body(state, t):
        m = b.momenta(state, t)
        out = (jnp.stack(b.lrs(state, t)), jnp.stack(m) if m is not None else jnp.zeros(0))
        return b.advance(state, t, None), out

    _, (lrs, moms) = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(steps * 1.0)))(
        b.init(jnp.float64))
    return np.asarray(lrs), np.asarray(moms) if moms.shape[1] else None


@pytest.mark.parametrize(("name", "parts"), CHAINS, ids=[c[0] for c in CHAINS])
def test_chained_scheduler_of_any_schedulers_matches_torch(name, parts):
    ours = parts(_Ours())
    ours = S.ChainedScheduler(ours) if isinstance(ours, list) else ours
    assert ours.replayed

    def theirs(o):
        top = parts(_Theirs(o))
        return L.ChainedScheduler(top, o) if isinstance(top, list) else top

    ref, ref_m = _torch_lrs(theirs, 150, kind="adam")
    lrs, moms = _replayed(ours, 150)
    # torch's own arithmetic, step by step (XLA's cos, pow, division: a few ulps)
    assert _rel(lrs, ref) <= 1e-13, _rel(lrs, ref)
    np.testing.assert_array_equal(lrs[0], ref[0])  # the constructors' lrs: Python's numbers
    if ours.cycles_momentum:
        assert _rel(moms, ref_m) <= 1e-14
    else:
        assert moms is None
    # schedule.torch(optimizer) makes torch's in list order: the same numbers
    ref2, _ = _torch_lrs(ours.torch, 150, kind="adam")
    np.testing.assert_array_equal(ref2, ref)
    assert len(np.unique(np.round(ref[:, 0], 12))) > 20  # the schedule does move


def test_replayed_chain_as_optax_replays_the_count():
    sched = S.ChainedScheduler([S.CosineAnnealingLR(8, 1e-3), S.ExponentialLR(0.95),
                                S.LambdaLR(lambda e: 1.0 if e < 20 else 0.5)])
    ref, _ = _torch_lrs(lambda o: sched.torch(o), 40)
    f = jax.jit(sched.as_optax(BASE[0]))
    counts = [0, 1, 8, 9, 25, 39]  # a restart at 9 (T_max + 1), the lambda's drop at 20
    got = np.array([float(f(k)) for k in counts])
    assert _rel(got[:, None], ref[counts, :1]) <= 1e-13
    np.testing.assert_array_equal(np.asarray(jax.jit(sched.as_optax(BASE[0]))(
        jnp.asarray([[8, 25]]))), [[got[2], got[4]]])  # any shape of counts
    # a product of factor schedulers keeps its closed form (no state)
    prod = S.ChainedScheduler([S.StepLR(3), S.ExponentialLR(0.9)])
    assert not prod.replayed and prod.bind(BASE).init(jnp.float64) == ()


def test_from_torch_of_a_replayed_chain_continues_torch():
    """Several optimizers stepped together, each with its chain made in another order than it
    steps (the cosine first, OneCycleLR then overwriting initial_lr): from_torch mid-way
    reads every scheduler's own base lrs and the groups' lrs, and the lrs go on as torch's."""
    def build(lrs):
        ps = [torch.zeros(2, requires_grad=True) for _ in lrs]
        opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)],
                              momentum=0.9)
        cos = L.CosineAnnealingLR(opt, 9, 1e-3)
        one = L.OneCycleLR(opt, 0.1, total_steps=60, pct_start=0.2)
        return opt, L.ChainedScheduler([one, L.MultiplicativeLR(opt, _mult), cos], opt)

    (o1, s1), (o2, s2) = build([0.05, 0.01]), build([0.02, 0.03])
    fresh = mo.from_torch([o1, o2], [s1, s2]).transform.init([jnp.zeros(2)] * 4)
    assert int(fresh.count) == 0
    np.testing.assert_array_equal(np.asarray(fresh.schedule.lrs),
                                  [g["lr"] for o in (o1, o2) for g in o.param_groups])
    for _ in range(13):
        for o, s_ in ((o1, s1), (o2, s2)):
            o.step()
            s_.step()
    tx = mo.from_torch([o1, o2], [s1, s2]).transform
    sched = tx.schedule
    assert sched.replayed and sched.schedulers[2]._bases == [0.05, 0.01, 0.02, 0.03]
    params = [jnp.zeros(2) for _ in range(4)]
    state = tx.init(params)
    update = jax.jit(tx.update)
    for k in range(13, 33):
        groups = [g for o in (o1, o2) for g in o.param_groups]
        np.testing.assert_allclose(np.asarray(state.schedule.lrs), [g["lr"] for g in groups],
                                   rtol=1e-13, atol=0)
        np.testing.assert_allclose(np.asarray(state.schedule.momenta),  # OneCycleLR's
                                   [g["momentum"] for g in groups], rtol=1e-14, atol=0)
        assert int(state.count) == k
        _, state = update(params, state, params)
        for o, s_ in ((o1, s1), (o2, s2)):
            o.step()
            s_.step()


def test_cosine_annealing_rises_past_T_max_like_torch_and_optax_stays_flat():
    lrs, _ = _ours(S.CosineAnnealingLR(10), 31)
    ref, _ = _torch_lrs(lambda o: L.CosineAnnealingLR(o, 10), 31)
    assert _rel(lrs, ref) <= 1e-13
    assert lrs[10, 0] < 1e-18 and abs(lrs[20, 0] - 0.05) < 1e-15  # back to the base lr
    flat = optax.cosine_decay_schedule(0.05, 10)(jnp.arange(31))
    assert float(flat[20]) == 0.0


def test_onecycle_momentum_cycles_beta1_on_adam():
    sched = S.OneCycleLR(0.1, total_steps=50, base_momentum=0.8, max_momentum=0.9)
    ref, ref_m = _torch_lrs(lambda o: L.OneCycleLR(o, 0.1, total_steps=50, base_momentum=0.8,
                                                   max_momentum=0.9), 51, kind="adam")
    lrs, moms = _ours(sched, 51)
    assert _rel(lrs, ref) <= 1e-14 and _rel(moms, ref_m) <= 1e-14
    assert moms.min() == pytest.approx(0.8) and moms.max() == pytest.approx(0.9)
    # optax's onecycle is one step off torch's
    onecycle = jax.jit(optax.cosine_onecycle_schedule(50, 0.1))
    naive = np.array([float(onecycle(k)) for k in range(51)])
    assert np.max(np.abs(naive - ref[:, 0])) > 1e-3


@pytest.mark.parametrize("kw", [dict(factor=0.5, patience=3, cooldown=2, min_lr=[0.01, 0.0]),
                                dict(mode="max", threshold_mode="abs", threshold=1e-3,
                                     patience=0, eps=1e-3, factor=0.9)])
def test_plateau_learning_rates_match_torch(kw):
    sign = -1.0 if kw.get("mode") == "max" else 1.0
    metrics = lambda k: sign * T._plateau_metric(k)  # noqa: E731
    ref, _ = _torch_lrs(lambda o: L.ReduceLROnPlateau(o, **kw), 80, metrics=metrics)
    b = S.ReduceLROnPlateau(**kw).bind(BASE)
    state = b.init(jnp.float64)
    lrs = []
    for k in range(80):
        lrs.append([float(x) for x in b.lrs(state, None)])
        state = b.step(state, metrics(k))
    np.testing.assert_array_equal(np.array(lrs), ref)  # the same multiplications: exact
    assert len(np.unique(ref[:, 0])) > 3


def test_plateau_reduces_one_step_later_than_optax():
    """torch reduces when the bad epochs exceed patience; optax's reduce_on_plateau when they
    reach it."""
    ref, _ = _torch_lrs(lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=3), 40,
                        metrics=T._plateau_metric)
    tx = optax.contrib.reduce_on_plateau(factor=0.5, patience=3)
    state = tx.init({"w": jnp.zeros(1)})
    update = jax.jit(tx.update)
    scale = []
    for k in range(40):
        scale.append(float(state.scale))
        _, state = update({"w": jnp.zeros(1)}, state, value=T._plateau_metric(k))
    first_torch = int(np.argmax(ref[:, 0] < BASE[0]))
    first_optax = int(np.argmax(np.array(scale) < 1.0))
    assert first_optax < first_torch


def test_schedules_are_float64_under_x64_where_optax_is_float32():
    count = jnp.asarray(7, jnp.int32)
    for ours, theirs in [
        (S.ExponentialLR(0.97), optax.exponential_decay(0.05, 1, 0.97)),
        (S.LinearLR(0.1, 1.0, 20), optax.linear_schedule(0.005, 0.05, 20)),
        (S.PolynomialLR(60, 2.0), optax.polynomial_schedule(0.05, 0.0, 2.0, 60)),
    ]:
        assert ours.as_optax(0.05)(count).dtype == jnp.float64
        assert theirs(count).dtype == jnp.float32


def test_as_optax_equals_the_bound_schedule():
    f = S.StepLR(5, 0.5).as_optax(0.1)
    assert float(f(12)) == 0.1 * 0.5**2
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau is metric-driven"):
        S.ReduceLROnPlateau().as_optax(0.1)


def test_lambda_lr_runs_plain_python_under_jit():
    sched = S.LambdaLR(lambda e: 1.0 if e < 3 else math.cos(e) ** 2)  # math: not traceable
    f = jax.jit(sched.as_optax(0.1))
    for k in (0, 2, 3, 10):
        assert float(f(k)) == pytest.approx(0.1 * (1.0 if k < 3 else math.cos(k) ** 2), rel=1e-15)


# ---------------------------------------------------------------------------------------------
# validation (torch's rules, plus types)


@pytest.mark.parametrize(("make", "exc", "msg"), [
    (lambda: S.StepLR(0), ValueError, r"step_size: expected an int >= 1, got 0"),
    (lambda: S.StepLR(2.5), TypeError, r"step_size: expected an int, got float 2.5"),
    (lambda: S.ConstantLR(factor=1.5), ValueError, r"factor: expected a value in \[0.0, 1.0\], got 1.5"),
    (lambda: S.LinearLR(start_factor=0.0), ValueError, r"start_factor: expected a value in \(0.0, 1.0\], got 0.0"),
    (lambda: S.LinearLR(end_factor=2.0), ValueError, r"end_factor: .*got 2.0"),
    (lambda: S.CosineAnnealingLR(0), ValueError, r"T_max: expected an int >= 1, got 0"),
    (lambda: S.CosineAnnealingWarmRestarts(0), ValueError, r"T_0: expected an int >= 1, got 0"),
    (lambda: S.CosineAnnealingWarmRestarts(5, T_mult=0), ValueError, r"T_mult: .*got 0"),
    (lambda: S.OneCycleLR(0.1), ValueError, r"total_steps: expected total_steps, or epochs and "
                                            r"steps_per_epoch"),
    (lambda: S.OneCycleLR(0.1, total_steps=10, pct_start=1.5), ValueError,
     r"pct_start: expected a value in \[0.0, 1.0\], got 1.5"),
    (lambda: S.OneCycleLR(0.1, total_steps=10, pct_start=1), TypeError, r"pct_start: expected a float"),
    (lambda: S.OneCycleLR(0.1, total_steps=10, anneal_strategy="exp"), ValueError,
     r"anneal_strategy: expected one of \['cos', 'linear'\], got 'exp'"),
    (lambda: S.ReduceLROnPlateau(factor=1.0), ValueError, r"factor: expected a value in \[-inf, 1.0\), got 1.0"),
    (lambda: S.ReduceLROnPlateau(mode="avg"), ValueError, r"mode: expected one of \['min', 'max'\], got 'avg'"),
    (lambda: S.ReduceLROnPlateau(threshold_mode="pct"), ValueError, r"threshold_mode: .*got 'pct'"),
    (lambda: S.ReduceLROnPlateau(patience=-1), ValueError, r"patience: expected an int >= 0, got -1"),
    (lambda: S.LambdaLR(0.5), TypeError, r"lr_lambda: expected a callable"),
    (lambda: S.SequentialLR([S.StepLR(2), S.ReduceLROnPlateau()], [3]), ValueError,
     r"schedulers\[1\]: ReduceLROnPlateau cannot be a stage of SequentialLR"),
    (lambda: S.SequentialLR([S.StepLR(2), S.StepLR(3)], [3, 4]), ValueError,
     r"milestones: expected 1 milestones"),
    # issue 18
    (lambda: S.MultiplicativeLR(0.9), TypeError, r"lr_lambda: expected a callable"),
    (lambda: S.CyclicLR(0.01, 0.1, mode="triangle"), ValueError,
     r"mode: expected one of \['triangular', 'triangular2', 'exp_range'\] \(or a scale_fn\), "
     r"got 'triangle'"),
    (lambda: S.CyclicLR(0.01, 0.1, scale_fn=lambda x: 1.0, scale_mode="iter"), ValueError,
     r"scale_mode: expected one of \['cycle', 'iterations'\], got 'iter'"),
    (lambda: S.CyclicLR(0.01, 0.1, step_size_up=0), ValueError,
     r"step_size_up: expected a value in \(0.0, inf\], got 0"),
    (lambda: S.CyclicLR(0.01, 0.1, step_size_down=-1), ValueError,
     r"step_size_down: expected a value in \[0.0, inf\], got -1"),
    (lambda: S.CyclicLR("0.01", 0.1), TypeError, r"base_lr: expected a real number"),
    (lambda: S.CyclicLR(0.01, [0.1, "x"]), TypeError, r"max_lr\[1\]: expected a real number"),
    (lambda: S.CyclicLR(0.01, 0.1, scale_fn=3), TypeError, r"scale_fn: expected a callable"),
    (lambda: S.ChainedScheduler([]), ValueError, r"schedulers: expected a non-empty list"),
    (lambda: S.ChainedScheduler([S.StepLR(2), S.ReduceLROnPlateau()]), ValueError,
     r"schedulers\[1\]: ChainedScheduler does not support ReduceLROnPlateau"),
    (lambda: S.ChainedScheduler([S.StepLR(2), S.ChainedScheduler([S.ReduceLROnPlateau()])]),
     ValueError, r"schedulers\[0\]: ChainedScheduler does not support ReduceLROnPlateau"),
    (lambda: S.ChainedScheduler([lambda c: 0.1]), TypeError, r"schedulers\[0\]: expected a "
                                                             r"multiloss.optim.schedules schedule"),
    (lambda: S.SequentialLR([S.StepLR(2), S.ChainedScheduler([S.StepLR(3)])], [3]), ValueError,
     r"schedulers\[1\]: ChainedScheduler cannot be a stage of SequentialLR"),
])
def test_bad_schedule_arguments(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


def test_torch_rejects_the_same_values():
    opt = _torch_opt()
    for build in (lambda: L.ConstantLR(opt, factor=1.5), lambda: L.LinearLR(opt, 0.0),
                  lambda: L.CosineAnnealingWarmRestarts(opt, 0),
                  lambda: L.OneCycleLR(opt, 0.1, total_steps=10, pct_start=1.5),
                  lambda: L.ReduceLROnPlateau(opt, factor=1.0),
                  lambda: L.ReduceLROnPlateau(opt, mode="avg"),
                  lambda: L.CyclicLR(opt, 0.01, 0.1, mode="triangle"),
                  lambda: L.ChainedScheduler([L.StepLR(opt, 2), L.ReduceLROnPlateau(opt)])):
        with pytest.raises(ValueError):
            build()


def test_per_group_lists_must_match_the_groups():
    groups = [{}, {"lr": 0.1}]
    labels = {"w": 0, "b": 1}
    with pytest.raises(ValueError, match=r"lr_lambda: expected 2 callables \(one per parameter "
                                         r"group\), got 3"):
        mo.get("sgd", param_groups=groups, labels=labels,
               schedule=S.LambdaLR([T._lambda] * 3))
    with pytest.raises(ValueError, match=r"max_lr: expected 2 values \(one per parameter group\), "
                                         r"got 1"):
        mo.get("sgd", param_groups=groups, labels=labels,
               schedule=S.OneCycleLR([0.1], total_steps=10))


def test_cyclic_momentum_cycling_needs_momentum_or_beta1():
    """CyclicLR cycles SGD's momentum / Adam's beta1 (torch's default cycle_momentum=True),
    and refuses optimizers without either, as torch does."""
    for name in ("adagrad", "asgd", "rprop"):
        with pytest.raises(ValueError, match=rf"schedule: CyclicLR cycles momentum but "
                                             rf"{mo.resolve(name).torch_class} has no momentum"):
            mo.get(name, schedule=S.CyclicLR(0.01, 0.1))
        with pytest.raises(ValueError, match=r"optimizer must support momentum"):  # torch too
            L.CyclicLR(getattr(torch.optim, mo.resolve(name).torch_class)(
                [torch.zeros(1, requires_grad=True)]), 0.01, 0.1)
    mo.get("adagrad", schedule=S.CyclicLR(0.01, 0.1, cycle_momentum=False))
    _, moms = _ours(S.CyclicLR(0.01, 0.1, step_size_up=4), 9)
    ref, ref_m = _torch_lrs(lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=4), 9, kind="adam")
    assert _rel(moms, ref_m) <= 1e-15 and ref_m[4, 0] == pytest.approx(0.8)  # beta1 at the peak


def test_momentum_cycling_needs_momentum_or_beta1():
    with pytest.raises(ValueError, match=r"schedule: OneCycleLR cycles momentum but Adagrad has "
                                         r"no momentum or beta1"):
        mo.get("adagrad", schedule=S.OneCycleLR(0.1, total_steps=10))
    with pytest.raises(ValueError):  # torch too
        L.OneCycleLR(torch.optim.Adagrad([torch.zeros(1, requires_grad=True)]), 0.1,
                     total_steps=10)
    with pytest.raises(TypeError, match=r"schedule: expected a multiloss.optim.schedules "
                                        r"schedule, got function"):
        mo.get("sgd", schedule=lambda c: 0.1)


def test_from_torch_of_several_optimizers_concatenates_per_group_schedule_values():
    """Each optimizer's LambdaLR / CyclicLR holds one value per group: one transform over all
    the groups takes them all, in order (before: 'expected 2 callables, got 1')."""
    for make in (lambda o: L.LambdaLR(o, _mult),
                 lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3)):
        opts = [torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=lr, momentum=0.9)
                for lr in BASE]
        scheds = [make(o) for o in opts]
        for _ in range(4):
            for o, s_ in zip(opts, scheds):
                o.step()
                s_.step()
        b = mo.from_torch(opts, scheds).transform.schedule.bind(BASE)
        t = jnp.asarray(4.0)
        np.testing.assert_array_equal([float(x) for x in b.lrs((), t)],
                                      [o.param_groups[0]["lr"] for o in opts])
        if b.momenta((), t) is not None:
            np.testing.assert_array_equal([float(x) for x in b.momenta((), t)],
                                          [o.param_groups[0]["momentum"] for o in opts])
