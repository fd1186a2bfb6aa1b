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
import numpy as np
from jax import lax

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


def _label_stats(z, labels, ignore_index):
    """(token_logps' values, log-sum-exp, valid, safe labels, valid and in range) of logits
    z (..., V) in their compute dtype: what a loss of the label log-probs needs for its
    gradient with respect to the logits."""
    n_classes = z.shape[-1]
    valid = labels != ignore_index
    in_range = (labels >= 0) & (labels < n_classes)
    safe = jnp.where(valid & in_range, labels, 0).astype(jnp.int32)
    lse = jax.nn.logsumexp(z, axis=-1)
    zt = jnp.take_along_axis(z, safe[..., None], axis=-1)[..., 0]
    tok = jnp.where(valid, zt - lse, 0.0)
    return jnp.where(valid & ~in_range, jnp.nan, tok), lse, valid, safe, valid & in_range


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


# ---------------------------------------------------------------------------------------------
# the fused-linear engine: a loss of the logits of whole units (pairs, sequences, tokens),
# chunked, its gradient computed in the forward


def _float(a):
    return a is not None and jnp.issubdtype(a.dtype, jnp.inexact)


def _zero_cotangent(a):
    if a is None:
        return None
    if _float(a):
        return jnp.zeros_like(a)
    return np.zeros(a.shape, jax.dtypes.float0)


def _rounded(a, dtype):
    """``a`` rounded to the precision of ``dtype`` where that is float16/bfloat16, kept in
    a's dtype: an explicit rounding (``lax.reduce_precision``), which XLA keeps where a
    conversion to the half dtype and back may be dropped (its excess precision)."""
    if dtype is None or jnp.dtype(dtype) not in _LOW or jnp.dtype(dtype) == a.dtype:
        return a
    dtype = jnp.dtype(dtype)
    info = jnp.finfo(dtype)
    return lax.reduce_precision(a, exponent_bits=info.nexp, mantissa_bits=info.nmant)


def _logits(xc, w, b, low=None):
    """(u, r, D) rows of a chunk against the head (V, D): (u, r, V); ``low``: a half head's
    dtype (the backend computes it in float32): each logit rounded to it, as a half matrix
    product's (its products summed in float32, the bias added, one rounding)."""
    u, r, d = xc.shape
    z = xc.reshape(u * r, d) @ w.T
    if b is not None:
        z = z + b
    return _rounded(z, low).reshape(u, r, w.shape[0])


@jax.custom_jvp
def _unfused(z):
    """``z`` unchanged (NaN stays NaN; derivative: the identity), as a select that XLA keeps:
    the logits' matrix product is then not fused into a reduction that consumes it. XLA on
    CPU fuses a product with its only consumer, a row reduction (a softmax's max or sum),
    into one YNNPACK kernel, which at chunk sizes (196 rows of a (32768, 1024) head) runs at
    less than half the speed of the product alone (3.5 s against 1.5 s for 4096 rows in
    21 chunks, measured on a 2-core AMD EPYC); the select costs nothing measurable."""
    return jnp.where(jnp.isnan(z), jnp.asarray(jnp.nan, z.dtype), z)


@_unfused.defjvp
def _unfused_jvp(primals, tangents):
    return _unfused(primals[0]), tangents[0]


