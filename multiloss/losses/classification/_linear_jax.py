"""linear_cross_entropy on JAX: ``cross_entropy(input @ linear_weight.T + linear_bias, target)``
computed over tiles of (rows x classes), so that the (N, C) logits are never materialised.

Tiling. The rows are split into chunks whose logits over every class fit in the budget (one
block of classes: each chunk's logits are computed once). Where fewer than 128 rows would fit
(a large vocabulary against the budget) chunks of up to 512 rows are split into blocks of
classes instead (a product over few rows is slow, and dW's update is one): pass 1
over the blocks of a chunk keeps a running max ``m`` and sum ``s`` per row (the online
log-sum-exp), the target's logit and the smoothing sums; pass 2 recomputes each block's
logits for the gradient.

Differentiation: a ``jax.custom_jvp`` whose tangent is linear in the tangents of (input,
linear_weight, bias, class weight, probability targets): per chunk of rows, ``sum_c dl/dz_c
dz_c`` with ``dz = dX_c W^T + X_c dW^T + db`` (through the cap's ``1 - tanh^2``), a
``lax.scan`` over the chunks, each rematerialised (``jax.checkpoint``). Forward mode
(``jax.jvp``, ``jacfwd``) evaluates it (three products per chunk); reverse mode transposes it
into the one-pass gradient of each chunk, ``dX_c = dz_c @ W`` and ``dW += dz_c.T @ X_c``, after
recomputing the chunk's logits: four matrix products in all (the logits of the loss, their
recomputation, dX, dW), never the (N, C) logits; second order (``jax.hessian``,
``jacrev(jacrev)``, Hessian-vector products) differentiates the same expressions. (The
custom VJP that this replaced computed the gradients in the forward, three products, but had
no forward mode and no reverse-over-reverse.)

Budget: ``memory_budget`` bytes (default 128 MiB) for a tile's three temporaries (logits,
softmax, gradient); ``chunk_size`` fixes the rows per chunk instead. Chunks and blocks are
balanced; one that does not divide N (or C) is handled by shifting the last chunk back to end
at N, its rows of the previous chunk masked, so that one compiled body serves every chunk.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ...backends import Terms
from ._linear_spec import DEFAULT_MEMORY_BUDGET

#: Rows per chunk below which the classes are split into blocks instead (a product over fewer
#: rows is slow: dW's update sums over the chunk's rows).
_MIN_ROWS = 128
#: Rows per chunk where the classes are split into blocks.
_BLOCKED_ROWS = 512
#: Classes per block below which a chunk of rows is made smaller rather than the block.
_MIN_BLOCK = 512


class _Cfg(NamedTuple):
    n_classes: int
    positions: int  # prod of the K extra dims (1 without)
    prob: bool
    ignore_index: int
    smoothing: float
    softcap: float | None
    z_loss: float
    rows: int  # rows per chunk
    classes: int  # classes per block


def _cdiv(a, b):
    return -(-a // b)


def plan(n_rows, n_classes, positions, itemsize, chunk_size=None, memory_budget=None):
    """(rows per chunk, classes per block) for a budget of ``memory_budget`` bytes: chunks of
    rows spanning every class where at least ``_MIN_ROWS`` rows fit, else blocks of classes."""
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    per_logit = 3 * itemsize * max(1, positions)
    n, c = max(1, n_rows), max(1, n_classes)
    if chunk_size is not None:
        rows = max(1, min(int(chunk_size), n))
    elif budget // (per_logit * c) >= min(n, _MIN_ROWS):
        rows = min(n, budget // (per_logit * c))
    else:
        # blocks of classes, with chunks of enough rows for efficient matrix products (dW's
        # update is a product over the chunk's rows), fewer where a block of _MIN_BLOCK
        # classes would not fit
        rows = max(1, min(n, _BLOCKED_ROWS, budget // (per_logit * min(c, _MIN_BLOCK))))
    classes = max(1, min(c, budget // (per_logit * rows)))
    # balanced: as few chunks and blocks as the sizes allow, each as even as possible
    rows = _cdiv(n, _cdiv(n, rows))
    classes = _cdiv(c, _cdiv(c, classes))
    return rows, classes


# ---------------------------------------------------------------------------------------------
# shard_map: loop carries vary like the inputs


def _axes(x):
    """The manual mesh axes an array varies over inside ``shard_map`` (empty outside)."""
    typeof = getattr(jax, "typeof", None)
    if typeof is None or x is None:  # pragma: no cover - a JAX without varying types
        return set()
    t = typeof(x)
    m = getattr(t, "manual_axis_type", None)  # JAX 0.10
    return set(m.varying) if m is not None else set(getattr(t, "vma", ()) or ())


def _carry(init, *refs):
    """``init`` (a pytree of arrays, None leaves allowed) with every array made varying over
    the mapped axes that any of ``refs`` or ``init`` varies over: inside ``shard_map`` a loop
    carry created by ``jnp.zeros`` is replicated while the body's result varies like the
    inputs, and the carry's type must be the same in and out. Outside shard_map: no-op."""
    leaves = [v for v in jax.tree.leaves(init) if v is not None]
    axes = set()
    for x in (*refs, *leaves):
        if x is not None:
            axes |= _axes(x)
    if not axes:
        return init

    def vary(x):
        missing = tuple(sorted(axes - _axes(x)))
        if not missing:
            return x
        if hasattr(lax, "pcast"):
            return lax.pcast(x, missing, to="varying")
        return lax.pvary(x, missing)  # pragma: no cover - JAX before 0.8.2

    return jax.tree.map(vary, init)


