"""Learning-rate schedules with torch's step semantics, for multiloss's JAX optimizers.

    >>> from multiloss.optim import schedules
    >>> tx = multiloss.optim.get("sgd", lr=0.1, momentum=0.9,
    ...                          schedule=schedules.StepLR(step_size=30, gamma=0.1))

Each class takes torch's arguments (without ``optimizer``) and torch's defaults, and is
validated as torch validates it (plus type checks). Semantics, as torch's loop

    for batch in data:  loss.backward(); opt.step(); sched.step()

has them: constructing a torch scheduler sets each group's lr to f(0), so update k (k = 0, 1,
...) uses f(k), the value after k ``sched.step()`` calls. On JAX, update k of the transform
uses f(k): k is the number of earlier ``update`` calls, stored in the optimizer state.

- Base learning rates are each parameter group's ``lr`` (torch's ``initial_lr``); list-valued
  arguments (LambdaLR's lr_lambda, OneCycleLR's max_lr / momenta, ReduceLROnPlateau's min_lr)
  give one value per group, as torch.
- Values are computed in float64 under ``jax_enable_x64`` (optax's int32 count makes several
  of its schedules float32) from torch's closed forms; torch steps most schedulers
  recursively (lr_{k+1} = lr_k * ratio), which equals the closed form up to rounding (1e-16
  relative per step).
- A ChainedScheduler whose schedulers are not all factor schedulers, and a SequentialLR with a
  MultiplicativeLR, CyclicLR or OneCycleLR stage, have no closed form: the optimizer state
  carries the groups' lrs (and cycled momenta) (:class:`ChainState`) and each update replays
  torch's recursive steps on them (see :class:`ChainedScheduler`).
- ReduceLROnPlateau is metric-driven: pass the metric to the update,
  ``tx.update(grads, state, params, metrics=val_loss)``; that update uses the current lr and
  then steps the plateau logic (torch: ``opt.step(); sched.step(val_loss)``). An update
  without ``metrics`` does not step it (torch: no ``sched.step`` that iteration).
- ``schedule.torch(optimizer)`` builds the torch scheduler with the same arguments.
- ``schedule.as_optax(lr)`` is the schedule as an optax schedule (count -> lr) for one base lr.

Nothing here imports jax or torch at import time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._registry import boolean, integer, real

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "ChainState",
    "Schedule",
    "SequentialLR",
    "StepLR",
]


def _positive_int(name, value):
    v = integer(name, value)
    if v < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return v


def _per_group(name, value, n, check):
    """A scalar or a list with one value per parameter group (torch's _format_param)."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"{name}: expected {n} values (one per parameter group), got {len(value)}"
            )
        return [check(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [check(name, value)] * n


class _Bound:
    """A schedule bound to the base learning rates of the parameter groups using it.

    init() -> state;  lrs(state, t) -> G scalars;  momenta(state, t) -> G scalars or None;
    step(state, metrics) -> state.  ``t`` is the number of earlier updates (float scalar)."""

    def __init__(self, schedule, base_lrs):
        self.schedule = schedule
        self.base_lrs = list(base_lrs)
        self.n = len(self.base_lrs)

    def init(self, sdt):
        return ()

    def lrs(self, state, t):
        return [self.schedule._lr(t, base, g) for g, base in enumerate(self.base_lrs)]

    def momenta(self, state, t):
        return None

    def step(self, state, metrics):
        return state

    def advance(self, state, t, metrics):
        """The state after update ``t`` (``metrics``: the update's, or None)."""
        return state if metrics is None else self.step(state, metrics)


class Schedule:
    """Base class: one torch LR scheduler's rule."""

    torch_name = ""
    stateful = False
    cycles_momentum = False
    _args: tuple = ()
    _bases = None  # from_torch, in a ChainedScheduler: torch's own base lrs of the scheduler

    def bind(self, base_lrs: Sequence[float]) -> _Bound:
        return _Bound(self, base_lrs)

    def _lr(self, t, base, g):  # closed form of torch's lr after t steps, for group g
        raise NotImplementedError

    def as_optax(self, lr: float) -> Callable:
        """This schedule as an optax schedule ``count -> lr`` for the base ``lr`` (float64 under
        jax_enable_x64)."""
        if self.stateful:
            raise TypeError(f"{self.torch_name} is metric-driven; it has no optax count schedule")
        bound = self.bind([real(0.0)("lr", lr)])

        def schedule(count):
            import jax.numpy as jnp

            return bound.lrs((), jnp.asarray(count, _sdt()))[0]

        return schedule

    def torch(self, optimizer):
        """The torch scheduler with the same arguments, for ``optimizer``."""
        import torch

        cls = getattr(torch.optim.lr_scheduler, self.torch_name)
        return cls(optimizer, **self._torch_kwargs(optimizer))

    def _torch_kwargs(self, optimizer) -> dict:
        return {k: getattr(self, k) for k in self._args}

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._args)
        return f"{self.torch_name}({args})"


def _sdt():
    import jax

    return "float64" if jax.config.jax_enable_x64 else "float32"


def _np():
    import jax.numpy as jnp

    return jnp


# --------------------------------------------------------------------------------------------
# closed-form schedules


class StepLR(Schedule):
    """torch.optim.lr_scheduler.StepLR: lr = base * gamma ** (t // step_size)."""

    torch_name = "StepLR"
    _args = ("step_size", "gamma")

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = real()("gamma", gamma)

    def _lr(self, t, base, g):
        jnp = _np()
        return base * self.gamma ** jnp.floor(t / self.step_size)


class MultiStepLR(Schedule):
    """torch.optim.lr_scheduler.MultiStepLR: lr = base * gamma ** (number of milestones <= t)
    (a milestone listed twice counts twice, as torch's Counter)."""

    torch_name = "MultiStepLR"
    _args = ("milestones", "gamma")

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1):
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"milestones: expected a sequence of ints, got {milestones!r}")
        self.milestones = sorted(integer(f"milestones[{i}]", m) for i, m in enumerate(milestones))
        self.gamma = real()("gamma", gamma)

    def _lr(self, t, base, g):
        jnp = _np()
        k = sum(jnp.where(t >= m, 1.0, 0.0) for m in self.milestones) if self.milestones else 0.0
        return base * self.gamma ** jnp.asarray(k, t.dtype)


class ConstantLR(Schedule):
    """torch.optim.lr_scheduler.ConstantLR: base * factor for t < total_iters, then base."""

    torch_name = "ConstantLR"
    _args = ("factor", "total_iters")

    def __init__(self, factor: float = 1.0 / 3, total_iters: int = 5):
        self.factor = real(0.0, 1.0)("factor", factor)
        self.total_iters = _positive_int("total_iters", total_iters)

    def _lr(self, t, base, g):
        jnp = _np()
        return base * (self.factor + jnp.where(t >= self.total_iters, 1.0, 0.0) * (1 - self.factor))


