"""The JAX side of ``multiloss.nn``: the combined loss, and the uncertainty weighting and the
margin losses' class matrices (ArcFace, CosFace) as ``flax.nnx.Module``."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from .._combine import LossParts, call_parts
from ._common import (
    KINDS,
    LOSS_OPTIONS,
    MARGIN_LOSSES,
    margin_config,
    ordered_losses,
    uncertainty_config,
)

__all__ = ["ArcFace", "CombinedLoss", "CosFace", "UncertaintyWeighting"]


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

    def __eq__(self, other):
        """Equal: the same parts (equal losses, by name, in the same order) and weights."""
        if type(other) is not type(self):
            return NotImplemented
        return (list(self.losses) == list(other.losses) and self.weights == other.weights
                and all(self.losses[k] == other.losses[k] for k in self.losses))

    def __hash__(self):
        return hash((tuple(self.losses), tuple(self.weights.values())))


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



@functools.lru_cache(maxsize=64)
def _registry_loss(name: str, options: tuple):
    import multiloss

    return multiloss.get(name, backend="jax", **dict(options))


class _MarginModule(nnx.Module):
    """The class matrix of a margin loss (arcface, cosface) and the loss itself."""

    torch_twin = ""
    loss_name = ""

    def __init__(self, embedding_size, num_classes, margin, scale, *, reduction="mean",
                 empty_reduction="nan", dtype="float32", rngs: nnx.Rngs):
        cfg = margin_config(self.loss_name, embedding_size, num_classes, margin, scale,
                            reduction, empty_reduction, dtype)
        self.embedding_size = cfg["embedding_size"]
        self.num_classes = cfg["num_classes"]
        self.margin = cfg["margin"]
        self.scale = cfg["scale"]
        self.reduction = cfg["reduction"]
        self.empty_reduction = cfg["empty_reduction"]
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs: expected a flax.nnx.Rngs, got {type(rngs).__name__}")
        # pytorch-metric-learning's initialisation, torch.nn.init.normal_: N(0, 1)
        self.W = nnx.Param(jax.random.normal(rngs.params(), (self.embedding_size,
                                                             self.num_classes), cfg["dtype"]))

    def config(self) -> dict:
        """The constructor arguments of a twin (sizes, loss options, dtype)."""
        return {"embedding_size": self.embedding_size, "num_classes": self.num_classes,
                **{k: getattr(self, k) for k in LOSS_OPTIONS}, "dtype": str(self.W[...].dtype)}

    @property
    def loss(self):
        """The registry loss this module calls (``multiloss.get(loss_name, "jax", ...)``)."""
        return _registry_loss(self.loss_name, tuple((k, getattr(self, k)) for k in LOSS_OPTIONS))

    def __call__(self, embeddings, labels, sample_weight=None):
        """The loss of ``embeddings`` (N, D) with class indices ``labels`` (N,) against the
        class matrix ``W``, reduced by the module's ``reduction``."""
        return self.loss(embeddings, labels, self.W[...], sample_weight=sample_weight)

    def logits(self, embeddings):
        """``scale * cos(embedding, class vector)``, (N, C), without the margin (what
        pytorch-metric-learning's ``get_logits`` gives): the scores to predict a class with."""
        from ..losses.metric._jax import _normalize

        w = self.W[...]
        dtype = jnp.result_type(embeddings, w)
        cos = jnp.matmul(_normalize(jnp.asarray(embeddings, dtype), 1),
                         _normalize(w.astype(dtype), 0), precision=jax.lax.Precision.HIGHEST)
        return cos * self.scale


class ArcFace(_MarginModule):
    """ArcFace (Deng et al. 2019) as a ``flax.nnx.Module``: the class matrix ``W`` as a
    parameter and the registry loss :func:`multiloss.get` ``("arcface")`` on it.

    ``W``: an ``nnx.Param`` of shape ``(embedding_size, num_classes)``, one column per class
    (pytorch-metric-learning's name and layout), drawn from N(0, 1) as pytorch-metric-learning
    (``torch.nn.init.normal_``) with ``rngs.params()``. ``margin``: in degrees (28.6 = 0.5
    rad); ``scale``: 64; ``reduction`` / ``empty_reduction``: the weighting contract's;
    ``dtype``: of ``W`` (default "float32", as the torch twin).

    The torch twin :class:`multiloss.nn.TorchArcFace` has the same parameter name, layout,
    initialisation distribution (not the same numbers: the frameworks draw differently),
    values and gradients. Convert with :func:`multiloss.nn.to_torch` /
    :func:`multiloss.nn.from_torch`.

        >>> head = ArcFace(128, 1000, rngs=nnx.Rngs(0))
        >>> loss = head(embeddings, labels)            # embeddings (N, 128), labels (N,)
    """

    torch_twin = "TorchArcFace"
    loss_name = MARGIN_LOSSES["ArcFace"]

    def __init__(self, embedding_size, num_classes, margin=28.6, scale=64.0, *,
                 reduction="mean", empty_reduction="nan", dtype="float32", rngs: nnx.Rngs):
        super().__init__(embedding_size, num_classes, margin, scale, reduction=reduction,
                         empty_reduction=empty_reduction, dtype=dtype, rngs=rngs)


class CosFace(_MarginModule):
    """CosFace (Wang et al. 2018, the large margin cosine loss) as a ``flax.nnx.Module``: the
    class matrix ``W`` as a parameter and the registry loss ``"cosface"`` on it.

    ``W``: an ``nnx.Param`` of shape ``(embedding_size, num_classes)`` drawn from N(0, 1) (as
    pytorch-metric-learning); ``margin``: 0.35 (subtracted from the target's cosine);
    ``scale``: 64. The torch twin is :class:`multiloss.nn.TorchCosFace` (see :class:`ArcFace`).
    """

    torch_twin = "TorchCosFace"
    loss_name = MARGIN_LOSSES["CosFace"]

    def __init__(self, embedding_size, num_classes, margin=0.35, scale=64.0, *,
                 reduction="mean", empty_reduction="nan", dtype="float32", rngs: nnx.Rngs):
        super().__init__(embedding_size, num_classes, margin, scale, reduction=reduction,
                         empty_reduction=empty_reduction, dtype=dtype, rngs=rngs)
