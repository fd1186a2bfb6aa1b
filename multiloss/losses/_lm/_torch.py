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


# ---------------------------------------------------------------------------------------------
# the fused-linear engine (the twin of _jax.fused_units)


def _logits(xc, w, b):
    u, r, d = xc.shape
    z = torch.nn.functional.linear(xc.reshape(u * r, d), w, b)
    return z.view(u, r, w.shape[0])


def _run_graph(fn, x, w, b, extras, ref, per, g, need):
    """The backward under ``create_graph=True``: the chunks' losses recomputed with autograd
    from the saved inputs (attached to the caller's graph) and differentiated with
    create_graph, so that the gradients have gradients (memory: every chunk's graph)."""
    rx, rw, rb = ref if ref is not None else (None, None, None)
    inputs = (x, w, b, *extras)
    wanted = [i for i, (v, nd) in enumerate(zip(inputs, need))
              if nd and v is not None and v.is_floating_point()]
    with torch.enable_grad():
        outs = []
        for s in range(0, x.shape[0], per):
            e_ = min(x.shape[0], s + per)
            with torch.no_grad():
                zr = None if rx is None else _logits(rx[s:e_], rw, rb)
            outs.append(fn(_logits(x[s:e_], w, b), zr, *[ex[s:e_] for ex in extras]))
        out = torch.cat(outs)
        gr = torch.autograd.grad(out, [inputs[i] for i in wanted], g, create_graph=True,
                                 allow_unused=True) if wanted else ()
    res = [None] * len(inputs)
    for i, gi in zip(wanted, gr):
        res[i] = torch.zeros_like(inputs[i]) if gi is None else gi
    return out, res[0], res[1], res[2], res[3:]


def _run(fn, x, w, b, extras, ref, per, g, need):
    """(losses, dx, dw, db, d extras) over chunks of ``per`` units, for the cotangent ``g``
    (None: 1 per unit); ``need``: (x, w, b, *extras) flags."""
    n = x.shape[0]
    outs = []
    acc = _compute_dtype(w.dtype)  # the head's gradients accumulate in float32 for half
    dx = torch.empty_like(x) if need[0] else None
    dw = torch.zeros(w.shape, dtype=acc, device=w.device) if need[1] else None
    db = (torch.zeros(b.shape, dtype=acc, device=b.device) if need[2] and b is not None
          else None)
    de = [torch.empty_like(e) if nd and e is not None and e.is_floating_point() else None
          for e, nd in zip(extras, need[3:])]
    rx, rw, rb = ref if ref is not None else (None, None, None)
    grad = any(v is not None for v in (dx, dw, db, *de))
    if getattr(fn, "closed", None) is not None:  # a distillation form's closed chunks
        return _closed_run(fn, x, w, b, extras, ref, per, g, grad, dx, dw, db, de)
    token_fn = getattr(fn, "token_fn", None)
    for s in range(0, n, per):
        e_ = min(n, s + per)
        xc = x[s:e_]
        if token_fn is not None:  # a loss of the label log-probs: the gradient in place
            out, dz, grads = _token_chunk(fn, token_fn, xc, w, b, rx, rw, rb, extras, de, s,
                                          e_, g, grad)
            outs.append(out)
            if grad:
                _accumulate(dz, xc, w, dx, dw, db, de, grads, extras, s, e_)
            continue
        with torch.no_grad():
            zr = None if rx is None else _logits(rx[s:e_], rw, rb)
            z = _logits(xc, w, b)
        if not grad:
            with torch.no_grad():
                outs.append(fn(z, zr, *[ex[s:e_] for ex in extras]))
            continue
        with torch.enable_grad():
            z = z.requires_grad_(True)
            leaves = [ex[s:e_].detach().requires_grad_(True) if d is not None else ex[s:e_]
                      for ex, d in zip(extras, de)]
            out = fn(z, zr, *leaves)
            ct = torch.ones_like(out) if g is None else g[s:e_].to(out.dtype)
            diff = [z] + [lf for lf, d in zip(leaves, de) if d is not None]
            gr = torch.autograd.grad(out, diff, ct, allow_unused=True)
        outs.append(out.detach())
        _accumulate(gr[0], xc, w, dx, dw, db, de, gr[1:], extras, s, e_)
        # the chunk's logits, the reference's, their gradient and the loss's graph freed
        # before the next chunk allocates its own (else two chunks' buffers live at once)
        del z, zr, out, gr, leaves, diff, ct
    return torch.cat(outs), dx, dw, db, de


