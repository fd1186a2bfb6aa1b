"""Per-token and per-sequence log-probabilities of label tokens on JAX.

``sequence_logps``: from materialised logits (..., V), TRL 1.16's
``trl.trainer.utils.selective_log_softmax`` numbers (``logit[label] - logsumexp(logits)``, the
log-softmax never materialised; float16/bfloat16 logits computed in float32 and rounded once,
as torch's ``log_softmax`` of a bfloat16 row is), 0 at ignored labels.

``linear_sequence_logps``: the same from hidden states (..., D) and a head weight (V, D) (+
bias) without materialising the logits: ``-linear_cross_entropy(reduction="none")`` of the
rows, whose chunk plan (``memory_budget``) and custom JVP (forward mode, reverse mode as four
chunked matrix products, second order; classification/_linear_jax.py) it reuses.
float16/bfloat16 inputs are computed (products and sums) in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..classification._linear_jax import _Cfg, _lce, plan
from . import IGNORE_INDEX

_LOW = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _compute_dtype(dtype):
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype) in _LOW else jnp.dtype(dtype)


def _sequences(tok, valid, average):
    """Per-sequence sums (or means over the counted tokens) of per-token log-probs (..., T):
    TRL's ``(logps * mask).sum(-1)`` (``/ mask.sum(-1)``: NaN where nothing counts)."""
    total = jnp.sum(tok, axis=-1)
    if not average:
        return total
    return total / jnp.sum(valid, axis=-1).astype(total.dtype)


def token_logps(logits, labels, ignore_index=IGNORE_INDEX):
    """(log p(label) per position in the compute dtype, valid mask): NaN where a label is
    neither ignored nor in [0, V)."""
    z = logits.astype(_compute_dtype(logits.dtype))
    n_classes = z.shape[-1]
    valid = labels != ignore_index
    in_range = (labels >= 0) & (labels < n_classes)
    safe = jnp.where(valid & in_range, labels, 0)
    zt = jnp.take_along_axis(z, safe[..., None].astype(jnp.int32), axis=-1)[..., 0]
    lse = jax.nn.logsumexp(z, axis=-1)
    tok = jnp.where(valid, zt - lse, 0.0)
    return jnp.where(valid & ~in_range, jnp.nan, tok), valid


def sequence_logps(logits, labels, *, average=False, ignore_index=IGNORE_INDEX):
    """``(token_logps (..., T), sequence_logps (...))`` of logits (..., T, V) and labels
    (..., T) (see the module's docstring)."""
    tok, valid = token_logps(logits, labels, ignore_index)
    tok = tok.astype(logits.dtype)
    return tok, _sequences(tok, valid, average)


def linear_token_logps(input, linear_weight, labels, *, linear_bias=None,
                       ignore_index=IGNORE_INDEX, chunk_size=None, memory_budget=None):
    """log p(label) of ``input @ linear_weight.T + linear_bias`` per row of input (..., D),
    labels (...), computed in chunks (float32 for float16/bfloat16 inputs; the result in the
    compute dtype), 0 at ignored labels, NaN at out-of-range ones."""
    dtype = jnp.result_type(input, linear_weight)
    if linear_bias is not None:
        dtype = jnp.result_type(dtype, linear_bias)
    cdt = _compute_dtype(dtype)
    lead, d = input.shape[:-1], input.shape[-1]
    n_classes = linear_weight.shape[0]
    x = input.astype(cdt).reshape(-1, d)
    w2 = linear_weight.astype(cdt)
    b2 = None if linear_bias is None else linear_bias.astype(cdt)
    t = labels.reshape(-1)
    rows, classes = plan(x.shape[0], n_classes, 1, cdt.itemsize, chunk_size, memory_budget)
    cfg = _Cfg(n_classes, 1, False, int(ignore_index), 0.0, None, 0.0, rows, classes)
    return (-_lce(x, w2, b2, t, None, cfg)).reshape(lead)


def linear_sequence_logps(input, linear_weight, labels, *, linear_bias=None, average=False,
                          ignore_index=IGNORE_INDEX, chunk_size=None, memory_budget=None,
                          keep_dtype=True):
    """``(token_logps (..., T), sequence_logps (...))`` of hidden states (..., T, D), a head
    weight (V, D) and labels (..., T), chunked within ``memory_budget`` bytes (default
    128 MiB). ``keep_dtype``: round the results to the inputs' dtype (float32 kept
    otherwise, what the fused losses use)."""
    tok = linear_token_logps(input, linear_weight, labels, linear_bias=linear_bias,
                             ignore_index=ignore_index, chunk_size=chunk_size,
                             memory_budget=memory_budget)
    if keep_dtype:
        dtype = jnp.result_type(input, linear_weight)
        tok = tok.astype(dtype)
    return tok, _sequences(tok, labels != ignore_index, average)