# ---------------------------------------------------------------------------------------------
# chunks, blocks and tiles


def _at(i, n, size):
    """Start of chunk i of ``size`` along an axis of length n, and the mask of its entries
    not in an earlier chunk (the last chunk is shifted back to end at n)."""
    start = jnp.minimum(i * size, n - size)
    fresh = start + jnp.arange(size) >= i * size
    return start, fresh


def _take(a, start, size, axis=0):
    return lax.dynamic_slice_in_dim(a, start, size, axis=axis)


def _put(buf, start, fresh, new, axis=0):
    """Write ``new`` into ``buf`` at ``start`` along ``axis``, in place; where ``fresh`` is
    False the old entries are kept."""
    old = _take(buf, start, new.shape[axis], axis)
    shape = [1] * new.ndim
    shape[axis] = new.shape[axis]
    return lax.dynamic_update_slice_in_dim(buf, jnp.where(fresh.reshape(shape), new, old),
                                           start, axis=axis)


def _expand(v, ndim):
    """A per-row quantity (rows,) or (rows, P) broadcast against a tile (rows, classes[, P])."""
    return jnp.expand_dims(v, 1) if ndim else v


def _tile(xc, w2, b2, cs, cfg):
    """The logits of rows ``xc`` and classes [cs, cs + classes): ``(z, tanh(y / softcap))``,
    (rows, classes) or (rows, classes, P); the tanh is None without a cap."""
    p = cfg.positions
    wb = _take(w2, cs * p, cfg.classes * p)
    y = xc @ wb.T
    if b2 is not None:
        y = y + _take(b2, cs * p, cfg.classes * p)
    if p > 1:
        y = y.reshape(xc.shape[0], cfg.classes, p)
    if not cfg.softcap:
        return y, None
    th = jnp.tanh(y / cfg.softcap)
    return cfg.softcap * th, th


def _class_vec(v, cs, cfg, ndim):
    """Block [cs, cs + classes) of a per-class vector, shaped (1, classes[, 1])."""
    blk = _take(v, cs, cfg.classes)
    return blk.reshape((1, cfg.classes) + (1,) * (ndim - 2))


def _col_mask(fresh, ndim):
    return fresh.reshape((1, -1) + (1,) * (ndim - 2))


def _masks(tc, cfg):
    valid = tc != cfg.ignore_index
    in_range = (tc >= 0) & (tc < cfg.n_classes)
    counts = valid & in_range
    invalid = valid & ~in_range
    return counts, invalid, jnp.where(counts, tc, 0)


def _row_factor(tc, cfg, dtype):
    """1 where a row counts, 0 where it is ignored, NaN where its index is out of range."""
    if cfg.prob:
        return jnp.ones(tc.shape[:1] + tc.shape[2:], dtype)
    counts, invalid, _ = _masks(tc, cfg)
    return jnp.where(invalid, jnp.nan, jnp.where(counts, 1.0, 0.0)).astype(dtype)


