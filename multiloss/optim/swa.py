"""Weight averaging, torch's ``torch.optim.swa_utils`` on JAX: the :class:`SWALR` schedule
and :class:`AveragedModel`, an averaged copy of the parameters (SWA, EMA) as a pure
``init`` / ``update`` pair whose state is a pytree, with torch's numbers step for step.

    >>> from multiloss.optim import swa
    >>> ema = swa.AveragedModel(multi_avg_fn=swa.get_ema_multi_avg_fn(0.999))
    >>> ema_state = ema.init(params)                   # next to the optax state
    >>> ema_state = ema.update(ema_state, params)      # torch: ema_model.update_parameters(model)
    >>> ema_state.params                                # the averaged parameters

``torch.optim.swa_utils.update_bn`` (recomputing batch-norm statistics with a pass over the
data) is out of scope: it runs the model, which multiloss does not own. Average the buffers
with ``use_buffers=True``, or recompute the statistics in your own loop.

Nothing here imports jax or torch at import time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._registry import integer, real
from .schedules import Schedule, _Bound, _np, _per_group

__all__ = [
    "SWALR",
    "AveragedModel",
    "AveragedState",
    "from_torch",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
]


# --------------------------------------------------------------------------------------------
# SWALR


class SWALR(Schedule):
    """torch.optim.swa_utils.SWALR: anneals each group's lr from the lr it finds to
    ``swa_lr`` (a number, or one per parameter group) over ``anneal_epochs`` steps (default
    10), then keeps ``swa_lr``.

    After t steps, ``lr = swa_lr * alpha(t) + base * (1 - alpha(t))`` with
    ``alpha(t) = f(min(1, t / max(1, anneal_epochs)))``, ``f(x) = (1 - cos(pi x)) / 2``
    ("cos", the default) or ``f(x) = x`` ("linear"); ``anneal_epochs=0``: ``swa_lr`` from the
    start (torch sets it when the scheduler is made). ``base`` is the group's lr when the
    annealing starts: torch steps SWALR recursively from the group's current lr, so

    - used alone (``schedule=SWALR(...)``), ``base`` is the group's ``lr``;
    - as a later stage of :class:`~multiloss.optim.schedules.SequentialLR` (torch's
      ``SequentialLR(opt, [CosineAnnealingLR(...), SWALR(...)], milestones=[m])``), ``base``
      is the lr of the step before the milestone and SWALR's own step 0 falls on the milestone,
      as torch computes it;
    - :func:`multiloss.optim.from_torch` of a torch SWALR reads ``swa_lr``, the strategy, the
      step count and ``base`` (recovered from the group's current lr), wherever it is.

    torch's documented recipe, stepping another scheduler until ``swa_start`` and SWALR
    after it (two schedulers stepped by hand), is no single scheduler object and has no
    multiloss schedule; ``SequentialLR`` with ``milestones=[swa_start + 2]`` gives the same
    lrs up to the milestone, repeats the previous lr there, and then the hand-stepped lrs one
    step later.
    """

    torch_name = "SWALR"
    _args = ("swa_lr", "anneal_epochs", "anneal_strategy")

    def __init__(self, swa_lr: float | Sequence[float], anneal_epochs: int = 10,
                 anneal_strategy: str = "cos"):
        if isinstance(swa_lr, (list, tuple)):
            self.swa_lr = [real()(f"swa_lr[{i}]", v) for i, v in enumerate(swa_lr)]
        else:
            self.swa_lr = real()("swa_lr", swa_lr)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy: expected one of ['cos', 'linear'], got "
                             f"{anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        e = integer("anneal_epochs", anneal_epochs)
        if e < 0:
            raise ValueError(f"anneal_epochs: expected an int >= 0, got {anneal_epochs!r}")
        self.anneal_epochs = e
        self._start = None  # from_torch: each group's lr where the annealing started

    def alpha(self, t):
        """The annealing fraction after ``t`` steps (a float, or an array for an array)."""
        e = self.anneal_epochs
        if e == 0:
            return 1.0 if isinstance(t, (int, float)) else _np().ones_like(t)
        if isinstance(t, (int, float)):
            x = max(0.0, min(1.0, t / max(1, e)))
            return (1 - math.cos(math.pi * x)) / 2 if self.anneal_strategy == "cos" else x
        jnp = _np()
        x = jnp.clip(t / max(1, e), 0.0, 1.0)
        return (1 - jnp.cos(math.pi * x)) / 2 if self.anneal_strategy == "cos" else x

    def bind(self, base_lrs):
        return _SWABound(self, base_lrs)

    def _torch_kwargs(self, optimizer):
        return {"swa_lr": self.swa_lr, "anneal_epochs": self.anneal_epochs,
                "anneal_strategy": self.anneal_strategy}

    def torch(self, optimizer):
        import torch

        return torch.optim.swa_utils.SWALR(optimizer, **self._torch_kwargs(optimizer))


class _SWABound(_Bound):
    def __init__(self, schedule, base_lrs):
        super().__init__(schedule, base_lrs)
        self.swa = _per_group("swa_lr", schedule.swa_lr, self.n, real())
        if schedule._start is not None:
            if len(schedule._start) != self.n:
                raise ValueError(f"swa_lr: expected {len(schedule._start)} parameter groups, "
                                 f"got {self.n}")
            self.base_lrs = list(schedule._start)

    def lrs(self, state, t):
        return self.lrs_from(self.base_lrs, t)

    def lrs_from(self, bases, t):
        """The lrs after ``t`` SWALR steps when the annealing started from ``bases``."""
        a = self.schedule.alpha(t)
        return [s * a + b * (1 - a) for s, b in zip(self.swa, bases)]


# --------------------------------------------------------------------------------------------
# the averaging functions (torch.optim.swa_utils' names; pure: they return the new values)


def _lerp(a, b, w):
    """torch.lerp's formula: a + w (b - a) for |w| < 0.5, else b - (b - a) (1 - w)."""
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


def _is_float(x) -> bool:
    import numpy as np

    return np.dtype(x.dtype).kind in "fcV"


def _check_decay(decay):
    d = real()("decay", decay)
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"decay: expected a value in [0, 1], got {decay!r}")
    return d