class LinearLR(Schedule):
    """torch.optim.lr_scheduler.LinearLR:
    base * (start_factor + (end_factor - start_factor) * min(total_iters, t) / total_iters)."""

    torch_name = "LinearLR"
    _args = ("start_factor", "end_factor", "total_iters")

    def __init__(self, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5):
        self.start_factor = real(0.0, 1.0, lo_open=True)("start_factor", start_factor)
        self.end_factor = real(0.0, 1.0)("end_factor", end_factor)
        self.total_iters = _positive_int("total_iters", total_iters)

    def _lr(self, t, base, g):
        jnp = _np()
        return base * (self.start_factor + (self.end_factor - self.start_factor)
                       * jnp.minimum(self.total_iters, t) / self.total_iters)


class ExponentialLR(Schedule):
    """torch.optim.lr_scheduler.ExponentialLR: base * gamma ** t."""

    torch_name = "ExponentialLR"
    _args = ("gamma",)

    def __init__(self, gamma: float):
        self.gamma = real()("gamma", gamma)

    def _lr(self, t, base, g):
        return base * self.gamma ** t


class PolynomialLR(Schedule):
    """torch.optim.lr_scheduler.PolynomialLR: base * (1 - min(total_iters, t) / total_iters) ** power."""

    torch_name = "PolynomialLR"
    _args = ("total_iters", "power")

    def __init__(self, total_iters: int = 5, power: float = 1.0):
        self.total_iters = _positive_int("total_iters", total_iters)
        self.power = real()("power", power)

    def _lr(self, t, base, g):
        jnp = _np()
        return base * (1.0 - jnp.minimum(self.total_iters, t) / self.total_iters) ** self.power


class CosineAnnealingLR(Schedule):
    """torch.optim.lr_scheduler.CosineAnnealingLR:
    eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2 for every t: past T_max the lr
    rises again (period 2 T_max), as torch's; optax.cosine_decay_schedule stays at its end."""

    torch_name = "CosineAnnealingLR"
    _args = ("T_max", "eta_min")

    def __init__(self, T_max: int, eta_min: float = 0.0):
        self.T_max = _positive_int("T_max", T_max)
        self.eta_min = real()("eta_min", eta_min)

    def _lr(self, t, base, g):
        jnp = _np()
        return self.eta_min + (base - self.eta_min) * (1 + jnp.cos(math.pi * t / self.T_max)) / 2


class CosineAnnealingWarmRestarts(Schedule):
    """torch.optim.lr_scheduler.CosineAnnealingWarmRestarts (SGDR): cycles of T_0, T_0 T_mult,
    T_0 T_mult^2, ... steps; eta_min + (base - eta_min) (1 + cos(pi T_cur / T_i)) / 2."""

    torch_name = "CosineAnnealingWarmRestarts"
    _args = ("T_0", "T_mult", "eta_min")

    def __init__(self, T_0: int, T_mult: int = 1, eta_min: float = 0.0):
        self.T_0 = _positive_int("T_0", T_0)
        self.T_mult = _positive_int("T_mult", T_mult)
        self.eta_min = real()("eta_min", eta_min)

    def _cycle(self, t):
        jnp = _np()
        if self.T_mult == 1:
            return t - self.T_0 * jnp.floor(t / self.T_0), jnp.asarray(float(self.T_0), t.dtype)
        starts, lengths = [0], [self.T_0]
        while starts[-1] < 2**31:  # the update count is an int32
            starts.append(starts[-1] + lengths[-1])
            lengths.append(lengths[-1] * self.T_mult)
        k = sum(jnp.where(t >= float(s), 1, 0) for s in starts[1:])
        start = jnp.asarray(starts, t.dtype)[k]
        return t - start, jnp.asarray(lengths, t.dtype)[k]

    def _lr(self, t, base, g):
        jnp = _np()
        t_cur, t_i = self._cycle(t)
        return self.eta_min + (base - self.eta_min) * (1 + jnp.cos(math.pi * t_cur / t_i)) / 2


class LambdaLR(Schedule):
    """torch.optim.lr_scheduler.LambdaLR: base * lr_lambda(t), one callable or one per group.

    By default the callables run on the host with a Python int, exactly as torch calls them
    (``jax.pure_callback`` inside jit: any Python code works). ``traceable=True`` calls them on
    the traced count instead (no host round trip; they must then be written with jnp)."""

    torch_name = "LambdaLR"
    _args = ("lr_lambda",)

    def __init__(self, lr_lambda: Callable | Sequence[Callable], traceable: bool = False):
        fns = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda]
        for i, f in enumerate(fns):
            if not callable(f):
                raise TypeError(f"lr_lambda: expected a callable (or a list of them), got "
                                f"{type(f).__name__} at index {i}")
        self.lr_lambda = lr_lambda
        self.traceable = boolean("traceable", traceable)

    def bind(self, base_lrs):
        n = len(base_lrs)
        if isinstance(self.lr_lambda, (list, tuple)):
            if len(self.lr_lambda) != n:
                raise ValueError(f"lr_lambda: expected {n} callables (one per parameter group), "
                                 f"got {len(self.lr_lambda)}")
            fns = list(self.lr_lambda)
        else:
            fns = [self.lr_lambda] * n
        return _LambdaBound(self, base_lrs, fns)

    def _torch_kwargs(self, optimizer):
        return {"lr_lambda": self.lr_lambda}


class _LambdaBound(_Bound):
    def __init__(self, schedule, base_lrs, fns):
        super().__init__(schedule, base_lrs)
        self.fns = fns

    def lrs(self, state, t):
        if self.schedule.traceable:
            return [base * f(t.astype("int32")) for base, f in zip(self.base_lrs, self.fns)]
        import jax
        import numpy as np

        dt, fns = t.dtype, self.fns

        def host(count):
            counts = np.asarray(count)
            out = [[float(f(int(k))) for f in fns] for k in counts.reshape(-1)]
            return np.asarray(out, dtype=dt).reshape(counts.shape + (len(fns),))

        factors = jax.pure_callback(host, jax.ShapeDtypeStruct(t.shape + (self.n,), dt), t,
                                    vmap_method="sequential")
        return [base * factors[..., g] for g, base in enumerate(self.base_lrs)]