def _logits_into(buf, xc, w, b):
    """``_logits`` of the chunk's rows (u, 1, D) written into ``buf`` (rows, V): the same
    product (``addmm`` with a bias, else ``mm``, as ``F.linear``) into a buffer reused from
    chunk to chunk (a fresh logits-sized buffer is page-faulted on every chunk)."""
    x2 = xc.reshape(-1, xc.shape[-1])
    if b is None:
        return torch.mm(x2, w.t(), out=buf)
    return torch.addmm(b, x2, w.t(), out=buf)


@torch.compiler.disable  # run eagerly under torch.compile, as the autograd chunks were (the
# graph breaks there, at torch.autograd.grad): Dynamo would unroll the blocks' loop
def _closed_run(fn, x, w, b, extras, ref, per, g, grad, dx, dw, db, de):
    """``_run`` of a loss of one token's logits (units of one row) and the teacher's with a
    closed-form chunk
    (``fn.closed(z, zt, labels, cotangent, grad)`` -> (losses, the logits' gradient written
    over z)): no autograd; the student's and the teacher's logits computed into two buffers
    allocated once (``torch.mm(..., out=)``), the student's overwritten by its gradient."""
    n = x.shape[0]
    rx, rw, rb = ref
    rows = min(per, n) * x.shape[1]
    zbuf = torch.empty((rows, w.shape[0]), dtype=x.dtype, device=x.device)
    tbuf = torch.empty((rows, rw.shape[0]), dtype=rx.dtype, device=rx.device)
    outs = []
    with torch.no_grad():
        for s in range(0, n, per):
            e_ = min(n, s + per)
            xc, k = x[s:e_], (e_ - s) * x.shape[1]
            z = _logits_into(zbuf[:k], xc, w, b)
            zt = _logits_into(tbuf[:k], rx[s:e_], rw, rb)
            ct = None if g is None else g[s:e_].reshape(-1)
            out, dz = fn.closed(z, zt, extras[0][s:e_].reshape(-1), ct, grad)
            outs.append(out)
            if grad:
                _accumulate(dz, xc, w, dx, dw, db, de, (), extras, s, e_)
    return torch.cat(outs), dx, dw, db, de


def _accumulate(dz, xc, w, dx, dw, db, de, grads, extras, s, e_):
    """A chunk's share of the gradients from the gradient of its logits ``dz`` (float32 for
    a half head: rounded to the head's dtype, as the gradient of half logits is). ``dw`` and
    ``db`` are float32 for a half head: the chunk's products are summed into them in float32
    (on float32 copies of the chunk's rounded ``dz`` and rows), rounded once after the last
    chunk, as TRL's fused head accumulates them; ``dx``'s rows are each one chunk's product
    (summed over the classes in float32 by the half matrix product, rounded once)."""
    dz = dz.reshape(-1, w.shape[0]).to(w.dtype)
    if dx is not None:
        dx[s:e_] = (dz @ w).view(xc.shape)
    x2 = xc.reshape(-1, xc.shape[-1])
    if dw is not None and dw.dtype != dz.dtype:
        dw.addmm_(dz.t().to(dw.dtype), x2.to(dw.dtype))
    elif dw is not None:
        dw.addmm_(dz.t(), x2)
    if db is not None:
        db += dz.sum(dim=0, dtype=db.dtype)
    k = 0
    for i, d in enumerate(de):
        if d is not None:
            d[s:e_] = torch.zeros_like(extras[i][s:e_]) if grads[k] is None else grads[k]
            k += 1


def _label_logps(z, lab, ignore_index):
    """(log p(label), row sums ``s``, valid, safe labels) of logits z (u, r, V), no autograd;
    z is overwritten with ``exp(z - max)`` (so that the softmax is ``z / s``): the steps of
    torch.logsumexp (the same numbers), in place instead of in a second logits-sized buffer."""
    n_classes = z.shape[-1]
    valid = lab != ignore_index
    in_range = (lab >= 0) & (lab < n_classes)
    safe = torch.where(valid & in_range, lab, torch.zeros_like(lab))
    zt = z.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    m = z.amax(dim=-1, keepdim=True)
    m.masked_fill_(m.abs() == float("inf"), 0.0)
    s = z.sub_(m).exp_().sum(dim=-1)
    lse = s.log().add_(m.squeeze(-1))
    tok = torch.where(valid, zt - lse, torch.zeros_like(lse))
    tok = torch.where(valid & ~in_range, torch.full_like(tok, float("nan")), tok)
    return tok, s, valid, safe


