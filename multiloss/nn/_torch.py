"""The torch side of ``multiloss.nn``: the combined loss, and the uncertainty weighting and the
margin losses' class matrices (ArcFace, CosFace) as ``torch.nn.Module``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .._combine import LossParts, call_parts
from ._common import (
    KINDS,
    LOSS_OPTIONS,
    MARGIN_LOSSES,
    adaptive_config,
    check_adaptive_inputs,
    margin_config,
    ordered_losses,
    uncertainty_config,
)

__all__ = ["CombinedLoss", "TorchAdaptiveLogSoftmaxWithLoss", "TorchArcFace", "TorchCosFace",
           "TorchUncertaintyWeighting"]


def _ndim(x) -> int:
    return x.dim() if isinstance(x, torch.Tensor) else len(getattr(x, "shape", ()))


class CombinedLoss(torch.nn.Module):
    """The torch result of :func:`multiloss.combine`: ``loss(inputs, sample_weight=None)`` ->
    :class:`multiloss.LossParts` ``(total, parts)`` with ``total = sum_i w_i *
    parts[i]`` summed in the parts' order. Parts that are modules are submodules (in
    ``self.parts``), so ``.to(device)`` and ``state_dict`` carry their buffers."""

    backend = "torch"

    def __init__(self, losses: Mapping[str, Any], weights: Mapping[str, float]):
        super().__init__()
        self.order = tuple(losses)
        self.parts = torch.nn.ModuleDict(
            {k: v for k, v in losses.items() if isinstance(v, torch.nn.Module)})
        self._callables = {k: v for k, v in losses.items() if not isinstance(v, torch.nn.Module)}
        self.weights = dict(weights)

    @property
    def losses(self) -> dict:
        """The part losses by name, in order."""
        return {k: self.parts[k] if k in self.parts else self._callables[k] for k in self.order}

    def forward(self, inputs, sample_weight=None) -> LossParts:
        parts = call_parts(self.losses, inputs, sample_weight, _ndim)
        total = None
        for k, v in parts.items():
            term = self.weights[k] * v
            total = term if total is None else total + term
        return LossParts(total, parts)

    def extra_repr(self):
        return "weights=" + repr(self.weights)


class TorchUncertaintyWeighting(torch.nn.Module):
    """Uncertainty weighting of task losses (Kendall, Gal and Cipolla, CVPR 2018) with one
    learnable log-variance ``s_i = log(sigma_i^2)`` per task, as a ``torch.nn.Module``: the
    twin of :class:`multiloss.nn.UncertaintyWeighting` (same arguments, formula, parameter
    name ``log_vars``, shape, initialisation and gradients).

    ``total = sum_i a_i * exp(-s_i) * L_i + b_i * s_i``, ``(a_i, b_i)`` = (1, 1) for "plain",
    (1/2, 1/2) for "regression", (1, 1/2) for "classification". ``dtype`` may be a torch dtype
    or its name (default "float32"); ``device`` places the parameter.

    Called as ``uw(losses)`` with a dict task -> scalar tensor (or a list in task order);
    returns :class:`multiloss.LossParts` ``(total, terms)``.
    """

    nnx_twin = "UncertaintyWeighting"

    def __init__(self, tasks, *, init=0.0, kinds="plain", dtype="float32", device=None):
        super().__init__()
        tasks, kinds, values, dtype = uncertainty_config(tasks, init, kinds, dtype)
        self.tasks = tasks
        self.kinds = kinds
        self.log_vars = torch.nn.Parameter(
            torch.tensor(values, dtype=getattr(torch, dtype), device=device))

    def config(self) -> dict:
        """The constructor arguments of a twin (tasks, kinds, dtype)."""
        return {"tasks": self.tasks, "kinds": dict(zip(self.tasks, self.kinds)),
                "dtype": str(self.log_vars.dtype).replace("torch.", "")}

    def forward(self, losses) -> LossParts:
        values = ordered_losses(self.tasks, losses, _ndim)
        s = self.log_vars
        terms, total = {}, None
        for i, (task, kind, loss) in enumerate(zip(self.tasks, self.kinds, values)):
            a, b = KINDS[kind]
            term = a * torch.exp(-s[i]) * loss + b * s[i]
            terms[task] = term
            total = term if total is None else total + term
        return LossParts(total, terms)

    def weights(self) -> dict:
        """Each task's current effective weight ``a_i * exp(-s_i)`` (for logging)."""
        with torch.no_grad():
            return {t: KINDS[k][0] * torch.exp(-self.log_vars[i])
                    for i, (t, k) in enumerate(zip(self.tasks, self.kinds))}

    def extra_repr(self):
        return f"tasks={list(self.tasks)}, kinds={list(self.kinds)}"