class SequentialLR(Schedule):
    """torch.optim.lr_scheduler.SequentialLR: ``schedulers[i]`` from ``milestones[i-1]`` on,
    restarted at its own step 0 (torch calls its closed form at 0 at the milestone). Stage i's
    lr at global step t is f_i(t - milestones[i-1]); torch's warmup chains
    (LinearLR -> CosineAnnealingLR, ...) are the common use.

    With a MultiplicativeLR, CyclicLR or OneCycleLR stage there is no such closed form (torch
    restarts MultiplicativeLR with ``lr * lr_lambda(0)`` on the lr the previous stage left;
    CyclicLR and OneCycleLR, made before SequentialLR resets the lr, overwrite initial_lr, the
    base lr of the stages made after them, and set momentum / beta1, which stays as the last
    cycling stage left it): the lr and momenta are then replayed step by step from the
    optimizer state, as in :class:`ChainedScheduler`. Refused: ReduceLROnPlateau (torch
    refuses it), SequentialLR and ChainedScheduler stages (torch restarts a stage with
    ``_update_lr(0)``, which neither implements)."""

    torch_name = "SequentialLR"
    _args = ("schedulers", "milestones")

    def __init__(self, schedulers: Sequence[Schedule], milestones: Sequence[int]):
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise ValueError("schedulers: expected a non-empty list of schedules, got "
                             f"{schedulers!r}")
        for i, s in enumerate(schedulers):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedulers[{i}]: expected a multiloss.optim.schedules "
                                f"schedule, got {type(s).__name__}")
            if isinstance(s, (ReduceLROnPlateau, SequentialLR, ChainedScheduler)):
                raise ValueError(f"schedulers[{i}]: {s.torch_name} cannot be a stage of "
                                 "SequentialLR (torch rejects ReduceLROnPlateau and restarts "
                                 "a stage with _update_lr(0), which SequentialLR and "
                                 "ChainedScheduler do not implement)")
        if not isinstance(milestones, (list, tuple)) or len(milestones) != len(schedulers) - 1:
            raise ValueError(f"milestones: expected {len(schedulers) - 1} milestones (one fewer "
                             f"than schedulers), got {milestones!r}")
        ms = [integer(f"milestones[{i}]", m) for i, m in enumerate(milestones)]
        if ms != sorted(ms) or any(m < 0 for m in ms):
            raise ValueError(f"milestones: expected non-negative increasing ints, got {ms}")
        self.schedulers = list(schedulers)
        self.milestones = ms

    @property
    def cycles_momentum(self) -> bool:
        return any(s.cycles_momentum for s in self.schedulers)

    @property
    def replayed(self) -> bool:
        """Whether the lr is replayed step by step (state carried) rather than a closed form."""
        return any(isinstance(s, (MultiplicativeLR, CyclicLR, OneCycleLR))
                   for s in self.schedulers)

    def bind(self, base_lrs):
        if self.replayed:
            return _ReplayBound(self, base_lrs)
        return _SequentialBound(self, base_lrs)

    def as_optax(self, lr: float) -> Callable:
        return _replay_as_optax(self, lr) if self.replayed else super().as_optax(lr)

    def torch(self, optimizer):
        import torch

        inner = [s.torch(optimizer) for s in self.schedulers]
        return torch.optim.lr_scheduler.SequentialLR(optimizer, inner, self.milestones)


class _SequentialBound(_Bound):
    def __init__(self, schedule, base_lrs):
        super().__init__(schedule, base_lrs)
        self.stages = [s.bind(base_lrs) for s in schedule.schedulers]

    def lrs(self, state, t, upto=None):
        jnp = _np()
        ms = self.schedule.milestones
        out = self.stages[0].lrs((), t)
        for i, stage in enumerate(self.stages[1:upto]):
            local = jnp.maximum(t - ms[i], 0.0)
            if hasattr(stage, "lrs_from"):
                # SWALR (multiloss.optim.swa) anneals from the lr it finds: the lr of the
                # step before its milestone, as torch's SequentialLR steps it
                found = self.lrs(state, jnp.asarray(max(ms[i] - 1, 0), t.dtype), upto=i + 1)
                vals = stage.lrs_from(found, local)
            else:
                vals = stage.lrs((), local)
            out = [jnp.where(t >= ms[i], v, o) for v, o in zip(vals, out)]
        return out