def _token_chunk(fn, token_fn, xc, w, b, rx, rw, rb, extras, de, s, e_, g, grad):
    """A chunk of a loss of the label log-probs (``fn.token_fn(tok, valid, ref_tok,
    *extras)``): the log-probs from the logits without autograd, the loss's gradient with
    respect to them (small: one number per token), and the logits' gradient
    ``g_tok (onehot - softmax)`` written over the logits in place: one buffer of the
    chunk's logits (and the reference's, freed first; their log-sum-exp computed in place
    too) instead of autograd's several."""
    ignore = fn.ignore_index
    lab = extras[0][s:e_]
    with torch.no_grad():
        # float16/bfloat16 logits (the head's dtype, as the reference's) go through the
        # log-softmax in float32, as token_logps and torch's log_softmax of a half row do
        rtok = None
        if rx is not None:
            rz = _logits(rx[s:e_], rw, rb)
            rtok = _label_logps(rz.to(_compute_dtype(rz.dtype)), lab, ignore)[0]
            del rz
        z = _logits(xc, w, b)
        z = z.to(_compute_dtype(z.dtype))
        tok, sums, valid, safe = _label_logps(z, lab, ignore)
    rest = [ex[s:e_] for ex in extras[1:]]
    if not grad:
        with torch.no_grad():
            return token_fn(tok, valid.to(tok.dtype), rtok, *rest), None, ()
    with torch.enable_grad():
        tok = tok.requires_grad_(True)
        leaves = [r.detach().requires_grad_(True) if d is not None else r
                  for r, d in zip(rest, de[1:])]
        out = token_fn(tok, valid.to(tok.dtype), rtok, *leaves)
        ct = torch.ones_like(out) if g is None else g[s:e_].to(out.dtype)
        diff = [tok] + [lf for lf, d in zip(leaves, de[1:]) if d is not None]
        gr = torch.autograd.grad(out, diff, ct, allow_unused=True)
    with torch.no_grad():
        gt = torch.zeros_like(tok) if gr[0] is None else gr[0]
        gt = torch.where(valid, gt, torch.zeros_like(gt))
        dz = z.mul_((-gt / sums).unsqueeze(-1))  # z holds exp(z - max); / sums: the softmax
        dz.scatter_add_(-1, safe.unsqueeze(-1), gt.unsqueeze(-1))
    return out.detach(), dz, tuple(gr[1:])


class _FusedUnits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, per, n_extras, x, w, b, *rest):
        extras, ref = rest[:n_extras], rest[n_extras:]
        ref = tuple(ref) if ref else None
        need = ctx.needs_input_grad[3:6 + n_extras]
        ctx.fn, ctx.per, ctx.n_extras, ctx.has_ref = fn, per, n_extras, ref is not None
        ctx.need = need
        ctx.pre = None
        if any(need):
            out, *pre = _run(fn, x, w, b, extras, ref, per, None, need)
            ctx.pre = pre
        else:
            out = _run(fn, x, w, b, extras, ref, per, None, (False,) * len(need))[0]
        ctx.save_for_backward(x, w, b, *rest)
        return out

    @staticmethod
    def backward(ctx, g):
        x, w, b, *rest = ctx.saved_tensors
        n_extras = ctx.n_extras
        extras, ref = rest[:n_extras], (tuple(rest[n_extras:]) if ctx.has_ref else None)
        need, fn, per = ctx.need, ctx.fn, ctx.per
        n_ref = 3 if ctx.has_ref else 0
        if torch.is_grad_enabled():  # create_graph: differentiable gradients
            _, dx, dw, db, de = _run_graph(fn, x, w, b, extras, ref, per, g, need)
        elif ctx.pre is not None and g.numel() and bool((g == g.reshape(-1)[0]).all()):
            # scaled in place (no copy of dW, the size of the head); used once: a second
            # backward (retain_graph) recomputes
            s = g.reshape(-1)[0]
            dx, dw, db, de = ctx.pre
            ctx.pre = None
            dx, dw, db = (None if v is None else v.mul_(s) for v in (dx, dw, db))
            de = [None if v is None else v.mul_(s) for v in de]
        else:
            _, dx, dw, db, de = _run(fn, x, w, b, extras, ref, per, g.contiguous(), need)
        # a half head's gradients, accumulated in float32, rounded once
        dw = None if dw is None else dw.to(w.dtype)
        db = None if db is None else db.to(b.dtype)
        return (None, None, None, dx, dw, db, *de, *([None] * n_ref))


