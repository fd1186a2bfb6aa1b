"""``multiloss.from_torch``: a live torch loss module (criterion) to the multiloss loss that
computes the same numbers, on JAX by default.

The spec of a torch loss class is found by its class name (every torch.nn loss class name is an
alias of its spec); the options are read from the module's attributes and buffers, which carry
torch's own option names (``weight``, ``ignore_index``, ``label_smoothing``, ``margin``, ...).
"""

from __future__ import annotations

import numpy as np

from ._registry import resolve

__all__ = ["from_torch"]


def _torch_loss_base(cls, torch_losses):
    """The torch.nn loss class that ``cls`` is or derives from (None if none)."""
    for base in cls.__mro__:
        if getattr(torch_losses, base.__name__, None) is base and issubclass(
            base, torch_losses._Loss
        ) and not base.__name__.startswith("_"):
            return base
    return None


def _distance_name(fn, torch):
    """The multiloss name of a torch distance callable that has a JAX twin."""
    F = torch.nn.functional
    if fn is None or fn is F.pairwise_distance:
        return "pairwise"
    if isinstance(fn, torch.nn.PairwiseDistance):
        if (fn.norm, fn.eps, fn.keepdim) == (2.0, 1e-6, False):
            return "pairwise"
        raise ValueError(
            f"distance_function: PairwiseDistance(p={fn.norm}, eps={fn.eps}, keepdim={fn.keepdim}) "
            f"has no named JAX twin (only p=2, eps=1e-6: 'pairwise'); build the loss with "
            f"multiloss.get('triplet_margin_with_distance', distance_function=<a JAX function>)"
        )
    raise ValueError(
        f"distance_function: the torch callable {fn!r} cannot be converted to JAX; build the "
        f"loss with multiloss.get('triplet_margin_with_distance', distance_function=<a JAX "
        f"function>, ...) (or the name 'pairwise' or 'cosine')"
    )


