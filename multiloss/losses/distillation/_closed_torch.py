"""Closed-form chunks of the fused-linear distillation losses on torch (the default path of
``_lm._torch.linear_distillation``; the plain definitions: ``_torch.py``).

Each ``*_rows(x, y, g, opts)`` takes a block of rows of the student's and the teacher's logits
(rows, V) in the compute dtype and, where ``g`` (rows,) is given, the per-token cotangent of
the per-token loss; it returns the per-token loss and the gradient of the student's logits:
the same torch operations as the plain loss's forward and, for the backward, the operations
autograd performs on its graph in the order it performs them (``_log_softmax_backward_data``,
``_softmax_backward_data``, the products and sums of the chain rule, each ``masked_fill`` and
``where`` of the forward repeated on the gradient), so that values, gradients and their NaN and
infinity patterns are the plain loss's (torch's derivative of ``abs`` is 0 at 0, of a masked
product is 0 only where masked, and ``0 * NaN`` stays NaN). No algebraic simplification.

``closed(rows_fn, multiply, temporaries)`` makes the chunk function the engine calls: the rows
are taken in blocks of ``block`` rows (a chunk holds its two logits buffers and one block's
intermediates, ``temporaries`` of them), the student's buffer overwritten with its gradient,
block by block (in its dtype: a half head's gradient rounded to it, as autograd's gradient of
half logits); the label mask applied as the plain loss's ``_masked`` (``multiply``: the loss
times the mask, as torchtune; else a ``where``, as TRL and Liger)."""

from __future__ import annotations

import torch

_LOW = (torch.float16, torch.bfloat16)


def _expand(g, x):
    return g.unsqueeze(-1).expand(x.shape)


def forward_kl_rows(x, y, g, opts):
    """torchtune's forward KL: ``L = -sum_v [x_v finite] p_v ls_v`` (p = softmax(y), ls =
    log_softmax(x)); ``dL/dx = G - exp(ls) sum_v G`` with ``G = [x_v finite] (-g) p_v``
    (log_softmax's backward)."""
    p = torch.softmax(y, -1)
    ls = torch.log_softmax(x, -1)
    inf = torch.isinf(x)
    loss = -(p * ls).masked_fill_(inf, 0).sum(-1)
    if g is None:
        return loss, None
    # Neg, Sum (expand), MaskedFill, Mul (by p), LogSoftmax
    gp = _expand(-g, x).masked_fill(inf, 0).mul_(p)
    return loss, torch._log_softmax_backward_data(gp, ls, -1, x.dtype)


def _reverse_parts(x, y):
    q = torch.softmax(x, -1)
    inf = torch.isinf(x) | torch.isinf(y)
    lt = torch.log_softmax(y, -1)
    ls = torch.log_softmax(x, -1)
    prod = (q * lt).masked_fill_(inf, 0).sub_((q * ls).masked_fill_(inf, 0))
    return -prod.sum(-1), (q, inf, lt, ls)


def _reverse_grads(x, g, parts):
    """(the gradient through the softmax, through the log-softmax) of the reverse KL."""
    q, inf, lt, ls = parts
    g2 = -g
    ga = _expand(g2, x).masked_fill(inf, 0)  # the first product's
    gb = _expand(-g2, x).masked_fill(inf, 0)  # the second's (Sub: -grad)
    dq = ga.mul_(lt).add_(gb * ls)
    dls = gb.mul_(q)
    return (torch._softmax_backward_data(dq, q, -1, x.dtype),
            torch._log_softmax_backward_data(dls, ls, -1, x.dtype))


def reverse_kl_rows(x, y, g, opts):
    """torchtune's reverse KL: ``L = -sum_v [x_v, y_v finite] (q_v lt_v - q_v ls_v)`` (q =
    softmax(x)); the gradient through q (softmax's backward of ``Ga lt + Gb ls``) plus through
    ls (log_softmax's backward of ``Gb q``), ``Ga = [finite] (-g)``, ``Gb = [finite] g``."""
    loss, parts = _reverse_parts(x, y)
    if g is None:
        return loss, None
    dsm, dls = _reverse_grads(x, g, parts)
    return loss, dls.add_(dsm)


def symmetric_kl_rows(x, y, g, opts):
    """``r * forward_kl + (1 - r) * reverse_kl`` (r = sym_kd_ratio): the two closed forms with
    the cotangents ``g r`` and ``g (1 - r)``, their gradients summed in autograd's order."""
    r = opts.get("sym_kd_ratio", 0.5)
    lf, df = forward_kl_rows(x, y, None if g is None else g * r, opts)
    lr, parts = _reverse_parts(x, y)
    loss = r * lf + (1 - r) * lr
    if g is None:
        return loss, None
    dsm, dls = _reverse_grads(x, g * (1 - r), parts)
    return loss, dls.add_(dsm).add_(df)