def fused_units(fn, x, w, b, extras=(), ref=None, *, units_per_chunk=1):
    """The twin of ``_jax.fused_units``: a chunked autograd function whose forward computes
    each chunk's losses and, when an input needs a gradient, their gradient for a cotangent of
    1 per unit (three matrix products per chunk); the backward scales it where the cotangent
    is the same on every unit, recomputes the chunks with it otherwise, and with autograd
    (differentiable again) under ``create_graph=True``. The reference head (``ref``) is
    frozen: evaluated under ``torch.no_grad``."""
    extras = tuple(extras)
    ref = tuple(ref) if ref is not None else ()
    if x.shape[0] == 0:
        zr = None if not ref else _logits(*ref)
        return fn(_logits(x, w, b), zr, *extras)
    with torch.autocast(x.device.type, enabled=False):
        return _FusedUnits.apply(fn, int(units_per_chunk), len(extras), x, w, b, *extras, *ref)


# ---------------------------------------------------------------------------------------------
# the second differentiation path (grad_in_forward=False; the twin of _jax.remat_units)


def _remat_chunk(fn, xc, w, b, rxc, rw, rb, exc):
    """A chunk's losses: ``fn`` of its logits and of the frozen head's (detached)."""
    zr = None
    if rxc is not None:
        zr = _logits(rxc.detach(), rw.detach(), None if rb is None else rb.detach())
    return fn(_logits(xc, w, b), zr, *exc)


def _remat_split(ctx, tensors):
    n = ctx.n_extras
    x, w, b, rest = tensors[0], tensors[1], tensors[2], tensors[3:]
    extras, ref = list(rest[:n]), tuple(rest[n:])
    return x, w, b, extras, (ref if ref else (None, None, None))


def _remat_diff(ctx, x, w, b, extras, flags):
    """Positions in (x, w, b, *extras) that are differentiated: floating and flagged."""
    inputs = (x, w, b, *extras)
    return [i for i, (v, f) in enumerate(zip(inputs, flags))
            if f and v is not None and v.is_floating_point()]


def _remat_fn(ctx, x, w, b, extras, ref, diff, s, e_):
    """The chunk [s, e_) as a function of the differentiated inputs ``diff`` (positions in
    (x, w, b, *extras)), and their values: the chunk's rows of x and of the extras, the whole
    head w and b."""
    rx, rw, rb = ref
    full = [x[s:e_], w, b, *[ex[s:e_] for ex in extras]]

    def chunk(*d):
        args = list(full)
        for i, v in zip(diff, d):
            args[i] = v
        return _remat_chunk(ctx.fn, args[0], args[1], args[2],
                            None if rx is None else rx[s:e_], rw, rb, args[3:])

    return chunk, [full[i] for i in diff]