def _smoothed(tc, cfg):
    e, c = cfg.smoothing, cfg.n_classes
    return tc * (1.0 - e) + e / c if e else tc


# ---------------------------------------------------------------------------------------------
# pass 1: the online log-sum-exp, the target's logit, the smoothing sums


def _pass1(xc, tc, w2, b2, w, cfg, z=None):
    """Per row of the chunk: ``(m, log_s, loss, z_t)`` (z_t: the target's logit). With ``z``,
    the logits of every class (one block), no product is computed."""
    rows = xc.shape[0]
    c, e = cfg.n_classes, cfg.smoothing
    shape = (rows, cfg.positions) if cfg.positions > 1 else (rows,)
    dtype = xc.dtype
    neg = jnp.full(shape, -jnp.inf, dtype)
    zero = jnp.zeros(shape, dtype)
    if not cfg.prob:
        counts, invalid, safe = _masks(tc, cfg)
    need_sum = cfg.prob or bool(e)

    def update(j, state, z):
        m, s, zt, sm, mass = state
        cs, fresh = _at(j, c, cfg.classes)
        col = _col_mask(fresh, z.ndim)
        zm = jnp.where(col, z, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(zm, axis=1))
        base = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        s = s * jnp.exp(m - base) + jnp.sum(jnp.exp(zm - _expand(base, 1)), axis=1)
        if not cfg.prob:
            local = safe - cs
            here = (local >= 0) & (local < cfg.classes) & (safe >= j * cfg.classes)
            picked = jnp.take_along_axis(z, _expand(jnp.clip(local, 0, cfg.classes - 1), 1),
                                         axis=1)
            zt = zt + jnp.where(here, jnp.squeeze(picked, 1), 0.0)
        if need_sum:
            # sm = sum over the classes seen of coef_c (z_c - m), kept relative to the
            # running max (rescaled as it grows) so that large logits cancel exactly
            if cfg.prob:
                coef = _smoothed(_take(tc, cs, cfg.classes, axis=1), cfg)
                if w is not None:
                    coef = coef * _class_vec(w, cs, cfg, z.ndim)
            else:
                coef = jnp.ones((1, cfg.classes) + (1,) * (z.ndim - 2), dtype)
                if w is not None:
                    coef = _class_vec(w, cs, cfg, z.ndim)
            coef = jnp.where(col, coef, 0.0)
            shift = jnp.where(jnp.isfinite(m), base - m, 0.0)
            sm = sm - mass * shift + jnp.sum(coef * (z - _expand(base, 1)), axis=1)
            mass = mass + jnp.sum(jnp.broadcast_to(coef, z.shape), axis=1)
        return jnp.where(jnp.isfinite(m_new), m_new, m), s, zt, sm, mass

    def block(j, state):
        return update(j, state, _tile(xc, w2, b2, _at(j, c, cfg.classes)[0], cfg)[0])

    state = _carry((neg, zero, zero, zero, zero), xc, tc, w2, b2, w, z)
    if z is not None:
        m, s, zt, sm, mass = update(0, state, z)
    else:
        m, s, zt, sm, mass = lax.fori_loop(0, _cdiv(c, cfg.classes), block, state)
    m_fin = jnp.where(jnp.isfinite(m), m, 0.0)
    # m == -inf (all logits -inf): -inf, the loss NaN as torch's; s is inf (or NaN) exactly
    # where a logit is +inf (or NaN): NaN for the whole row, as log_softmax's x - max
    log_s = jnp.where(jnp.isfinite(s), jnp.log(s) + (m - m_fin), jnp.nan)
    lse = m_fin + log_s
    if cfg.prob:
        loss = mass * log_s - sm
        if cfg.z_loss:
            loss = loss + cfg.z_loss * lse * lse
        return m_fin, log_s, loss, None
    nlp_t = log_s - (zt - m_fin)  # -logp[t], in the shifted form
    w_t = None if w is None else jnp.take(w, safe)
    loss = nlp_t if w is None else w_t * nlp_t
    if e:
        loss = (1.0 - e) * loss + (e / c) * (mass * log_s - sm)
    if cfg.z_loss:
        zl = cfg.z_loss * lse * lse
        loss = loss + (zl if w is None else w_t * zl)
    loss = jnp.where(counts | invalid, loss, 0.0) * jnp.where(invalid, jnp.nan, 1.0)
    return m_fin, log_s, loss, zt


