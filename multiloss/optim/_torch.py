"""The torch backend: the ``torch.optim`` optimizer itself, with validated hyperparameters, and
:func:`from_torch`'s reading of a live optimizer and scheduler."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch

from . import schedules as S
from ._registry import _SPECS, TORCH_ONLY, OptimizerSpec


class OptimizerFactory(functools.partial):
    """``factory(params)`` builds ``torch.optim.<Class>(params, **hyperparameters)``."""

    def __repr__(self):
        kw = ", ".join(f"{k}={v!r}" for k, v in self.keywords.items())
        return f"<multiloss optimizer factory torch.optim.{self.func.__name__}({kw})>"


def make(spec: OptimizerSpec, bound: dict, params=None):
    cls = getattr(torch.optim, spec.torch_class)
    kwargs = dict(bound)
    if params is None:
        return OptimizerFactory(cls, **kwargs)
    return cls(params, **kwargs)


# --------------------------------------------------------------------------------------------
# from_torch


def spec_of(optimizer) -> OptimizerSpec:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    by_class = {s.torch_class: s for s in _SPECS.values()}
    for cls in type(optimizer).__mro__:
        if cls.__module__.startswith("torch.optim") and cls.__name__ in by_class:
            if cls is not type(optimizer):
                break
            return by_class[cls.__name__]
    raise ValueError(f"optimizer: torch.optim.{type(optimizer).__name__} has no multiloss "
                     f"equivalent; supported: "
                     f"{', '.join(sorted('torch.optim.' + c for c in by_class))}")


def _scalar(v):
    return float(v) if isinstance(v, torch.Tensor) else v


def read_groups(spec: OptimizerSpec, optimizer, scheduler) -> list[dict]:
    """Each param group's hyperparameters (torch's base lr when a scheduler set ``lr``)."""
    groups = []
    for g in optimizer.param_groups:
        h = {}
        for name in spec.hyperparameters:
            if name not in g:
                continue
            h[name] = _scalar(g[name])
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                h["lr"] = _scalar(g["lr"])
            else:
                h["lr"] = _scalar(g.get("initial_lr", g["lr"]))
        if "betas" in h:
            h["betas"] = tuple(_scalar(b) for b in h["betas"])
            cyc = getattr(scheduler, "cycle_momentum", False)
            if cyc and "max_momentum" in g:
                # OneCycleLR replaced beta1 with its cycled value; the schedule gives it back
                h["betas"] = (g["max_momentum"], h["betas"][1])
        if spec.name == "nadam":
            h["mu_product_dtype"] = str(torch.get_default_dtype()).replace("torch.", "")
        if spec.name == "asgd":  # eta and mu: torch's _get_scalar_dtype()
            h["scalar_dtype"] = str(torch.get_default_dtype()).replace("torch.", "")
        groups.append(h)
    return groups


def read_schedule(scheduler, optimizer):
    """The multiloss schedule reproducing a torch scheduler."""
    L = torch.optim.lr_scheduler
    if scheduler is None:
        return None
    if getattr(scheduler, "optimizer", None) is not optimizer:
        raise ValueError("scheduler: expected a scheduler of the given optimizer")
    if isinstance(scheduler, L.ReduceLROnPlateau):
        return S.ReduceLROnPlateau(mode=scheduler.mode, factor=scheduler.factor,
                                   patience=scheduler.patience, threshold=scheduler.threshold,
                                   threshold_mode=scheduler.threshold_mode,
                                   cooldown=scheduler.cooldown, min_lr=list(scheduler.min_lrs),
                                   eps=scheduler.eps)
    return _schedule(scheduler, top=True)


def _schedule(s, top=False):
    L = torch.optim.lr_scheduler
    name = type(s).__name__
    if type(s) is torch.optim.swa_utils.SWALR:  # weight averaging: multiloss.optim.swa
        from .swa import swalr_from_torch

        return swalr_from_torch(s, top)
    if type(s) is L.StepLR:
        return S.StepLR(s.step_size, s.gamma)
    if type(s) is L.MultiStepLR:
        return S.MultiStepLR(sorted(s.milestones.elements()), s.gamma)
    if type(s) is L.ConstantLR:
        return S.ConstantLR(s.factor, s.total_iters)
    if type(s) is L.LinearLR:
        return S.LinearLR(s.start_factor, s.end_factor, s.total_iters)
    if type(s) is L.ExponentialLR:
        return S.ExponentialLR(s.gamma)
    if type(s) is L.PolynomialLR:
        return S.PolynomialLR(s.total_iters, s.power)
    if type(s) is L.CosineAnnealingLR:
        return S.CosineAnnealingLR(s.T_max, s.eta_min)
    if type(s) is L.CosineAnnealingWarmRestarts:
        return S.CosineAnnealingWarmRestarts(s.T_0, s.T_mult, s.eta_min)
    if type(s) is L.LambdaLR:
        return S.LambdaLR(list(s.lr_lambdas))
    if type(s) is L.SequentialLR and top:
        out = S.SequentialLR([_schedule(x, top=type(x) is not torch.optim.swa_utils.SWALR)
                              for x in s._schedulers], list(s._milestones))
        return _with_bases(out, s) if out.replayed else out
    if type(s) is L.OneCycleLR and top:
        phases = s._schedule_phases
        pct = (phases[0]["end_step"] + 1) / s.total_steps
        groups = s.optimizer.param_groups
        out = S.OneCycleLR(
            [g["max_lr"] for g in groups], total_steps=s.total_steps, pct_start=float(pct),
            anneal_strategy=s._anneal_func_type, cycle_momentum=s.cycle_momentum,
            base_momentum=[g.get("base_momentum", 0.85) for g in groups],
            max_momentum=[g.get("max_momentum", 0.95) for g in groups],
            three_phase=len(phases) == 3)
        # torch's own numbers: the phase ends and each group's lrs and momenta
        out._phases = [(p["end_step"], *[_ONECYCLE_KEYS[p[k]] for k in
                        ("start_lr", "end_lr", "start_momentum", "end_momentum")])
                       for p in phases]
        out._groups = [{"initial": g["initial_lr"], "max": g["max_lr"], "min": g["min_lr"],
                        "base_m": g.get("base_momentum"), "max_m": g.get("max_momentum")}
                       for g in groups]
        return out
    if type(s) is L.MultiplicativeLR:
        return S.MultiplicativeLR(list(s.lr_lambdas))
    if type(s) is L.ChainedScheduler:
        # any scheduler chains (SequentialLR, OneCycleLR, CyclicLR as torch holds them); a
        # replayed chain keeps each scheduler's own base lrs (initial_lr when it was made)
        out = S.ChainedScheduler([_schedule(x, top=type(x) is not torch.optim.swa_utils.SWALR)
                                  for x in s._schedulers])
        return _with_bases(out, s) if out.replayed else out
    if type(s) is L.CyclicLR and top:
        up = s.total_size * s.step_ratio
        cyc = s.cycle_momentum
        out = S.CyclicLR(
            list(s.base_lrs), list(s.max_lrs), step_size_up=up,
            step_size_down=max(0.0, s.total_size - up), mode=s.mode, gamma=s.gamma,
            scale_fn=s._scale_fn_custom, scale_mode=s.scale_mode, cycle_momentum=cyc,
            base_momentum=list(s.base_momentums) if cyc else 0.8,
            max_momentum=list(s.max_momentums) if cyc else 0.9)
        out._total, out._ratio = s.total_size, s.step_ratio  # torch's own numbers
        return out
    raise ValueError(f"scheduler: {name} has no multiloss equivalent here; supported: StepLR, "
                     "MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR, "
                     "CosineAnnealingLR, CosineAnnealingWarmRestarts, LambdaLR, "
                     "MultiplicativeLR, SequentialLR, ChainedScheduler, OneCycleLR, CyclicLR, "
                     "ReduceLROnPlateau, SWALR")


def _with_bases(ours, theirs):
    """``ours`` (a schedule read from the torch scheduler ``theirs``) with each scheduler's
    base lrs as torch holds them."""
    if isinstance(ours, (S.ChainedScheduler, S.SequentialLR)):
        for o, t in zip(ours.schedulers, theirs._schedulers):
            _with_bases(o, t)
    else:
        ours._bases = [_scalar(b) for b in theirs.base_lrs]
    return ours


#: the per-group values a schedule read from torch holds (one per parameter group)
_PER_GROUP = ("lr_lambda", "base_lr", "max_lr", "base_momentum", "max_momentum", "swa_lr",
              "_groups", "_bases", "_start")


def merge_groups(schedules):
    """One schedule for several optimizers' schedulers (the same class and arguments, so the
    same number of groups each): the first, its per-group values (lr_lambda lists, CyclicLR's
    and OneCycleLR's bounds, a replayed chain's base lrs, ...) concatenated over the
    optimizers' groups in order, nested schedulers too."""
    first = schedules[0]
    if isinstance(first, (S.ChainedScheduler, S.SequentialLR)):
        for i, _ in enumerate(first.schedulers):
            merge_groups([x.schedulers[i] for x in schedules])
        return first
    for name in _PER_GROUP:
        vals = [getattr(x, name, None) for x in schedules]
        if all(isinstance(v, list) for v in vals):
            setattr(first, name, [item for v in vals for item in v])
    return first