class OneCycleLR(Schedule):
    """torch.optim.lr_scheduler.OneCycleLR, with its momentum (SGD, RMSprop) / beta1 (Adam
    family) cycling when ``cycle_momentum`` (torch's default). The lr starts at
    max_lr / div_factor, whatever the optimizer's lr. torch raises once stepped past
    total_steps; here the formula continues."""

    torch_name = "OneCycleLR"
    _args = ("max_lr", "total_steps", "pct_start", "anneal_strategy", "cycle_momentum",
             "base_momentum", "max_momentum", "div_factor", "final_div_factor", "three_phase")

    def __init__(self, max_lr: float | Sequence[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: float | Sequence[float] = 0.85,
                 max_momentum: float | Sequence[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False):
        if total_steps is not None:
            self.total_steps = _positive_int("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_positive_int("epochs", epochs)
                                * _positive_int("steps_per_epoch", steps_per_epoch))
        else:
            raise ValueError("total_steps: expected total_steps, or epochs and steps_per_epoch, "
                             "got none of them")
        if isinstance(pct_start, bool) or not isinstance(pct_start, float):
            raise TypeError(f"pct_start: expected a float in [0, 1], got {pct_start!r}")
        self.pct_start = real(0.0, 1.0)("pct_start", pct_start)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy: expected one of ['cos', 'linear'], got "
                             f"{anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = boolean("cycle_momentum", cycle_momentum)
        self.max_lr = max_lr
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.div_factor = real()("div_factor", div_factor)
        self.final_div_factor = real()("final_div_factor", final_div_factor)
        self.three_phase = boolean("three_phase", three_phase)
        for name in ("max_lr", "base_momentum", "max_momentum"):
            v = getattr(self, name)
            for i, x in enumerate(v if isinstance(v, (list, tuple)) else [v]):
                real()(f"{name}[{i}]" if isinstance(v, (list, tuple)) else name, x)
        total = self.total_steps
        if self.three_phase:
            self._phases = [
                (float(self.pct_start * total) - 1, "initial", "max", "max_m", "base_m"),
                (float(2 * self.pct_start * total) - 2, "max", "initial", "base_m", "max_m"),
                (total - 1, "initial", "min", "max_m", "max_m"),
            ]
        else:
            self._phases = [
                (float(self.pct_start * total) - 1, "initial", "max", "max_m", "base_m"),
                (total - 1, "max", "min", "base_m", "max_m"),
            ]
        self._groups = None  # from_torch: torch's own per-group values

    @property
    def cycles_momentum(self) -> bool:
        return self.cycle_momentum

    def bind(self, base_lrs):
        return _OneCycleBound(self, base_lrs)

    def group_values(self, n):
        """Per group: initial_lr, max_lr, min_lr, base_momentum, max_momentum (Python floats,
        computed as torch does)."""
        if self._groups is not None:
            if len(self._groups) != n:
                raise ValueError(f"max_lr: expected {len(self._groups)} parameter groups, got {n}")
            return self._groups
        max_lrs = _per_group("max_lr", self.max_lr, n, real())
        base_m = _per_group("base_momentum", self.base_momentum, n, real())
        max_m = _per_group("max_momentum", self.max_momentum, n, real())
        out = []
        for i in range(n):
            initial = max_lrs[i] / self.div_factor
            out.append({"initial": initial, "max": max_lrs[i],
                        "min": initial / self.final_div_factor,
                        "base_m": base_m[i], "max_m": max_m[i]})
        return out

    def _anneal(self, start, end, pct):
        jnp = _np()
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (jnp.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _value(self, t, values, which):
        jnp = _np()
        out = None
        start_step = 0.0
        pieces = []
        for phase in self._phases:
            end_step = phase[0]
            s, e = (phase[1], phase[2]) if which == "lr" else (phase[3], phase[4])
            pct = (t - start_step) / (end_step - start_step)
            pieces.append((end_step, self._anneal(values[s], values[e], pct)))
            start_step = end_step
        out = pieces[-1][1]
        for end_step, v in reversed(pieces[:-1]):
            out = jnp.where(t <= end_step, v, out)
        return out


class _OneCycleBound(_Bound):
    def __init__(self, schedule, base_lrs):
        super().__init__(schedule, base_lrs)
        self.values = schedule.group_values(self.n)

    def lrs(self, state, t):
        return [self.schedule._value(t, v, "lr") for v in self.values]

    def momenta(self, state, t):
        if not self.schedule.cycle_momentum:
            return None
        return [self.schedule._value(t, v, "momentum") for v in self.values]


# --------------------------------------------------------------------------------------------
# ReduceLROnPlateau


class PlateauState(NamedTuple):
    """torch's ReduceLROnPlateau state: the groups' current lrs, best, num_bad_epochs,
    cooldown_counter and last_epoch."""

    lrs: Any
    best: Any
    num_bad_epochs: Any
    cooldown_counter: Any
    last_epoch: Any


class ReduceLROnPlateau(Schedule):
    """torch.optim.lr_scheduler.ReduceLROnPlateau, metric-driven.

    ``tx.update(grads, state, params, metrics=m)`` applies the update with the current lr, then
    steps the plateau rule with m, as torch's ``opt.step(); sched.step(m)``: a metric is better
    when < best * (1 - threshold) (mode "min", "rel"; "abs": < best - threshold; "max" mirrors
    it); after more than ``patience`` bad steps every group's lr becomes
    max(lr * factor, min_lr) if that lowers it by more than ``eps``, then ``cooldown`` steps
    ignore bad epochs. (optax.contrib.reduce_on_plateau reduces when the count reaches
    patience, one step earlier, and scales instead of setting per-group lrs.)"""

    torch_name = "ReduceLROnPlateau"
    stateful = True
    _args = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr",
             "eps")

    def __init__(self, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | Sequence[float] = 0.0, eps: float = 1e-8):
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected one of ['min', 'max'], got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode: expected one of ['rel', 'abs'], got "
                             f"{threshold_mode!r}")
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.factor = real(hi=1.0, hi_open=True)("factor", factor)
        self.patience = integer("patience", patience)
        self.threshold = real()("threshold", threshold)
        self.cooldown = integer("cooldown", cooldown)
        if self.patience < 0 or self.cooldown < 0:
            bad = "patience" if self.patience < 0 else "cooldown"
            raise ValueError(f"{bad}: expected an int >= 0, got {getattr(self, bad)!r}")
        if isinstance(min_lr, (list, tuple)):
            self.min_lr = [real()(f"min_lr[{i}]", v) for i, v in enumerate(min_lr)]
        else:
            self.min_lr = real()("min_lr", min_lr)
        self.eps = real()("eps", eps)

    def bind(self, base_lrs):
        return _PlateauBound(self, base_lrs)


class _PlateauBound(_Bound):
    def __init__(self, schedule, base_lrs):
        super().__init__(schedule, base_lrs)
        self.min_lrs = _per_group("min_lr", schedule.min_lr, self.n, real())

    def init(self, sdt):
        jnp = _np()
        worse = math.inf if self.schedule.mode == "min" else -math.inf
        return PlateauState(jnp.asarray(self.base_lrs, sdt), jnp.asarray(worse, sdt),
                            jnp.asarray(0, "int32"), jnp.asarray(0, "int32"),
                            jnp.asarray(0, "int32"))

    def lrs(self, state, t):
        return [state.lrs[g] for g in range(self.n)]

    def step(self, state, metrics):
        jnp = _np()
        s = self.schedule
        current = jnp.asarray(metrics, state.best.dtype).reshape(())
        best = state.best
        if s.mode == "min" and s.threshold_mode == "rel":
            better = current < best * (1.0 - s.threshold)
        elif s.mode == "min":
            better = current < best - s.threshold
        elif s.threshold_mode == "rel":
            better = current > best * (s.threshold + 1.0)
        else:
            better = current > best + s.threshold
        best = jnp.where(better, current, best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > s.patience
        old = state.lrs
        new = jnp.maximum(old * s.factor, jnp.asarray(self.min_lrs, old.dtype))
        lrs = jnp.where(reduce & (old - new > s.eps), new, old)
        cooldown = jnp.where(reduce, s.cooldown, cooldown)
        bad = jnp.where(reduce, 0, bad)
        return PlateauState(lrs, best, bad.astype("int32"), cooldown.astype("int32"),
                            state.last_epoch + 1)



# --------------------------------------------------------------------------------------------
# MultiplicativeLR, CyclicLR, ChainedScheduler (issue 18)


class MultiplicativeLR(LambdaLR):
    """torch.optim.lr_scheduler.MultiplicativeLR: lr_0 = base, lr_t = lr_{t-1} * lr_lambda(t),
    i.e. base * lr_lambda(1) * ... * lr_lambda(t), one callable or one per group.

    By default the callables run on the host with a Python int, exactly as torch calls them,
    each once per step in order (cached: the products are torch's, multiplied in torch's
    order, bit for bit); ``traceable=True`` calls them on a traced int32 step instead, in a
    ``fori_loop`` over the steps so far (O(t) work per update)."""

    torch_name = "MultiplicativeLR"

    def bind(self, base_lrs):
        fns = super().bind(base_lrs).fns
        return _MultiplicativeBound(self, base_lrs, fns)


class _MultiplicativeBound(_Bound):
    def __init__(self, schedule, base_lrs, fns):
        super().__init__(schedule, base_lrs)
        self.fns = fns
        self._lrs = [[float(b) for b in self.base_lrs]]  # torch's lr per step, per group

    def _host_lrs(self, k: int) -> list:
        while len(self._lrs) <= k:
            e = len(self._lrs)
            self._lrs.append([lr * f(e) for lr, f in zip(self._lrs[-1], self.fns)])
        return self._lrs[k]

    def lrs(self, state, t):
        import jax

        jnp = _np()
        if self.schedule.traceable:
            k = t.astype("int32")

            def product(base, f):
                one = lambda k: jax.lax.fori_loop(  # noqa: E731
                    1, k + 1, lambda j, lr: lr * f(j), jnp.asarray(base, t.dtype))
                return jnp.vectorize(one)(k)  # any shape of counts (vmapped loop)

            return [product(base, f) for base, f in zip(self.base_lrs, self.fns)]
        import numpy as np

        dt = t.dtype

        def host(count):
            counts = np.asarray(count)
            out = [[float(v) for v in self._host_lrs(int(k))] for k in counts.reshape(-1)]
            return np.asarray(out, dtype=dt).reshape(counts.shape + (self.n,))

        lrs = jax.pure_callback(host, jax.ShapeDtypeStruct(t.shape + (self.n,), dt), t,
                                vmap_method="sequential")
        return [lrs[..., g] for g in range(self.n)]


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _nonneg_real(name, value):
    return real(0.0)(name, value)


class CyclicLR(Schedule):
    """torch.optim.lr_scheduler.CyclicLR (the CLR policy), with torch's momentum (SGD,
    RMSprop) / beta1 (Adam family) cycling when ``cycle_momentum`` (torch's default), as
    OneCycleLR's.

    At step t: cycle = floor(1 + t / (up + down)), x = 1 + t / (up + down) - cycle,
    s = x / r if x <= r else (x - 1) / (r - 1) with r = up / (up + down);
    lr = base_lr + (max_lr - base_lr) * s * f, momentum = max_momentum - (max_momentum -
    base_momentum) * s * f, where f = scale_fn(cycle) (scale_mode "cycle") or scale_fn(t)
    ("iterations"); the built-in modes: triangular f = 1, triangular2 f = 1 / 2^(cycle - 1)
    (both per cycle), exp_range f = gamma^t (per iteration). The lr starts at base_lr
    whatever the optimizer's lr (torch overwrites it). ``scale_fn`` runs on the host with a
    Python int as torch calls it (``traceable=True``: on the traced count, written with jnp).
    Differences: ``scale_mode`` must be 'cycle' or 'iterations' (torch treats any other value
    as 'iterations'); ``step_size_up`` must be > 0 and ``step_size_down`` >= 0 (torch divides
    by zero or cycles backwards)."""

    torch_name = "CyclicLR"
    _args = ("base_lr", "max_lr", "step_size_up", "step_size_down", "mode", "gamma",
             "scale_fn", "scale_mode", "cycle_momentum", "base_momentum", "max_momentum")

    def __init__(self, base_lr: float | Sequence[float], max_lr: float | Sequence[float],
                 step_size_up: float = 2000, step_size_down: float | None = None,
                 mode: str = "triangular", gamma: float = 1.0,
                 scale_fn: Callable | None = None, scale_mode: str = "cycle",
                 cycle_momentum: bool = True, base_momentum: float | Sequence[float] = 0.8,
                 max_momentum: float | Sequence[float] = 0.9, traceable: bool = False):
        for name, v in (("base_lr", base_lr), ("max_lr", max_lr),
                        ("base_momentum", base_momentum), ("max_momentum", max_momentum)):
            for i, x in enumerate(v if isinstance(v, (list, tuple)) else [v]):
                real()(f"{name}[{i}]" if isinstance(v, (list, tuple)) else name, x)
        self.base_lr, self.max_lr = base_lr, max_lr
        self.base_momentum, self.max_momentum = base_momentum, max_momentum
        self.step_size_up = real(0.0, lo_open=True)("step_size_up", step_size_up)
        self.step_size_down = (None if step_size_down is None
                               else _nonneg_real("step_size_down", step_size_down))
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"scale_fn: expected a callable or None, got "
                            f"{type(scale_fn).__name__}")
        if mode not in _CYCLIC_MODES and scale_fn is None:
            raise ValueError(f"mode: expected one of {list(_CYCLIC_MODES)} (or a scale_fn), "
                             f"got {mode!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode: expected one of ['cycle', 'iterations'], got "
                             f"{scale_mode!r}")
        self.mode, self.scale_fn, self.scale_mode = mode, scale_fn, scale_mode
        self.gamma = real()("gamma", gamma)
        self.cycle_momentum = boolean("cycle_momentum", cycle_momentum)
        self.traceable = boolean("traceable", traceable)
        up = self.step_size_up
        down = self.step_size_down if self.step_size_down is not None else up
        self._total = up + down  # torch's total_size and step_ratio (from_torch: torch's own)
        self._ratio = up / self._total

    @property
    def cycles_momentum(self) -> bool:
        return self.cycle_momentum

    def bind(self, base_lrs):
        return _CyclicBound(self, base_lrs)

    def _effective(self):
        """(scale function kind, scale mode) as torch's _init_scale_fn sets them."""
        if self.scale_fn is not None:
            return "custom", self.scale_mode
        return self.mode, "iterations" if self.mode == "exp_range" else "cycle"

    def _factors(self, t):
        """(scale_factor, f) at the steps t."""
        jnp = _np()
        cycle = jnp.floor(1 + t / self._total)
        x = 1.0 + t / self._total - cycle
        r = self._ratio
        up = x / r
        down = (x - 1) / (r - 1) if r != 1 else x  # r == 1 (step_size_down=0): never taken
        scale = jnp.where(x <= r, up, down)
        kind, mode = self._effective()
        arg = cycle if mode == "cycle" else t
        if kind == "triangular":
            f = jnp.ones_like(t)
        elif kind == "triangular2":
            f = 1 / (2.0 ** (arg - 1))
        elif kind == "exp_range":
            f = self.gamma ** arg
        elif self.traceable:
            f = jnp.asarray(self.scale_fn(arg.astype("int32")), t.dtype)
        else:
            import jax
            import numpy as np

            fn, dt = self.scale_fn, t.dtype

            def host(a):
                a = np.asarray(a)
                out = [float(fn(int(v))) for v in a.reshape(-1)]
                return np.asarray(out, dtype=dt).reshape(a.shape)

            f = jax.pure_callback(host, jax.ShapeDtypeStruct(t.shape, dt), arg,
                                  vmap_method="sequential")
        return scale, f

    def _torch_kwargs(self, optimizer):
        return {k: getattr(self, k) for k in self._args}


class _CyclicBound(_Bound):
    def __init__(self, schedule, base_lrs):
        super().__init__(schedule, base_lrs)
        s = schedule
        self.lo = _per_group("base_lr", s.base_lr, self.n, real())
        self.hi = _per_group("max_lr", s.max_lr, self.n, real())
        self.m_lo = _per_group("base_momentum", s.base_momentum, self.n, real())
        self.m_hi = _per_group("max_momentum", s.max_momentum, self.n, real())

    def lrs(self, state, t):
        scale, f = self.schedule._factors(t)
        return [lo + (hi - lo) * scale * f for lo, hi in zip(self.lo, self.hi)]

    def momenta(self, state, t):
        if not self.schedule.cycle_momentum:
            return None
        scale, f = self.schedule._factors(t)
        return [hi - (hi - lo) * scale * f for lo, hi in zip(self.m_lo, self.m_hi)]


class ChainedScheduler(Schedule):
    """torch.optim.lr_scheduler.ChainedScheduler: every scheduler steps once per step, in
    order, each reading the lr the previous one left (torch's recursive ``get_lr``), so any
    schedulers torch accepts chain (all but ReduceLROnPlateau, which torch refuses too),
    nested ChainedScheduler and SequentialLR included.

    - When every scheduler's torch step multiplies the lr by a factor of the step alone
      (StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR,
      MultiplicativeLR, and chains of these), lr_t = base * F_1(t) * ... * F_n(t) with F_i
      scheduler i's closed form for a base lr of 1: a pure function of the count, no state.
    - Otherwise no closed form exists (CosineAnnealingLR's step is affine in the lr,
      eta_min + ratio (lr - eta_min), additive at each restart; LambdaLR,
      CosineAnnealingWarmRestarts, CyclicLR and OneCycleLR set the lr from the base lrs,
      discarding the factors before them; SWALR anneals from the lr it finds; a SequentialLR
      stage restarts from its closed form at its milestone): the transform replays torch's
      steps, each scheduler's ``get_lr`` formula on the lr carried in the optimizer state
      (:class:`ChainState`, one float per parameter group), O(1) per update, jit-able.
      Momentum / beta1, when a scheduler cycles it (CyclicLR, OneCycleLR), is carried too:
      each cycling scheduler sets it as it steps, the others leave it, as in torch.

    Construction is replayed too, as torch's constructors run when the schedulers are made in
    list order (what ``schedule.torch(optimizer)`` does): each one's first step on the lr the
    previous one left, ``initial_lr`` (the base lr) set by the first and overwritten by
    OneCycleLR, CyclicLR starting from it, SequentialLR resetting the lr to it. ``as_optax``
    of a replayed chain (a pure function ``count -> lr``) replays the count steps in a
    ``fori_loop`` (O(count) per call); inside ``multiloss.optim.get`` it is O(1).
    :func:`multiloss.optim.from_torch` reads each torch scheduler's own base lrs and the
    groups' current lrs into the state, whatever order they were made in."""

    torch_name = "ChainedScheduler"
    _args = ("schedulers",)

    def __init__(self, schedulers: Sequence[Schedule]):
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise ValueError("schedulers: expected a non-empty list of schedules, got "
                             f"{schedulers!r}")
        for i, s in enumerate(schedulers):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedulers[{i}]: expected a multiloss.optim.schedules "
                                f"schedule, got {type(s).__name__}")
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(f"schedulers[{i}]: ChainedScheduler does not support "
                                 "ReduceLROnPlateau (torch refuses it too)")
        self.schedulers = list(schedulers)

    @property
    def cycles_momentum(self) -> bool:
        return any(s.cycles_momentum for s in self.schedulers)

    @property
    def replayed(self) -> bool:
        """Whether the lr is replayed step by step (state carried) rather than a product of
        closed forms."""
        return not _is_product(self)

    def bind(self, base_lrs):
        if self.replayed:
            return _ReplayBound(self, base_lrs)
        return _ChainedBound(self, base_lrs)

    def as_optax(self, lr: float) -> Callable:
        return _replay_as_optax(self, lr) if self.replayed else super().as_optax(lr)

    def torch(self, optimizer):
        import torch

        inner = [s.torch(optimizer) for s in self.schedulers]
        return torch.optim.lr_scheduler.ChainedScheduler(inner, optimizer)