class _RematUnits(torch.autograd.Function):
    """``fn`` per chunk of units with autograd's own derivatives, rematerialised: the forward
    keeps the inputs only, the backward recomputes each chunk under ``torch.func.vjp``. In the
    ``setup_context`` form with ``generate_vmap_rule``, so that ``torch.func`` (grad, vmap,
    jacrev, hessian) transforms it; double backward differentiates the recomputation. No
    ``jvp`` here: Dynamo refuses an autograd function with one (``_RematUnitsJvp`` adds it
    outside torch.compile)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(fn, per, n_extras, x, w, b, *rest):
        extras, ref = rest[:n_extras], rest[n_extras:]
        rx, rw, rb = ref if ref else (None, None, None)
        outs = []
        for s in range(0, x.shape[0], per):
            e_ = min(x.shape[0], s + per)
            outs.append(_remat_chunk(fn, x[s:e_], w, b, None if rx is None else rx[s:e_], rw,
                                     rb, [ex[s:e_] for ex in extras]))
        return torch.cat(outs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        fn, per, n_extras, *tensors = inputs
        ctx.fn, ctx.per, ctx.n_extras = fn, per, n_extras
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def backward(ctx, g):
        x, w, b, extras, ref = _remat_split(ctx, ctx.saved_tensors)
        inputs = (x, w, b, *extras)
        diff = _remat_diff(ctx, x, w, b, extras, ctx.needs_input_grad[3:3 + len(inputs)])
        grads = [[] for _ in inputs]
        for s in range(0, x.shape[0], ctx.per):
            e_ = min(x.shape[0], s + ctx.per)
            chunk, primals = _remat_fn(ctx, x, w, b, extras, ref, diff, s, e_)
            out, vjp = torch.func.vjp(chunk, *primals)
            for i, gi in zip(diff, vjp(g[s:e_].to(out.dtype))):
                grads[i].append(gi)
        res = [None] * len(inputs)
        for i in diff:
            if i in (1, 2):  # the head's: summed over the chunks (in its dtype: float32 for
                acc = grads[i][0]  # a half head, remat_units)
                for gi in grads[i][1:]:
                    acc = acc + gi
                res[i] = acc
            else:
                res[i] = torch.cat(grads[i])
        n_ref = len(ctx.saved_tensors) - 3 - ctx.n_extras
        return (None, None, None, *res, *([None] * n_ref))


class _RematUnitsJvp(_RematUnits):
    """``_RematUnits`` with forward mode (``torch.func.jvp``, ``jacfwd``,
    ``torch.autograd.forward_ad``): each chunk's tangent by ``torch.func.jvp`` inside a
    torch.func transform, else (forward AD does not nest) as the transpose of its vjp."""

    @staticmethod
    def jvp(ctx, *tangents):
        tangents = tangents[3:]
        x, w, b, extras, ref = _remat_split(ctx, ctx.saved_tensors)
        diff = _remat_diff(ctx, x, w, b, extras, [t is not None for t in tangents])
        # inside a torch.func transform (private API; without it, the vjp route below)
        peek = getattr(torch._C._functorch, "peek_interpreter_stack", lambda: None)
        nested = peek() is not None
        outs = []
        for s in range(0, x.shape[0], ctx.per):
            e_ = min(x.shape[0], s + ctx.per)
            chunk, primals = _remat_fn(ctx, x, w, b, extras, ref, diff, s, e_)
            tan = [tangents[i] if i in (1, 2) else tangents[i][s:e_] for i in diff]
            if not diff:
                out = chunk()
                outs.append(torch.zeros_like(out))
            elif nested:  # contiguous: forward AD refuses an expanded primal (the NLL scale)
                outs.append(torch.func.jvp(chunk, tuple(p.contiguous() for p in primals),
                                           tuple(t.contiguous() for t in tan))[1])
            else:  # J t as the gradient of <J^T u, t> with respect to u (linear in u)
                out, vjp = torch.func.vjp(chunk, *primals)
                _, vjp2 = torch.func.vjp(vjp, torch.zeros_like(out))
                outs.append(vjp2(tuple(tan))[0])
        return torch.cat(outs)


class _Rounded:
    """``fn`` of the logits rounded to ``dtype`` (a half head's, computed in float32)."""

    def __init__(self, fn, dtype):
        self.fn, self.dtype = fn, dtype

    def __call__(self, z, zr, *extras):
        return self.fn(z.to(self.dtype), zr, *extras)


def remat_units(fn, x, w, b, extras=(), ref=None, *, units_per_chunk=1):
    """The twin of ``_jax.remat_units`` (``grad_in_forward=False``): ``fn`` per chunk of
    ``units_per_chunk`` units, the forward keeping no chunk's logits, the backward recomputing
    each chunk and differentiating it with autograd (``torch.func.vjp``): four matrix products
    of the trained head per chunk (the frozen head's logits computed twice), never more than
    one chunk's logits. ``torch.func`` (grad, vmap, jvp, jacrev, jacfwd, hessian),
    ``torch.autograd.forward_ad``, double backward and torch.compile (without forward mode)
    work. A float16/bfloat16 head's products are computed on float32 copies of x, w and b,
    the logits rounded to the head's dtype (``_Rounded``), so that the gradients of x, w and b
    are accumulated over the chunks in float32 and rounded once (as ``_jax.remat_units``)."""
    extras = tuple(extras)
    ref = tuple(ref) if ref is not None else ()
    if w.dtype != _compute_dtype(w.dtype):
        fn = _Rounded(fn, w.dtype)
        x, w = x.float(), w.float()
        b = None if b is None else b.float()
    if x.shape[0] == 0:
        rx, rw, rb = ref if ref else (None, None, None)
        return _remat_chunk(fn, x, w, b, rx, rw, rb, extras)
    cls = _RematUnits if torch.compiler.is_compiling() else _RematUnitsJvp
    with torch.autocast(x.device.type, enabled=False):
        return cls.apply(fn, int(units_per_chunk), len(extras), x, w, b, *extras, *ref)


# ---------------------------------------------------------------------------------------------
# the fused-linear losses (the twin of _jax.linear_form)


def _engine(grad_in_forward, name):
    """The chunk engine of a fused-linear loss: ``fused_units`` (the default, gradients in the
    forward), whose autograd function torch.func cannot transform (our error names the
    option), or ``remat_units``."""
    if not grad_in_forward:
        return remat_units

    def engine(*args, **kw):
        try:
            return fused_units(*args, **kw)
        except RuntimeError as e:
            if "setup_context" not in str(e):
                raise
            raise RuntimeError(
                f"{name}: torch.func transforms (grad, vmap, jvp, jacrev, hessian, ...) "
                f"cannot differentiate the default path (grad_in_forward=True), an autograd "
                f"function that computes each chunk's gradient in the forward pass; make the "
                f"loss with grad_in_forward=False (the chunks differentiated by autograd, "
                f"rematerialised: four matrix products per chunk instead of three, the same "
                f"memory)") from e

    return engine


def _units(a, n):
    t = a.shape[1]
    return a.reshape((2, n, t) + tuple(a.shape[2:])).transpose(0, 1).reshape(
        (n, 2 * t) + tuple(a.shape[2:]))


def linear_form(form, plain_fn):
    """The torch function of the fused-linear loss ``form.name`` (see _jax.linear_form)."""
    from ...backends import Terms
    from . import units_per_chunk

    def loss(input, linear_weight, target, *rest, reduction=None, linear_bias=None,
             ref_linear_bias=None, ignore_index=IGNORE_INDEX, chunk_size=None,
             memory_budget=None, grad_in_forward=True, batch_sum=None, **popts):
        ignore = int(ignore_index)
        dtype = torch.promote_types(input.dtype, linear_weight.dtype)
        if linear_bias is not None:
            dtype = torch.promote_types(dtype, linear_bias.dtype)
        x, w = input.to(dtype), linear_weight.to(dtype)
        b = None if linear_bias is None else linear_bias.to(dtype)
        rest = list(rest) + [None] * (2 * form.ref + len(form.extras) - len(rest))
        ref = None
        if form.ref:
            rx, rw = rest[0].to(dtype), rest[1].to(dtype)
            rb = None if ref_linear_bias is None else ref_linear_bias.to(dtype)
            rest = rest[2:]
        extras = rest
        n = x.shape[0] // 2 if form.paired else x.shape[0]
        lab = target.long()
        # an ignored position's hidden state never enters (TRL's fused head projects only the
        # scored positions): zeroed, so that a NaN there reaches neither loss nor gradient
        scored = (lab != ignore).unsqueeze(-1)
        x = torch.where(scored, x, torch.zeros((), dtype=x.dtype, device=x.device))
        if form.ref:
            rx = torch.where(scored, rx, torch.zeros((), dtype=rx.dtype, device=rx.device))
        if form.paired:
            x, lab = _units(x, n), _units(lab, n)
            if form.ref:
                rx = _units(rx, n)
        if form.ref:
            ref = (rx, rw, rb)
        for i, name in enumerate(form.extras):  # one number for the batch: chunked by units
            if name in form.scalars and extras[i] is not None:
                extras[i] = extras[i].to(dtype).expand(n)
        scale = None
        if form.nll:  # both counts the whole batch's over process_group (batch_sum)
            total = (lambda c: c) if batch_sum is None else batch_sum
            count = total((target[:n] != ignore).sum().to(dtype))
            scale = (total(torch.tensor(float(n), dtype=dtype, device=x.device)) / count
                     ).expand(n)
        present = [i for i, e in enumerate(extras) if e is not None]
        k = len(present)

        def fn(z, zr, lab, *ex):
            tok, valid = token_logps(z, lab, ignore)
            rtok = None if zr is None else token_logps(zr, lab, ignore)[0]
            full = [None] * len(extras)
            for i, e in zip(present, ex[:k]):
                full[i] = e
            args = form.to_plain(tok, valid.to(tok.dtype), rtok, full,
                                 ex[k] if form.nll else None, popts)
            return plain_fn(*args, reduction=None, **popts).loss

        def token_fn(tok, valid, rtok, *ex):
            full = [None] * len(extras)
            for i, e in zip(present, ex[:k]):
                full[i] = e
            args = form.to_plain(tok, valid, rtok, full, ex[k] if form.nll else None, popts)
            return plain_fn(*args, reduction=None, **popts).loss

        fn.token_fn, fn.ignore_index = token_fn, ignore
        per = units_per_chunk(n, lab.shape[1], w.shape[0],
                              torch.finfo(_compute_dtype(dtype)).bits // 8,
                              chunk_size, memory_budget)
        args = (lab, *[extras[i] for i in present]) + ((scale,) if form.nll else ())
        out = _engine(grad_in_forward, form.name)(fn, x, w, b, args, ref,
                                                  units_per_chunk=per)
        # a half head's log-probs and loss are computed in float32: the result rounded once
        out = out.to(dtype)
        with torch.no_grad():
            zeros = torch.zeros(lab.shape, dtype=dtype, device=x.device)
            valid = (lab != ignore).to(dtype)
            terms = plain_fn(*form.to_plain(zeros, valid, zeros if form.ref else None, extras,
                                            scale, popts), reduction=None, **popts)
        return Terms(out, terms.weight, terms.count, terms.scale)

    loss.__name__ = loss.__qualname__ = form.name
    loss.wants_batch_sum = form.nll
    return loss


def linear_distillation(plain_fn, closed=None):
    """The torch function of a fused-linear distillation loss (see _jax.linear_distillation).
    ``closed``: the loss's closed-form chunk (distillation/_closed_torch.py), which the
    default path (``fused_units``) runs on each chunk instead of the plain loss under
    autograd; the other paths (create_graph, ``grad_in_forward=False``) run ``plain_fn``."""
    from ...backends import Terms
    from . import DISTILL_BLOCKS, DISTILL_TEMPORARIES, units_per_chunk

    def loss(input, linear_weight, teacher_input, teacher_linear_weight, labels=None, *,
             reduction=None, linear_bias=None, teacher_linear_bias=None, chunk_size=None,
             memory_budget=None, grad_in_forward=True, **popts):
        dtype = torch.promote_types(input.dtype, linear_weight.dtype)
        if linear_bias is not None:
            dtype = torch.promote_types(dtype, linear_bias.dtype)
        lead = tuple(input.shape[:-1])
        x = input.to(dtype).reshape(-1, 1, input.shape[-1])
        w = linear_weight.to(dtype)
        b = None if linear_bias is None else linear_bias.to(dtype)
        tx = teacher_input.to(dtype).reshape(-1, 1, teacher_input.shape[-1])
        tw = teacher_linear_weight.to(dtype)
        tb = None if teacher_linear_bias is None else teacher_linear_bias.to(dtype)
        ignore = popts.get("ignore_index", IGNORE_INDEX)
        # labels left out: every token counts (a value other than ignore_index)
        lab = (torch.full(lead, 0 if ignore != 0 else 1, dtype=torch.long, device=x.device)
               if labels is None else labels.long()).reshape(-1, 1)

        def fn(z, zt, lab):
            return plain_fn(z[:, 0], zt[:, 0], lab[:, 0], reduction=None, **popts).loss

        itemsize = torch.finfo(dtype).bits // 8
        temporaries = DISTILL_TEMPORARIES
        if closed is not None:
            # the two logits buffers and one block's intermediates (a chunk's rows in
            # DISTILL_BLOCKS blocks), float32 for a half head (with the block's two copies)
            half = dtype in _LOW
            temporaries = 2 + (closed.temporaries + 2 * half) * (1 + half) / DISTILL_BLOCKS
        per = units_per_chunk(x.shape[0], 1, w.shape[0], itemsize, chunk_size, memory_budget,
                              temporaries)
        if closed is not None:
            block = -(-min(per, x.shape[0]) // DISTILL_BLOCKS)
            fn.closed = lambda z, zt, lab, ct, grad: closed(z, zt, lab, ignore, ct, grad,
                                                            popts, block)
        out = _engine(grad_in_forward, f"linear_{plain_fn.__name__}")(
            fn, x, w, b, (lab,), (tx, tw, tb), units_per_chunk=per)
        if labels is None:
            return Terms(out.reshape(lead))
        keep = labels != ignore
        return Terms(out.reshape(lead), keep.to(out.dtype), keep)

    return loss
