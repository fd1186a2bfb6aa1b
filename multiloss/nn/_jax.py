"""The JAX side of ``multiloss.nn``: the combined loss, and the uncertainty weighting and the
margin losses' class matrices (ArcFace, CosFace) as ``flax.nnx.Module``."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._combine import LossParts, call_parts
from ._common import (
    KINDS,
    LOSS_OPTIONS,
    MARGIN_LOSSES,
    adaptive_config,
    adaptive_shapes,
    check_adaptive_inputs,
    check_adaptive_targets,
    margin_config,
    ordered_losses,
    uncertainty_config,
)

__all__ = ["ASMOutput", "AdaptiveLogSoftmaxWithLoss", "ArcFace", "CombinedLoss", "CosFace",
           "UncertaintyWeighting"]


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


# ---------------------------------------------------------------------------------------------
# the adaptive softmax


class ASMOutput(NamedTuple):
    """What the adaptive softmax returns, as torch's ``_ASMoutput``: ``output``, the log
    probability of each target (N,) (0-D for an unbatched call), and ``loss``, the mean of
    ``-output``."""

    output: Any
    loss: Any


class _Linear(nnx.Module):
    """A linear layer with torch's parameter names and layout (``weight`` (out, in),
    ``bias`` (out,)) and torch's default initialisation, U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, n_in, n_out, bias, dtype, rngs):
        bound = 1.0 / math.sqrt(n_in) if n_in else 0.0
        self.weight = nnx.Param(jax.random.uniform(rngs.params(), (n_out, n_in), dtype,
                                                   -bound, bound))
        if bias:
            self.bias = nnx.Param(jax.random.uniform(rngs.params(), (n_out,), dtype,
                                                     -bound, bound))

    def __call__(self, x):
        w = self.weight[...]
        y = jnp.matmul(x, w.T.astype(x.dtype), precision=jax.lax.Precision.HIGHEST)
        if hasattr(self, "bias"):
            y = y + self.bias[...].astype(x.dtype)
        return y