def _replay_as_optax(schedule, lr):
    """``count -> lr`` of a replayed schedule: the count steps replayed in a fori_loop."""
    bound = schedule.bind([real(0.0)("lr", lr)])

    def optax_schedule(count):
        import jax

        jnp = _np()
        state = bound.init(_sdt())

        def one(c):
            return jax.lax.fori_loop(
                0, c, lambda k, s: bound.advance(s, k.astype(s.lrs.dtype), None), state).lrs[0]

        return jnp.vectorize(one)(jnp.asarray(count).astype("int32"))

    return optax_schedule


def _is_product(s) -> bool:
    if isinstance(s, ChainedScheduler):
        return all(_is_product(x) for x in s.schedulers)
    return type(s) in (StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR,
                       MultiplicativeLR)


class _ChainedBound(_Bound):
    """A chain of factor schedulers: the product of their closed forms."""

    def __init__(self, schedule, base_lrs):
        super().__init__(schedule, base_lrs)
        self.stages = [s.bind([1.0] * self.n) for s in schedule.schedulers]

    def lrs(self, state, t):
        out = [base * 1.0 for base in self.base_lrs]
        for stage in self.stages:
            out = [o * f for o, f in zip(out, stage.lrs((), t))]
        return out


class ChainState(NamedTuple):
    """A replayed :class:`ChainedScheduler`'s (or :class:`SequentialLR`'s) state: each
    parameter group's lr for the next update (torch's ``group["lr"]``), shape (G,), and,
    when a scheduler in it cycles momentum, each group's momentum / beta1 (else shape (0,))."""

    lrs: Any
    momenta: Any


