"""multiloss.optim: torch.optim's optimizers, schedules and clipping as optax transforms that
follow torch's trajectory.

    >>> import multiloss.optim as mo
    >>> tx = mo.get("adamw", backend="jax", lr=1e-3)            # optax transform, torch's AdamW
    >>> opt = mo.get("AdamW", backend="torch", params=model.parameters(), lr=1e-3)

On "jax", ``get`` returns an ``optax.GradientTransformationExtraArgs`` whose updates equal
torch's (float64: to rounding, 1e-12 relative over 100 steps in the tests); on "torch", the
``torch.optim`` optimizer (or, without ``params``, a factory taking them). Hyperparameters have
torch's names and defaults and are validated as torch validates them (TypeError / ValueError
naming the argument, the expected and the actual value). The JAX transform adds what torch
keeps outside the optimizer: a ``schedule`` (``multiloss.optim.schedules``), parameter groups
(``param_groups`` + ``labels``) and gradient clipping (``clip_grad_norm`` / ``clip_grad_value``),
each with torch's semantics. Mapping table and measured differences: docs/optim.md.

Importing this module imports neither torch nor jax: a backend is imported when first asked
for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..backends import BACKENDS
from ..backends import load as _load_backend
from . import schedules, swa  # swa: torch.optim.swa_utils (SWALR, AveragedModel)
from ._registry import OptimizerSpec, available, info, resolve
from .schedules import Schedule

__all__ = [
    "FromTorch",
    "OptimizerSpec",
    "available",
    "clip_grad_norm",
    "clip_grad_value",
    "decay_labels",
    "from_torch",
    "get",
    "info",
    "muon_labels",
    "resolve",
    "schedules",
    "swa",
]

_JAX_EXTRAS = ("schedule", "param_groups", "labels", "clip_grad_norm", "clip_norm_type",
               "clip_grad_value")


def _backend(name: str):
    """Import ``name``'s framework (a clear ImportError naming the extra if missing) and return
    multiloss.optim's module for it."""
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)}, got {name!r}")
    _load_backend(name)  # the framework check and the install hint
    if name == "jax":
        import importlib

        try:
            importlib.import_module("optax")
        except ImportError as e:
            raise ImportError(
                f"multiloss.optim's jax backend needs optax, which is not installed ({e}). "
                "Install it with: pip install 'multiloss[jax]'") from e
        from . import _jax

        return _jax
    from . import _torch

    return _torch


def _norm_type(value) -> float:
    if isinstance(value, str) and value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"clip_norm_type: expected a real number or 'inf', got {value!r}")
    v = float(value)
    if not v > 0:
        raise ValueError(f"clip_norm_type: expected a value in (0, inf], got {value!r}")
    return v