_ONECYCLE_KEYS = {"initial_lr": "initial", "max_lr": "max", "min_lr": "min",
                  "base_momentum": "base_m", "max_momentum": "max_m"}


def read_labels(optimizer, params):
    """One group index per parameter: a dict keyed by name (from ``params``, a torch module or
    (name, tensor) pairs, or from the optimizer's own ``param_names``), else a list in the
    order of ``optimizer.param_groups``."""
    index = {}
    for gi, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            index[id(p)] = gi
    if params is not None:
        named = params.named_parameters() if isinstance(params, torch.nn.Module) else params
        if not isinstance(named, Iterable):
            raise TypeError("params: expected a torch.nn.Module or (name, tensor) pairs, got "
                            f"{type(params).__name__}")
        out = {}
        for item in named:
            name, p = item
            if id(p) in index:
                out[name] = index[id(p)]
        return out
    if all("param_names" in g for g in optimizer.param_groups):
        return {n: gi for gi, g in enumerate(optimizer.param_groups) for n in g["param_names"]}
    return [gi for gi, g in enumerate(optimizer.param_groups) for _ in g["params"]]


def _np(v):
    """A torch state entry as NumPy (a copy: later torch steps do not reach it)."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().clone().numpy()
    return v


def _names(optimizer, params) -> list | None:
    """torch's parameter names in ``optimizer.param_groups`` order (from ``params``, a module
    or (name, tensor) pairs, or the optimizer's own ``param_names``), else None."""
    if params is not None:
        named = params.named_parameters() if isinstance(params, torch.nn.Module) else params
        by_id = {id(p): n for n, p in named}
        return [by_id.get(id(p)) for g in optimizer.param_groups for p in g["params"]]
    if all("param_names" in g for g in optimizer.param_groups):
        return [n for g in optimizer.param_groups for n in g["param_names"]]
    return None


