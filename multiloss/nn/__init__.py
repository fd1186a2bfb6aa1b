"""multiloss.nn: the framework modules of multiloss, in pairs with matching parameters.

- :class:`UncertaintyWeighting` (``flax.nnx.Module``) and :class:`TorchUncertaintyWeighting`
  (``torch.nn.Module``): learnable uncertainty weighting of task losses (Kendall, Gal and
  Cipolla 2018), the same parameter ``log_vars``, initialisation, values and gradients;
- :class:`ArcFace` / :class:`TorchArcFace` and :class:`CosFace` / :class:`TorchCosFace`: the
  class matrix ``W`` (embedding_size, num_classes) of the margin losses "arcface" and
  "cosface" as a learnable parameter, with pytorch-metric-learning's name, layout and N(0, 1)
  initialisation (docs/metric.md);
- :class:`AdaptiveLogSoftmaxWithLoss` / :class:`TorchAdaptiveLogSoftmaxWithLoss`: torch's
  ``nn.AdaptiveLogSoftmaxWithLoss`` (Grave et al. 2017), with torch's arguments, parameter
  names and layout (``head.weight``, ``tail.0.0.weight``, ...); the torch twin is a subclass
  of torch's module, and a plain ``torch.nn.AdaptiveLogSoftmaxWithLoss`` converts too
  (docs/classification-extra.md);
- :func:`to_torch` / :func:`from_torch`: a module's parameters to its twin on the other
  framework (a new twin, or loaded into an existing one after checking that the parameter
  trees match);
- ``CombinedLoss`` / ``TorchCombinedLoss``: what :func:`multiloss.combine` returns.

For example:

    >>> import multiloss.nn as mnn
    >>> uw = mnn.UncertaintyWeighting(["seg", "depth"], dtype="float64")
    >>> total, terms = uw({"seg": ce_value, "depth": l1_value})
    >>> uw_t = mnn.to_torch(uw)                   # TorchUncertaintyWeighting, same log_vars

Importing this module imports neither torch nor jax: the classes are loaded when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ASMOutput",
    "AdaptiveLogSoftmaxWithLoss",
    "ArcFace",
    "CombinedLoss",
    "CosFace",
    "TorchAdaptiveLogSoftmaxWithLoss",
    "TorchArcFace",
    "TorchCombinedLoss",
    "TorchCosFace",
    "TorchUncertaintyWeighting",
    "UncertaintyWeighting",
    "from_torch",
    "to_torch",
]

# public name -> (module, name in it)
_LAZY = {
    "UncertaintyWeighting": ("._jax", "UncertaintyWeighting"),
    "CombinedLoss": ("._jax", "CombinedLoss"),
    "TorchUncertaintyWeighting": ("._torch", "TorchUncertaintyWeighting"),
    "TorchCombinedLoss": ("._torch", "CombinedLoss"),
    "ArcFace": ("._jax", "ArcFace"),
    "CosFace": ("._jax", "CosFace"),
    "TorchArcFace": ("._torch", "TorchArcFace"),
    "TorchCosFace": ("._torch", "TorchCosFace"),
    "AdaptiveLogSoftmaxWithLoss": ("._jax", "AdaptiveLogSoftmaxWithLoss"),
    "ASMOutput": ("._jax", "ASMOutput"),
    "TorchAdaptiveLogSoftmaxWithLoss": ("._torch", "TorchAdaptiveLogSoftmaxWithLoss"),
}

if TYPE_CHECKING:  # pragma: no cover
    from ._jax import (
        AdaptiveLogSoftmaxWithLoss,
        ArcFace,
        ASMOutput,
        CombinedLoss,
        CosFace,
        UncertaintyWeighting,
    )
    from ._torch import CombinedLoss as TorchCombinedLoss
    from ._torch import (
        TorchAdaptiveLogSoftmaxWithLoss,
        TorchArcFace,
        TorchCosFace,
        TorchUncertaintyWeighting,
    )


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        from ..backends import load

        module, attr = _LAZY[name]
        load("jax" if module == "._jax" else "torch")  # the install hint if missing
        return getattr(importlib.import_module(module, __name__), attr)
    raise AttributeError(f"module 'multiloss.nn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


# ---------------------------------------------------------------------------------------------
# parameter conversion


def _is_nnx(module) -> bool:
    return type(module).__module__ == "multiloss.nn._jax" and hasattr(module, "torch_twin")


def _is_torch(module) -> bool:
    return type(module).__module__ == "multiloss.nn._torch" and hasattr(module, "nnx_twin")


def _is_plain_adaptive(module) -> bool:
    """A plain ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (torch's own class, not a subclass:
    a subclass may compute something else), whose twin is the nnx adaptive softmax."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and type(module) is torch.nn.AdaptiveLogSoftmaxWithLoss


def _torch_config(module) -> dict:
    if _is_plain_adaptive(module):
        from ._torch import adaptive_torch_config

        return adaptive_torch_config(module)
    return module.config()


def _nnx_params(module) -> dict[str, Any]:
    """name -> nnx.Param, names joined with '.' as torch's ``named_parameters``."""
    from flax import nnx

    out = {}
    for path, _ in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        var = module
        for p in path:
            var = var[p] if isinstance(p, int) else getattr(var, p)
        out[".".join(map(str, path))] = var
    return out