def _accumulate(dw, dz2, x2):
    """``dw + dz2.T @ x2`` (dw (V, D), dz2 (rows, V), x2 (rows, D)) in blocks of classes no
    larger than the chunk's logits, one after the other (a loop), each added in place: XLA
    on CPU computes a product into a new buffer before adding it, which for the whole product
    is one more head-sized array."""
    n_classes, d = dw.shape
    block = max(1, min(n_classes, (dz2.shape[0] * n_classes) // (4 * max(1, d))))
    if block >= n_classes:
        return dw + dz2.T @ x2
    full, tail = divmod(n_classes, block)

    def add(dw, s, size):
        part = (lax.dynamic_slice_in_dim(dw, s, size, axis=0)
                + lax.dynamic_slice_in_dim(dz2, s, size, axis=1).T @ x2)
        return lax.dynamic_update_slice_in_dim(dw, part, s, axis=0)

    dw = lax.fori_loop(0, full, lambda i, dw: add(dw, i * block, block), dw)
    return add(dw, full * block, tail) if tail else dw


def _token_grads(z2, lse, safe, gt, x2, w, dw, db, low=None):
    """A chunk's ``dx``, and ``dw``, ``db`` updated, from the gradient ``gt`` (rows,) of a loss
    of the label log-probs of the logits z2 (rows, V) (the compute dtype): the logits'
    gradient ``gt (onehot - exp(z - lse))`` made and used in blocks of classes (a loop),
    never whole beside the logits (XLA on CPU does not write it over them); rounded to
    ``low`` (a half head's dtype: the gradient of half logits is half)."""
    rows, n_classes = z2.shape
    d = w.shape[1]
    block = max(1, min(n_classes, (rows * n_classes) // (4 * max(1, d, rows))))
    full, tail = divmod(n_classes, block)
    g = gt[:, None]

    def add(carry, s, size):
        dx, dw, db = carry
        zb = lax.dynamic_slice_in_dim(z2, s, size, axis=1)
        hot = (lax.broadcasted_iota(safe.dtype, zb.shape, 1) + s) == safe[:, None]
        dzb = jnp.where(hot, g, jnp.zeros((), zb.dtype)) - g * jnp.exp(zb - lse[:, None])
        dzb = _rounded(dzb, low)
        dx = dx + dzb @ lax.dynamic_slice_in_dim(w, s, size, axis=0)
        part = lax.dynamic_slice_in_dim(dw, s, size, axis=0) + dzb.T @ x2
        dw = lax.dynamic_update_slice_in_dim(dw, part, s, axis=0)
        if db is not None:
            part = lax.dynamic_slice_in_dim(db, s, size, axis=0) + jnp.sum(dzb, axis=0)
            db = lax.dynamic_update_slice_in_dim(db, part, s, axis=0)
        return dx, dw, db

    from ..classification._linear_jax import _carry

    carry = (_carry(jnp.zeros((rows, d), z2.dtype), z2, x2, gt), dw, db)
    carry = lax.fori_loop(0, full, lambda i, c: add(c, i * block, block), carry)
    return add(carry, full * block, tail) if tail else carry


def _chunks(n_units, u):
    """(the number of chunks of ``u`` units, ``split``): ``split(a)`` reshapes an array with
    leading axis n_units (or None) to (chunks, u, ...), a partial last chunk padded with
    copies of the last unit (the callers drop or mask their results)."""
    chunks = -(-n_units // u) if n_units else 0
    pad = chunks * u - n_units

    def split(a):
        if a is None:
            return None
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)
        return a.reshape((chunks, u) + a.shape[1:])

    return chunks, split


def fused_units(fn, x, w, b, extras=(), ref=None, *, units_per_chunk=1, token_fn=None,
                ignore_index=IGNORE_INDEX, low=None):
    """``fn(z, z_ref, *extras)`` per chunk of units, without materialising the logits of more
    than one chunk.

    x: hidden states (U, r, D), the r rows of each of the U units (a pair's 2T tokens, a
    sequence's T, one token); w (V, D), b (V,) or None: the head; extras: arrays with leading
    axis U (floating ones are differentiated, integer/bool ones are data); ref: None or
    ``(ref_x (U, r, D'), ref_w (V, D'), ref_b)``, a frozen reference/teacher head (its logits
    ``z_ref`` are computed per chunk, never differentiated: zero cotangents). ``fn`` maps the
    chunk's logits (u, r, V) (and the reference's) to the chunk's losses (u, ...).
    ``token_fn(tok, valid, ref_tok, *extras[1:])``, where given, is ``fn`` as a loss of the
    label log-probs (labels
    ``extras[0]``, ``ignore_index``): the logits' gradient is then made block by block from
    its gradient with respect to them (memory: the chunk's logits once, not twice).

    A ``jax.custom_vjp``: the forward computes, per chunk, the losses and their gradient for a
    cotangent of 1 on every unit (``jax.vjp`` of ``fn``, then ``dX = dz @ W``, ``dW += dz.T @
    X``: three matrix products per chunk, as the materialised logits' forward and backward);
    the backward scales it where the cotangent is the same on every unit (a 'mean' or 'sum'
    without sample weights) and recomputes the chunks with the actual cotangent otherwise
    (a loop of zero steps or one per chunk, updating the gradients in place). x, w, b are
    in the compute dtype (the backend computes float16/bfloat16 inputs in float32); ``low``:
    their half dtype, to which each logit and each element of the logits' gradient is
    rounded (as a half product's and the gradient of half logits are), the products summed
    in float32 over every chunk and rounded once by the backend's conversion: TRL's fused
    head. Reverse mode only (no ``jax.jvp``: see ``remat_units``, ``grad_in_forward=False``)."""
    from ..classification._linear_jax import _carry

    n_units = x.shape[0]
    u = int(units_per_chunk)
    chunks, split = _chunks(n_units, u)
    fl = tuple(i for i, e in enumerate(extras) if _float(e))
    ints = tuple(e if not _float(e) else None for e in extras)
    ref = (None, None, None) if ref is None else tuple(ref)

    def merge(ef, ei):
        out = list(ei)
        for i, e in zip(fl, ef):
            out[i] = e
        return out

    def chunked(x, ef, ei, rx, ct):
        """The scanned inputs: each array split into chunks of u units (leading axis chunks)."""
        valid = (jnp.arange(chunks * u) < n_units).reshape(chunks, u)
        return (split(x), tuple(split(e) for e in ef), tuple(split(e) for e in ei), split(rx),
                valid, None if ct is None else split(ct))

    def unsplit(a):
        return a.reshape((chunks * u,) + a.shape[2:])[:n_units]

    def stepper(w, b, rw, rb):
        def step(carry, chunk):
            dw, db = carry
            xc, efc, eic, rxc, vc, ctc = chunk
            # a half head's logits rounded to its dtype once (_logits)
            z = _logits(xc, w, b, low)
            zr = None if rxc is None else lax.stop_gradient(_logits(rxc, rw, rb, low))
            if token_fn is None:
                z, zr = _unfused(z), None if zr is None else _unfused(zr)
                out, vjp = jax.vjp(lambda z, ef: fn(z, zr, *merge(ef, eic)), z, efc)
            else:
                # the logits in the head's dtype, their log-softmax in the compute dtype
                # (float32 for a half head), as token_logps and TRL's fused head
                lab = eic[0]
                tok, lse, valid, safe, ok = _label_stats(z, lab, ignore_index)
                rtok = None if zr is None else token_logps(zr, lab, ignore_index)[0]
                out, vjp = jax.vjp(lambda t, ef: token_fn(
                    t, valid.astype(t.dtype), rtok, *merge(ef, eic)[1:]), tok, efc)
            mask = vc.reshape((u,) + (1,) * (out.ndim - 1))
            if ctc is None:
                ctc = jnp.broadcast_to(mask, out.shape).astype(out.dtype)
            else:
                ctc = jnp.where(mask, ctc.astype(out.dtype), 0.0)
            # inside shard_map the cotangent must vary over the mapped axes as the losses do
            if token_fn is not None:
                gt, def_ = vjp(_carry(ctc, out))
                gt = jnp.where(ok, gt, jnp.zeros((), gt.dtype)).reshape(-1)
                dxc, dw, db = _token_grads(z.reshape(-1, z.shape[-1]), lse.reshape(-1),
                                           safe.reshape(-1), gt,
                                           xc.reshape(-1, xc.shape[-1]), w, dw, db, low)
                return (dw, db), (out, dxc.reshape(xc.shape), def_)
            dz, def_ = vjp(_carry(ctc, out))
            dz2 = _rounded(dz.reshape(-1, dz.shape[-1]), low)
            dxc = (dz2 @ w).reshape(xc.shape)
            dw = _accumulate(dw, dz2, xc.reshape(-1, xc.shape[-1]))
            if db is not None:
                db = db + jnp.sum(dz2, axis=0)
            return (dw, db), (out, dxc, def_)

        return step

    def run(x, w, b, ef, ei, rx, rw, rb):
        """(losses, dx, dw, db, d extras) for a cotangent of 1 per unit."""
        dw0 = _carry((jnp.zeros_like(w), None if b is None else jnp.zeros_like(b)),
                     x, w, b, rx, *ef)
        (dw, db), (out, dx, de) = lax.scan(stepper(w, b, rw, rb), dw0,
                                           chunked(x, ef, ei, rx, None))
        return unsplit(out), unsplit(dx), dw, db, tuple(unsplit(e) for e in de)

    @jax.custom_vjp
    def f(x, w, b, ef, ei, rx, rw, rb):
        return run(x, w, b, ef, ei, rx, rw, rb)[0]

    def fwd(x, w, b, ef, ei, rx, rw, rb):
        out, dx, dw, db, de = run(x, w, b, ef, ei, rx, rw, rb)
        return out, (x, w, b, ef, ei, rx, rw, rb, dx, dw, db, de)

    def bwd(res, g):
        x, w, b, ef, ei, rx, rw, rb, dx, dw, db, de = res
        flat = g.reshape(-1)
        first = flat[0]
        uniform = jnp.all(flat == first)
        s = first.astype(dx.dtype)

        def scaled(a):  # the forward's gradient times the cotangent, or 0 to recompute into
            return None if a is None else jnp.where(uniform, a * s, jnp.zeros((), a.dtype))

        # a cotangent that differs between units: every chunk recomputed with it, in a loop
        # of no step where the cotangent is uniform (not lax.cond: its result would be a
        # second head-sized gradient beside the forward's; the loop updates it in place)
        xs = chunked(x, ef, ei, rx, g)
        step = stepper(w, b, rw, rb)

        def body(i, carry):
            dw, db, dxs, des = carry
            chunk = jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), xs)
            (dw, db), (_, dxc, dec) = step((dw, db), chunk)
            dxs = lax.dynamic_update_index_in_dim(dxs, dxc, i, 0)
            des = tuple(lax.dynamic_update_index_in_dim(a, c, i, 0) for a, c in zip(des, dec))
            return dw, db, dxs, des

        init = (scaled(dw), scaled(db), split(scaled(dx)), tuple(split(scaled(e)) for e in de))
        dw_, db_, dxs, des = lax.fori_loop(0, jnp.where(uniform, 0, chunks), body, init)
        dx_, de_ = unsplit(dxs), tuple(unsplit(e) for e in des)
        zeros = tuple(_zero_cotangent(a) for a in (rx, rw, rb))
        return (dx_, dw_, db_, de_, tuple(_zero_cotangent(e) for e in ei), *zeros)

    f.defvjp(fwd, bwd)
    if n_units == 0:
        z = _logits(x, w, b)
        zr = None if ref[0] is None else _logits(*ref)
        return fn(z, zr, *extras)
    ef = tuple(extras[i] for i in fl)
    return f(x, w, b, ef, ints, *ref)


def remat_units(fn, x, w, b, extras=(), ref=None, *, units_per_chunk=1, low=None):
    """The second differentiation path of the fused-linear losses (``grad_in_forward=False``):
    ``fn(z, z_ref, *extras)`` per chunk of units, as ``fused_units`` (the same arguments and
    result), differentiated by JAX's own autodiff instead of a custom rule.

    A ``lax.scan`` over the chunks whose body (the chunk's logits, the frozen head's under
    ``stop_gradient``, ``fn``) is a ``jax.checkpoint``: the residuals of reverse mode are the
    body's inputs, never a chunk's logits, and the backward recomputes each chunk's logits
    (four matrix products of the trained head per chunk: the logits, their recomputation,
    ``dX = dz @ W``, ``dW += dz.T @ X``; the frozen head's logits are computed twice). No
    custom derivative: forward mode (``jax.jvp``, ``jacfwd``, ``linearize``), reverse mode,
    second order (``jax.hessian``, Hessian-vector products), ``vmap`` and ``shard_map`` are
    JAX's own. A partial last chunk is padded with copies of the last unit, dropped from the
    result (their cotangent is 0). ``low``: as ``fused_units``' (the logits rounded to it by
    ``lax.reduce_precision``, whose derivative rounds their gradient too)."""
    n_units = x.shape[0]
    rx, rw, rb = (None, None, None) if ref is None else tuple(ref)

    def body(xc, rxc, ec, w, b, rw, rb):
        z = _unfused(_logits(xc, w, b, low))
        zr = None if rxc is None else lax.stop_gradient(_unfused(_logits(rxc, rw, rb, low)))
        return fn(z, zr, *ec)

    if n_units == 0:
        return body(x, rx, tuple(extras), w, b, rw, rb)
    u = int(units_per_chunk)
    chunks, split = _chunks(n_units, u)
    step_body = jax.checkpoint(body, prevent_cse=False)

    def step(carry, chunk):
        xc, rxc, ec = chunk
        return carry, step_body(xc, rxc, ec, w, b, rw, rb)

    _, out = lax.scan(step, None, (split(x), split(rx), tuple(split(e) for e in extras)))
    return out.reshape((chunks * u,) + out.shape[2:])[:n_units]


# ---------------------------------------------------------------------------------------------
# the fused-linear losses: a Form (``_forms.py``) and the plain loss's JAX function


def _units(a, n):
    """Rows [chosen (n); rejected (n)] of (2n, T, ...) as pairs (n, 2T, ...)."""
    t = a.shape[1]
    return a.reshape((2, n, t) + a.shape[2:]).swapaxes(0, 1).reshape((n, 2 * t) + a.shape[2:])


def linear_form(form, plain_fn):
    """The JAX function of the fused-linear loss ``form.name``: the plain loss ``plain_fn`` of
    the per-token log-probs of ``input @ linear_weight.T + linear_bias``, chunked by units
    (``fused_units``), the plain function called on each chunk; returns ``Terms``."""
    from ...backends import Terms
    from . import units_per_chunk

    def loss(input, linear_weight, target, *rest, linear_bias=None, ref_linear_bias=None,
             ignore_index=IGNORE_INDEX, chunk_size=None, memory_budget=None,
             grad_in_forward=True, batch_sum=None, half_dtype=None, **popts):
        popts.pop("reduction", None)
        ignore = int(ignore_index)
        dtype = jnp.result_type(input, linear_weight)
        if linear_bias is not None:
            dtype = jnp.result_type(dtype, linear_bias)
        x, w = input.astype(dtype), linear_weight.astype(dtype)
        b = None if linear_bias is None else linear_bias.astype(dtype)
        rest = list(rest) + [None] * (2 * form.ref + len(form.extras) - len(rest))
        ref = None
        if form.ref:
            rx, rw = rest[0].astype(dtype), rest[1].astype(dtype)
            rb = None if ref_linear_bias is None else ref_linear_bias.astype(dtype)
            rest = rest[2:]
        extras = rest
        n = x.shape[0] // 2 if form.paired else x.shape[0]
        lab = target
        # an ignored position's hidden state never enters (TRL's fused head projects only the
        # scored positions): zeroed, so that a NaN there reaches neither loss nor gradient
        scored = (target != ignore)[..., None]
        x = jnp.where(scored, x, 0.0)
        if form.ref:
            rx = jnp.where(scored, rx, 0.0)
        if form.paired:
            x, lab = _units(x, n), _units(lab, n)
            if form.ref:
                rx = _units(rx, n)
        if form.ref:
            ref = (rx, rw, rb)
        for i, name in enumerate(form.extras):  # one number for the batch: chunked by units
            if name in form.scalars and extras[i] is not None:
                extras[i] = jnp.broadcast_to(jnp.asarray(extras[i]).astype(dtype), (n,))
        scale = None
        if form.nll:  # N / the batch's chosen tokens (TRL's NLL is their mean), both counts
            # the whole batch's under axis_name (the contract's batch_sum)
            total = (lambda c: c) if batch_sum is None else batch_sum
            count = total(jnp.sum(target[:n] != ignore).astype(dtype))
            scale = jnp.broadcast_to(total(jnp.asarray(n, dtype)) / count, (n,))
        present = [i for i, e in enumerate(extras) if e is not None]
        k = len(present)

        def fn(z, zr, lab, *ex):
            tok, valid = token_logps(z, lab, ignore)
            rtok = None if zr is None else token_logps(zr, lab, ignore)[0]
            full = [None] * len(extras)
            for i, e in zip(present, ex[:k]):
                full[i] = e
            args = form.to_plain(tok, valid.astype(tok.dtype), rtok, full,
                                 ex[k] if form.nll else None, popts)
            return plain_fn(*args, **popts).loss

        def token_fn(tok, valid, rtok, *ex):
            full = [None] * len(extras)
            for i, e in zip(present, ex[:k]):
                full[i] = e
            args = form.to_plain(tok, valid, rtok, full, ex[k] if form.nll else None, popts)
            return plain_fn(*args, **popts).loss

        per = units_per_chunk(n, lab.shape[1], w.shape[0], jnp.dtype(dtype).itemsize,
                              chunk_size, memory_budget)
        args = (lab, *[extras[i] for i in present]) + ((scale,) if form.nll else ())
        if grad_in_forward:
            out = fused_units(fn, x, w, b, args, ref, units_per_chunk=per, token_fn=token_fn,
                              ignore_index=ignore, low=half_dtype)
        else:
            out = remat_units(fn, x, w, b, args, ref, units_per_chunk=per, low=half_dtype)
        # the plain loss's denominator weights (from the masks, not the log-probs)
        zeros = jnp.zeros(lab.shape, dtype)
        valid = (lab != ignore).astype(dtype)
        terms = plain_fn(*form.to_plain(zeros, valid, zeros if form.ref else None, extras,
                                        scale, popts), **popts)
        return Terms(out, terms.weight, terms.count, terms.scale)

    loss.__name__ = loss.__qualname__ = form.name
    loss.wants_batch_sum = form.nll
    loss.wants_half_dtype = True
    return loss


def linear_distillation(plain_fn):
    """The JAX function of a fused-linear distillation loss: ``plain_fn(student_logits,
    teacher_logits, labels)`` per chunk of tokens of ``input @ linear_weight.T (+ bias)`` and
    the frozen teacher's ``teacher_input @ teacher_linear_weight.T (+ bias)``; returns the
    plain function's per-token ``Terms`` (shape: input's without D)."""
    from ...backends import Terms
    from . import units_per_chunk

    def loss(input, linear_weight, teacher_input, teacher_linear_weight, labels=None, *,
             linear_bias=None, teacher_linear_bias=None, chunk_size=None, memory_budget=None,
             grad_in_forward=True, half_dtype=None, **popts):
        popts.pop("reduction", None)
        dtype = jnp.result_type(input, linear_weight)
        if linear_bias is not None:
            dtype = jnp.result_type(dtype, linear_bias)
        lead = input.shape[:-1]
        x = input.astype(dtype).reshape(-1, 1, input.shape[-1])
        w = linear_weight.astype(dtype)
        b = None if linear_bias is None else linear_bias.astype(dtype)
        tx = teacher_input.astype(dtype).reshape(-1, 1, teacher_input.shape[-1])
        tw = teacher_linear_weight.astype(dtype)
        tb = None if teacher_linear_bias is None else teacher_linear_bias.astype(dtype)
        ignore = popts.get("ignore_index", IGNORE_INDEX)
        # labels left out: every token counts (a value other than ignore_index)
        lab = (jnp.full(lead, 0 if ignore != 0 else 1, jnp.int32) if labels is None
               else labels).reshape(-1, 1)

        def fn(z, zt, lab):
            return plain_fn(z[:, 0], zt[:, 0], lab[:, 0], **popts).loss

        per = units_per_chunk(x.shape[0], 1, w.shape[0], jnp.dtype(dtype).itemsize,
                              chunk_size, memory_budget)
        engine = fused_units if grad_in_forward else remat_units
        out = engine(fn, x, w, b, (lab,), (tx, tw, tb), units_per_chunk=per, low=half_dtype)
        if labels is None:
            return Terms(out.reshape(lead))
        keep = labels != ignore
        return Terms(out.reshape(lead), keep.astype(out.dtype), keep)

    loss.wants_half_dtype = True
    return loss
