"""The trajectory harness: run the same problem with torch.optim (the independent reference)
and with multiloss's JAX transform, and compare the parameters after every step.

    >>> from multiloss.optim import testing
    >>> r = testing.run(testing.case("adam/amsgrad"), "float64")
    >>> r.max_error <= testing.TOLERANCE["float64"]

The problem: parameters ``{"w": (3, 4), "b": (4,)}`` drawn once from a fixed seed, and the
gradient of L(p) = sum(0.5 a (p - c)^2 + 0.25 sin(2 p)) (a in [0.5, 1.5], c ~ 3 N(0, 1)), one
NumPy function used by both sides, so that the gradients are bit-identical functions of the
parameters and every difference comes from the optimizers. Both sides see the same sequence
of "no gradient" steps, clipping and metrics.

Error of one step: max over parameters of max|p_jax - p_torch| / max|p_torch|; a case's error
is the largest over its steps. ``naive`` runs the same-named optax call with the same numbers
(the port a user would write) the same way, to show where the mapping matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import schedules as S

#: Largest accepted error per dtype (see the module doc and docs/optim.md). float64: torch
#: and XLA order floating-point operations differently and ``optax.apply_updates`` adds the
#: update back (one rounding per step), so bit equality is not expected; 1e-12 is the bar.
#: float32: 32 ulps (3.8e-6) relative after 100 steps: single-precision rounding of the
#: moments, of p + (new_p - p) and of torch's and XLA's differently ordered sums accumulates
#: over the steps (measured worst 1.2e-6).
TOLERANCE = {"float64": 1e-12, "float32": 32 * float(np.finfo(np.float32).eps)}

#: LBFGS in float32: its two-loop recursion takes dot products of float32 vectors (summed in
#: different orders by torch's BLAS and by XLA) and divides by y.s and y.y, which amplifies
#: their rounding (measured worst 2.5e-5).
LBFGS_FLOAT32 = 1e-4


STEPS = 100
SHAPES = {"w": (3, 4), "b": (4,)}


def problem(dtype="float64", seed=0, shapes=None):
    """Initial parameters, the gradient and the loss (NumPy, ``dtype``; ``shapes``: name ->
    shape, default ``SHAPES``)."""
    rng = np.random.default_rng(seed)
    shapes = SHAPES if shapes is None else shapes
    p0 = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
    a = {k: rng.uniform(0.5, 1.5, size=s).astype(dtype) for k, s in shapes.items()}
    c = {k: (3 * rng.normal(size=s)).astype(dtype) for k, s in shapes.items()}
    half, quarter, two = (np.asarray(x, dtype) for x in (0.5, 0.25, 2.0))

    def grad(p):
        return {k: (a[k] * (p[k] - c[k]) + half * np.cos(two * p[k])).astype(dtype) for k in p}

    def loss(p):
        return float(sum(np.sum(half * a[k] * (p[k] - c[k]) ** 2 + quarter * np.sin(two * p[k]))
                         for k in p))

    return p0, grad, loss


@dataclass
class Case:
    """One comparison. ``jax`` are the keyword arguments of ``multiloss.optim.get`` (without
    the name); ``torch_groups(named_params)`` builds torch's param groups; ``torch_schedule
    (optimizer)`` torch's scheduler (built from torch's classes, independently of
    multiloss); ``no_grad(step, name)`` says whether a parameter gets no gradient at a step;
    ``metric(step)`` feeds ReduceLROnPlateau; ``naive()`` is the same-named optax call, and
    ``naive_gap`` a lower bound on its measured divergence (set where it diverges)."""

    id: str
    optimizer: str
    hyper: dict = field(default_factory=dict)
    jax: dict = field(default_factory=dict)
    torch_groups: Callable | None = None
    torch_schedule: Callable | None = None
    clip: tuple | None = None
    no_grad: Callable | None = None
    no_grad_mode: str = "none"  # "none": None leaves; "mask": has_grad=
    metric: Callable | None = None
    naive: Callable | None = None
    naive_gap: float | None = None  # the naive port diverges by more than this (tests assert it)
    from_torch: bool = False
    convert_at: int = 0  # from_torch after this many torch steps (its state converted)
    steps: int = STEPS
    seed: int = 0
    zero_grad: Callable | None = None  # (step, name) -> bool mask: these entries' gradient is 0
    shapes: dict | None = None  # the parameters' shapes (default SHAPES)
    torch_build: Callable | None = None  # named -> [torch optimizers] stepped together
    long: bool = False  # run by tests/test_optim.py only with MULTILOSS_LONG=1 (CI time)


def tolerance(case: Case, dtype: str) -> float:
    """The accepted error of ``case`` in ``dtype``."""
    if dtype == "float32" and case.optimizer == "lbfgs":
        return LBFGS_FLOAT32
    return TOLERANCE[dtype]


@dataclass
class Result:
    case: str
    dtype: str
    errors: list  # per step
    naive_errors: list | None = None

    @property
    def max_error(self) -> float:
        return max(self.errors)

    @property
    def naive_max(self) -> float | None:
        return None if self.naive_errors is None else max(self.naive_errors)


def _error(pj, pt) -> float:
    worst = 0.0
    for k in pt:
        ref = np.asarray(pt[k], np.float64)
        d = np.max(np.abs(np.asarray(pj[k], np.float64) - ref))
        scale = np.max(np.abs(ref))
        e = d / scale if scale > 0 else d
        worst = max(worst, float(e) if np.isfinite(e) else math.inf)
    return worst


# --------------------------------------------------------------------------------------------
# the torch side (the reference)


def run_torch(case: Case, dtype: str, build_only=False):
    import torch

    p0, grad, loss = problem(dtype, case.seed, case.shapes)
    named = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    if case.torch_build is not None:  # several optimizers (Muon's recipe), one scheduler each
        opt = case.torch_build(named)
        sched = [case.torch_schedule(o) for o in opt] if case.torch_schedule else None
        if build_only:
            return opt, sched, named
        return _torch_loop(case, opt, sched, named, grad, loss)
    cls = getattr(torch.optim, _torch_class(case.optimizer))
    params = case.torch_groups(named) if case.torch_groups else list(named.values())
    opt = cls(params, **case.hyper)
    sched = case.torch_schedule(opt) if case.torch_schedule else None
    if build_only:
        return opt, sched, named
    return _torch_loop(case, opt, sched, named, grad, loss)


def _torch_loop(case, opt, sched, named, grad, loss, steps=None):
    import torch

    threads = torch.get_num_threads()
    if case.optimizer == "muon" or _torch_class(case.optimizer) == "SparseAdam":
        # torch's CPU bfloat16 matmul (Muon's Newton-Schulz) costs ~30 ms a call with 2 OpenMP
        # threads on a loaded 2-core machine, 2 us with one; the matrices here are tiny.
        # SparseAdam's dense += sparse add_ starts the intra-op thread pool on every call (15x
        # slower there). One thread: the same numbers
        torch.set_num_threads(1)
    try:
        return _torch_steps(case, opt, sched, named, grad, loss, steps)
    finally:
        torch.set_num_threads(threads)


def _torch_steps(case, opt, sched, named, grad, loss, steps):
    import torch

    traj = []
    for k in range(case.steps if steps is None else steps):
        def closure(k=k):
            p = {n: v.detach().numpy() for n, v in named.items()}
            g = _zeroed(case, k, grad(p))
            for n, v in named.items():
                v.grad = (None if case.no_grad and case.no_grad(k, n)
                          else torch_grad(case.optimizer, torch.from_numpy(g[n])))
            if case.clip:
                have = [v for v in named.values() if v.grad is not None]
                if case.clip[0] == "norm":
                    torch.nn.utils.clip_grad_norm_(have, case.clip[1], norm_type=case.clip[2])
                else:
                    torch.nn.utils.clip_grad_value_(have, case.clip[1])
            return loss(p)

        if isinstance(opt, list):
            closure()
            for o in opt:
                o.step()
            for s in sched or ():
                s.step()
        elif isinstance(opt, torch.optim.LBFGS):
            opt.step(closure)
        else:
            closure()
            opt.step()
        if sched is not None and not isinstance(opt, list):
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(case.metric(k))
            else:
                sched.step()
        traj.append({n: v.detach().numpy().copy() for n, v in named.items()})
    return traj


def torch_grad(optimizer: str, g):
    """The gradient tensor torch's optimizer takes: sparse layout for SparseAdam (which raises
    on dense gradients; ``to_sparse`` keeps the entries that are not 0, the entries the JAX
    transform updates), dense otherwise."""
    from ._registry import resolve

    return g.to_sparse() if resolve(optimizer).name == "sparse_adam" else g


def _zeroed(case, k, g):
    if case.zero_grad is None:
        return g
    return {n: np.where(case.zero_grad(k, n), np.zeros_like(v), v) for n, v in g.items()}


def _torch_class(name):
    from ._registry import resolve

    return resolve(name).torch_class


# --------------------------------------------------------------------------------------------
# the JAX side


def _jax_loops(case, tx, dtypes, naive=False, start=None) -> dict:
    """The JAX trajectories of ``case`` in each of ``dtypes``, stepped together by one
    jitted function (one compilation for all dtypes). ``start``: dtype -> (transform,
    parameters) to start from at step ``case.convert_at`` (``from_torch`` mid-training)."""
    import jax
    import jax.numpy as jnp
    import optax

    probs = {d: problem(d, case.seed, case.shapes) for d in dtypes}
    first = 0
    if start is None:
        params = {d: {k: jnp.asarray(v) for k, v in probs[d][0].items()} for d in dtypes}
        states = {d: tx.init(params[d]) for d in dtypes}
    else:
        first = case.convert_at
        params = {d: {k: jnp.asarray(v) for k, v in start[d][1].items()} for d in dtypes}
        states = {d: start[d][0].init(params[d]) for d in dtypes}
    lbfgs_many = case.optimizer == "lbfgs" and case.hyper.get("max_iter", 20) > 1 and not naive

    def value_and_grad(d):
        p0, grad, loss = probs[d]

        def host(p):
            p = {k: np.asarray(v) for k, v in p.items()}
            return np.asarray(loss(p), np.float64), grad(p)

        shapes = (jax.ShapeDtypeStruct((), np.float64),
                  {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in p0.items()})
        return lambda p: jax.pure_callback(host, shapes, p, vmap_method="sequential")

    vgs = {d: value_and_grad(d) for d in dtypes} if lbfgs_many else {}

    def one(d, g, state, params, has_grad, metric, value):
        extra = {}
        if has_grad is not None:
            extra["has_grad"] = has_grad
        if metric is not None:
            extra["value" if naive else "metrics"] = metric
        if lbfgs_many:
            extra["value"] = value
            extra["value_and_grad_fn"] = vgs[d]
        u, state = tx.update(g, state, params, **extra)
        return optax.apply_updates(params, u), state

    @jax.jit
    def step(args):
        return tuple(one(d, *a) for d, a in zip(dtypes, args))

    trajs = {d: [] for d in dtypes}
    for k in range(first, case.steps):
        args = []
        for d in dtypes:
            _, grad, loss = probs[d]
            p = {n: np.asarray(v) for n, v in params[d].items()}
            g = _zeroed(case, k, grad(p))
            has_grad = None
            if case.no_grad:
                miss = {n: bool(case.no_grad(k, n)) for n in g}
                if case.no_grad_mode == "mask" and not naive:
                    has_grad = {n: jnp.asarray(not m) for n, m in miss.items()}
                elif naive:
                    g = {n: (np.zeros_like(v) if miss[n] else v) for n, v in g.items()}
                else:
                    g = {n: (None if miss[n] else v) for n, v in g.items()}
            metric = None if case.metric is None else np.asarray(case.metric(k), np.float64)
            value = np.asarray(loss(p), np.float64)
            args.append((g, states[d], params[d], has_grad, metric, value))
        out = step(tuple(args))
        for d, (new_params, new_state) in zip(dtypes, out):
            params[d], states[d] = new_params, new_state
            trajs[d].append({n: np.asarray(v) for n, v in new_params.items()})
    return trajs


def _jax_loop(case, tx, dtype, naive=False):
    return _jax_loops(case, tx, (dtype,), naive)[dtype]


def converted(case: Case, dtype: str):
    """The torch optimizer of ``case`` after ``case.convert_at`` steps, converted by
    ``from_torch`` (state included): the transform and torch's parameters at that point."""
    from . import from_torch

    opt, sched, named = run_torch(case, dtype, build_only=True)
    _, grad, loss = problem(dtype, case.seed, case.shapes)
    _torch_loop(case, opt, sched, named, grad, loss, steps=case.convert_at)
    tx = from_torch(opt, sched, params=list(named.items()), **case.jax).transform
    return tx, {n: v.detach().numpy().copy() for n, v in named.items()}