class _ReplayBound(_Bound):
    """torch's ChainedScheduler replayed: the lrs in the state, stepped after each update by
    every scheduler's recursive rule (the nodes below)."""

    def __init__(self, schedule, base_lrs):
        super().__init__(schedule, base_lrs)
        self.root = _node(schedule, self.n)
        groups = _Groups(self.base_lrs)
        self.root.construct(groups)  # torch's constructors, in order (Python numbers)
        self.first, self.first_momenta = list(groups.lr), groups.mom
        self.cycles = groups.mom is not None  # a scheduler in it cycles momentum

    def init(self, sdt):
        return ChainState(_vec(self.first, sdt), _vec(self.first_momenta or [], sdt))

    def lrs(self, state, t):
        return [state.lrs[g] for g in range(self.n)]

    def momenta(self, state, t):
        return [state.momenta[g] for g in range(self.n)] if self.cycles else None

    def advance(self, state, t, metrics):
        dt = state.lrs.dtype
        lrs, moms = self.root.step([state.lrs[g] for g in range(self.n)],
                                   self.momenta(state, t), t + 1)
        return ChainState(_vec(lrs, dt), _vec(moms or [], dt))


def _vec(values, dt):
    jnp = _np()
    if not values:
        return jnp.zeros((0,), dt)
    return jnp.stack([jnp.asarray(v, dt) for v in values])


