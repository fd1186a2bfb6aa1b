"""The JAX side of ``multiloss.nn``: the combined loss and the uncertainty weighting as a
``flax.nnx.Module``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import nnx

from .._combine import LossParts, call_parts
from ._common import KINDS, ordered_losses, uncertainty_config

__all__ = ["CombinedLoss", "UncertaintyWeighting"]


def _ndim(x) -> int:
    return jnp.ndim(x)


class CombinedLoss:
    """The JAX result of :func:`multiloss.combine`: ``loss(inputs, sample_weight=None)`` ->
    :class:`multiloss.LossParts` ``(total, parts)`` with ``total = sum_i w_i *
    parts[i]`` summed in the parts' order. A pure function of its inputs: use it inside
    ``jax.jit`` / ``jax.grad`` (``has_aux=True`` takes the ``LossParts`` as it is)."""

    backend = "jax"

    def __init__(self, losses: Mapping[str, Any], weights: Mapping[str, float]):
        self.losses = dict(losses)
        self.weights = dict(weights)

    def __call__(self, inputs, sample_weight=None) -> LossParts:
        parts = call_parts(self.losses, inputs, sample_weight, _ndim)
        total = None
        for k, v in parts.items():
            term = self.weights[k] * v
            total = term if total is None else total + term
        return LossParts(total, parts)

    def __repr__(self):
        inner = ", ".join(f"{k}: {self.weights[k]!r} * {self.losses[k]!r}" for k in self.losses)
        return f"multiloss.combine[jax]({inner})"


class UncertaintyWeighting(nnx.Module):
    """Uncertainty weighting of task losses (Kendall, Gal and Cipolla, CVPR 2018) with one
    learnable log-variance ``s_i = log(sigma_i^2)`` per task, as a ``flax.nnx.Module``.

    ``total = sum_i a_i * exp(-s_i) * L_i + b_i * s_i``, with ``(a_i, b_i)`` by the task's kind:
    "plain" (default) ``(1, 1)``: ``exp(-s) L + s``, the form most implementations use;
    "regression" ``(1/2, 1/2)``: ``L / (2 sigma^2) + log(sigma)``, the paper's term of a task
    with a Gaussian likelihood; "classification" ``(1, 1/2)``: ``L / sigma^2 + log(sigma)``,
    its term of a task with a scaled softmax likelihood (after the paper's approximation).
    "plain" is twice "regression": the same minimiser in ``s``.

    ``tasks``: the task names (their order is the order of ``log_vars``); ``init``: the initial
    log-variance, a number or a dict task -> number (default 0: sigma = 1, every weight
    ``a_i``); ``kinds``: a kind for every task or a dict task -> kind; ``dtype``: of the
    parameter (default "float32", as the torch twin).

    The parameter is ``log_vars``, an ``nnx.Param`` of shape ``(len(tasks),)``; the torch twin
    :class:`multiloss.nn.TorchUncertaintyWeighting` has the same name, shape, initialisation
    and gradients. Convert with :func:`multiloss.nn.to_torch` / :func:`multiloss.nn.from_torch`.

    Called as ``uw(losses)`` with a dict task -> scalar loss (or a list in task order), e.g.
    the ``parts`` of a :func:`multiloss.combine` loss; returns
    :class:`multiloss.LossParts` ``(total, terms)`` with ``terms[task]`` the task's
    term of the total.
    """

    torch_twin = "TorchUncertaintyWeighting"

    def __init__(self, tasks, *, init=0.0, kinds="plain", dtype="float32"):
        tasks, kinds, values, dtype = uncertainty_config(tasks, init, kinds, dtype)
        self.tasks = tasks
        self.kinds = kinds
        self.log_vars = nnx.Param(jnp.asarray(values, dtype=dtype))

    def config(self) -> dict:
        """The constructor arguments of a twin (tasks, kinds, dtype)."""
        return {"tasks": self.tasks, "kinds": dict(zip(self.tasks, self.kinds)),
                "dtype": str(self.log_vars[...].dtype)}

    def __call__(self, losses) -> LossParts:
        values = ordered_losses(self.tasks, losses, jnp.ndim)
        s = self.log_vars[...]
        terms, total = {}, None
        for i, (task, kind, loss) in enumerate(zip(self.tasks, self.kinds, values)):
            a, b = KINDS[kind]
            term = a * jnp.exp(-s[i]) * loss + b * s[i]
            terms[task] = term
            total = term if total is None else total + term
        return LossParts(total, terms)

    def weights(self) -> dict:
        """Each task's current effective weight ``a_i * exp(-s_i)`` (for logging)."""
        s = self.log_vars[...]
        return {t: KINDS[k][0] * jnp.exp(-s[i])
                for i, (t, k) in enumerate(zip(self.tasks, self.kinds))}