def _check_trees(src: dict[str, tuple], dst: dict[str, tuple], src_name: str,
                 dst_name: str) -> None:
    """Raise ValueError when two parameter trees (name -> shape) differ in names or shapes."""
    missing = [k for k in src if k not in dst]
    extra = [k for k in dst if k not in src]
    if missing or extra:
        raise ValueError(
            f"into: the parameter trees differ: {src_name} has {sorted(src)}, {dst_name} has "
            f"{sorted(dst)} (not in {dst_name}: {missing}; not in {src_name}: {extra})")
    bad = [f"{k}: {src[k]} vs {dst[k]}" for k in src if tuple(src[k]) != tuple(dst[k])]
    if bad:
        raise ValueError(f"into: parameter shapes differ between {src_name} and {dst_name}: "
                         + "; ".join(bad))


def _check_config(a: dict, b: dict, src_name, dst_name):
    for key in ("tasks", "kinds"):
        if key in a and a.get(key) != b.get(key):
            raise ValueError(f"into: {key} differ: {src_name} has {a[key]!r}, {dst_name} has "
                             f"{b[key]!r} (the parameters are per task, in task order)")


def to_torch(module, into=None):
    """The torch twin of a ``multiloss.nn`` flax.nnx module with the same parameter values
    (e.g. :class:`UncertaintyWeighting` -> :class:`TorchUncertaintyWeighting`,
    :class:`ArcFace` -> :class:`TorchArcFace`, :class:`AdaptiveLogSoftmaxWithLoss` ->
    :class:`TorchAdaptiveLogSoftmaxWithLoss`; ``into`` may also be a plain
    ``torch.nn.AdaptiveLogSoftmaxWithLoss``).

    ``into``: an existing torch module to copy the parameters into (cast to its dtype, on its
    device) instead of building a new twin. Its parameter tree (names and shapes) and its task
    names and kinds must equal ``module``'s, else ValueError saying what differs (a margin
    module's loss options, margin and scale, are its own: only ``W`` is copied). Returns the
    torch module. TypeError for a module that is not a multiloss.nn nnx module.
    """
    import importlib

    if not _is_nnx(module):
        raise TypeError(f"module: expected a multiloss.nn flax.nnx module (UncertaintyWeighting, "
                        f"ArcFace, CosFace, AdaptiveLogSoftmaxWithLoss), got "
                        f"{type(module).__module__}.{type(module).__qualname__}")
    T = importlib.import_module("._torch", __name__)
    import torch

    if into is None:
        into = getattr(T, module.torch_twin)(**module.config())
    elif not isinstance(into, torch.nn.Module):
        raise TypeError(f"into: expected a torch.nn.Module, got {type(into).__name__}")
    src = {k: v[...] for k, v in _nnx_params(module).items()}
    dst = dict(into.named_parameters())
    _check_trees({k: v.shape for k, v in src.items()}, {k: tuple(v.shape) for k, v in dst.items()},
                 "the nnx module", "into")
    if _is_torch(into) or _is_plain_adaptive(into):
        _check_config(module.config(), _torch_config(into), "the nnx module", "into")
    import numpy as np

    with torch.no_grad():
        for k, v in src.items():
            dst[k].copy_(torch.from_numpy(np.array(v)))
    return into


def from_torch(module, into=None):
    """The flax.nnx twin of a ``multiloss.nn`` torch module with the same parameter values
    (e.g. :class:`TorchUncertaintyWeighting` -> :class:`UncertaintyWeighting`,
    :class:`TorchArcFace` -> :class:`ArcFace`; a new margin or adaptive softmax module's
    ``rngs`` is ``nnx.Rngs(0)``, its draw overwritten). A plain
    ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (torch's class itself) converts to
    :class:`AdaptiveLogSoftmaxWithLoss` with its arguments and parameters.

    ``into``: an existing nnx module to copy the parameters into (cast to its dtype) instead of
    building a new twin. Its parameter tree (names joined with ".", and shapes) and its task
    names and kinds must equal ``module``'s, else ValueError saying what differs (a margin
    module's margin and scale are its own: only ``W`` is copied). Returns the nnx module.
    TypeError for a module that is not a multiloss.nn torch module.

    (For a torch loss *criterion*, ``torch.nn.CrossEntropyLoss(...)``, use
    :func:`multiloss.from_torch`.)
    """
    import importlib

    if not (_is_torch(module) or _is_plain_adaptive(module)):
        raise TypeError(f"module: expected a multiloss.nn torch module "
                        f"(TorchUncertaintyWeighting, TorchArcFace, TorchCosFace, "
                        f"TorchAdaptiveLogSoftmaxWithLoss) or a torch.nn."
                        f"AdaptiveLogSoftmaxWithLoss, got "
                        f"{type(module).__module__}.{type(module).__qualname__}")
    J = importlib.import_module("._jax", __name__)
    from flax import nnx

    cfg = _torch_config(module)
    if into is None:
        twin = getattr(J, "AdaptiveLogSoftmaxWithLoss" if _is_plain_adaptive(module)
                       else module.nnx_twin)
        extra = ({"rngs": nnx.Rngs(0)} if issubclass(twin, (J._MarginModule,
                                                             J.AdaptiveLogSoftmaxWithLoss))
                 else {})
        into = twin(**cfg, **extra)
    elif not isinstance(into, nnx.Module):
        raise TypeError(f"into: expected a flax.nnx.Module, got {type(into).__name__}")
    src = {k: v.detach().cpu().numpy() for k, v in module.named_parameters()}
    dst = _nnx_params(into)
    _check_trees({k: v.shape for k, v in src.items()}, {k: v[...].shape for k, v in dst.items()},
                 "the torch module", "into")
    if _is_nnx(into):
        _check_config(cfg, into.config(), "the torch module", "into")
    import jax.numpy as jnp

    for k, v in src.items():
        dst[k][...] = jnp.asarray(v, dtype=dst[k][...].dtype)
    return into