class _AvgFn:
    """An averaging function: a small class rather than torch's closure, so that it (and an
    AveragedModel holding it) pickles."""

    def __repr__(self):
        d = getattr(self, "decay", None)
        return f"{type(self).__name__.lstrip('_')}({'' if d is None else d})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self).__name__, tuple(vars(self).items())))


class _EMAMulti(_AvgFn):
    def __init__(self, decay):
        self.decay = decay

    def __call__(self, ema_list, current_list, num_averaged):
        d = self.decay
        if _is_float(ema_list[0]):
            return [_lerp(e, c, 1 - d) for e, c in zip(ema_list, current_list)]
        return [(e * d + c * (1 - d)).astype(e.dtype) for e, c in zip(ema_list, current_list)]


class _SWAMulti(_AvgFn):
    def __call__(self, avg_list, current_list, num_averaged):
        jnp = _np()
        # torch: 1 / (n_averaged + 1) of the long count tensor is a float32 (its default
        # dtype) 0-d tensor: the weight is rounded to float32 before the float64 lerp
        w = jnp.float32(1.0) / (jnp.asarray(num_averaged) + 1).astype(jnp.float32)
        out = []
        for a, c in zip(avg_list, current_list):
            wt = w.astype(a.dtype)
            out.append(jnp.where(wt < 0.5, a + wt * (c - a), c - (c - a) * (1 - wt)))
        return out


class _EMA(_AvgFn):
    def __init__(self, decay):
        self.decay = decay

    def __call__(self, ema, current, num_averaged):
        return self.decay * ema + (1 - self.decay) * current


class _SWA(_AvgFn):
    def __call__(self, avg, current, num_averaged):
        return avg + (current - avg) / (num_averaged + 1)


def get_ema_multi_avg_fn(decay: float = 0.999) -> Callable:
    """torch's ``get_ema_multi_avg_fn``: ``ema <- lerp(ema, current, 1 - decay)`` on floating
    leaves (torch's ``_foreach_lerp_``), ``ema * decay + current * (1 - decay)`` (truncated
    to the integer dtype, as torch's ``copy_``) on the others. Called with lists of leaves
    of one dtype and the number averaged; returns the new list."""
    return _EMAMulti(_check_decay(decay))


def get_swa_multi_avg_fn() -> Callable:
    """torch's ``get_swa_multi_avg_fn``: ``avg <- lerp(avg, current, 1 / (n + 1))`` (what
    torch's default averaging runs on CUDA), with torch's weight: ``1 / (n + 1)`` rounded to
    float32 (torch divides its long count tensor, which gives its default dtype; a float64
    run differs from the exact average by up to 6e-8 relative, as torch's does); floating
    leaves only."""
    return _SWAMulti()


def get_ema_avg_fn(decay: float = 0.999) -> Callable:
    """torch's ``get_ema_avg_fn``: ``decay * ema + (1 - decay) * current``, per leaf."""
    return _EMA(_check_decay(decay))


def get_swa_avg_fn() -> Callable:
    """torch's ``get_swa_avg_fn``: ``avg + (current - avg) / (n + 1)``, per leaf (torch's
    default averaging on the CPU)."""
    return _SWA()


# --------------------------------------------------------------------------------------------
# AveragedModel


class AveragedState(NamedTuple):
    """The state of :class:`AveragedModel`: the averaged ``params``, the ``buffers`` (None
    without), and ``n_averaged``, the number of models averaged (torch's buffer)."""

    params: Any
    buffers: Any
    n_averaged: Any