# ---------------------------------------------------------------------------------------------
# the tangent of a chunk: linear in (dX, dW, db, dt, dw)


def _coefficients(tc, w, cfg, m, log_s):
    """Per row (cotangent 1, times the row factor ``a``): ``(a, scale, on_target)`` of
    ``dl/dz_c = p_c scale - [c == t] on_target - a (e/C) w_c`` (class indices) or
    ``p_c scale - a coef_c`` (probabilities, ``on_target`` None), and the safe indices."""
    c, e = cfg.n_classes, cfg.smoothing
    lse = m + log_s
    a = _row_factor(tc, cfg, m.dtype)
    if cfg.prob:
        ts_all = _smoothed(tc, cfg)
        coef_all = ts_all if w is None else ts_all * w.reshape((1, c) + (1,) * (tc.ndim - 2))
        k = jnp.sum(coef_all, axis=1)
        if cfg.z_loss:
            k = k + 2.0 * cfg.z_loss * lse
        return a, a * k, None, None
    _, _, safe = _masks(tc, cfg)
    w_t = 1.0 if w is None else jnp.take(w, safe)
    on_target = (1.0 - e) * w_t * a
    scale = on_target
    if e:
        scale = scale + (e / c) * (c if w is None else jnp.sum(w)) * a
    if cfg.z_loss:
        scale = scale + 2.0 * cfg.z_loss * lse * w_t * a
    return a, scale, on_target, safe


def _chunk_tangent(xc, tc, m, log_s, w2, b2, w, dxc, dw2, db2, dtc, dw, cfg):
    """The tangent of the chunk's losses (rows[, P]): ``sum_c dl/dz_c dz_c`` over blocks of
    classes (``dz``: the tangent of the capped logits, from dX, dW, db) plus the tangents of
    the class weight and of probability targets. Linear in the tangents; reverse mode
    transposes it into the one-pass gradient (dz @ W, dz.T @ X) of each chunk."""
    c, e, p = cfg.n_classes, cfg.smoothing, cfg.positions
    a, scale, on_target, safe = _coefficients(tc, w, cfg, m, log_s)
    counted = a != 0
    logit_tangent = dxc is not None or dw2 is not None or db2 is not None
    width = cfg.classes * p

    def block(j, tan):
        cs, fresh = _at(j, c, cfg.classes)
        z, th = _tile(xc, w2, b2, cs, cfg)
        col = _col_mask(fresh, z.ndim)
        shifted = z - _expand(m, 1)
        nlp = _expand(log_s, 1) - shifted  # -logp of the tile
        wblk = None if w is None else _class_vec(w, cs, cfg, z.ndim)
        out = tan
        if logit_tangent:
            g = jnp.exp(-nlp) * _expand(scale, 1)
            if cfg.prob:
                ts = _smoothed(_take(tc, cs, cfg.classes, axis=1), cfg)
                g = g - _expand(a, 1) * (ts if wblk is None else ts * wblk)
            else:
                iota = lax.broadcasted_iota(safe.dtype, z.shape, 1) + cs
                g = jnp.where(iota == _expand(safe, 1), g - _expand(on_target, 1), g)
                if e:
                    uni = _expand(a * (e / c), 1)
                    g = g - (uni if wblk is None else uni * wblk)
            # an ignored row's is p * 0: NaN where its logits are NaN, as torch's gradient
            g = jnp.where(col, g, 0.0)
            lo = cs * p
            dy = 0.0
            if dxc is not None:
                dy = dy + dxc @ (w2 if width == w2.shape[0] else _take(w2, lo, width)).T
            if dw2 is not None:
                dy = dy + xc @ (dw2 if width == w2.shape[0] else _take(dw2, lo, width)).T
            if db2 is not None:
                dy = dy + (db2 if width == w2.shape[0] else _take(db2, lo, width))
            dy = jnp.broadcast_to(dy, (xc.shape[0], width))
            if p > 1:
                dy = dy.reshape(xc.shape[0], cfg.classes, p)
            if th is not None:
                dy = dy * (1.0 - th * th)
            out = out + jnp.sum(g * dy, axis=1)
        dcoef = None
        if dtc is not None:  # probability targets: dl/dt_c = (1 - e) w_c (-logp_c)
            dcoef = (1.0 - e) * _take(dtc, cs, cfg.classes, axis=1)
            if wblk is not None:
                dcoef = dcoef * wblk
        if dw is not None:  # dl/dw_c: t'_c (-logp_c), or (1 - e) [c == t] + e / C
            dwblk = _class_vec(dw, cs, cfg, z.ndim)
            if cfg.prob:
                part = _smoothed(_take(tc, cs, cfg.classes, axis=1), cfg) * dwblk
            else:
                iota = lax.broadcasted_iota(safe.dtype, z.shape, 1) + cs
                part = jnp.where(iota == _expand(safe, 1), (1.0 - e) * dwblk, 0.0)
                if e:
                    part = part + (e / c) * dwblk
            dcoef = part if dcoef is None else dcoef + part
        if dcoef is not None:
            dcoef = jnp.where(col & _expand(counted, 1), _expand(a, 1) * dcoef, 0.0)
            out = out + jnp.sum(dcoef * nlp, axis=1)
        return out

    tan = _carry(jnp.zeros(m.shape, m.dtype), xc, w2, b2, w, m, dxc, dw2, db2, dtc, dw)
    if _single(cfg):
        tan = block(0, tan)
    else:
        # each block rematerialised too: the transposed loop over blocks keeps no tile
        tan = lax.fori_loop(0, _cdiv(c, cfg.classes), jax.checkpoint(block, prevent_cse=False),
                            tan)
    if dw is not None and not cfg.prob and cfg.z_loss:
        lse = m + log_s
        tan = tan + jnp.where(counted, a * cfg.z_loss * lse * lse * jnp.take(dw, safe), 0.0)
    return jnp.where(counted | jnp.isnan(a), tan, 0.0)