class _TorchMarginModule(torch.nn.Module):
    """The class matrix of a margin loss (arcface, cosface) and the loss itself."""

    nnx_twin = ""
    loss_name = ""

    def __init__(self, embedding_size, num_classes, margin, scale, *, reduction="mean",
                 empty_reduction="nan", dtype="float32", device=None):
        super().__init__()
        import multiloss

        cfg = margin_config(self.loss_name, embedding_size, num_classes, margin, scale,
                            reduction, empty_reduction, dtype)
        self.embedding_size = cfg["embedding_size"]
        self.num_classes = cfg["num_classes"]
        self.margin = cfg["margin"]
        self.scale = cfg["scale"]
        self.reduction = cfg["reduction"]
        self.empty_reduction = cfg["empty_reduction"]
        self.W = torch.nn.Parameter(torch.empty(
            self.embedding_size, self.num_classes, dtype=getattr(torch, cfg["dtype"]),
            device=device))
        # pytorch-metric-learning's initialisation
        torch.nn.init.normal_(self.W)
        self.loss = multiloss.get(self.loss_name, backend="torch",
                                  **{k: getattr(self, k) for k in LOSS_OPTIONS})

    def config(self) -> dict:
        """The constructor arguments of a twin (sizes, loss options, dtype)."""
        return {"embedding_size": self.embedding_size, "num_classes": self.num_classes,
                **{k: getattr(self, k) for k in LOSS_OPTIONS},
                "dtype": str(self.W.dtype).replace("torch.", "")}

    def forward(self, embeddings, labels, sample_weight=None):
        """The loss of ``embeddings`` (N, D) with class indices ``labels`` (N,) against the
        class matrix ``W``, reduced by the module's ``reduction``."""
        return self.loss(embeddings, labels, self.W, sample_weight=sample_weight)

    def logits(self, embeddings):
        """``scale * cos(embedding, class vector)``, (N, C), without the margin (what
        pytorch-metric-learning's ``get_logits`` gives): the scores to predict a class with."""
        import torch.nn.functional as F

        e, w = embeddings, self.W
        if e.dtype != w.dtype:
            dtype = torch.result_type(e, w)
            e, w = e.to(dtype), w.to(dtype)
        cos = torch.matmul(F.normalize(e, dim=1), F.normalize(w.t(), dim=1).t())
        return cos * self.scale

    def extra_repr(self):
        return (f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
                f"margin={self.margin}, scale={self.scale}, reduction={self.reduction!r}")


class TorchArcFace(_TorchMarginModule):
    """ArcFace (Deng et al. 2019) as a ``torch.nn.Module``: the twin of
    :class:`multiloss.nn.ArcFace` (same arguments, parameter ``W`` of shape
    ``(embedding_size, num_classes)``, initialisation N(0, 1), values and gradients).

    ``W`` has pytorch-metric-learning's name, layout and initialisation: the ``state_dict`` of
    a ``pytorch_metric_learning.losses.ArcFaceLoss`` loads into this module (and back).
    ``margin`` is in degrees (28.6 = 0.5 rad); ``dtype`` may be a torch dtype or its name;
    ``device`` places ``W``. Called as ``head(embeddings, labels, sample_weight=None)``.
    """

    nnx_twin = "ArcFace"
    loss_name = MARGIN_LOSSES["ArcFace"]

    def __init__(self, embedding_size, num_classes, margin=28.6, scale=64.0, *,
                 reduction="mean", empty_reduction="nan", dtype="float32", device=None):
        super().__init__(embedding_size, num_classes, margin, scale, reduction=reduction,
                         empty_reduction=empty_reduction, dtype=dtype, device=device)