def build_jax(case: Case):
    from . import from_torch, get

    if case.from_torch:
        opt, sched, named = run_torch(case, "float64", build_only=True)
        return from_torch(opt, sched, params=list(named.items()), **case.jax).transform
    return get(case.optimizer, backend="jax", **case.hyper, **case.jax)


def run_all(case: Case, dtypes=("float64", "float32"), naive: bool = False,
            ours: bool = True) -> dict:
    """Run ``case`` on torch and on JAX in each dtype (the JAX runs compiled together); a
    :class:`Result` per dtype. ``naive``: also the naive optax port (float64 only);
    ``ours=False``: only the naive port, whose errors are then also the result's ``errors``."""
    refs = {d: run_torch(case, d) for d in dtypes}
    out = {}
    if ours:
        if case.convert_at:
            start = {d: converted(case, d) for d in dtypes}
            trajs = _jax_loops(case, start[dtypes[0]][0], dtypes, start=start)
        else:
            trajs = _jax_loops(case, build_jax(case), dtypes)
        for d in dtypes:
            ref = refs[d][case.convert_at:]
            out[d] = Result(case.id, d, [_error(a, b) for a, b in zip(trajs[d], ref)])
    if (naive or not ours) and case.naive is not None and "float64" in dtypes:
        other = _jax_loop(case, case.naive(), "float64", naive=True)
        errs = [_error(a, b) for a, b in zip(other, refs["float64"])]
        if "float64" in out:
            out["float64"].naive_errors = errs
        else:
            out["float64"] = Result(case.id, "float64", errs, errs)
    return out


def run(case: Case, dtype: str = "float64", naive: bool = True, ours: bool = True) -> Result:
    """Run ``case`` in one dtype (see :func:`run_all`)."""
    return run_all(case, (dtype,), naive=naive and dtype == "float64", ours=ours)[dtype]


# --------------------------------------------------------------------------------------------
# the cases


def _optax():
    import optax

    return optax


def _groups_wb(hyper_w=None, hyper_b=None):
    def build(named):
        return [{"params": [named["w"]], **(hyper_w or {})},
                {"params": [named["b"]], **(hyper_b or {})}]

    return build


_LABELS = {"w": 0, "b": 1}
_DECAY_LABELS = {"w": "decay", "b": "no_decay"}


def _sched(cls_name, **kw):
    def build(opt):
        import torch

        return getattr(torch.optim.lr_scheduler, cls_name)(opt, **kw)

    return build