class AdaptiveLogSoftmaxWithLoss(nnx.Module):
    """The efficient softmax approximation of Grave et al. 2017 (torch's
    ``nn.AdaptiveLogSoftmaxWithLoss``) as a ``flax.nnx.Module``, with torch's arguments,
    defaults, parameter names and layout, values and gradients.

    The classes are split by ``cutoffs`` into a shortlist ``[0, cutoffs[0])`` and clusters
    ``[cutoffs[i], cutoffs[i+1])`` (the last ending at ``n_classes``). The head, a linear layer
    ``in_features -> cutoffs[0] + n_clusters`` (bias if ``head_bias``, default False), scores
    the shortlist classes and one logit per cluster; cluster i's tail is a two-layer
    projection ``in_features -> int(in_features // div_value ** (i + 1)) -> cluster size``
    (no biases; ``div_value`` default 4.0). For a class c in cluster i::

        log p(c | x) = log_softmax(head(x))[shortlist + i] + log_softmax(tail_i(x))[c - cutoffs[i]]

    and ``log p(c | x) = log_softmax(head(x))[c]`` in the shortlist.

    ``module(input, target)`` -> :class:`ASMOutput` ``(output, loss)``: ``output`` the log
    probability of each target, ``loss = mean(-output)`` (NaN for an empty batch, as torch).
    ``input`` (N, in_features) with ``target`` (N,), or (in_features,) with a 0-D target.
    ``log_prob(input)``: the (N, n_classes) log probabilities; ``predict(input)``: the class
    of highest probability (N,), as torch computes it.

    Parameters (``nnx.Param``, torch's names joined with "."): ``head.weight``
    (head_size, in_features), ``head.bias``, ``tail.i.0.weight`` (hsz_i, in_features),
    ``tail.i.1.weight`` (osz_i, hsz_i), drawn as torch's ``nn.Linear`` draws them
    (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) with ``rngs.params()``. The torch twin is
    :class:`multiloss.nn.TorchAdaptiveLogSoftmaxWithLoss` (a subclass of torch's module);
    :func:`multiloss.nn.to_torch` / :func:`multiloss.nn.from_torch` convert the parameters
    both ways, also from and into a plain ``torch.nn.AdaptiveLogSoftmaxWithLoss``
    (``multiloss.from_torch(module)`` too).

    Validation: torch's rules for the arguments, shapes naming the argument, and target
    values in [0, n_classes - 1] when the target is concrete (under ``jax.jit`` it is not
    read: an out-of-range target then gives a wrong number, not an error; torch raises
    RuntimeError without naming the argument, here ValueError "target: ...").

    Difference in cost: torch computes each tail only on the rows whose target is in its
    cluster (a data-dependent gather); here every tail is computed on every row and the
    right one is selected, so that shapes are static under ``jit`` (more FLOPs for many
    clusters, the same values and gradients).

        >>> asm = AdaptiveLogSoftmaxWithLoss(64, 1000, [10, 100], rngs=nnx.Rngs(0))
        >>> out, loss = asm(hidden, labels)         # hidden (N, 64), labels (N,)
    """

    torch_twin = "TorchAdaptiveLogSoftmaxWithLoss"

    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False, *,
                 dtype="float32", rngs: nnx.Rngs):
        cfg = adaptive_config(in_features, n_classes, cutoffs, div_value, head_bias, dtype)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs: expected a flax.nnx.Rngs, got {type(rngs).__name__}")
        self.in_features = cfg["in_features"]
        self.n_classes = cfg["n_classes"]
        self.cutoffs = cfg["cutoffs"]
        self.div_value = cfg["div_value"]
        self.head_bias = cfg["head_bias"]
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs)
        shapes = adaptive_shapes(cfg)
        dt = cfg["dtype"]
        self.head = _Linear(self.in_features, shapes["head.weight"][0], self.head_bias, dt,
                            rngs)
        self.tail = nnx.List([
            nnx.List([_Linear(self.in_features, shapes[f"tail.{i}.0.weight"][0], False, dt,
                              rngs),
                      _Linear(shapes[f"tail.{i}.1.weight"][1], shapes[f"tail.{i}.1.weight"][0],
                              False, dt, rngs)])
            for i in range(self.n_clusters)])

    def config(self) -> dict:
        """The constructor arguments of a twin."""
        return {"in_features": self.in_features, "n_classes": self.n_classes,
                "cutoffs": self.cutoffs, "div_value": self.div_value,
                "head_bias": self.head_bias, "dtype": str(self.head.weight[...].dtype)}

    def _input(self, x, target=None):
        x = jnp.asarray(x)
        if target is None:
            check_adaptive_inputs(self.in_features, x.shape, _kind(x), None, None)
            return x, None
        target = jnp.asarray(target) if not isinstance(target, jax.Array) else target
        check_adaptive_inputs(self.in_features, x.shape, _kind(x), target.shape,
                              _kind(target))
        if not isinstance(target, jax.core.Tracer):
            check_adaptive_targets(np.asarray(target), self.n_classes)
        return x, target

    def _tail_logprobs(self, x):
        return [jax.nn.log_softmax(proj(i2h(x)), axis=1) for i2h, proj in self.tail]

    def __call__(self, input, target) -> ASMOutput:
        x, t = self._input(input, target)
        batched = t.ndim == 1
        if not batched:
            x, t = x[None], t[None]
        x = x.astype(jnp.result_type(x, self.head.weight[...]))
        head_lp = jax.nn.log_softmax(self.head(x), axis=1)
        cut = (*self.cutoffs, self.n_classes)
        cluster = sum((t >= c).astype(jnp.int32) for c in self.cutoffs)  # 0: shortlist
        gather = jnp.where(cluster == 0, t, self.shortlist_size + cluster - 1)
        out = jnp.take_along_axis(head_lp, gather[:, None].astype(jnp.int32), axis=1)[:, 0]
        local = jnp.zeros_like(out)
        for i, lp in enumerate(self._tail_logprobs(x)):
            rel = jnp.clip(t - cut[i], 0, cut[i + 1] - cut[i] - 1).astype(jnp.int32)
            picked = jnp.take_along_axis(lp, rel[:, None], axis=1)[:, 0]
            local = jnp.where(cluster == i + 1, picked, local)
        out = local + out  # torch: the tail's log probability, then += the head's
        loss = jnp.mean(-out)
        return ASMOutput(out if batched else out[0], loss)

    def _full_log_prob(self, x, head_out):
        head_lp = jax.nn.log_softmax(head_out, axis=1)
        parts = [head_lp[:, :self.shortlist_size]]
        for i, lp in enumerate(self._tail_logprobs(x)):
            parts.append(lp + head_lp[:, self.shortlist_size + i][:, None])
        return jnp.concatenate(parts, axis=1)

    def log_prob(self, input):
        """The log probabilities of every class, (N, n_classes), for ``input``
        (N, in_features) (torch's ``log_prob``)."""
        x, _ = self._input(input)
        x = x.astype(jnp.result_type(x, self.head.weight[...]))
        return self._full_log_prob(x, self.head(x))

    def predict(self, input):
        """The class of highest probability, (N,): the head's argmax where it is a shortlist
        class, else the argmax of the full log probabilities (torch's ``predict``; the same
        class as ``log_prob(input).argmax(1)`` up to ties)."""
        x, _ = self._input(input)
        x = x.astype(jnp.result_type(x, self.head.weight[...]))
        head_out = self.head(x)
        first = jnp.argmax(head_out, axis=1)
        full = jnp.argmax(self._full_log_prob(x, head_out), axis=1)
        return jnp.where(first >= self.shortlist_size, full, first)


def _kind(x) -> str:
    dt = x.dtype
    kind = np.dtype(dt).kind
    return "f" if kind == "V" and "float" in str(dt) else kind