class TorchCosFace(_TorchMarginModule):
    """CosFace (Wang et al. 2018) as a ``torch.nn.Module``: the twin of
    :class:`multiloss.nn.CosFace` (parameter ``W`` of shape ``(embedding_size, num_classes)``,
    N(0, 1), as pytorch-metric-learning's ``CosFaceLoss``, whose ``state_dict`` loads here).
    ``margin`` 0.35, ``scale`` 64. See :class:`TorchArcFace`.
    """

    nnx_twin = "CosFace"
    loss_name = MARGIN_LOSSES["CosFace"]

    def __init__(self, embedding_size, num_classes, margin=0.35, scale=64.0, *,
                 reduction="mean", empty_reduction="nan", dtype="float32", device=None):
        super().__init__(embedding_size, num_classes, margin, scale, reduction=reduction,
                         empty_reduction=empty_reduction, dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------
# the adaptive softmax


def _kind(x) -> str:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    from .._registry import dtype_kind

    return dtype_kind(x)


class TorchAdaptiveLogSoftmaxWithLoss(torch.nn.AdaptiveLogSoftmaxWithLoss):
    """``torch.nn.AdaptiveLogSoftmaxWithLoss`` (Grave et al. 2017) with multiloss's argument
    checks: the twin of :class:`multiloss.nn.AdaptiveLogSoftmaxWithLoss` (same arguments,
    parameter names and layout, values and gradients). A subclass of torch's module: its
    ``forward``, ``log_prob`` and ``predict`` are torch's, after checks that name the argument
    (torch's own target check is a RuntimeError "Target values should be in ..."; here a
    ValueError "target: expected class indices in [0, n_classes - 1] ..."; skipped while
    ``torch.compile`` traces). Its ``state_dict`` is torch's: it loads into a plain
    ``torch.nn.AdaptiveLogSoftmaxWithLoss`` and back.

    ``dtype`` may be a torch dtype or its name (default "float32"); ``device`` places the
    parameters. The formula, the shapes and the outputs: see the nnx twin.
    """

    nnx_twin = "AdaptiveLogSoftmaxWithLoss"

    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False, *,
                 dtype="float32", device=None):
        cfg = adaptive_config(in_features, n_classes, cutoffs, div_value, head_bias, dtype)
        super().__init__(cfg["in_features"], cfg["n_classes"], list(cfg["cutoffs"]),
                         div_value=cfg["div_value"], head_bias=cfg["head_bias"],
                         device=device, dtype=getattr(torch, cfg["dtype"]))

    def config(self) -> dict:
        """The constructor arguments of a twin."""
        return adaptive_torch_config(self)

    def _check(self, input, target=None):
        check_adaptive_inputs(self.in_features, tuple(input.shape), _kind(input),
                              None if target is None else tuple(target.shape),
                              None if target is None else _kind(target))
        if target is not None and not torch.compiler.is_compiling() and target.numel():
            lo, hi = int(target.min()), int(target.max())
            if lo < 0 or hi > self.n_classes - 1:
                raise ValueError(f"target: expected class indices in [0, {self.n_classes - 1}] "
                                 f"(n_classes={self.n_classes}), got values in [{lo}, {hi}]")

    def forward(self, input, target):
        self._check(input, target)
        return super().forward(input, target)

    def log_prob(self, input):
        self._check(input)
        return super().log_prob(input)

    def predict(self, input):
        self._check(input)
        return super().predict(input)


def adaptive_torch_config(module) -> dict:
    """The constructor arguments of the nnx twin of a (plain or multiloss)
    ``torch.nn.AdaptiveLogSoftmaxWithLoss``."""
    return {"in_features": module.in_features, "n_classes": module.n_classes,
            "cutoffs": tuple(module.cutoffs[:-1]), "div_value": module.div_value,
            "head_bias": module.head_bias,
            "dtype": str(module.head.weight.dtype).replace("torch.", "")}