class AveragedModel:
    """torch.optim.swa_utils.AveragedModel as a pure ``init`` / ``update`` pair: an averaged
    copy of a parameter pytree (and, optionally, of a buffer pytree such as flax's
    ``batch_stats``) with torch's rules, equal to torch's averaged parameters step for step.

    ``init(params, buffers=None)`` -> :class:`AveragedState` (a copy, ``n_averaged = 0``);
    ``update(state, params, buffers=None)`` -> the new state, as torch's
    ``update_parameters(model)``: the first update copies the parameters; later ones apply
    the averaging function with ``n_averaged``; then ``n_averaged += 1``. Both are pure and
    traceable (``jax.jit``, inside a train step, under ``lax.cond`` for "every k steps").

    ``avg_fn(avg, current, n)`` -> new leaf, or ``multi_avg_fn(avg_list, current_list, n)``
    -> new list (called per dtype, as torch groups tensors by dtype); JAX functions that
    return the new values (torch's update in place): use this module's
    :func:`get_ema_multi_avg_fn`, :func:`get_ema_avg_fn`, :func:`get_swa_multi_avg_fn`,
    :func:`get_swa_avg_fn`. Neither (default): the equal-weight average (SWA) as torch
    computes it on the CPU, ``avg + (current - avg) / (n + 1)`` (on CUDA torch runs the lerp
    of :func:`get_swa_multi_avg_fn`: the same to rounding). ``use_buffers``: average the
    buffers too (torch's ``use_buffers=True``); False: the state's buffers follow the model's
    (torch copies them at every update). Integer leaves are averaged in floating point and
    truncated, as torch's ``copy_`` does.

        >>> swa = AveragedModel()                             # or an EMA, see the module doc
        >>> swa_state = swa.init(params)
        >>> swa_state = swa.update(swa_state, params)         # when torch calls update_parameters
    """

    def __init__(self, avg_fn: Callable | None = None, multi_avg_fn: Callable | None = None,
                 use_buffers: bool = False):
        if avg_fn is not None and multi_avg_fn is not None:
            raise ValueError("avg_fn, multi_avg_fn: give one of them (torch: 'Only one of "
                             "avg_fn and multi_avg_fn should be provided')")
        for name, fn in (("avg_fn", avg_fn), ("multi_avg_fn", multi_avg_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
        if not isinstance(use_buffers, bool):
            raise TypeError(f"use_buffers: expected a bool, got {use_buffers!r}")
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def init(self, params, buffers=None) -> AveragedState:
        import jax
        import jax.numpy as jnp

        copy = jax.tree_util.tree_map(jnp.array, params)
        bufs = None if buffers is None else jax.tree_util.tree_map(jnp.array, buffers)
        return AveragedState(copy, bufs, jnp.asarray(0, "int32"))

    def update(self, state: AveragedState, params, buffers=None) -> AveragedState:
        import jax
        import jax.numpy as jnp

        if (buffers is None) != (state.buffers is None):
            raise ValueError("buffers: given at init but not here, or the other way round")
        tu = jax.tree_util
        trees = (state.params, state.buffers) if self.use_buffers else (state.params,)
        currents = (params, buffers) if self.use_buffers else (params,)
        leaves, defs = [], []
        for avg_tree, cur_tree in zip(trees, currents):
            a, d = tu.tree_flatten(avg_tree)
            c, dc = tu.tree_flatten(cur_tree)
            if d != dc:
                raise ValueError(f"params: expected the structure of the averaged copy, {d}, "
                                 f"got {dc}")
            leaves.append((a, c))
            defs.append(d)
        avg = [x for a, _ in leaves for x in a]
        cur = [jnp.asarray(x, a.dtype) for (a_l, c_l) in leaves for a, x in zip(a_l, c_l)]
        n = state.n_averaged
        averaged = self._average(avg, cur, n)
        first = n == 0
        new = [jnp.where(first, c, m).astype(a.dtype) for a, c, m in zip(avg, cur, averaged)]
        out, i = [], 0
        for (a_l, _), d in zip(leaves, defs):
            out.append(tu.tree_unflatten(d, new[i:i + len(a_l)]))
            i += len(a_l)
        new_params = out[0]
        if self.use_buffers:
            new_buffers = out[1]
        else:
            new_buffers = None if buffers is None else tu.tree_map(
                lambda a, b: jnp.asarray(b, a.dtype), state.buffers, buffers)
        return AveragedState(new_params, new_buffers, n + 1)

    def _average(self, avg, cur, n):
        if self.avg_fn is not None:
            return [self._leaf(self.avg_fn, a, c, n) for a, c in zip(avg, cur)]
        if self.multi_avg_fn is None:
            fn = get_swa_avg_fn()
            return [self._leaf(fn, a, c, n) for a, c in zip(avg, cur)]
        # torch groups the tensors by (device, dtype) and calls multi_avg_fn per group
        groups: dict = {}
        for i, a in enumerate(avg):
            groups.setdefault(str(a.dtype), []).append(i)
        out = [None] * len(avg)
        for idx in groups.values():
            res = self.multi_avg_fn([avg[i] for i in idx], [cur[i] for i in idx], n)
            for i, r in zip(idx, res):
                out[i] = r.astype(avg[i].dtype)
        return out

    @staticmethod
    def _leaf(fn, a, c, n):
        if _is_float(a):
            return fn(a, c, n.astype(a.dtype))
        # an integer leaf: torch's result is a float (the difference divided by the long
        # count, the decay products), copied back into the integer buffer: truncated by the
        # caller's astype
        return fn(a, c, n)

    def __repr__(self):
        return (f"AveragedModel(avg_fn={self.avg_fn!r}, multi_avg_fn={self.multi_avg_fn!r}, "
                f"use_buffers={self.use_buffers})")


# --------------------------------------------------------------------------------------------
# from torch


def _torch_fn(fn, name):
    """The JAX twin of one of torch.optim.swa_utils' averaging functions (read from its
    closure), or ValueError for another callable."""
    if fn is None:
        return None
    import inspect

    q = getattr(fn, "__qualname__", "")
    inner = inspect.unwrap(fn)  # torch.no_grad() wraps them
    code = getattr(inner, "__code__", None)
    cells = {} if code is None else dict(zip(code.co_freevars, (
        c.cell_contents for c in inner.__closure__ or ())))
    table = {"get_ema_multi_avg_fn.<locals>.ema_update": get_ema_multi_avg_fn,
             "get_ema_avg_fn.<locals>.ema_update": get_ema_avg_fn}
    if q in table:
        return table[q](cells["decay"])
    if q == "get_swa_multi_avg_fn.<locals>.swa_update":
        return get_swa_multi_avg_fn()
    if q == "get_swa_avg_fn.<locals>.swa_update":
        return get_swa_avg_fn()
    raise ValueError(f"{name}: the torch callable {q or fn!r} cannot be converted to JAX; "
                     f"build multiloss.optim.swa.AveragedModel({name}=<a JAX function>) and "
                     f"convert the state with from_torch's parameters")


def from_torch(averaged_model) -> tuple[AveragedModel, AveragedState]:
    """A live ``torch.optim.swa_utils.AveragedModel`` as ``(AveragedModel, state)``: the same
    averaging (torch's ``get_*_avg_fn`` functions are recognised, their decay read), and
    its averaged parameters and ``n_averaged`` now, as flat dicts by torch's parameter names
    (``averaged_model.module.named_parameters()``; the buffers, by ``named_buffers()``, are
    the state's ``buffers``, None when the module has none). Map the names onto your JAX
    pytree to continue averaging there."""
    import jax.numpy as jnp
    import torch

    if not isinstance(averaged_model, torch.optim.swa_utils.AveragedModel):
        raise TypeError(f"averaged_model: expected a torch.optim.swa_utils.AveragedModel, got "
                        f"{type(averaged_model).__name__}")
    avg = AveragedModel(avg_fn=_torch_fn(averaged_model.avg_fn, "avg_fn"),
                        multi_avg_fn=_torch_fn(averaged_model.multi_avg_fn, "multi_avg_fn"),
                        use_buffers=bool(averaged_model.use_buffers))
    params = {k: jnp.asarray(v.detach().cpu().numpy())
              for k, v in averaged_model.module.named_parameters()}
    buffers = {k: jnp.asarray(v.detach().cpu().numpy())
               for k, v in averaged_model.module.named_buffers()} or None
    return avg, AveragedState(params, buffers,
                              jnp.asarray(int(averaged_model.n_averaged), "int32"))


def swalr_from_torch(scheduler, top: bool = True) -> SWALR:
    """The :class:`SWALR` of a live torch SWALR (``from_torch`` reads it): ``swa_lr`` per
    group, ``anneal_epochs``, the strategy and, for a scheduler stepped on its own
    (``top``), each group's lr where the annealing started, recovered from the current lr
    ``lr = swa_lr alpha + base (1 - alpha)`` (torch keeps no base lr)."""
    groups = scheduler.optimizer.param_groups
    out = SWALR([float(g["swa_lr"]) for g in groups], scheduler.anneal_epochs,
                scheduler._anneal_strategy)
    if top:
        step = scheduler._step_count - 1
        if scheduler.anneal_epochs == 0:
            step = max(1, step)
        a = out.alpha(step)
        out._start = [float(g["swa_lr"]) if a == 1 else
                      (float(g["lr"]) - a * float(g["swa_lr"])) / (1 - a) for g in groups]
    return out
