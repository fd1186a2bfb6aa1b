"""The torch side of ``multiloss.nn``: the combined loss and the uncertainty weighting as a
``torch.nn.Module``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .._combine import LossParts, call_parts
from ._common import KINDS, ordered_losses, uncertainty_config

__all__ = ["CombinedLoss", "TorchUncertaintyWeighting"]


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