def _positive_real(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    if not (value >= 0) or math.isinf(value):
        raise ValueError(f"{name}: expected a finite value >= 0, got {value!r}")
    return float(value)


def _groups(spec: OptimizerSpec, defaults: dict, param_groups) -> tuple[list, list]:
    """Each group's full hyperparameters (torch's ``defaults`` overridden by the group's keys)
    and the group labels."""
    if param_groups is None:
        return [defaults], [0]
    if isinstance(param_groups, Mapping):
        keys, items = list(param_groups), list(param_groups.values())
    elif isinstance(param_groups, Sequence) and not isinstance(param_groups, (str, bytes)):
        keys, items = list(range(len(param_groups))), list(param_groups)
    else:
        raise TypeError("param_groups: expected a list of dicts or a dict label -> dict of "
                        f"hyperparameters, got {type(param_groups).__name__}")
    if not items:
        raise ValueError("param_groups: expected at least one group, got none")
    if not spec.supports_groups and len(items) > 1:
        raise ValueError(f"{spec.name}: param_groups: {spec.torch_class} doesn't support "
                         f"per-parameter options (parameter groups), got {len(items)} groups")
    out = []
    for k, item in zip(keys, items):
        if not isinstance(item, Mapping):
            raise TypeError(f"param_groups[{k!r}]: expected a dict of hyperparameters, got "
                            f"{type(item).__name__}")
        if "params" in item:
            raise TypeError(f"param_groups[{k!r}]: 'params' is not a key here: on JAX the "
                            "parameters of each group are chosen with labels=")
        if "optimizer" in item:
            out.append(_foreign_group(spec, k, item))
            continue
        try:
            over = spec.bind(item, partial=True)
        except (TypeError, ValueError) as e:
            raise type(e)(f"param_groups[{k!r}]: {e}") from None
        group = {**defaults, **over}
        try:
            group = spec.bind(group)  # the cross-option checks on the merged group
        except (TypeError, ValueError) as e:
            raise type(e)(f"param_groups[{k!r}]: {e}") from None
        out.append(group)
    return out, keys


def _foreign_group(spec: OptimizerSpec, k, item: Mapping) -> dict:
    """A parameter group stepped by another optimizer (``{"optimizer": "adamw", ...}``, the
    Muon recipe): that optimizer's torch defaults overridden by the group's keys (the
    top-level hyperparameters are ``spec``'s and do not reach it), as a second torch
    optimizer over these parameters would have."""
    name = item["optimizer"]
    try:
        other = resolve(name)
    except (TypeError, ValueError) as e:
        raise type(e)(f"param_groups[{k!r}]: optimizer: {e}") from None
    if not other.supports_groups or not spec.supports_groups:
        raise ValueError(f"param_groups[{k!r}]: optimizer: {other.torch_class} cannot share a "
                         f"transform with {spec.torch_class} (LBFGS steps all parameters as "
                         "one vector)")
    try:
        group = other.bind({key: v for key, v in item.items() if key != "optimizer"})
    except (TypeError, ValueError) as e:
        raise type(e)(f"param_groups[{k!r}]: {e}") from None
    if other.name != spec.name:
        group["optimizer"] = other.name
    return group


def muon_labels(params, use_muon: Callable[[Any, Any], bool] | None = None, muon="muon",
                other="adamw"):
    """Labels for Muon's usual recipe: ``muon`` for the 2-D parameters, ``other`` for the rest
    (biases, norm scales, convolution kernels, scalars), as torch's Muon docstring splits
    ``model.parameters()`` by ``p.ndim == 2``. ``use_muon(path, leaf)`` overrides the rule (many
    recipes also keep the embedding and the output head on AdamW). Use with
    ``get("muon", ..., param_groups={"muon": {}, "adamw": {"optimizer": "adamw", "lr": ...}},
    labels=muon_labels)``."""
    import jax

    rule = use_muon or (lambda path, p: len(getattr(p, "shape", ())) == 2)
    return jax.tree_util.tree_map_with_path(lambda path, p: muon if rule(path, p) else other,
                                            params)


def get(name: str, backend: str = "jax", params=None, *, schedule: Schedule | None = None,
        param_groups: Sequence[Mapping] | Mapping[Any, Mapping] | None = None,
        labels: Any = None, clip_grad_norm: float | None = None,
        clip_norm_type: float | str = 2.0, clip_grad_value: float | None = None,
        **hyperparameters):
    """The optimizer ``name`` (multiloss name, torch class name or alias, case-insensitive)
    with torch's hyperparameter names and defaults.

    backend="jax": an ``optax.GradientTransformationExtraArgs``; ``tx.update(grads, state,
    params)`` returns ``new_params - params`` as torch's ``step`` computes them. Extras:

    schedule        a ``multiloss.optim.schedules`` schedule with torch's step semantics
                    (update k uses the lr torch uses after k ``sched.step()`` calls).
    param_groups    torch's param groups without "params": a list of dicts (labels 0, 1, ...)
                    or a dict label -> dict; each overrides the top-level hyperparameters.
                    A group with an "optimizer" key is stepped by that optimizer instead,
                    from its own torch defaults (a second torch optimizer over those
                    parameters; Muon's recipe: {"optimizer": "adamw", "lr": 3e-4}).
    labels          which group each parameter is in: a pytree like the parameters, a function
                    params -> that pytree, or a list of labels in leaf order
                    (see ``decay_labels`` for the no-decay-on-biases-and-norms recipe).
    clip_grad_norm  torch.nn.utils.clip_grad_norm_(max_norm, clip_norm_type) on the whole
                    gradient set before the step: every gradient is multiplied by
                    min(max_norm / (total_norm + 1e-6), 1).
    clip_grad_value torch.nn.utils.clip_grad_value_: clamp to [-v, v] before the step.

    Update-time keywords: ``has_grad`` (a pytree of booleans like the parameters; False: that
    parameter had no gradient this step, as torch's ``.grad is None``: no decay, no moment
    update, no step count; a ``None`` leaf in the gradients means the same), ``metrics``
    (ReduceLROnPlateau's metric), and for lbfgs ``value`` / ``value_and_grad_fn``.

    backend="torch": ``torch.optim.<Class>(params, **hyperparameters)``, or without ``params``
    a factory ``f(params)``. Use ``schedule.torch(optimizer)`` for the scheduler and
    ``torch.nn.utils.clip_grad_norm_`` for clipping; torch's param groups are dicts in
    ``params``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)}, got {backend!r}")
    spec = resolve(name)
    if backend == "torch":
        extras = {"schedule": schedule, "param_groups": param_groups, "labels": labels,
                  "clip_grad_norm": clip_grad_norm, "clip_grad_value": clip_grad_value}
        given = [k for k, v in extras.items() if v is not None]
        if given:
            raise TypeError(
                f"{spec.name}: {', '.join(given)}: JAX-only argument(s) on the torch backend; "
                "use schedule.torch(optimizer), torch's param groups (dicts in params) and "
                "torch.nn.utils.clip_grad_norm_ / clip_grad_value_")
        bound = spec.bind(hyperparameters, backend="torch")
        return _backend("torch").make(spec, bound, params)
    if params is not None:
        raise TypeError(f"{spec.name}: params: the jax backend takes the parameters in "
                        "tx.init(params) / tx.update(grads, state, params), not in get()")
    defaults = spec.bind(hyperparameters)
    groups, keys = _groups(spec, defaults, param_groups)
    if schedule is not None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule: expected a multiloss.optim.schedules schedule, got "
                            f"{type(schedule).__name__}")
        for s_ in {spec.name: spec, **{g["optimizer"]: resolve(g["optimizer"])
                                        for g in groups if "optimizer" in g}}.values():
            if schedule.cycles_momentum and s_.momentum_key is None:
                raise ValueError(f"schedule: {type(schedule).__name__} cycles momentum but "
                                 f"{s_.torch_class} has no momentum or beta1 (torch raises "
                                 "the same); pass cycle_momentum=False")
        schedule.bind([g["lr"] for g in groups])  # per-group list lengths are checked now
    if clip_grad_norm is not None and clip_grad_value is not None:
        raise ValueError("clip_grad_norm, clip_grad_value: give one; for both, chain "
                         "multiloss.optim.clip_grad_value(...) and clip_grad_norm(...) with "
                         "optax.chain in your torch order")
    clip = None
    if clip_grad_norm is not None:
        clip = ("norm", _positive_real("clip_grad_norm", clip_grad_norm), _norm_type(clip_norm_type))
    elif clip_grad_value is not None:
        clip = ("value", _positive_real("clip_grad_value", clip_grad_value))
    jx = _backend("jax")
    if labels is not None and param_groups is None:
        raise ValueError("labels: given without param_groups; labels name each parameter's group")
    tx = jx.make(spec, groups, keys, labels=labels, schedule=schedule, clip=clip)
    tx._recipe = ("get", name, {
        "schedule": schedule, "param_groups": param_groups, "labels": labels,
        "clip_grad_norm": clip_grad_norm, "clip_norm_type": clip_norm_type,
        "clip_grad_value": clip_grad_value, **hyperparameters})
    tx.spec = spec
    tx.__doc__ = spec.doc()
    tx.param_groups = groups
    tx.group_labels = keys
    tx.labels = labels
    tx.schedule = schedule
    tx.clip = clip
    return tx


def _rebuild(recipe):
    """Unpickling a transform: build it again from its recipe (see TorchTransform)."""
    kind = recipe[0]
    if kind == "get":
        return get(recipe[1], backend="jax", **recipe[2])
    if kind == "clip":
        return _backend("jax")._standalone_clip(recipe[1])
    if kind == "from_torch":
        tx = _rebuild(recipe[1])
        return _backend("jax").with_torch_state(tx, recipe[2])
    raise ValueError(f"unknown multiloss.optim transform recipe {kind!r}")


def clip_grad_norm(max_norm: float, norm_type: float | str = 2.0):
    """torch.nn.utils.clip_grad_norm_ as an optax transform: the total norm over all present
    gradients (``None`` leaves and ``has_grad=False`` ones excluded, as torch skips
    ``.grad is None``), then every gradient times min(max_norm / (norm + 1e-6), 1), applied
    always (so slightly below 1 when norm is within 1e-6 of max_norm). optax's
    clip_by_global_norm scales by max_norm / norm only when norm > max_norm."""
    return _backend("jax").clip_grad_norm(_positive_real("max_norm", max_norm),
                                          _norm_type(norm_type))


def clip_grad_value(clip_value: float):
    """torch.nn.utils.clip_grad_value_ as an optax transform: clamp every present gradient
    to [-clip_value, clip_value] (= optax.clip, plus ``None`` / ``has_grad`` handling)."""
    return _backend("jax").clip_grad_value(_positive_real("clip_value", clip_value))


def decay_labels(params, no_decay: Callable[[Any, Any], bool] | None = None,
                 decay="decay", skip="no_decay"):
    """The "no weight decay on biases and norms" recipe: a labels pytree with ``skip`` for
    parameters with fewer than 2 dimensions (biases, norm scales) and ``decay`` for the rest,
    as the torch recipe ``[p for p in model.parameters() if p.ndim < 2]``. ``no_decay(path,
    leaf)`` overrides the rule. Use with ``param_groups={"decay": {}, "no_decay":
    {"weight_decay": 0.0}}``."""
    import jax

    rule = no_decay or (lambda path, p: len(getattr(p, "shape", ())) < 2)
    return jax.tree_util.tree_map_with_path(lambda path, p: skip if rule(path, p) else decay,
                                            params)


class FromTorch(NamedTuple):
    """What :func:`from_torch` returns: the optax transform and the group label of each torch
    parameter (a dict by parameter name when names are known, else a list in the order of
    ``optimizer.param_groups``), the labels the transform was built with."""

    transform: Any
    labels: Any


def from_torch(optimizer, scheduler=None, params=None, **extras) -> FromTorch:
    """The optax transform reproducing a live torch optimizer and, if given, its scheduler,
    where they are now: the optimizer's class, each param group's hyperparameters (the base
    lr when a scheduler has set ``lr``), the scheduler's arguments and, when steps were taken,
    their state: ``transform.init(params)`` returns torch's state converted (per-parameter
    step counts, moments, accumulators and momentum buffers; LBFGS's direction, step and
    (s, y) history; the scheduler's step count and ReduceLROnPlateau's best / bad-epoch /
    cooldown counters and current lrs), so that a run moved from torch to JAX mid-training
    continues on torch's trajectory. A fresh optimizer (no step taken, whatever its
    constructor put in the state, e.g. Adagrad's accumulator) gives the fresh state. The
    state is read when ``from_torch`` is called; later torch steps do not reach it.

    ``params``: a torch module or (name, tensor) pairs naming the parameters; the labels are
    then a dict name -> group index, matching a flat dict of JAX parameters keyed by the same
    names (optimizers built from named parameters carry the names themselves); the state is
    matched by name too. Otherwise the labels are a list in the order of
    ``optimizer.param_groups``, matching JAX parameters whose leaves come in that order.
    ``extras`` go to :func:`get` (``clip_grad_norm=...``; torch's clipping is not part of its
    optimizer).

    ``optimizer`` may be a list of torch optimizers over disjoint parameters, stepped together
    (Muon's recipe: ``[torch.optim.Muon(matrices), torch.optim.AdamW(others)]``): one
    transform whose parameter groups are all their groups in that order, the groups of an
    optimizer of another class than the first's stepped by that optimizer
    (``{"optimizer": "adamw", ...}``); ``scheduler`` is then None or one scheduler per
    optimizer, all the same schedule (the same class and arguments).
    """
    T = _backend("torch")
    if isinstance(optimizer, (list, tuple)):
        return _from_torch_many(T, list(optimizer), scheduler, params, extras)
    spec = T.spec_of(optimizer)
    schedule = T.read_schedule(scheduler, optimizer)
    groups = T.read_groups(spec, optimizer, scheduler)
    labels = T.read_labels(optimizer, params)
    snap = T.read_state(spec, optimizer, scheduler, params)
    if len(groups) == 1:
        tx = get(spec.name, backend="jax", schedule=schedule, **groups[0], **extras)
    else:
        tx = get(spec.name, backend="jax", schedule=schedule, param_groups=groups,
                 labels=labels, **extras)
    return FromTorch(_backend("jax").with_torch_state(tx, snap), labels)


def _from_torch_many(T, optimizers, schedulers, params, extras) -> FromTorch:
    """:func:`from_torch` of several torch optimizers stepped together (see there)."""
    if not optimizers:
        raise ValueError("optimizer: expected a torch optimizer or a non-empty list of them, "
                         "got an empty list")
    import torch

    for i, o in enumerate(optimizers):
        if not isinstance(o, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got list with "
                            f"{type(o).__name__} at [{i}] (a list holds torch optimizers "
                            "stepped together, e.g. [Muon(matrices), AdamW(others)])")
    specs_ = [T.spec_of(o) for o in optimizers]
    if any(s_.name == "lbfgs" for s_ in specs_) and len(optimizers) > 1:
        raise ValueError("optimizer: LBFGS steps all its parameters as one vector and cannot "
                         "share a transform with other optimizers")
    seen = set()
    for i, o in enumerate(optimizers):
        for g in o.param_groups:
            for p in g["params"]:
                if id(p) in seen:
                    raise ValueError(f"optimizer[{i}]: a parameter of shape {tuple(p.shape)} "
                                     "is also in an earlier optimizer; expected disjoint "
                                     "parameters")
                seen.add(id(p))
    if schedulers is None:
        schedulers = [None] * len(optimizers)
    elif not isinstance(schedulers, (list, tuple)) or len(schedulers) != len(optimizers):
        raise ValueError(f"scheduler: expected None or a list of {len(optimizers)} schedulers, "
                         f"one per optimizer, got {schedulers!r}")
    scheds = [T.read_schedule(s_, o) for s_, o in zip(schedulers, optimizers)]
    if len({repr(s_) for s_ in scheds}) > 1:
        raise ValueError("scheduler: the optimizers' schedulers differ "
                         f"({', '.join(repr(s_) for s_ in scheds)}); one transform takes one "
                         "schedule: give each optimizer the same scheduler class and arguments")
    if any(type(s_).__name__ in ("OneCycleLR", "ReduceLROnPlateau") for s_ in scheds):
        raise ValueError("scheduler: OneCycleLR and ReduceLROnPlateau keep per-optimizer "
                         "numbers; from_torch of several optimizers takes the other schedules")
    if scheds[0] is not None:
        scheds[0] = T.merge_groups(scheds)  # their per-group values, over all the groups
    first = specs_[0]
    groups, labels, snaps, offset = [], None, [], 0
    for o, s_, sch in zip(optimizers, specs_, schedulers):
        gs = T.read_groups(s_, o, sch)
        if s_.name != first.name:
            gs = [{**g, "optimizer": s_.name} for g in gs]
        lab = T.read_labels(o, params)
        if isinstance(lab, dict):
            lab = {k: v + offset for k, v in lab.items()}
            labels = {**(labels or {}), **lab}
        else:
            if isinstance(labels, dict):
                raise ValueError("params: the parameter names of some optimizers are known and "
                                 "of others not: pass params= (the module or (name, tensor) "
                                 "pairs)")
            labels = (labels or []) + [v + offset for v in lab]
        groups += gs
        offset += len(gs)
        snaps.append(T.read_state(s_, o, sch, params))
    names = [n for sn in snaps for n in (sn["names"] or [None] * len(sn["shapes"]))]
    snap = {"shapes": [x for sn in snaps for x in sn["shapes"]],
            "params": [x for sn in snaps for x in sn["params"]], "lbfgs": None,
            "count": max(sn["count"] for sn in snaps), "plateau": None,
            "lrs": (None if any(sn.get("lrs") is None for sn in snaps)
                    else [x for sn in snaps for x in sn["lrs"]]),
            "momenta": (None if any(sn.get("momenta") is None for sn in snaps)
                        else [x for sn in snaps for x in sn["momenta"]]),
            "names": None if None in names else names}
    if len(groups) == 1:
        tx = get(first.name, backend="jax", schedule=scheds[0], **groups[0], **extras)
    else:
        tx = get(first.name, backend="jax", schedule=scheds[0], param_groups=groups,
                 labels=labels, **extras)
    return FromTorch(_backend("jax").with_torch_state(tx, snap), labels)