class _Groups:
    """The optimizer's param groups as torch's scheduler constructors leave them: the lr and
    the keys schedulers write (initial_lr, OneCycleLR's max_lr / min_lr, the cycled
    momenta's bounds, SWALR's swa_lr)."""

    def __init__(self, lrs):
        self.lr = list(lrs)
        self.mom = None  # the momenta the cycling schedulers wrote (None: none did)
        self.groups = [{} for _ in self.lr]

    def initial(self):
        for g, lr in zip(self.groups, self.lr):
            g.setdefault("initial_lr", lr)  # torch's LRScheduler.__init__
        return [g["initial_lr"] for g in self.groups]


def _node(s, n):
    if isinstance(s, ChainedScheduler):
        return _ChainNode(s, n)
    if isinstance(s, SequentialLR):
        return _SequentialNode(s, n)
    return _Leaf(s, n)


class _ChainNode:
    def __init__(self, s, n):
        self.children = [_node(x, n) for x in s.schedulers]

    def leaves(self):
        return [x for c in self.children for x in c.leaves()]

    def construct(self, groups):
        for c in self.children:
            c.construct(groups)

    def step(self, lrs, moms, e):
        for c in self.children:
            lrs, moms = c.step(lrs, moms, e)
        return lrs, moms


class _SequentialNode:
    """SequentialLR in a chain: the active stage steps the current lr; at its milestone a
    stage restarts from its closed form at step 0 (torch's ``_update_lr(0)``)."""

    def __init__(self, s, n):
        self.milestones = list(s.milestones)
        self.stages = [_node(x, n) for x in s.schedulers]

    def leaves(self):
        return [x for c in self.stages for x in c.leaves()]

    def construct(self, groups):
        import bisect

        for st in self.stages:
            st.construct(groups)
        groups.lr = [g["initial_lr"] for g in groups.groups]  # torch resets the lrs
        first = self.stages[bisect.bisect_right(self.milestones, 0)]
        groups.lr, groups.mom = first.first(groups.lr), first.mom0(groups.mom)

    def step(self, lrs, moms, e):
        jnp = _np()
        out, out_m = self.stages[0].step(lrs, moms, e)

        def pick(cond, a, b):
            return None if a is None else [jnp.where(cond, x, y) for x, y in zip(a, b)]

        for m, st in zip(self.milestones, self.stages[1:]):
            local, local_m = st.step(lrs, moms, jnp.maximum(e - m, 0.0))
            at = e == m  # torch's _update_lr(0): the stage restarts
            vals, vals_m = pick(at, st.zero(lrs), local), pick(at, st.mom0(moms), local_m)
            out, out_m = pick(e >= m, vals, out), pick(e >= m, vals_m, out_m)
        return out, out_m


