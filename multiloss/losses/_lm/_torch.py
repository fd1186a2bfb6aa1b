"""Per-token and per-sequence log-probabilities of label tokens on torch (the twin of
``_jax.py``; see there).

``linear_sequence_logps`` is a chunked autograd function: its forward computes each chunk's
logits once (the log-sum-exp and the label's logit, nothing kept but the inputs), its backward
recomputes them with the cotangent (``dX = dz @ W``, ``dW += dz.T @ X``:
classification/_linear_torch.py's chunk loop, whose ``_grads`` it calls); four matrix products
in all, never the (rows, V) logits. Under ``create_graph=True`` the chunks are recomputed with
autograd, so the gradients are differentiable again.
"""

from __future__ import annotations

import torch

from ..classification._linear_torch import (
    _Cfg,
    _differentiable_grads,
    _grads,
    _loss_only,
    _rows_per_chunk,
)
from . import IGNORE_INDEX

_LOW = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype):
    return torch.float32 if dtype in _LOW else dtype


def _sequences(tok, valid, average):
    total = tok.sum(dim=-1)
    if not average:
        return total
    return total / valid.sum(dim=-1).to(total.dtype)


def token_logps(logits, labels, ignore_index=IGNORE_INDEX):
    """(log p(label) per position in the compute dtype, valid mask): NaN where a label is
    neither ignored nor in [0, V)."""
    z = logits.to(_compute_dtype(logits.dtype))
    n_classes = z.shape[-1]
    labels = labels.long()
    valid = labels != ignore_index
    in_range = (labels >= 0) & (labels < n_classes)
    safe = torch.where(valid & in_range, labels, torch.zeros_like(labels))
    zt = z.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    lse = torch.logsumexp(z, dim=-1)
    tok = torch.where(valid, zt - lse, torch.zeros_like(zt))
    return torch.where(valid & ~in_range, torch.full_like(tok, float("nan")), tok), valid


def sequence_logps(logits, labels, *, average=False, ignore_index=IGNORE_INDEX):
    """``(token_logps (..., T), sequence_logps (...))`` of logits (..., T, V) and labels
    (..., T)."""
    tok, valid = token_logps(logits, labels, ignore_index)
    tok = tok.to(logits.dtype)
    return tok, _sequences(tok, valid, average)


class _TokenLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w2, b2, t, cfg):
        ctx.cfg = cfg
        ctx.save_for_backward(x, w2, b2, t)
        return -_loss_only(x, w2, b2, t, None, cfg)

    @staticmethod
    def backward(ctx, g):
        x, w2, b2, t = ctx.saved_tensors
        cfg = ctx.cfg
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                ctx.needs_input_grad[2] and b2 is not None, False, False)
        if not any(need):
            return None, None, None, None, None
        with torch.autocast(x.device.type, enabled=False):
            if torch.is_grad_enabled():  # create_graph: differentiable gradients
                dx, dw2, db2, _, _, _ = _differentiable_grads(x, w2, b2, t, None, cfg, -g, need)
            else:
                _, dx, dw2, db2, _, _ = _grads(x, w2, b2, t, None, cfg, -g.contiguous(), need)
        return dx, dw2, db2, None, None


def linear_token_logps(input, linear_weight, labels, *, linear_bias=None,
                       ignore_index=IGNORE_INDEX, chunk_size=None, memory_budget=None):
    """log p(label) of ``input @ linear_weight.T + linear_bias`` per row of input (..., D),
    labels (...), chunked (float32 for float16/bfloat16 inputs; the result in the compute
    dtype), 0 at ignored labels, NaN at out-of-range ones."""
    dtype = torch.promote_types(input.dtype, linear_weight.dtype)
    if linear_bias is not None:
        dtype = torch.promote_types(dtype, linear_bias.dtype)
    cdt = _compute_dtype(dtype)
    lead, d = tuple(input.shape[:-1]), input.shape[-1]
    n_classes = linear_weight.shape[0]
    x = input.to(cdt).reshape(-1, d)
    w2 = linear_weight.to(cdt)
    b2 = None if linear_bias is None else linear_bias.to(cdt)
    t = labels.long().reshape(-1)
    n = x.shape[0]
    cfg = _Cfg(n_classes=n_classes, positions=1, prob=False, ignore_index=int(ignore_index),
               smoothing=0.0, softcap=None, z_loss=0.0,
               rows=_rows_per_chunk(n, n_classes, torch.finfo(cdt).bits // 8, chunk_size,
                                    memory_budget), mm=None)
    with torch.autocast(x.device.type, enabled=False):
        return _TokenLogps.apply(x, w2, b2, t, cfg).reshape(lead)


def linear_sequence_logps(input, linear_weight, labels, *, linear_bias=None, average=False,
                          ignore_index=IGNORE_INDEX, chunk_size=None, memory_budget=None,
                          keep_dtype=True):
    """``(token_logps (..., T), sequence_logps (...))`` of hidden states (..., T, D), a head
    weight (V, D) and labels (..., T), chunked within ``memory_budget`` bytes (default
    128 MiB); ``keep_dtype``: round to the inputs' dtype (float32 kept otherwise)."""
    tok = linear_token_logps(input, linear_weight, labels, linear_bias=linear_bias,
                             ignore_index=ignore_index, chunk_size=chunk_size,
                             memory_budget=memory_budget)
    if keep_dtype:
        tok = tok.to(torch.promote_types(input.dtype, linear_weight.dtype))
    return tok, _sequences(tok, labels != ignore_index, average)