# ---------------------------------------------------------------------------------------------
# the loops over chunks of rows


def _row_shape(n, cfg):
    return (n, cfg.positions) if cfg.positions > 1 else (n,)


def _single(cfg):
    """Whether a chunk's tile spans every class (one block: its logits computed once)."""
    return cfg.classes >= cfg.n_classes


def _forward(x, w2, b2, t, w, cfg):
    """(loss, m, log_s) of every row: pass 1 over every chunk."""
    n = x.shape[0]
    dtype = x.dtype
    out = tuple(jnp.zeros(_row_shape(n, cfg), dtype) for _ in range(3))
    if n == 0:
        return out

    def chunk(i, out):
        loss, m, log_s = out
        start, fresh = _at(i, n, cfg.rows)
        mc, lc, lossc, _ = _pass1(_take(x, start, cfg.rows), _take(t, start, cfg.rows), w2, b2,
                                  w, cfg)
        return (_put(loss, start, fresh, lossc), _put(m, start, fresh, mc),
                _put(log_s, start, fresh, lc))

    return lax.fori_loop(0, _cdiv(n, cfg.rows), chunk, _carry(out, x, w2, b2, t, w))


def _tangent(x, w2, b2, t, w, cfg, m, log_s, dx, dw2, db2, dt, dw):
    """The tangent of every row's loss: ``_chunk_tangent`` over chunks of rows, a ``lax.scan``
    over the rows padded to whole chunks (reverse mode transposes it into a scan whose
    cotangents of X are its stacked outputs, and of W, b, w its carries), each chunk
    rematerialised (``jax.checkpoint``): the residuals of ``jax.grad`` are the inputs and the
    per-row log-sum-exp, never the logits."""
    n = x.shape[0]
    rows = cfg.rows
    chunks = _cdiv(n, rows)
    pad = chunks * rows - n

    def split(v, fill=0):
        if v is None:
            return None
        if pad:
            v = jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1), constant_values=fill)
        return v.reshape((chunks, rows) + v.shape[1:])

    fill_t = 0 if cfg.prob else cfg.ignore_index
    xs = (split(x), split(t, fill_t), split(m), split(log_s), split(dx), split(dt))
    body = jax.checkpoint(partial(_chunk_tangent, cfg=cfg), prevent_cse=False)

    def step(carry, chunk):
        xc, tc, mc, lc, dxc, dtc = chunk
        return carry, body(xc, tc, mc, lc, w2, b2, w, dxc, dw2, db2, dtc, dw)

    _, tan = lax.scan(step, None, xs)
    return tan.reshape((chunks * rows,) + tan.shape[2:])[:n]


