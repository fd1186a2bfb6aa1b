"""The sequence log-prob helpers, framework-free: each dispatches on its first argument's type
(a torch tensor: the torch functions; a JAX or NumPy array: the JAX ones) and imports that
backend's module only then (``import multiloss`` imports no framework)."""

from __future__ import annotations

import importlib
from typing import NamedTuple

__all__ = ["SequenceLogps", "linear_sequence_logps", "sequence_logps"]


class SequenceLogps(NamedTuple):
    """``token``: log p(label) per position (..., T), 0 where the label is ignored;
    ``sequence``: their sum per sequence (...), or their mean over the counted positions with
    ``average=True`` (NaN for a sequence with none, as TRL's ``sum / mask.sum()``)."""

    token: object
    sequence: object


def _module(x):
    kind = "torch" if type(x).__module__.partition(".")[0] == "torch" else "jax"
    return importlib.import_module(f"multiloss.losses._lm._{kind}")


def sequence_logps(logits, labels, *, average: bool = False, ignore_index: int = -100):
    """Per-token and per-sequence log-probabilities of ``labels`` (..., T) under ``logits``
    (..., T, V): ``logits[..., t, labels[t]] - logsumexp(logits[..., t, :])``, 0 where
    ``labels == ignore_index``; the sum over T (``average``: the mean over the counted
    positions).

    TRL 1.16's ``trl.trainer.utils.selective_log_softmax`` followed by its masked sum
    (``(logps * mask).sum(-1)``, ``/ mask.sum(-1)`` for the average log-probs of
    ORPO/SimPO/IPO), without materialising the log-softmax: one log-sum-exp per row and a
    gather. float16/bfloat16 logits are computed in float32 and rounded once (torch's
    ``log_softmax`` of a bfloat16 row, which TRL uses there). Labels are aligned with the
    logits (position t's logits score ``labels[t]``): shift them first for a causal LM
    (``logits[:, :-1]``, ``labels[:, 1:]``). A label outside [0, V) that is not ignored gives
    NaN (torch's gather raises). Works under jax.jit/grad/vmap and torch.compile/torch.func.

    Returns ``SequenceLogps(token, sequence)``."""
    return SequenceLogps(*_module(logits).sequence_logps(
        logits, labels, average=average, ignore_index=ignore_index))


def linear_sequence_logps(input, linear_weight, labels, *, linear_bias=None,
                          average: bool = False, ignore_index: int = -100,
                          chunk_size: int | None = None, memory_budget: int | None = None):
    """``sequence_logps(input @ linear_weight.T + linear_bias, labels)`` from hidden states
    ``input`` (..., T, D) and the head's weight (V, D) (bias (V,)), computed in chunks of rows
    whose logits fit in ``memory_budget`` bytes (default 128 MiB; ``chunk_size``: rows per
    chunk), never materialising the (..., T, V) logits: linear_cross_entropy's chunk plan and
    custom gradient (JAX: a custom JVP, so jit/grad/vmap/jvp/hessian work; torch: a chunked
    autograd function with double backward). The backward recomputes each chunk's logits:
    four matrix products per step, against three for the materialised logits. float16 and
    bfloat16 inputs are computed in float32 and the results rounded once to their dtype.

    Returns ``SequenceLogps(token, sequence)``."""
    return SequenceLogps(*_module(input).linear_sequence_logps(
        input, linear_weight, labels, linear_bias=linear_bias, average=average,
        ignore_index=ignore_index, chunk_size=chunk_size, memory_budget=memory_budget))