def tvd_rows(x, y, g, opts):
    """``L = 0.5 sum_v |q_v - p_v|``; ``dL/dx`` = softmax's backward of ``0.5 g sgn(q - p)``
    (torch's derivative of abs: 0 where q_v == p_v)."""
    q = torch.softmax(x, -1)
    d = q - torch.softmax(y, -1)
    loss = 0.5 * d.abs().sum(-1)
    if g is None:
        return loss, None
    gd = _expand(g * 0.5, x) * d.sgn_()
    return loss, torch._softmax_backward_data(gd, q, -1, x.dtype)


def generalized_jsd_rows(x, y, g, opts):
    """TRL's generalized JSD of s = log_softmax(x / T), t = log_softmax(y / T): beta 0
    ``sum exp(t) (t - s)``, beta 1 ``sum exp(s) (s - t)``, else with the mixture ``m =
    logsumexp(s + log(1 - b), t + log(b))``: ``sum b exp(t) (t - m) + (1 - b) exp(s) (s - m)``;
    the gradient of s summed over its paths (through exp(s), s - m, and m's log-sum-exp),
    then log_softmax's backward and ``/ T``."""
    beta = opts.get("beta", 0.5)
    temp = opts.get("temperature", 1.0)
    s = torch.log_softmax(x / temp, -1)
    t = torch.log_softmax(y / temp, -1)
    if beta == 0:  # kl_div(s, t, log_target) = exp(t) * (t - s)
        et = t.exp()
        loss = (et * (t - s)).sum(-1)
        if g is None:
            return loss, None
        ds = (_expand(g, x) * et).neg_()
    elif beta == 1:  # kl_div(t, s, log_target) = exp(s) * (s - t)
        es = s.exp()
        st = s - t
        loss = (es * st).sum(-1)
        if g is None:
            return loss, None
        ge = _expand(g, x)
        ds = (ge * es).add_((ge * st).mul_(es))  # Sub's, then Exp's (grad * result)
    else:
        b = torch.tensor(beta, dtype=s.dtype, device=s.device)
        stacked = torch.stack([s + torch.log1p(-b), t + torch.log(b)])
        m = torch.logsumexp(stacked, dim=0)
        et, es = t.exp(), s.exp()
        sm = s - m
        loss = (b * (et * (t - m)) + (1 - b) * (es * sm)).sum(-1)
        if g is None:
            return loss, None
        ge = _expand(g, x)
        g1 = ge * b  # b * kl(m, t)
        g2 = ge * (1 - b)  # (1 - b) * kl(m, s)
        ds = g2 * es  # through (s - m)
        gm = (g1.mul_(et)).neg_().add_(ds.neg())  # m: -(g1 exp(t)) + -(g2 exp(s))
        ds.add_(g2.mul_(sm).mul_(es))  # through exp(s)
        da = gm.unsqueeze(0) * (stacked - m.unsqueeze(0)).exp_()  # logsumexp's backward
        ds.add_(da[0])  # through s + log1p(-b)
    dx = torch._log_softmax_backward_data(ds, s, -1, x.dtype)
    return loss, dx.div_(temp)


def closed(rows_fn, multiply, temporaries):
    """The chunk function of a closed form: ``chunk(z, zt, lab, ignore_index, ct, grad, opts,
    block)`` with the chunk's student and teacher logits ``z``, ``zt`` (rows, V) in the head's
    dtype, labels (rows,), the cotangent ``ct`` (rows,) of the per-token loss (None: 1) -> (the
    per-token loss as the plain loss's ``_masked`` returns it, and ``z`` overwritten with the
    gradient of the logits where ``grad``, else None), in blocks of ``block`` rows.
    ``temporaries``: the intermediates of a block that ``rows_fn`` holds at once at most (each
    of the block's logits' size in the compute dtype; a half head's two float32 copies of the
    block's logits are counted by the caller), the chunk's memory plan's."""

    def chunk(z, zt, lab, ignore_index, ct, grad, opts, block):
        dt = z.dtype
        cd = torch.float32 if dt in _LOW else dt
        rows = z.shape[0]
        keep = lab != ignore_index
        mask = keep.to(dt)
        g = None
        if grad:
            c = torch.ones(rows, dtype=dt, device=z.device) if ct is None else ct.to(dt)
            # the mask's backward (Mul: grad * mask; Where: grad where kept, else 0), then
            # the rounding's (to the compute dtype)
            g = (c * mask if multiply else
                 torch.where(keep, c, torch.zeros((), dtype=dt, device=z.device))).to(cd)
        loss = torch.empty(rows, dtype=cd, device=z.device)
        block = max(1, int(block))
        for i in range(0, rows, block):
            sl = slice(i, min(rows, i + block))
            lb, db = rows_fn(z[sl].to(cd), zt[sl].to(cd), None if g is None else g[sl], opts)
            loss[sl] = lb
            if db is not None:
                z[sl] = db  # after every read of the block's logits
        out = loss.to(dt)
        out = out * mask if multiply else torch.where(
            keep, out, torch.zeros((), dtype=dt, device=z.device))
        return out, (z if grad else None)

    chunk.temporaries = temporaries
    return chunk