def _nonzero(v):
    return None if v is None or isinstance(v, SymbolicZero) else v


@partial(jax.custom_jvp, nondiff_argnums=(5,))
def _lce(x, w2, b2, t, w, cfg):
    return _forward(x, w2, b2, t, w, cfg)[0]


@partial(_lce.defjvp, symbolic_zeros=True)
def _lce_jvp(cfg, primals, tangents):
    x, w2, b2, t, w = primals
    dx, dw2, db2, dt, dw = (_nonzero(v) for v in tangents)
    if b2 is None:
        db2 = None
    if w is None:
        dw = None
    if not cfg.prob:
        dt = None
    loss, m, log_s = _forward(x, w2, b2, t, w, cfg)
    if all(v is None for v in (dx, dw2, db2, dt, dw)) or x.shape[0] == 0:
        return loss, jnp.zeros_like(loss)
    cast = [None if v is None else v.astype(x.dtype) for v in (dx, dw2, db2, dt, dw)]
    return loss, _tangent(x, w2, b2, t, w, cfg, m, log_s, *cast)


# ---------------------------------------------------------------------------------------------


def _linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=None, label_smoothing=0.0, softcap=None, z_loss=0.0,
                         chunk_size=None, memory_budget=None):
    dtype = jnp.result_type(input, linear_weight)
    if linear_bias is not None:
        dtype = jnp.result_type(dtype, linear_bias)
    x, wl = input.astype(dtype), linear_weight.astype(dtype)
    n_classes, out = wl.shape[0], tuple(wl.shape[1:-1])
    positions = 1
    for s in out:
        positions *= s
    unbatched = x.ndim == 1
    prob = jnp.issubdtype(target.dtype, jnp.floating)
    if unbatched:
        x, target = x[None], target[None]
    n, d = x.shape
    ignore = -100 if ignore_index is None else int(ignore_index)
    w2 = wl.reshape(n_classes * positions, d)
    b2 = None if linear_bias is None else linear_bias.astype(dtype).reshape(-1)
    w = None if weight is None else weight.astype(dtype)
    kdim = (positions,) if positions > 1 else ()
    if prob:
        t = target.astype(dtype).reshape((n, n_classes) + kdim)
    else:
        t = target.reshape((n,) + kdim)
    rows, classes = plan(n, n_classes, positions, jnp.dtype(dtype).itemsize, chunk_size,
                         memory_budget)
    cfg = _Cfg(n_classes, positions, bool(prob), ignore, float(label_smoothing),
               None if softcap is None else float(softcap), float(z_loss), rows, classes)
    loss = _lce(x, w2, b2, t, w, cfg).reshape((n, *out))
    if unbatched:
        loss = loss[0]
    if prob:
        return Terms(loss)
    tgt = target.reshape((n, *out))
    if unbatched:
        tgt = tgt[0]
    counts = (tgt != ignore) & (tgt >= 0) & (tgt < n_classes)
    w_t = 1.0 if w is None else jnp.take(w, jnp.where(counts, tgt, 0))
    return Terms(loss, jnp.where(counts, w_t, 0.0).astype(dtype), counts)


def linear_cross_entropy(input, linear_weight, target, *, shift=False, **options):
    """The spec's implementation: ``_linear_cross_entropy``, or with ``shift`` (transformers'
    causal-LM shift) that function on the flattened hidden states input[:, :-1] (N * (T - 1),
    D) and targets target[:, 1:], its terms reshaped to (N, T - 1)."""
    if not shift:
        return _linear_cross_entropy(input, linear_weight, target, **options)
    n, steps, d = input.shape[0], max(input.shape[1] - 1, 0), input.shape[2]
    terms = _linear_cross_entropy(input[:, :-1].reshape(n * steps, d), linear_weight,
                                  target[:, 1:].reshape(n * steps), **options)
    return Terms(*(None if a is None else a.reshape(n, steps) for a in terms))