def _lambda(epoch):  # plain Python: int arithmetic and min(), as a torch user writes it
    return min(1.0, (epoch + 1) / 10) * 0.9 ** (epoch // 7)


def _lambda_b(epoch):
    return 1.0 / (1 + 0.05 * epoch)


def _plateau_metric(k):
    # improves for 15 steps, then flat with a tiny wiggle: reductions, cooldowns, then min_lr
    return 1.0 / (1 + k) if k < 15 else 1.0 / 16 + 1e-6 * (k % 2)


def _every_third_b(k, name):
    return name == "b" and k % 3 == 1


#: Muon's cases: a wide, a tall and a square matrix (torch's Muon takes 2-D parameters only)
MUON_SHAPES = {"w": (3, 4), "t": (5, 3), "s": (4, 4)}
#: Adafactor's cases: factored matrix, vector and a 3-D parameter (factored over its last two)
ADAFACTOR_SHAPES = {"w": (3, 4), "b": (4,), "c": (2, 3, 2)}


def _muon_labels(params):
    from . import muon_labels

    return muon_labels(params)


def _muon_adamw(muon_hyper, adamw_hyper):
    """torch's Muon recipe: Muon for the 2-D parameters, AdamW for the rest."""
    def build(named):
        import torch

        mats = [p for p in named.values() if p.ndim == 2]
        rest = [p for p in named.values() if p.ndim != 2]
        return [torch.optim.Muon(mats, **muon_hyper), torch.optim.AdamW(rest, **adamw_hyper)]

    return build


def _cases() -> list[Case]:
    ox = _optax
    c = []

    def add(*a, **kw):
        c.append(Case(*a, **kw))

    # ---- SGD
    add("sgd/defaults", "sgd")
    add("sgd/momentum", "sgd", {"lr": 0.05, "momentum": 0.9}, naive=lambda: ox().sgd(0.05, 0.9))
    add("sgd/dampening", "sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5},
        naive=lambda: ox().sgd(0.05, 0.9), naive_gap=0.1)
    add("sgd/nesterov", "sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        naive=lambda: ox().sgd(0.05, 0.9, nesterov=True))
    add("sgd/weight_decay", "sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1},
        naive=lambda: ox().sgd(0.05, 0.9), naive_gap=0.01)
    add("sgd/maximize", "sgd", {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1,
                                "maximize": True},
        naive=lambda: ox().chain(ox().add_decayed_weights(0.1), ox().sgd(0.01, 0.5)),
        naive_gap=0.1)
    # ---- Adam / AdamW
    add("adam/defaults", "adam", naive=lambda: ox().adam(1e-3))
    add("adam/betas_eps", "adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-3},
        naive=lambda: ox().adam(0.05, 0.8, 0.99, 1e-3))
    add("adam/weight_decay", "adam", {"lr": 0.05, "weight_decay": 0.1},
        naive=lambda: ox().adamw(0.05, weight_decay=0.1), naive_gap=0.01)
    add("adam/amsgrad", "adam", {"lr": 0.05, "amsgrad": True}, naive=lambda: ox().amsgrad(0.05),
        naive_gap=0.01)
    add("adam/maximize", "adam", {"lr": 0.05, "maximize": True, "weight_decay": 0.1})
    add("adam/decoupled_weight_decay", "adam", {"lr": 0.05, "weight_decay": 0.1,
                                                 "decoupled_weight_decay": True},
        naive=lambda: ox().adamw(0.05, weight_decay=0.1))
    add("adamw/defaults", "adamw", naive=lambda: ox().adamw(1e-3), naive_gap=1e-4)
    add("adamw/amsgrad", "adamw", {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True,
                                   "maximize": True, "betas": (0.85, 0.995), "eps": 1e-6})
    # ---- RMSprop
    add("rmsprop/defaults", "rmsprop", naive=lambda: ox().rmsprop(1e-2), naive_gap=0.1)
    add("rmsprop/alpha_eps", "rmsprop", {"lr": 0.02, "alpha": 0.9, "eps": 1e-3},
        naive=lambda: ox().rmsprop(0.02, decay=0.9, eps=1e-3), naive_gap=1e-3)
    add("rmsprop/centered", "rmsprop", {"lr": 0.01, "centered": True},
        naive=lambda: ox().rmsprop(0.01, decay=0.99, centered=True), naive_gap=1e-7)
    add("rmsprop/momentum", "rmsprop", {"lr": 0.01, "momentum": 0.9},
        naive=lambda: ox().rmsprop(0.01, decay=0.99, momentum=0.9), naive_gap=1e-7)
    add("rmsprop/weight_decay", "rmsprop", {"lr": 0.01, "weight_decay": 0.1, "maximize": True,
                                            "centered": True, "momentum": 0.5})
    # ---- Adagrad
    add("adagrad/defaults", "adagrad", naive=lambda: ox().adagrad(1e-2), naive_gap=1e-3)
    add("adagrad/lr_decay", "adagrad", {"lr": 0.1, "lr_decay": 0.05},
        naive=lambda: ox().adagrad(0.1), naive_gap=0.1)
    add("adagrad/initial_accumulator_value", "adagrad",
        {"lr": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-7},
        naive=lambda: ox().adagrad(0.1, initial_accumulator_value=0.1, eps=1e-7), naive_gap=1e-9)
    add("adagrad/weight_decay", "adagrad", {"lr": 0.1, "weight_decay": 0.1, "maximize": True})
    # ---- Adadelta
    add("adadelta/defaults", "adadelta", naive=lambda: ox().adadelta(), naive_gap=0.1)
    add("adadelta/rho_eps", "adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-4},
        naive=lambda: ox().adadelta(0.5, rho=0.8, eps=1e-4))
    add("adadelta/weight_decay", "adadelta", {"weight_decay": 0.1},
        naive=lambda: ox().adadelta(1.0, weight_decay=0.1))
    add("adadelta/maximize", "adadelta", {"lr": 0.5, "maximize": True})
    # ---- Adamax
    add("adamax/defaults", "adamax", naive=lambda: ox().adamax(2e-3))
    add("adamax/eps", "adamax", {"lr": 0.05, "eps": 1e-2}, naive=lambda: ox().adamax(0.05, eps=1e-2))
    add("adamax/weight_decay", "adamax", {"lr": 0.05, "weight_decay": 0.1, "maximize": True,
                                          "betas": (0.8, 0.99)})
    # ---- NAdam
    add("nadam/defaults", "nadam", naive=lambda: ox().nadam(2e-3), naive_gap=1e-3)
    add("nadam/momentum_decay", "nadam", {"lr": 0.05, "momentum_decay": 0.02,
                                          "betas": (0.8, 0.99)})
    add("nadam/weight_decay", "nadam", {"lr": 0.05, "weight_decay": 0.1, "maximize": True,
                                        "eps": 1e-4})
    add("nadam/decoupled_weight_decay", "nadam", {"lr": 0.05, "weight_decay": 0.1,
                                                   "decoupled_weight_decay": True},
        naive=lambda: ox().nadamw(0.05, weight_decay=0.1), naive_gap=0.01)
    # ---- RAdam
    add("radam/defaults", "radam", naive=lambda: ox().radam(1e-3), naive_gap=1e-10)
    add("radam/eps", "radam", {"lr": 0.05, "eps": 1e-3}, naive=lambda: ox().radam(0.05, eps=1e-3),
        naive_gap=1e-4)
    add("radam/weight_decay", "radam", {"lr": 0.05, "weight_decay": 0.1, "maximize": True,
                                        "betas": (0.8, 0.99)})
    add("radam/decoupled_weight_decay", "radam", {"lr": 0.05, "weight_decay": 0.1,
                                                   "decoupled_weight_decay": True})
    # ---- LBFGS
    add("lbfgs/max_iter=1", "lbfgs", {"lr": 0.1, "max_iter": 1},
        naive=lambda: ox().lbfgs(0.1, memory_size=100, linesearch=None), naive_gap=0.01)
    add("lbfgs/history_size_no_grad", "lbfgs", {"lr": 0.1, "max_iter": 1, "history_size": 3},
        no_grad=lambda k, name: name == "b" and k in (4, 5, 20))
    add("lbfgs/max_iter=5", "lbfgs", {"lr": 0.1, "max_iter": 5, "max_eval": 4, "history_size": 10,
                                      "tolerance_grad": 1e-3, "tolerance_change": 1e-4})

    # ---- Muon (2-D parameters only: tall, wide and square) and Adafactor (issue 18)
    ms = MUON_SHAPES
    add("muon/defaults", "muon", shapes=ms,
        naive=lambda: ox().contrib.muon(1e-3, eps=1e-7, weight_decay=0.1), naive_gap=1e-3)
    add("muon/lr_weight_decay", "muon", {"lr": 0.02, "weight_decay": 0.05}, shapes=ms,
        naive=lambda: ox().contrib.muon(0.02, eps=1e-7, weight_decay=0.05), naive_gap=1e-3,
        long=True)
    add("muon/options", "muon", {"lr": 0.05, "momentum": 0.9, "nesterov": False,
                                 "weight_decay": 0.01, "adjust_lr_fn": "match_rms_adamw",
                                 "ns_steps": 3, "ns_coefficients": (2.0, -1.5, 0.5)},
        shapes=ms)
    add("muon/eps_original_no_grad", "muon", {"lr": 0.02, "eps": 6.0,
                                              "adjust_lr_fn": "original"},
        shapes=ms, no_grad=lambda k, name: name == "t" and k % 3 == 1, no_grad_mode="mask",
        long=True)
    add("muon/OneCycleLR", "muon", {"lr": 0.02}, {"schedule": S.OneCycleLR(0.05, total_steps=100)},
        shapes=ms, torch_schedule=_sched("OneCycleLR", max_lr=0.05, total_steps=100), long=True)
    add("muon/recipe_adamw", "muon", {"lr": 0.02},
        {"param_groups": {"muon": {}, "adamw": {"optimizer": "adamw", "lr": 0.01,
                                                "weight_decay": 0.05}},
         "labels": _muon_labels, "schedule": S.StepLR(20, 0.5)},
        torch_build=_muon_adamw({"lr": 0.02}, {"lr": 0.01, "weight_decay": 0.05}),
        torch_schedule=_sched("StepLR", step_size=20, gamma=0.5))
    add("adafactor/defaults", "adafactor", shapes=ADAFACTOR_SHAPES,
        naive=lambda: ox().adafactor(1e-2), naive_gap=1e-3)
    add("adafactor/factored_everywhere", "adafactor", {"lr": 0.05}, shapes=ADAFACTOR_SHAPES,
        naive=lambda: ox().adafactor(0.05, min_dim_size_to_factor=1), naive_gap=1e-7,
        long=True)
    add("adafactor/options", "adafactor", {"lr": 0.05, "beta2_decay": -0.5, "eps": (1e-6, 1e-2),
                                           "d": 1.5, "weight_decay": 0.1, "maximize": True},
        shapes=ADAFACTOR_SHAPES)
    add("adafactor/eps1_floor_no_grad", "adafactor", {"lr": 0.05, "eps": (0.5, 1e-3)},
        shapes=ADAFACTOR_SHAPES, no_grad=_every_third_b, no_grad_mode="mask",
        long=True)
    add("adafactor/groups_schedule", "adafactor", {"lr": 0.05},
        {"param_groups": [{}, {"weight_decay": 0.1, "d": 2.0}], "labels": _LABELS,
         "schedule": S.CosineAnnealingLR(30, 1e-3)},
        torch_groups=_groups_wb({}, {"weight_decay": 0.1, "d": 2.0}),
        torch_schedule=_sched("CosineAnnealingLR", T_max=30, eta_min=1e-3),
        long=True)

    # ---- schedules (SGD with momentum unless the schedule is about beta1)
    sgd = {"lr": 0.05, "momentum": 0.9}

    def sch(id_, schedule, torch_build, naive_sched=None, optimizer="sgd", hyper=sgd,
            naive_gap=None, **kw):
        naive = None
        if naive_sched is not None:
            naive = (lambda: ox().sgd(naive_sched(), 0.9)) if optimizer == "sgd" else None
        add(f"schedule/{id_}", optimizer, dict(hyper), {"schedule": schedule}, naive=naive,
            torch_schedule=torch_build, naive_gap=naive_gap, **kw)

    sch("StepLR", S.StepLR(10, 0.5), _sched("StepLR", step_size=10, gamma=0.5),
        lambda: ox().exponential_decay(0.05, 10, 0.5, staircase=True), naive_gap=1e-10)
    sch("MultiStepLR", S.MultiStepLR([10, 30, 30, 60], 0.5),
        _sched("MultiStepLR", milestones=[10, 30, 30, 60], gamma=0.5),
        lambda: ox().piecewise_constant_schedule(0.05, {10: 0.5, 30: 0.25, 60: 0.5}))
    sch("ExponentialLR", S.ExponentialLR(0.97), _sched("ExponentialLR", gamma=0.97),
        lambda: ox().exponential_decay(0.05, 1, 0.97), naive_gap=1e-9)
    sch("CosineAnnealingLR", S.CosineAnnealingLR(30, 1e-3),
        _sched("CosineAnnealingLR", T_max=30, eta_min=1e-3),
        lambda: ox().cosine_decay_schedule(0.05, 30, alpha=1e-3 / 0.05), naive_gap=0.1)
    sch("LinearLR", S.LinearLR(0.1, 1.0, 20), _sched("LinearLR", start_factor=0.1,
                                                      end_factor=1.0, total_iters=20),
        lambda: ox().linear_schedule(0.005, 0.05, 20), naive_gap=1e-10)
    sch("ConstantLR", S.ConstantLR(0.25, 10), _sched("ConstantLR", factor=0.25, total_iters=10),
        lambda: ox().piecewise_constant_schedule(0.0125, {10: 4.0}))
    sch("PolynomialLR", S.PolynomialLR(60, 2.0), _sched("PolynomialLR", total_iters=60, power=2.0),
        lambda: ox().polynomial_schedule(0.05, 0.0, 2.0, 60), naive_gap=1e-10)
    sch("LambdaLR", S.LambdaLR(_lambda), _sched("LambdaLR", lr_lambda=_lambda))
    sch("LambdaLR/traceable", S.LambdaLR(lambda e: 0.97**e, traceable=True),
        _sched("LambdaLR", lr_lambda=lambda e: 0.97**e))

    def seq(opt):
        import torch

        L = torch.optim.lr_scheduler
        return L.SequentialLR(opt, [L.LinearLR(opt, 0.1, 1.0, 10), L.CosineAnnealingLR(opt, 40),
                                    L.ExponentialLR(opt, 0.95)], milestones=[10, 50])

    sch("SequentialLR", S.SequentialLR([S.LinearLR(0.1, 1.0, 10), S.CosineAnnealingLR(40),
                                        S.ExponentialLR(0.95)], [10, 50]), seq,
        lambda: ox().join_schedules([ox().linear_schedule(0.005, 0.05, 10),
                                    ox().cosine_decay_schedule(0.05, 40),
                                    ox().exponential_decay(0.05, 1, 0.95)], [10, 50]),
        naive_gap=1e-10)
    sch("OneCycleLR/sgd", S.OneCycleLR(0.1, total_steps=100),
        _sched("OneCycleLR", max_lr=0.1, total_steps=100),
        lambda: ox().cosine_onecycle_schedule(100, 0.1), naive_gap=0.01)
    sch("OneCycleLR/adam", S.OneCycleLR(0.1, total_steps=100),
        _sched("OneCycleLR", max_lr=0.1, total_steps=100), optimizer="adam",
        hyper={"lr": 0.05})
    sch("OneCycleLR/three_phase_linear", S.OneCycleLR(0.1, total_steps=100, pct_start=0.25,
                                                      anneal_strategy="linear", three_phase=True,
                                                      base_momentum=0.8, max_momentum=0.9),
        _sched("OneCycleLR", max_lr=0.1, total_steps=100, pct_start=0.25,
               anneal_strategy="linear", three_phase=True, base_momentum=0.8,
               max_momentum=0.9), optimizer="nadam", hyper={"lr": 0.05})
    sch("OneCycleLR/no_momentum", S.OneCycleLR(0.1, total_steps=100, cycle_momentum=False),
        _sched("OneCycleLR", max_lr=0.1, total_steps=100, cycle_momentum=False),
        optimizer="adagrad", hyper={"lr": 0.05})
    sch("CosineAnnealingWarmRestarts", S.CosineAnnealingWarmRestarts(10, 2, 1e-3),
        _sched("CosineAnnealingWarmRestarts", T_0=10, T_mult=2, eta_min=1e-3),
        lambda: ox().sgdr_schedule([dict(init_value=0.05, peak_value=0.05, decay_steps=10 * 2**i,
                                        warmup_steps=0, end_value=1e-3) for i in range(4)]))
    sch("CosineAnnealingWarmRestarts/T_mult=1", S.CosineAnnealingWarmRestarts(15),
        _sched("CosineAnnealingWarmRestarts", T_0=15), optimizer="rmsprop",
        hyper={"lr": 0.01, "momentum": 0.5})
    sch("ReduceLROnPlateau", S.ReduceLROnPlateau(factor=0.5, patience=3, cooldown=2,
                                                 min_lr=0.005),
        _sched("ReduceLROnPlateau", factor=0.5, patience=3, cooldown=2, min_lr=0.005),
        metric=_plateau_metric)
    sch("ReduceLROnPlateau/max_abs", S.ReduceLROnPlateau(mode="max", factor=0.7, patience=2,
                                                         threshold=1e-3, threshold_mode="abs"),
        _sched("ReduceLROnPlateau", mode="max", factor=0.7, patience=2, threshold=1e-3,
               threshold_mode="abs"), metric=lambda k: -_plateau_metric(k),
        optimizer="adam", hyper={"lr": 0.05})
    add("schedule/ReduceLROnPlateau/naive", "sgd", dict(sgd),
        {"schedule": S.ReduceLROnPlateau(factor=0.5, patience=3)},
        torch_schedule=_sched("ReduceLROnPlateau", factor=0.5, patience=3),
        metric=_plateau_metric,
        naive=lambda: ox().chain(ox().sgd(0.05, 0.9),
                                ox().contrib.reduce_on_plateau(factor=0.5, patience=3)),
        naive_gap=0.01)

    # ---- parameter groups
    add("groups/lr_weight_decay", "adamw", {"lr": 0.05, "weight_decay": 0.1},
        {"param_groups": {"decay": {}, "no_decay": {"weight_decay": 0.0, "lr": 0.02}},
         "labels": _DECAY_LABELS},
        torch_groups=_groups_wb({}, {"weight_decay": 0.0, "lr": 0.02}),
        naive=lambda: ox().adamw(0.05, weight_decay=0.1), naive_gap=0.01)
    add("groups/decay_labels", "sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1},
        {"param_groups": {"decay": {}, "no_decay": {"weight_decay": 0.0}},
         "labels": lambda p: __import__("multiloss.optim", fromlist=["x"]).decay_labels(p)},
        torch_groups=_groups_wb({}, {"weight_decay": 0.0}))
    add("groups/options", "adam", {"lr": 0.05},
        {"param_groups": [{"amsgrad": True, "betas": (0.8, 0.99)}, {"weight_decay": 0.1}],
         "labels": _LABELS},
        torch_groups=_groups_wb({"amsgrad": True, "betas": (0.8, 0.99)}, {"weight_decay": 0.1}))
    add("groups/LambdaLR_per_group", "sgd", {"lr": 0.05, "momentum": 0.9},
        {"param_groups": [{}, {"lr": 0.1}], "labels": _LABELS,
         "schedule": S.LambdaLR([_lambda, _lambda_b])},
        torch_groups=_groups_wb({}, {"lr": 0.1}),
        torch_schedule=_sched("LambdaLR", lr_lambda=[_lambda, _lambda_b]))
    add("groups/OneCycleLR_per_group", "adamw", {"lr": 0.05},
        {"param_groups": [{}, {"weight_decay": 0.0}], "labels": _LABELS,
         "schedule": S.OneCycleLR([0.1, 0.03], total_steps=100, base_momentum=[0.85, 0.8])},
        torch_groups=_groups_wb({}, {"weight_decay": 0.0}),
        torch_schedule=_sched("OneCycleLR", max_lr=[0.1, 0.03], total_steps=100,
                              base_momentum=[0.85, 0.8]))
    add("groups/ReduceLROnPlateau_min_lr", "sgd", {"lr": 0.05, "momentum": 0.9},
        {"param_groups": [{}, {"lr": 0.02}], "labels": _LABELS,
         "schedule": S.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=[0.01, 0.0])},
        torch_groups=_groups_wb({}, {"lr": 0.02}),
        torch_schedule=_sched("ReduceLROnPlateau", factor=0.5, patience=2, min_lr=[0.01, 0.0]),
        metric=_plateau_metric)
    for opt, hyper in (("adam", {"lr": 0.05, "weight_decay": 0.1}),
                       ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}),
                       ("nadam", {"lr": 0.05, "weight_decay": 0.1})):
        add(f"groups/no_grad/{opt}", opt, hyper, no_grad=_every_third_b,
            naive=(lambda o=opt, h=hyper: ox().chain(ox().add_decayed_weights(h["weight_decay"]),
                                                    getattr(ox(), o)(0.05, **({"momentum": 0.9} if o == "sgd" else {}))))
            if opt != "nadam" else None, naive_gap=0.01 if opt != "nadam" else None)
    add("groups/no_grad_mask/adamw", "adamw", {"lr": 0.05}, no_grad=_every_third_b,
        no_grad_mode="mask")
    add("groups/no_grad_mask/rmsprop", "rmsprop", {"lr": 0.01, "momentum": 0.5, "centered": True},
        no_grad=_every_third_b, no_grad_mode="mask")

    # ---- clipping
    add("clip/grad_norm", "sgd", {"lr": 0.05, "momentum": 0.9}, {"clip_grad_norm": 5.0},
        clip=("norm", 5.0, 2.0),
        naive=lambda: ox().chain(ox().clip_by_global_norm(5.0), ox().sgd(0.05, 0.9)),
        naive_gap=1e-9)
    add("clip/grad_norm_inf", "adam", {"lr": 0.05}, {"clip_grad_norm": 2.0, "clip_norm_type": "inf"},
        clip=("norm", 2.0, math.inf))
    add("clip/grad_norm_p3_no_grad", "adamw", {"lr": 0.05},
        {"clip_grad_norm": 3.0, "clip_norm_type": 3.0}, clip=("norm", 3.0, 3.0),
        no_grad=_every_third_b, no_grad_mode="mask")
    add("clip/grad_value", "sgd", {"lr": 0.05, "momentum": 0.9}, {"clip_grad_value": 1.5},
        clip=("value", 1.5),
        naive=lambda: ox().chain(ox().clip(1.5), ox().sgd(0.05, 0.9)))

    # ---- from_torch
    add("from_torch/adamw_groups_onecycle", "adamw", {"lr": 0.05},
        torch_groups=_groups_wb({"weight_decay": 0.05}, {"weight_decay": 0.0, "amsgrad": True}),
        torch_schedule=_sched("OneCycleLR", max_lr=[0.1, 0.05], total_steps=100,
                              pct_start=0.2), from_torch=True)
    add("from_torch/sgd_sequential", "sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True,
                                             "weight_decay": 1e-2},
        torch_schedule=seq, from_torch=True)
    add("from_torch/nadam_plateau", "nadam", {"lr": 0.05, "decoupled_weight_decay": True,
                                              "weight_decay": 0.1},
        torch_schedule=_sched("ReduceLROnPlateau", factor=0.5, patience=3),
        metric=_plateau_metric, from_torch=True)
    add("from_torch/lbfgs_step", "lbfgs", {"lr": 0.1, "max_iter": 1, "history_size": 5},
        torch_schedule=_sched("StepLR", step_size=20, gamma=0.5), from_torch=True)
    add("from_torch/rmsprop_lambda", "rmsprop", {"lr": 0.01, "momentum": 0.5},
        torch_groups=_groups_wb({}, {"lr": 0.02, "centered": True}),
        torch_schedule=_sched("LambdaLR", lr_lambda=[_lambda, _lambda_b]), from_torch=True)

    # ---- from_torch mid-training: k torch steps, convert (state included), continue on JAX
    def mid(id_, optimizer, hyper, k=10, steps=30, **kw):
        add(f"from_torch_mid/{id_}", optimizer, hyper, from_torch=True, convert_at=k,
            steps=steps, **kw)

    mid("sgd_momentum", "sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3})
    mid("sgd_no_grad_b", "sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        no_grad=lambda k, name: name == "b" and k < 12)  # b has no torch state at conversion
    mid("adam_amsgrad", "adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1})
    mid("adamw_groups_onecycle", "adamw", {"lr": 0.05},
        torch_groups=_groups_wb({"weight_decay": 0.05}, {"weight_decay": 0.0, "amsgrad": True}),
        torch_schedule=_sched("OneCycleLR", max_lr=[0.1, 0.05], total_steps=30,
                              pct_start=0.4))
    mid("rmsprop_lambda", "rmsprop", {"lr": 0.01, "momentum": 0.5},
        torch_groups=_groups_wb({}, {"lr": 0.02, "centered": True}),
        torch_schedule=_sched("LambdaLR", lr_lambda=[_lambda, _lambda_b]))
    mid("adagrad", "adagrad", {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.3})
    mid("adadelta_step", "adadelta", {"weight_decay": 0.1},
        torch_schedule=_sched("StepLR", step_size=7, gamma=0.5))
    mid("adamax", "adamax", {"lr": 0.05, "weight_decay": 0.1})
    mid("nadam_plateau", "nadam", {"lr": 0.05, "decoupled_weight_decay": True,
                                   "weight_decay": 0.1},
        torch_schedule=_sched("ReduceLROnPlateau", factor=0.5, patience=2, cooldown=1),
        metric=_plateau_metric, k=17)  # mid-cooldown, one lr reduction behind it
    mid("radam_sequential", "radam", {"lr": 0.05},
        torch_schedule=seq, k=12)  # past the first milestone
    mid("lbfgs", "lbfgs", {"lr": 0.1, "max_iter": 1, "history_size": 4},
        torch_schedule=_sched("StepLR", step_size=8, gamma=0.5))  # the history has wrapped
    mid("lbfgs_max_iter=5", "lbfgs", {"lr": 0.1, "max_iter": 5, "history_size": 6},
        k=3, steps=12)
    mid("sgd_warm_restarts", "sgd", {"lr": 0.05, "momentum": 0.9},
        torch_schedule=_sched("CosineAnnealingWarmRestarts", T_0=4, T_mult=2), k=9)
    _cases_issue18(add, mid, sch)
    mid("muon_cosine", "muon", {"lr": 0.02, "nesterov": False}, shapes=MUON_SHAPES,
        torch_schedule=_sched("CosineAnnealingLR", T_max=20), k=7, steps=20, long=True)
    mid("muon_adamw_recipe", "muon", {"lr": 0.02},
        torch_build=_muon_adamw({"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"},
                                {"lr": 0.01, "amsgrad": True}), k=7, steps=20)
    mid("adafactor", "adafactor", {"lr": 0.05, "weight_decay": 0.1}, shapes=ADAFACTOR_SHAPES,
        torch_schedule=_sched("StepLR", step_size=5, gamma=0.5), k=9, steps=25)
    return c


def _absent_rows(k, name):
    """SparseAdam's gradients: embedding-like rows of w without a gradient (a different third
    of the rows each step), half of b's entries, and every 10th step none of b at all (an
    empty sparse gradient: torch counts the step and updates nothing)."""
    if name == "w":
        return np.broadcast_to(((k + np.arange(3)) % 3 == 0)[:, None], SHAPES["w"])
    return ((k + np.arange(4)) % 4 < 2) | (k % 10 == 5)


def _cyclic_scale(x):  # a custom CyclicLR scale_fn (plain Python, as a torch user writes it)
    return 1.0 / (1.0 + 0.1 * x)


def _cases_issue18(add, mid, sch):
    """ASGD, Rprop, SparseAdam; MultiplicativeLR, CyclicLR, ChainedScheduler (issue 18)."""
    ox = _optax
    # ---- ASGD (no optax counterpart)
    add("asgd/defaults", "asgd")
    add("asgd/lambd_alpha_t0", "asgd", {"lr": 0.05, "lambd": 1e-2, "alpha": 0.6, "t0": 20.0})
    add("asgd/weight_decay_maximize", "asgd", {"lr": 0.01, "weight_decay": 0.1, "t0": 5.0,
                                               "maximize": True})
    # ---- Rprop
    add("rprop/defaults", "rprop", naive=lambda: ox().rprop(1e-2), naive_gap=1e-3)
    add("rprop/etas_step_sizes", "rprop", {"lr": 0.05, "etas": (0.3, 1.5),
                                           "step_sizes": (1e-3, 0.2)},
        naive=lambda: ox().rprop(0.05, 0.3, 1.5, 1e-3, 0.2), naive_gap=1e-3)
    add("rprop/maximize", "rprop", {"lr": 0.05, "maximize": True, "step_sizes": (1e-4, 0.5)})
    # ---- SparseAdam (torch: sparse gradients; both sides: the same absent entries)
    add("sparse_adam/defaults", "sparse_adam", zero_grad=_absent_rows,
        naive=lambda: ox().adam(1e-3), naive_gap=1e-4)
    add("sparse_adam/betas_eps_maximize", "sparse_adam",
        {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-3, "maximize": True},
        zero_grad=_absent_rows, naive=lambda: ox().adam(-0.05, 0.8, 0.99, 1e-3),
        naive_gap=1e-2)
    add("sparse_adam/dense_gradient", "sparse_adam", {"lr": 0.05},
        naive=lambda: ox().adam(0.05))  # no zero entry: Adam's update (naive equal)
    # ---- schedules
    sgd = {"lr": 0.05, "momentum": 0.9}

    def mult(epoch):
        return 0.95 if epoch % 3 else 1.02

    sch("MultiplicativeLR", S.MultiplicativeLR(mult), _sched("MultiplicativeLR", lr_lambda=mult),
        lambda: ox().exponential_decay(0.05, 1, 0.95 ** (2 / 3) * 1.02 ** (1 / 3)),
        naive_gap=1e-3)
    sch("MultiplicativeLR/traceable_asgd", S.MultiplicativeLR(lambda e: 0.98, traceable=True),
        _sched("MultiplicativeLR", lr_lambda=lambda e: 0.98), optimizer="asgd",
        hyper={"lr": 0.05, "t0": 10.0})
    sch("CyclicLR/sgd", S.CyclicLR(0.01, 0.1, step_size_up=15, step_size_down=10),
        _sched("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=15, step_size_down=10),
        optimizer="sgd", hyper=dict(sgd))
    sch("CyclicLR/triangular2_adam", S.CyclicLR(0.01, 0.05, step_size_up=10, mode="triangular2",
                                                base_momentum=0.8, max_momentum=0.9),
        _sched("CyclicLR", base_lr=0.01, max_lr=0.05, step_size_up=10, mode="triangular2",
               base_momentum=0.8, max_momentum=0.9), optimizer="adam", hyper={"lr": 0.05})
    sch("CyclicLR/exp_range_no_momentum", S.CyclicLR(0.01, 0.1, step_size_up=8, mode="exp_range",
                                                     gamma=0.99, cycle_momentum=False),
        _sched("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=8, mode="exp_range",
               gamma=0.99, cycle_momentum=False), optimizer="adagrad", hyper={"lr": 0.05})
    sch("CyclicLR/scale_fn_sparse_adam", S.CyclicLR(0.01, 0.05, step_size_up=6, step_size_down=0,
                                                    scale_fn=_cyclic_scale,
                                                    scale_mode="iterations"),
        _sched("CyclicLR", base_lr=0.01, max_lr=0.05, step_size_up=6, step_size_down=0,
               scale_fn=_cyclic_scale, scale_mode="iterations"),
        optimizer="sparse_adam", hyper={"lr": 0.05}, zero_grad=_absent_rows)
    sch("ChainedScheduler", S.ChainedScheduler([S.ConstantLR(0.1, 20), S.ExponentialLR(0.97),
                                                S.MultiplicativeLR(mult)]),
        lambda o: _chained(o, [("ConstantLR", {"factor": 0.1, "total_iters": 20}),
                               ("ExponentialLR", {"gamma": 0.97}),
                               ("MultiplicativeLR", {"lr_lambda": mult})]),
        lambda: ox().join_schedules([ox().constant_schedule(0.005),
                                    ox().exponential_decay(0.05 * 0.97**20, 1, 0.97)], [20]),
        naive_gap=1e-3)
    sch("ChainedScheduler/rprop", S.ChainedScheduler([S.LinearLR(0.5, 1.0, 10),
                                                      S.StepLR(15, 0.5)]),
        lambda o: _chained(o, [("LinearLR", {"start_factor": 0.5, "total_iters": 10}),
                               ("StepLR", {"step_size": 15, "gamma": 0.5})]),
        optimizer="rprop", hyper={"lr": 0.05})  # Rprop reads lr only on its first step
    # any scheduler chains: the lr replayed through each one's recursive torch step
    sch("ChainedScheduler/cyclic_cosine_exp_adam",
        S.ChainedScheduler([S.CyclicLR(0.01, 0.1, step_size_up=7, step_size_down=5,
                                       base_momentum=0.8, max_momentum=0.9),
                            S.CosineAnnealingLR(12, 1e-3), S.ExponentialLR(0.99)]),
        lambda o: _chained(o, [("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 7,
                                             "step_size_down": 5, "base_momentum": 0.8,
                                             "max_momentum": 0.9}),
                               ("CosineAnnealingLR", {"T_max": 12, "eta_min": 1e-3}),
                               ("ExponentialLR", {"gamma": 0.99})]),
        optimizer="adam", hyper={"lr": 0.05})
    sch("ChainedScheduler/sequential_lambda_warm_restarts_nested",
        S.ChainedScheduler([S.ExponentialLR(0.99),
                            S.SequentialLR([S.LinearLR(0.2, 1.0, 5),
                                            S.CosineAnnealingWarmRestarts(8, 2)], [5]),
                            S.ChainedScheduler([S.LambdaLR(_lambda_b), S.StepLR(9, 0.7)])]),
        lambda o: L_().ChainedScheduler([
            L_().ExponentialLR(o, 0.99),
            L_().SequentialLR(o, [L_().LinearLR(o, 0.2, 1.0, 5),
                                  L_().CosineAnnealingWarmRestarts(o, 8, 2)], [5]),
            L_().ChainedScheduler([L_().LambdaLR(o, _lambda_b), L_().StepLR(o, 9, 0.7)])]))
    add("groups/CyclicLR_per_group", "sgd", dict(sgd),
        {"param_groups": [{}, {"lr": 0.02}], "labels": _LABELS,
         "schedule": S.CyclicLR([0.01, 0.02], [0.1, 0.05], step_size_up=12,
                                base_momentum=[0.8, 0.7], max_momentum=[0.9, 0.95])},
        torch_groups=_groups_wb({}, {"lr": 0.02}),
        torch_schedule=_sched("CyclicLR", base_lr=[0.01, 0.02], max_lr=[0.1, 0.05],
                              step_size_up=12, base_momentum=[0.8, 0.7],
                              max_momentum=[0.9, 0.95]))
    # ---- from_torch (fresh, and mid-training with the state converted)
    add("from_torch/asgd_multiplicative", "asgd", {"lr": 0.05, "t0": 10.0},
        torch_schedule=_sched("MultiplicativeLR", lr_lambda=mult), from_torch=True)
    add("from_torch/sparse_adam_cyclic", "sparse_adam", {"lr": 0.05},
        torch_schedule=_sched("CyclicLR", base_lr=0.01, max_lr=0.05, step_size_up=7,
                              mode="exp_range", gamma=0.99),
        zero_grad=_absent_rows, from_torch=True)
    add("from_torch/rprop_chained", "rprop", {"lr": 0.05, "etas": (0.4, 1.3)},
        torch_schedule=lambda o: _chained(o, [("ExponentialLR", {"gamma": 0.9}),
                                              ("ConstantLR", {"factor": 0.5})]),
        from_torch=True)
    mid("asgd", "asgd", {"lr": 0.05, "t0": 4.0, "weight_decay": 0.1},
        torch_schedule=_sched("MultiplicativeLR", lr_lambda=mult))  # averaging under way
    mid("rprop", "rprop", {"lr": 0.05, "step_sizes": (1e-3, 0.3)})
    mid("sparse_adam_cyclic", "sparse_adam", {"lr": 0.05, "betas": (0.85, 0.99)},
        torch_schedule=_sched("CyclicLR", base_lr=0.01, max_lr=0.05, step_size_up=4),
        zero_grad=_absent_rows, k=13)
    mid("sgd_onecycle_cosine_chained", "sgd", {"lr": 0.05, "momentum": 0.9},
        torch_schedule=_onecycle_then_cosine, k=11)  # made in another order than chained
    mid("adam_sequential_multiplicative_cyclic", "adam", {"lr": 0.05},
        torch_schedule=lambda o: L_().SequentialLR(o, [
            L_().MultiplicativeLR(o, _lambda_b),
            L_().CyclicLR(o, 0.01, 0.05, step_size_up=4, base_momentum=0.8, max_momentum=0.9),
            L_().MultiplicativeLR(o, lambda e: 0.97)], [6, 15]), k=9)  # beta1 cycled, kept
    mid("sgd_chained", "sgd", {"lr": 0.05, "momentum": 0.9},
        torch_schedule=lambda o: _chained(o, [("LinearLR", {"start_factor": 0.2}),
                                              ("ExponentialLR", {"gamma": 0.95})]), k=7)


def L_():
    import torch

    return torch.optim.lr_scheduler


def _onecycle_then_cosine(opt):
    """A ChainedScheduler whose schedulers were made in another order than they step: the
    cosine first (base lr: the group's lr), OneCycleLR second (overwriting initial_lr)."""
    L = L_()
    cos = L.CosineAnnealingLR(opt, 9, 1e-3)
    one = L.OneCycleLR(opt, 0.1, total_steps=40, pct_start=0.2)
    return L.ChainedScheduler([one, L.MultiplicativeLR(opt, _lambda_b), cos], opt)


def _chained(opt, parts):
    """torch's ChainedScheduler of torch's own schedulers (built in order, as a user does)."""
    import torch

    L = torch.optim.lr_scheduler
    return L.ChainedScheduler([getattr(L, n)(opt, **kw) for n, kw in parts], opt)


# --------------------------------------------------------------------------------------------
# weight averaging (multiloss.optim.swa): SWALR, alone, per group, as a SequentialLR stage and
# from_torch mid-annealing; AveragedModel is compared in tests/test_optim_swa.py


def _swalr(**kw):
    def build(opt):
        import torch

        return torch.optim.swa_utils.SWALR(opt, **kw)

    return build


def _cos_then_swalr(opt):
    import torch

    L = torch.optim.lr_scheduler
    return L.SequentialLR(opt, [L.CosineAnnealingLR(opt, T_max=20),
                                torch.optim.swa_utils.SWALR(opt, swa_lr=0.01, anneal_epochs=5,
                                                            anneal_strategy="linear")],
                          milestones=[12])


def _swa_cases() -> list[Case]:
    from . import swa

    sgd = {"lr": 0.05, "momentum": 0.9}
    return [
        Case("swa/SWALR", "sgd", sgd, {"schedule": swa.SWALR(0.01, anneal_epochs=10)},
             torch_schedule=_swalr(swa_lr=0.01, anneal_epochs=10), steps=30),
        # per-group swa_lr and lr; anneal_epochs=0: swa_lr at once
        Case("swa/SWALR_linear_groups", "sgd", sgd,
             {"schedule": swa.SWALR([0.01, 0.1], 4, "linear"), "param_groups": [{}, {"lr": 0.02}],
              "labels": {"w": 0, "b": 1}},
             torch_groups=_groups_wb({}, {"lr": 0.02}),
             torch_schedule=_swalr(swa_lr=[0.01, 0.1], anneal_epochs=4,
                                   anneal_strategy="linear"), steps=20),
        Case("swa/SWALR_anneal_epochs=0", "adam", {"lr": 0.05},
             {"schedule": swa.SWALR(0.003, anneal_epochs=0)},
             torch_schedule=_swalr(swa_lr=0.003, anneal_epochs=0), steps=10),
        Case("swa/SequentialLR_cos_then_SWALR", "sgd", sgd,
             {"schedule": S.SequentialLR([S.CosineAnnealingLR(20),
                                          swa.SWALR(0.01, 5, "linear")], [12])},
             torch_schedule=_cos_then_swalr, steps=30),
        # from_torch in the middle of the annealing: the base lr recovered from the current lr
        Case("swa/SWALR_from_torch_mid", "sgd", sgd, from_torch=True, convert_at=6,
             torch_schedule=_swalr(swa_lr=0.01, anneal_epochs=10), steps=20),
    ]


CASES = _cases() + _swa_cases()
_BY_ID = {c.id: c for c in CASES}


def case(case_id: str) -> Case:
    return _BY_ID[case_id]


#: Muon on larger matrices (tall, wide, square, and (17, 16), whose matmuls run in both of
#: torch's CPU kernels): where torch's float32 sums in its bfloat16 matmul, ordered by its
#: CPU kernel, round to another bfloat16 than the correctly rounded sum does, the
#: trajectories part (docs/optim.md reports these gaps)
MUON_GAP_SHAPES = ({"tall": (32, 8)}, {"wide": (8, 32)}, {"square": (64, 64)},
                   {"w": (128, 256), "t": (256, 128)}, {"mixed": (17, 16)})
MUON_GAP_OPTIONS = ({"lr": 0.02}, {"lr": 0.02, "nesterov": False, "momentum": 0.9,
                                   "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.01})


def muon_gaps(dtypes=("float64",), accumulations=("exact", "torch_cpu")) -> list[dict]:
    """Muon's 100-step gap to torch on the larger matrices of ``MUON_GAP_SHAPES`` with each of
    ``MUON_GAP_OPTIONS`` and each ``ns_accumulation``: per dtype the largest relative error,
    and the first step whose error in ``dtypes[0]`` exceeds 1e-12 (None: none)."""
    rows = []
    for acc in accumulations:
        for shapes in MUON_GAP_SHAPES:
            for hyper in MUON_GAP_OPTIONS:
                c = Case("muon/gap", "muon", dict(hyper), {"ns_accumulation": acc},
                         shapes=shapes)
                res = run_all(c, dtypes)
                errs = res[dtypes[0]].errors
                first = next((k + 1 for k, e in enumerate(errs) if e > 1e-12), None)
                rows.append({"ns_accumulation": acc, "shapes": shapes, "hyper": hyper,
                             "first_step_over_1e-12": first,
                             **{d: res[d].max_error for d in dtypes}})
    return rows


def table(dtypes=("float64", "float32"), results: dict | None = None) -> str:
    """The markdown table of docs/optim.md: largest error per case and dtype, and the naive
    optax port's (float64). ``results``: case id -> :func:`run_all`'s output (else run)."""
    rows = ["| case | float64 | float32 | naive optax (float64) |", "|---|---|---|---|"]
    for c in CASES:
        res = results[c.id] if results is not None else run_all(c, dtypes, naive=True)
        naive = res["float64"].naive_max if "float64" in res else None
        rows.append(f"| {c.id} | " + " | ".join(f"{res[d].max_error:.1e}" for d in dtypes)
                    + f" | {'' if naive is None else f'{naive:.1e}'} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# coverage of torch.optim: every optimizer and scheduler class torch has, enumerated from torch

#: torch's classes multiloss does not provide, each with the reason. tests/test_optim_coverage.py
#: fails when torch has a class that is neither provided (with a trajectory case) nor listed
#: here, and when a class listed here is provided (then remove it from this list).
NOT_PROVIDED: dict = {}

#: abstract bases torch exports beside the schedulers (not schedulers themselves)
BASE_CLASSES = {"LRScheduler": "the base class", "_LRScheduler": "the deprecated base alias"}


def torch_classes() -> dict:
    """``{"optimizer": [...], "scheduler": [...]}``: the names of every ``torch.optim.Optimizer``
    subclass in ``torch.optim`` and every ``LRScheduler`` subclass in
    ``torch.optim.lr_scheduler`` and ``torch.optim.swa_utils`` (bases aside), from torch."""
    import inspect

    import torch

    opt = {n for n, c in vars(torch.optim).items()
           if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer)
           and c is not torch.optim.Optimizer}
    base = torch.optim.lr_scheduler.LRScheduler
    sched = {n for mod in (torch.optim.lr_scheduler, torch.optim.swa_utils)
             for n, c in vars(mod).items()
             if inspect.isclass(c) and issubclass(c, base) and n not in BASE_CLASSES}
    return {"optimizer": sorted(opt), "scheduler": sorted(sched)}


def provided(kind: str, torch_name: str) -> str | None:
    """multiloss's name for torch's class (an optimizer name, or the schedule class of
    ``multiloss.optim.schedules``), None when not provided."""
    if kind == "optimizer":
        from ._registry import _SPECS

        return next((s.name for s in _SPECS.values() if s.torch_class == torch_name), None)
    from . import swa

    for mod, prefix in ((S, "schedules"), (swa, "swa")):  # SWALR is multiloss.optim.swa's
        cls = getattr(mod, torch_name, None)
        if isinstance(cls, type) and issubclass(cls, S.Schedule) and cls.torch_name == torch_name:
            return f"{prefix}.{torch_name}"
    return None


_SCHEDULER_NAMES: dict = {}


def _scheduler_names(case: Case) -> set:
    """The torch scheduler classes a case runs (its torch scheduler and the ones inside it)."""
    if case.torch_schedule is None:
        return set()
    if case.id not in _SCHEDULER_NAMES:
        _SCHEDULER_NAMES[case.id] = _build_scheduler_names(case)
    return _SCHEDULER_NAMES[case.id]


def _build_scheduler_names(case: Case) -> set:
    _, sched, _ = run_torch(case, "float64", build_only=True)
    out, todo = set(), [sched]
    while todo:
        s = todo.pop()
        out.add(type(s).__name__)
        todo.extend(getattr(s, "_schedulers", []))
    return out


def cases_of(kind: str, torch_name: str) -> list:
    """The trajectory cases that run torch's class ``torch_name``."""
    if kind == "optimizer":
        return [c for c in CASES if _torch_class(c.optimizer) == torch_name]
    return [c for c in CASES if torch_name in _scheduler_names(c)]


def coverage_table(results: dict | None = None) -> str:
    """Every optimizer and scheduler class of torch (enumerated from torch) with multiloss's
    counterpart and its largest gap to torch over the trajectory cases that run it (float64,
    float32); "missing" with the reason where multiloss has none."""
    import torch

    rows = ["| torch | multiloss | cases | float64 | float32 |", "|---|---|---|---|---|"]
    for kind, names in torch_classes().items():
        for name in names:
            mod = ("torch.optim." if kind == "optimizer" else
                   "torch.optim.lr_scheduler." if hasattr(torch.optim.lr_scheduler, name) else
                   "torch.optim.swa_utils.")
            ours = provided(kind, name)
            if ours is None:
                why = NOT_PROVIDED.get(name, "not listed in NOT_PROVIDED: a test fails")
                rows.append(f"| `{mod}{name}` | missing: {why} | 0 | | |")
                continue
            cs = cases_of(kind, name)
            errs = {}
            for d in ("float64", "float32"):
                vals = [(results[c.id] if results is not None else run_all(c))[d].max_error
                        for c in cs]
                errs[d] = f"{max(vals):.1e}" if vals else "no case"
            rows.append(f"| `{mod}{name}` | `{ours}` | {len(cs)} | {errs['float64']} | "
                        f"{errs['float32']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import jax

    jax.config.update("jax_enable_x64", True)
    _all = {c.id: run_all(c, naive=True) for c in CASES}
    print(table(results=_all))
    print()
    print(coverage_table(_all))
    print()
    print("Muon on larger matrices (torch's bfloat16 sums in another order):")
    for row in muon_gaps():
        print(row)
