"""linear_cross_entropy on torch: multiloss's chunked autograd function (chunks of rows whose
logits fit in ``memory_budget``). Its forward computes the loss and, when an input needs a
gradient, the gradients for a cotangent of 1 per row (three matrix products in all, ``dW``
accumulated in place with ``addmm_``); the backward scales them where the cotangent is the same
on every row that counts, and recomputes the chunks with the actual cotangent otherwise.

Double backward (``create_graph=True``: Hessians, Hessian-vector products) recomputes the
chunks with autograd, so the gradients are differentiable again (torch 2.13's chunked op with
``LinearCrossEntropyOptions`` gives a silently zero Hessian: it is not called). An ignored row
contributes 0 to the loss whatever its features (a NaN hidden state included), as torch's
``F.linear_cross_entropy``; its gradient, like torch's, is NaN there (p * 0).

Under ``torch.autocast`` (float16/bfloat16, a float32 or lower input) the loss follows the policy
torch applies to ``F.linear_cross_entropy`` (``linear`` then ``cross_entropy``): the logits'
product in the autocast dtype, the rest, and the result, in float32; the gradients' products in
the autocast dtype, as linear's backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...backends import Terms
from ._linear_spec import DEFAULT_MEMORY_BUDGET


def _rows_per_chunk(n, n_logits, itemsize, chunk_size, memory_budget):
    if chunk_size is not None:
        return max(1, min(int(chunk_size), max(n, 1)))
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    return max(1, min(max(n, 1), budget // max(1, 3 * n_logits * itemsize)))


class _Cfg:
    __slots__ = ("n_classes", "positions", "prob", "ignore_index", "smoothing", "softcap",
                 "z_loss", "rows", "mm")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


def _row_factor(tc, cfg):
    """1 where a row counts, 0 where it is ignored, NaN where its index is out of range."""
    valid = tc != cfg.ignore_index
    in_range = (tc >= 0) & (tc < cfg.n_classes)
    counts = valid & in_range
    invalid = valid & ~in_range
    return counts, invalid, torch.where(counts, tc, torch.zeros_like(tc))


def _chunk(xc, tc, w2, b2, w, cfg, a=None):
    """Loss of a chunk (rows[, P]); with the cotangent ``a`` also the gradient of the raw
    logits (rows, C * P), of the class weight and of a probability target."""
    c, e, p = cfg.n_classes, cfg.smoothing, cfg.positions
    y = _linear(xc, w2, b2, cfg)
    if p > 1:
        y = y.view(xc.shape[0], c, p)
    th = None
    if cfg.softcap:
        th = torch.tanh(y / cfg.softcap)
        z = cfg.softcap * th
    else:
        z = y
    lse = torch.logsumexp(z, dim=1)
    m_raw = z.amax(dim=1)
    m = torch.where(torch.isfinite(m_raw), m_raw, torch.zeros_like(m_raw))
    sh = z - m.unsqueeze(1)
    # a +inf logit: NaN for the whole row, as log_softmax's x - max (logsumexp gives inf)
    log_s = torch.where(m_raw == math.inf, torch.full_like(lse, math.nan), lse - m)
    wb = None if w is None else w.view((1, c) + (1,) * (z.dim() - 2))
    others = (0, 2) if z.dim() == 3 else (0,)
    if cfg.prob:
        ts = tc * (1.0 - e) + e / c if e else tc
        coef = ts if wb is None else ts * wb
        mass = coef.sum(dim=1)
        loss = mass * log_s - (coef * sh).sum(dim=1)
        if cfg.z_loss:
            loss = loss + cfg.z_loss * lse * lse
        if a is None:
            return loss
        k = mass + 2.0 * cfg.z_loss * lse if cfg.z_loss else mass
        prob = torch.exp(sh - log_s.unsqueeze(1))
        dz = prob * (a * k).unsqueeze(1) - a.unsqueeze(1) * coef
        nlp = log_s.unsqueeze(1) - sh
        dt = (a * (1.0 - e)).unsqueeze(1) * nlp
        if wb is not None:
            dt = dt * wb
        dw = None if w is None else (a.unsqueeze(1) * ts * nlp).sum(dim=others)
        return loss, _uncap(dz, th).reshape(xc.shape[0], -1), dw, dt
    counts, invalid, safe = _row_factor(tc, cfg)
    sh_t = sh.gather(1, safe.unsqueeze(1)).squeeze(1)
    nlp_t = log_s - sh_t
    w_t = None if w is None else w[safe]
    loss = nlp_t if w is None else w_t * nlp_t
    if e:
        total_w = c if w is None else w.sum()
        sxm = (sh if wb is None else sh * wb).sum(dim=1)
        loss = (1.0 - e) * loss + (e / c) * (total_w * log_s - sxm)
    if cfg.z_loss:
        zl = cfg.z_loss * lse * lse
        loss = loss + (zl if w is None else w_t * zl)
    nan = torch.full_like(loss, math.nan)
    loss = torch.where(invalid, nan, torch.where(counts, loss, torch.zeros_like(loss)))
    if a is None:
        return loss
    row = torch.where(invalid, nan, counts.to(loss.dtype))
    a = a * row
    wt1 = 1.0 if w is None else w_t
    on_target = (1.0 - e) * wt1 * a
    scale = on_target
    if e:
        scale = scale + (e / c) * (c if w is None else w.sum()) * a
    if cfg.z_loss:
        scale = scale + 2.0 * cfg.z_loss * lse * wt1 * a
    dz = torch.exp(sh - log_s.unsqueeze(1)) * scale.unsqueeze(1)
    dz.scatter_add_(1, safe.unsqueeze(1), -on_target.unsqueeze(1))
    if e:
        uni = (a * (e / c)).unsqueeze(1)
        dz = dz - (uni if wb is None else uni * wb)
    dw = None
    if w is not None:
        at_t = (1.0 - e) * nlp_t
        if cfg.z_loss:
            at_t = at_t + cfg.z_loss * lse * lse
        dw = torch.zeros_like(w).index_add_(0, safe.reshape(-1), (a * at_t).reshape(-1))
        if e:
            dw = dw + (e / c) * (a.unsqueeze(1) * (log_s.unsqueeze(1) - sh)).sum(dim=others)
    return loss, _uncap(dz, th).reshape(xc.shape[0], -1), dw, None


def _mm(a, cfg):
    return a if cfg.mm is None else a.to(cfg.mm)


def _linear(xc, w2, b2, cfg):
    """The logits, as torch.autocast computes F.linear (in its lower-precision dtype, cfg.mm),
    then in the loss's dtype (cross_entropy is on autocast's float32 list)."""
    if cfg.mm is None:
        return F.linear(xc, w2, b2)
    return F.linear(xc.to(cfg.mm), w2.to(cfg.mm), None if b2 is None else b2.to(cfg.mm)).to(
        xc.dtype)


def _uncap(dz, th):
    return dz if th is None else dz * (1.0 - th * th)


def _grads(x, w2, b2, t, w, cfg, a, need):
    """Loss and gradients for the cotangent ``a`` (N[, P]) over chunks of rows; ``need``:
    which of (x, w2, b2, w, t) to compute."""
    n = x.shape[0]
    loss = x.new_empty((n, cfg.positions) if cfg.positions > 1 else (n,))
    dx = torch.empty_like(x) if need[0] else None
    dw2 = torch.zeros_like(w2) if need[1] else None
    db2 = torch.zeros_like(b2) if need[2] and b2 is not None else None
    dw = torch.zeros_like(w) if need[3] and w is not None else None
    dt = torch.empty_like(t) if need[4] else None
    for s in range(0, n, cfg.rows):
        e = min(n, s + cfg.rows)
        xc = x[s:e]
        lc, dy, dwc, dtc = _chunk(xc, t[s:e], w2, b2, w, cfg, a[s:e])
        loss[s:e] = lc
        if cfg.mm is not None:  # linear's backward under autocast: in its dtype
            dy = dy.to(cfg.mm)
            if dx is not None:
                dx[s:e] = (dy @ _mm(w2, cfg)).to(x.dtype)
            if dw2 is not None:
                dw2 += (dy.t() @ _mm(xc, cfg)).to(x.dtype)
            if db2 is not None:
                db2 += dy.sum(dim=0).to(x.dtype)
        else:
            if dx is not None:
                torch.mm(dy, w2, out=dx[s:e])
            if dw2 is not None:
                dw2.addmm_(dy.t(), xc)
            if db2 is not None:
                db2 += dy.sum(dim=0)
        if dw is not None:
            dw += dwc
        if dt is not None:
            dt[s:e] = dtc
    return loss, dx, dw2, db2, dw, dt


def _loss_only(x, w2, b2, t, w, cfg):
    n = x.shape[0]
    loss = x.new_empty((n, cfg.positions) if cfg.positions > 1 else (n,))
    for s in range(0, n, cfg.rows):
        e = min(n, s + cfg.rows)
        loss[s:e] = _chunk(x[s:e], t[s:e], w2, b2, w, cfg)
    return loss


def _differentiable_grads(x, w2, b2, t, w, cfg, g, need):
    """The backward under ``create_graph=True`` (double backward, Hessians): the chunks'
    losses recomputed with autograd from the saved inputs (still attached to the caller's
    graph) and differentiated with ``create_graph``, so that the gradients have gradients.
    Memory: the graph of every chunk (the logits), as an unfused loss would keep."""
    inputs = (x, w2, b2, w, t)
    wanted = [i for i, (v, n) in enumerate(zip(inputs, need)) if n and v is not None]
    with torch.enable_grad():
        loss = torch.cat([_chunk(x[s:s + cfg.rows], t[s:s + cfg.rows], w2, b2, w, cfg)
                          for s in range(0, x.shape[0], cfg.rows)]) if x.shape[0] else \
            x.new_zeros((0,) + g.shape[1:])
        grads = torch.autograd.grad(loss, [inputs[i] for i in wanted], g, create_graph=True,
                                    allow_unused=True) if wanted else ()
    out = [None] * 5
    for i, gr in zip(wanted, grads):
        out[i] = torch.zeros_like(inputs[i]) if gr is None else gr
    dx, dw2, db2, dw, dt = out
    return dx, dw2, db2, dt, dw, None


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w2, b2, t, w, cfg):
        ctx.cfg = cfg
        need = tuple(ctx.needs_input_grad[i] for i in (0, 1, 2, 4, 3))
        ctx.pre = None
        if any(need) and not cfg.prob:
            ones = x.new_ones((x.shape[0], cfg.positions) if cfg.positions > 1 else x.shape[:1])
            loss, *pre = _grads(x, w2, b2, t, w, cfg, ones, need[:4] + (False,))
            ctx.pre = pre[:4]
        else:
            loss = _loss_only(x, w2, b2, t, w, cfg)
        ctx.need = need
        ctx.save_for_backward(x, w2, b2, t, w)
        return loss

    @staticmethod
    def backward(ctx, g):
        x, w2, b2, t, w = ctx.saved_tensors
        cfg, need = ctx.cfg, ctx.need
        if torch.is_grad_enabled():  # create_graph: gradients that are differentiable again
            with torch.autocast(x.device.type, enabled=False):
                return _differentiable_grads(x, w2, b2, t, w, cfg, g, need)
        with torch.autocast(x.device.type, enabled=False):  # the casts are explicit (cfg.mm)
            return _LinearCE._backward(ctx, x, w2, b2, t, w, cfg, need, g)

    @staticmethod
    def _backward(ctx, x, w2, b2, t, w, cfg, need, g):
        pre = ctx.pre
        if pre is not None:
            counts, invalid, _ = _row_factor(t, cfg)
            gc = g[counts | invalid]
            if gc.numel() == 0 or bool((gc == gc.reshape(-1)[0]).all()):
                gbar = gc.reshape(-1)[0] if gc.numel() else g.new_zeros(())
                dx, dw2, db2, dw = (None if v is None else v * gbar for v in pre)
                return dx, dw2, db2, None, dw, None
        _, dx, dw2, db2, dw, dt = _grads(x, w2, b2, t, w, cfg, g.contiguous(), need)
        return dx, dw2, db2, dt, dw, None


def _linear_cross_entropy(input, linear_weight, target, *, reduction, linear_bias=None,
                         weight=None, ignore_index=None, label_smoothing=0.0, softcap=None,
                         z_loss=0.0, chunk_size=None, memory_budget=None):
    dtype = torch.promote_types(input.dtype, linear_weight.dtype)
    if linear_bias is not None:
        dtype = torch.promote_types(dtype, linear_bias.dtype)
    # torch.autocast: F.linear_cross_entropy is linear (autocast's lower-precision list: the
    # product in its dtype) then cross_entropy (its float32 list); float64 is never cast
    device = input.device.type
    mm = None
    if torch.is_autocast_enabled(device) and dtype != torch.float64:
        mm, dtype = torch.get_autocast_dtype(device), torch.float32
    x, wl = input.to(dtype), linear_weight.to(dtype)
    b = None if linear_bias is None else linear_bias.to(dtype)
    w = None if weight is None else weight.to(dtype)
    n_classes, out = wl.shape[0], tuple(wl.shape[1:-1])
    positions = math.prod(out)
    prob = target.is_floating_point()
    ignore = -100 if ignore_index is None else int(ignore_index)
    unbatched = x.dim() == 1
    n = 1 if unbatched else x.shape[0]
    cfg = _Cfg(n_classes=n_classes, positions=positions, prob=prob, ignore_index=ignore,
               smoothing=float(label_smoothing), softcap=None if softcap is None else float(softcap),
               z_loss=float(z_loss),
               rows=_rows_per_chunk(n, n_classes * positions, x.element_size(), chunk_size,
                                    memory_budget), mm=mm)
    xx = x.unsqueeze(0) if unbatched else x
    tt = target.unsqueeze(0) if unbatched else target
    tt = tt.to(dtype) if prob else tt.long()
    kd = (positions,) if positions > 1 else ()
    tt = tt.reshape((n, n_classes) + kd) if prob else tt.reshape((n,) + kd)
    w2 = wl.reshape(n_classes * positions, wl.shape[-1])
    b2 = None if b is None else b.reshape(-1)
    with torch.autocast(device, enabled=False):  # the casts are explicit (cfg.mm)
        loss = _LinearCE.apply(xx, w2, b2, tt, w, cfg).reshape((n, *out))
    if unbatched:
        loss = loss[0]
    if prob:
        return Terms(loss)
    tgt = target.long()
    counts = (tgt != ignore) & (tgt >= 0) & (tgt < n_classes)
    safe = torch.where(counts, tgt, torch.zeros_like(tgt))
    w_t = torch.ones((), dtype=loss.dtype, device=loss.device) if w is None else w[safe]
    return Terms(loss, torch.where(counts, w_t, torch.zeros_like(w_t)).to(loss.dtype), counts)


def linear_cross_entropy(input, linear_weight, target, *, reduction, shift=False, **options):
    """The spec's implementation: ``_linear_cross_entropy``, or with ``shift`` (transformers'
    causal-LM shift) that function on the flattened hidden states input[:, :-1] (N * (T - 1),
    D) and targets target[:, 1:], its terms reshaped to (N, T - 1)."""
    if not shift:
        return _linear_cross_entropy(input, linear_weight, target, reduction=reduction, **options)
    n, steps, d = input.shape[0], max(input.shape[1] - 1, 0), input.shape[2]
    terms = _linear_cross_entropy(input[:, :-1].reshape(n * steps, d), linear_weight,
                                  target[:, 1:].reshape(n * steps), reduction=reduction, **options)
    return Terms(*(None if a is None else a.reshape(n, steps) for a in terms))