class _Leaf:
    """One torch scheduler in a replayed chain: its constructor (``construct``), its first
    step (``first``, initial mode), its recursive ``get_lr`` at step e >= 1 (``step``), its
    restart at a SequentialLR milestone (``zero``) and its momenta."""

    def __init__(self, s, n):
        self.schedule, self.n = s, n
        if isinstance(s, (LambdaLR, CyclicLR, OneCycleLR)) or type(s).__name__ == "SWALR":
            s.bind([1.0] * n)  # the per-group lists' lengths, checked now

    def leaves(self):
        return [self]

    def mom0(self, moms):
        """The momenta after a step at last_epoch 0 (the constructor's, a restart)."""
        s = self.schedule
        if not s.cycles_momentum:
            return moms
        if isinstance(s, CyclicLR):  # max_momentum - (max - base) * 0 * f
            return [hi - (hi - lo) * 0.0 for lo, hi in zip(self.cyc.m_lo, self.cyc.m_hi)]
        return [_onecycle_at0(s, v, momentum=True) for v in self._onecycle()]

    def construct(self, groups):
        s, n = self.schedule, self.n
        gs = groups.groups
        if isinstance(s, CyclicLR):
            groups.lr = _per_group("base_lr", s.base_lr, n, real())
            if s.cycle_momentum:
                b = _CyclicBound(s, [1.0] * n)
                for g, lo, hi in zip(gs, b.m_lo, b.m_hi):
                    g["max_momentum"], g["base_momentum"] = hi, lo
        elif isinstance(s, OneCycleLR):
            for g, v in zip(gs, s.group_values(n)):
                g["initial_lr"], g["max_lr"], g["min_lr"] = v["initial"], v["max"], v["min"]
                if s.cycle_momentum:
                    g["max_momentum"], g["base_momentum"] = v["max_m"], v["base_m"]
        elif type(s).__name__ == "SWALR":
            for g, v in zip(gs, _per_group("swa_lr", s.swa_lr, n, real())):
                g["swa_lr"] = v
        initial = groups.initial()
        bases = list(initial) if s._bases is None else list(s._bases)
        if len(bases) != n:
            raise ValueError(f"{s.torch_name}: expected {len(bases)} parameter groups, got {n}")
        self.bases, self.groups = bases, gs  # the groups are read when stepping (final)
        if isinstance(s, LambdaLR):  # MultiplicativeLR too: the factors lr_lambda(e)
            fns = LambdaLR.bind(s, [1.0] * n).fns
            self.lam = _LambdaBound(s, bases if type(s) is LambdaLR else [1.0] * n, fns)
        if isinstance(s, CyclicLR):
            self.cyc = _CyclicBound(s, bases)
            groups.lr = list(initial)  # torch's first step: from initial_lr, scale 0
        else:
            groups.lr = self.first(groups.lr)
        groups.mom = self.mom0(groups.mom)

    # -- the numbers, as torch's get_lr computes them (e: the scheduler's last_epoch)

    def _onecycle(self):
        s = self.schedule
        if s._groups is not None:
            return s._groups
        return [{"initial": g["initial_lr"], "max": g["max_lr"], "min": g["min_lr"],
                 "base_m": g.get("base_momentum"), "max_m": g.get("max_momentum")}
                for g in self.groups]

    def first(self, lrs):
        """The constructor's step (last_epoch 0, torch's initial mode), Python numbers."""
        s = self.schedule
        if isinstance(s, MultiplicativeLR) or type(s) in (StepLR, ExponentialLR, PolynomialLR,
                                                          CosineAnnealingLR):
            return list(lrs)
        if isinstance(s, MultiStepLR):
            c = s.milestones.count(0)
            return [lr * s.gamma ** c for lr in lrs] if c else list(lrs)
        if isinstance(s, ConstantLR):
            return [lr * s.factor for lr in lrs]
        if isinstance(s, LinearLR):
            return [lr * s.start_factor for lr in lrs]
        if isinstance(s, OneCycleLR):
            return [_onecycle_at0(s, v) for v in self._onecycle()]
        if isinstance(s, CyclicLR):  # SequentialLR's first step, from CyclicLR's own base_lr
            return list(self.cyc.lo)
        if type(s).__name__ == "SWALR":
            if s.anneal_epochs:
                return list(lrs)
            return [g["swa_lr"] * 1.0 + lr * 0.0 for g, lr in zip(self.groups, lrs)]
        return self.zero(lrs)  # LambdaLR, CosineAnnealingWarmRestarts

    def zero(self, lrs):
        """torch's ``_update_lr(0)`` (a SequentialLR milestone): the closed form at 0 where
        the scheduler has one, else ``get_lr`` at last_epoch 0."""
        s, bs = self.schedule, self.bases
        if isinstance(s, StepLR):
            return [b * s.gamma ** (0 // s.step_size) for b in bs]
        if isinstance(s, MultiStepLR):
            import bisect

            return [b * s.gamma ** bisect.bisect_right(s.milestones, 0) for b in bs]
        if isinstance(s, ConstantLR):
            return [b * (s.factor + (0 >= s.total_iters) * (1 - s.factor)) for b in bs]
        if isinstance(s, LinearLR):
            d = s.end_factor - s.start_factor
            return [b * (s.start_factor + d * min(s.total_iters, 0) / s.total_iters)
                    for b in bs]
        if isinstance(s, ExponentialLR):
            return [b * s.gamma ** 0 for b in bs]
        if isinstance(s, PolynomialLR):
            return [b * (1.0 - min(s.total_iters, 0) / s.total_iters) ** s.power for b in bs]
        if isinstance(s, CosineAnnealingLR):
            return [s.eta_min + (b - s.eta_min) * (1 + math.cos(math.pi * 0 / s.T_max)) / 2
                    for b in bs]
        if isinstance(s, CosineAnnealingWarmRestarts):
            return [s.eta_min + (b - s.eta_min) * (1 + math.cos(math.pi * 0 / s.T_0)) / 2
                    for b in bs]
        if type(s) is LambdaLR:
            return [b * f(0) for b, f in zip(bs, self.lam.fns)]
        if type(s).__name__ == "SWALR" or isinstance(s, (CyclicLR, OneCycleLR)):
            return self.first(lrs)  # get_lr at last_epoch 0
        if isinstance(s, MultiplicativeLR):  # get_lr at last_epoch 0: lr * lr_lambda(0)
            return [lr * f(0) for lr, f in zip(lrs, self.lam.fns)]
        raise ValueError(f"{s.torch_name} cannot restart at a SequentialLR milestone")

    def step(self, lrs, moms, e):
        """torch's ``get_lr`` at last_epoch e >= 1 on the current lrs and momenta (traced)."""
        s = self.schedule
        return self._lrs(lrs, e), (self.momenta(e) if s.cycles_momentum else moms)

    def _lrs(self, lrs, e):
        jnp = _np()
        s = self.schedule
        if isinstance(s, StepLR):
            return [jnp.where(jnp.mod(e, s.step_size) != 0, lr, lr * s.gamma) for lr in lrs]
        if isinstance(s, MultiStepLR):
            out = list(lrs)
            for m in sorted(set(s.milestones)):
                f = s.gamma ** s.milestones.count(m)
                out = [jnp.where(e == m, lr * f, o) for lr, o in zip(lrs, out)]
            return out
        if isinstance(s, ConstantLR):
            return [jnp.where(e == s.total_iters, lr * (1.0 / s.factor), lr) for lr in lrs]
        if isinstance(s, LinearLR):
            d = s.end_factor - s.start_factor
            r = 1.0 + d / (s.total_iters * s.start_factor + (e - 1) * d)
            return [jnp.where(e > s.total_iters, lr, lr * r) for lr in lrs]
        if isinstance(s, ExponentialLR):
            return [lr * s.gamma for lr in lrs]
        if isinstance(s, PolynomialLR):
            T = s.total_iters
            r = ((1.0 - e / T) / (1.0 - (e - 1) / T)) ** s.power
            return [jnp.where(e > T, lr, lr * r) for lr in lrs]
        if isinstance(s, CosineAnnealingLR):
            T, eta = s.T_max, s.eta_min
            restart = jnp.mod(e - 1 - T, 2 * T) == 0
            r = (1 + jnp.cos(math.pi * e / T)) / (1 + jnp.cos(math.pi * (e - 1) / T))
            c = 1 - math.cos(math.pi / T)
            return [jnp.where(restart, lr + (b - eta) * c / 2, r * (lr - eta) + eta)
                    for lr, b in zip(lrs, self.bases)]
        if isinstance(s, MultiplicativeLR):
            return [lr * f for lr, f in zip(lrs, self.lam.lrs((), e))]
        if isinstance(s, LambdaLR):
            return self.lam.lrs((), e)
        if isinstance(s, CosineAnnealingWarmRestarts):
            return [s._lr(e, b, g) for g, b in enumerate(self.bases)]
        if isinstance(s, CyclicLR):
            return self.cyc.lrs((), e)
        if isinstance(s, OneCycleLR):
            return [s._value(e, v, "lr") for v in self._onecycle()]
        if type(s).__name__ == "SWALR":
            E = s.anneal_epochs
            k = jnp.maximum(e, 1.0) if E == 0 else e

            def anneal(x):
                x = jnp.clip(x / max(1, E), 0.0, 1.0)
                return (1 - jnp.cos(math.pi * x)) / 2 if s.anneal_strategy == "cos" else x

            a0, a = anneal(k - 1), anneal(k)
            out = []
            for g, lr in zip(self.groups, lrs):
                swa = g["swa_lr"]
                prev = jnp.where(a0 == 1, swa, (lr - a0 * swa) / (1 - a0))
                out.append(swa * a + prev * (1 - a))
            return out
        raise ValueError(f"{s.torch_name} has no replayed step")  # not reached

    def momenta(self, t):
        s = self.schedule
        if isinstance(s, CyclicLR):
            return self.cyc.momenta((), t)
        return [s._value(t, v, "momentum") for v in self._onecycle()]


def _onecycle_at0(s, v, momentum=False):
    """OneCycleLR's lr (momentum) at step 0, torch's arithmetic in Python floats."""
    start = 0.0
    for i, phase in enumerate(s._phases):
        end, a, b = (phase[0], phase[3], phase[4]) if momentum else phase[:3]
        if 0 <= end or i == len(s._phases) - 1:
            pct = (0 - start) / (end - start)
            first, last = v[a], v[b]
            if s.anneal_strategy == "cos":
                return last + (first - last) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (last - first) * pct + first
        start = end
    raise AssertionError  # not reached