def read_state(spec: OptimizerSpec, optimizer, scheduler, params=None) -> dict:
    """A framework-free snapshot of the optimizer's and scheduler's state now: per parameter
    (in ``optimizer.param_groups`` order) its shape and torch's state entries as NumPy (empty:
    no step taken for it; Adagrad's constructor fills step 0 and the accumulator), LBFGS's
    global state, the scheduler's step count and ReduceLROnPlateau's counters."""
    named = params
    params = [p for g in optimizer.param_groups for p in g["params"]]
    out = {"shapes": [tuple(p.shape) for p in params], "params": [], "lbfgs": None,
           "count": None, "plateau": None, "names": _names(optimizer, named)}
    if spec.name == "lbfgs":
        st = optimizer.state.get(params[0], {}) if params else {}
        if st.get("d") is not None:  # (a first step that found max|g| <= tolerance_grad
            # returned before setting anything but the counters: still fresh)
            for key in ("old_dirs", "old_stps", "ro"):
                if len(st[key]) > optimizer.param_groups[0]["history_size"]:
                    raise ValueError(f"optimizer: LBFGS holds {len(st[key])} {key} entries, "
                                     "more than its history_size")
            out["lbfgs"] = {
                "n_iter": int(st["n_iter"]), "d": _np(st["d"]), "t": float(st["t"]),
                "old_dirs": [_np(x) for x in st["old_dirs"]],
                "old_stps": [_np(x) for x in st["old_stps"]],
                "ro": [float(x) for x in st["ro"]], "H_diag": float(st["H_diag"]),
                "prev_flat_grad": _np(st["prev_flat_grad"]),
                "prev_loss": float(st["prev_loss"]),
            }
        out["count"] = int(st.get("n_iter", 0)) if st else 0
    else:
        steps = []
        for p in params:
            st = optimizer.state.get(p, {})
            entry = {k: _np(v) for k, v in st.items() if v is not None}
            out["params"].append(entry)
            if "step" in entry:
                steps.append(int(float(entry["step"])))
        out["count"] = max(steps, default=0)
    if scheduler is not None:
        # ChainedScheduler keeps no step count of its own: its schedulers' (stepped together)
        last = scheduler
        while isinstance(last, torch.optim.lr_scheduler.ChainedScheduler):
            last = last._schedulers[0]
        out["count"] = int(last.last_epoch)
        if isinstance(scheduler, (torch.optim.lr_scheduler.ChainedScheduler,
                                  torch.optim.lr_scheduler.SequentialLR)):
            # a replayed schedule's state: the groups' lrs and momenta now
            gs = optimizer.param_groups
            out["lrs"] = [_scalar(g["lr"]) for g in gs]
            out["momenta"] = [_scalar(g["momentum"]) if "momentum" in g else
                              _scalar(g["betas"][0]) if "betas" in g else None for g in gs]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            out["plateau"] = {
                "lrs": [_scalar(g["lr"]) for g in optimizer.param_groups],
                "best": float(scheduler.best), "num_bad_epochs": int(scheduler.num_bad_epochs),
                "cooldown_counter": int(scheduler.cooldown_counter),
                "last_epoch": int(scheduler.last_epoch)}
    return out


__all__ = ["TORCH_ONLY", "make", "spec_of"]