def from_torch(criterion, backend: str = "jax"):
    """The multiloss loss equivalent to the torch loss module ``criterion``.

        >>> ce = torch.nn.CrossEntropyLoss(weight=w, ignore_index=0, label_smoothing=0.1)
        >>> loss = multiloss.from_torch(ce)          # a jitted JAX callable
        >>> loss(logits, labels)                      # == ce(torch logits, torch labels)

    ``criterion``: an instance of a ``torch.nn`` loss class (``CrossEntropyLoss``,
    ``MSELoss``, ... every one but ``LinearCrossEntropyLoss``), or of a subclass that does not
    override ``forward``. ``torch.nn.AdaptiveLogSoftmaxWithLoss``, a module with parameters,
    gives its ``multiloss.nn`` twin with the same arguments and parameter values (copied):
    :class:`multiloss.nn.AdaptiveLogSoftmaxWithLoss` (flax.nnx) on "jax",
    :class:`multiloss.nn.TorchAdaptiveLogSoftmaxWithLoss` on "torch"; called as torch's,
    ``module(input, target)`` -> ``(output, loss)``. Its options (``reduction``, ``weight``
    and ``pos_weight`` buffers, ``ignore_index``, ``label_smoothing``, ``margin``, ...) are
    copied: later changes to the criterion do not reach the returned loss. ``backend``: "jax"
    (default) or "torch" (a multiloss torch module with the same options, which adds
    ``sample_weight`` and the contract's reductions).

    Raises TypeError for an object that is not a torch loss module or a subclass with its own
    ``forward`` (what it computes is unknown), and ValueError for a loss class without a
    multiloss twin, a deprecated or unknown ``reduction``, or a ``distance_function`` that has
    no JAX twin.
    """
    try:
        import torch
        import torch.nn.modules.loss as torch_losses
    except ImportError as e:  # pragma: no cover - from_torch is called with a torch object
        raise ImportError(
            "multiloss.from_torch needs torch: pip install 'multiloss[torch]'"
        ) from e
    cls = type(criterion)
    if isinstance(criterion, torch.nn.AdaptiveLogSoftmaxWithLoss):
        return _adaptive(criterion, backend)
    base = _torch_loss_base(cls, torch_losses) if isinstance(criterion, torch.nn.Module) else None
    if base is None:
        raise TypeError(
            f"criterion: expected a torch.nn loss module (torch.nn.CrossEntropyLoss, "
            f"torch.nn.MSELoss, ...), got {cls.__module__}.{cls.__qualname__}"
        )
    if cls is not base and cls.forward is not base.forward:
        raise TypeError(
            f"criterion: {cls.__qualname__} subclasses torch.nn.{base.__name__} but overrides "
            f"forward, so what it computes is unknown; build the loss with multiloss.get("
            f"{base.__name__!r}, ...) and write the custom part on top"
        )
    if base.__name__ == "LinearCrossEntropyLoss":
        # a loss with parameters: its linear layer's weight and bias are inputs of
        # multiloss' linear_cross_entropy, which a criterion-to-loss conversion cannot pass
        raise ValueError(
            "criterion: torch.nn.LinearCrossEntropyLoss holds a linear layer (its parameters "
            "linear.weight and linear.bias), which multiloss' linear_cross_entropy takes as "
            "inputs: use multiloss.get('linear_cross_entropy', reduction=..., weight=..., "
            "ignore_index=..., label_smoothing=...) and call it as loss(input, "
            "criterion.linear.weight, target, ...) with linear_bias=criterion.linear.bias"
        )
    try:
        spec = resolve(base.__name__)
    except ValueError:
        raise ValueError(
            f"criterion: torch.nn.{base.__name__} has no multiloss twin"
        ) from None
    legacy = {k: getattr(criterion, k) for k in ("size_average", "reduce")
              if getattr(criterion, k, None) is not None}
    if legacy:
        # torch turns these constructor arguments into `reduction` and keeps neither; a
        # criterion that carries them (set by old code) leaves its reduction ambiguous
        got = ", ".join(f"{k}={v!r}" for k, v in legacy.items())
        raise ValueError(
            f"criterion: carries torch's deprecated {got}; set criterion.reduction to 'mean', "
            f"'sum' or 'none' instead (torch.nn.modules.loss._Reduction.legacy_get_string "
            f"gives the equivalent)"
        )
    reduction = getattr(criterion, "reduction", "mean")
    if reduction not in ("mean", "sum", "none", "batchmean"):
        raise ValueError(
            f"criterion.reduction: expected 'mean', 'sum' or 'none', got {reduction!r}"
            + (" (deprecated in torch: use 'mean')" if reduction == "elementwise_mean" else "")
        )
    options = {"reduction": reduction}
    for opt in spec.options:
        if opt.name == "distance_function":
            fn = getattr(criterion, "distance_function", None)
            options[opt.name] = _distance_name(fn, torch)
            continue
        if not hasattr(criterion, opt.name):
            continue  # an option the module does not have (torch 2.13's mse/l1/huber weight)
        value = getattr(criterion, opt.name)
        if isinstance(value, torch.Tensor):
            value = np.array(value.detach().cpu().numpy())
        options[opt.name] = value
    if spec.warn is not None and reduction == "mean":
        import warnings

        with warnings.catch_warnings():  # torch warned when the criterion was made
            warnings.simplefilter("ignore", UserWarning)
            return _get(spec.name, backend, options)
    return _get(spec.name, backend, options)


def _adaptive(module, backend):
    """The multiloss.nn twin of a live torch.nn.AdaptiveLogSoftmaxWithLoss (parameters
    copied)."""
    from . import nn

    cls = type(module)
    if not (nn._is_plain_adaptive(module) or nn._is_torch(module)):
        raise TypeError(
            f"criterion: {cls.__qualname__} subclasses torch.nn.AdaptiveLogSoftmaxWithLoss; what "
            f"it computes is unknown: convert a torch.nn.AdaptiveLogSoftmaxWithLoss (or "
            f"multiloss.nn.TorchAdaptiveLogSoftmaxWithLoss) with the same parameters")
    if backend not in ("jax", "torch"):
        raise ValueError(f"backend: expected one of ['jax', 'torch'], got {backend!r}")
    if backend == "jax":
        return nn.from_torch(module)
    twin = nn.TorchAdaptiveLogSoftmaxWithLoss(**nn._torch_config(module),
                                              device=module.head.weight.device)
    twin.load_state_dict(module.state_dict())
    return twin


def _get(name, backend, options):
    from . import get

    return get(name, backend=backend, **options)
