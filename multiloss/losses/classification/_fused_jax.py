"""Cross-entropy and nll at the memory limit on JAX: ``jax.custom_jvp`` functions whose forward
reads the logits once and saves only the per-row log-sum-exp, and whose tangent is linear in
the input tangents, ``sum_c g_c dx_c`` with ``g = softmax * a - b * onehot - c * w`` (torch's
gradient). Reverse mode transposes it into the one-pass gradient (fused by XLA into one loop);
the tangent is rematerialised (``jax.checkpoint``), so the residuals of ``jax.grad`` are the
logits and the per-row log-sum-exp, not the softmax. Forward mode (``jax.jvp``, ``jacfwd``)
evaluates the same expression, and second order (``jax.hessian``, ``jacrev(jacrev)``,
Hessian-vector products) differentiates it: the Hessian of the loss.

The log-sum-exp of a row, ``lse = m + log(sum_c exp(x_c - m))``, needs the row's maximum
``m`` only to avoid overflow and underflow. In float32 and float64 the forward first computes
``s0 = sum_c exp(x_c)`` without a shift (one read of the logits, in the same fused reduction
that XLA uses for the shifted sum). Where every row's ``s0`` is finite and above
``C * tiny / eps`` (``tiny``: the smallest normal number), the unshifted sum is as accurate as
the shifted one (a term lost to underflow is below ``tiny``, so all of them together are below
``eps * s0``; ``exp(x)`` has the same relative accuracy as ``exp(x - m)``, which even carries
the rounding of ``x - m``), and ``lse = log(s0)``. Otherwise (a logit above ~88 in float32,
rows of very negative logits, NaN, infinities) a ``lax.cond`` takes the exact two-pass path,
``jax.nn.log_softmax``'s own formulas, on the whole batch; only the taken branch runs. Under
``vmap`` both branches run (select). float16 and bfloat16 always take the exact path.

The residuals are ``(m, log_s)`` per row (``m = 0`` on the fast path): ``-logp[t] = log_s -
(x_t - m)`` keeps the shifted form, so logits of 1e4 lose nothing to the rounding of ``m +
log_s``. The gradients are torch's formulas (those of log_softmax's backward):

    index targets:  dl/dx_c = a (p_c ((1-e) w_t + (e/C) W) - (1-e) w_t [c == t] - (e/C) w_c)
    probabilities:  dl/dx_c = a (p_c sum_k w_k t'_k - w_c t'_c);  dl/dt_c = a (1-e) w_c (-logp_c)

with ``a`` the cotangent of the row, ``p = softmax(x)``, ``e`` the label smoothing, ``W =
sum_c w_c``, ``t' = (1-e) t + e/C``. The tangent of the class ``weight`` is there too (a
symbolic zero when it is not differentiated: nothing computed).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

_FAST_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


def _tiny_sum(dtype, n_classes: int) -> float:
    """The smallest unshifted ``sum_c exp(x_c)`` for which terms lost to underflow (each below
    the smallest normal number) add up to less than ``eps`` of the sum."""
    fi = np.finfo(dtype)
    return float(max(n_classes, 1) * fi.tiny / fi.eps)


def _lse_parts(x, axis, coef=None):
    """Per row (the class axis reduced): ``m``, ``log_s`` with ``lse = m + log_s``, and
    ``sum_c coef_c (x_c - m)`` (None without ``coef``)."""

    def exact(x, coef):
        m = jnp.max(x, axis, keepdims=True, initial=-jnp.inf)
        shifted = x - m
        log_s = jnp.log(jnp.sum(jnp.exp(shifted), axis))
        sxm = None if coef is None else jnp.sum(coef * shifted, axis)
        return jnp.squeeze(m, axis), log_s, sxm

    if x.dtype not in _FAST_DTYPES:
        return exact(x, coef)
    s0 = jnp.sum(jnp.exp(x), axis)
    ok = jnp.all(jnp.isfinite(s0) & (s0 > _tiny_sum(x.dtype, x.shape[axis])))

    def fast(x, coef, s0):
        sxm = None if coef is None else jnp.sum(coef * x, axis)
        return jnp.zeros_like(s0), jnp.log(s0), sxm

    return lax.cond(ok, fast, lambda x, coef, s0: exact(x, coef), x, coef, s0)


def _along(v, axis, ndim):
    """A per-class vector ``v`` (C,) shaped to broadcast along ``axis`` of an ndim array."""
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def _class_weight(w, x):
    return None if w is None else w.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# differentiation: custom JVPs whose tangent is linear in the input tangents


def _zero(t):
    """Whether a tangent is a symbolic zero (the input is not differentiated)."""
    return t is None or isinstance(t, SymbolicZero)


def _linear(f):
    """``f(primals..., tangents...)``, linear in the tangents, recomputed rather than saved
    under reverse mode: the residuals of ``jax.grad`` are ``f``'s primal inputs (the logits and
    the per-row log-sum-exp), not the (N, C) softmax, and its transpose is the one-pass
    gradient. Forward mode evaluates it as it stands."""
    return jax.checkpoint(f, prevent_cse=False)


# ---------------------------------------------------------------------------------------------
# class-index targets


@partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def ce_index(x, t, w, axis, ignore_index, smoothing):
    """Unreduced cross-entropy of logits ``x`` against class indices ``t`` (torch's
    ``reduction="none"``): 0 where ignored, NaN where an index is out of range."""
    return _ce_index_fwd(x, t, w, axis, ignore_index, smoothing)[0]


def _index_masks(t, n_classes, ignore_index):
    valid = t != ignore_index
    in_range = (t >= 0) & (t < n_classes)
    counts = valid & in_range
    invalid = valid & ~in_range
    return counts, invalid, jnp.where(counts, t, 0)


def _ce_index_fwd(x, t, w, axis, ignore_index, smoothing):
    n_classes = x.shape[axis]
    w = _class_weight(w, x)
    counts, invalid, safe = _index_masks(t, n_classes, ignore_index)
    coef = None
    if smoothing:
        coef = jnp.ones((), x.dtype) if w is None else _along(w, axis, x.ndim)
    m, log_s, sxm = _lse_parts(x, axis, coef)
    x_t = jnp.squeeze(jnp.take_along_axis(x, jnp.expand_dims(safe, axis), axis=axis), axis)
    nlp_t = log_s - (x_t - m)  # -logp[t]
    w_t = None if w is None else jnp.take(w, safe)
    loss = nlp_t if w is None else w_t * nlp_t
    if smoothing:
        total_w = n_classes if w is None else jnp.sum(w)
        smooth = total_w * log_s - sxm  # sum_c w_c (-logp[c])
        loss = (1.0 - smoothing) * loss + (smoothing / n_classes) * smooth
    # 0 where ignored; NaN where the index is out of range (only reachable under a trace, as
    # concrete indices are checked before the call), the gradient NaN too
    row = jnp.where(invalid, jnp.nan, jnp.where(counts, 1.0, 0.0)).astype(x.dtype)
    loss = jnp.where(counts | invalid, loss, 0.0) * jnp.where(invalid, jnp.nan, 1.0)
    return loss.astype(x.dtype), (safe, w, m, log_s, nlp_t, row)


@partial(ce_index.defjvp, symbolic_zeros=True)
def _ce_index_jvp(axis, ignore_index, smoothing, primals, tangents):
    x, t, w = primals
    dx, _, dw = tangents
    loss, (safe, w, m, log_s, nlp_t, row) = _ce_index_fwd(x, t, w, axis, ignore_index,
                                                          smoothing)
    n_classes = x.shape[axis]
    e = smoothing
    ex = partial(jnp.expand_dims, axis=axis)
    tan = jnp.zeros_like(loss)
    if not _zero(dx):

        def along_x(x, safe, w, m, log_s, dx):
            # sum_c dl/dx_c dx_c, dl/dx_c = p_c ((1-e) w_t + (e/C) W) - (1-e) w_t [c == t]
            # - (e/C) w_c: the gradient is the transpose, one pass over x
            if w is None:
                on_target, scale = 1.0 - e, None
            else:
                w_t = jnp.take(w, safe)
                on_target = (1.0 - e) * w_t
                scale = on_target + (e / n_classes) * jnp.sum(w) if e else on_target
            p = jnp.exp((x - ex(m)) - ex(log_s))
            g = p if scale is None else p * ex(scale)
            onehot = lax.broadcasted_iota(safe.dtype, x.shape, axis) == ex(safe)
            g = jnp.where(onehot, g - (on_target if scale is None else ex(on_target)), g)
            if e:
                g = g - (e / n_classes if w is None else (e / n_classes) * _along(w, axis, x.ndim))
            return jnp.sum(g * dx.astype(x.dtype), axis)

        tan = tan + _linear(along_x)(x, safe, w, m, log_s, dx)
    if w is not None and not _zero(dw):
        dw = dw.astype(x.dtype)
        part = (1.0 - e) * jnp.take(dw, safe) * nlp_t
        if e:
            nlp = ex(log_s) - (x - ex(m))
            part = part + (e / n_classes) * jnp.sum(_along(dw, axis, x.ndim) * nlp, axis)
        tan = tan + part
    # 0 where ignored (whatever the tangent), NaN where the index is out of range
    return loss, jnp.where(row == 0, 0.0, tan * row).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# class-probability targets


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def ce_prob(x, t, w, axis, smoothing):
    """Unreduced cross-entropy of logits ``x`` against class probabilities ``t`` (x's shape)."""
    return _ce_prob_fwd(x, t, w, axis, smoothing)[0]


def _smoothed(t, smoothing, n_classes):
    return t * (1.0 - smoothing) + smoothing / n_classes if smoothing else t


def _ce_prob_fwd(x, t, w, axis, smoothing):
    n_classes = x.shape[axis]
    w = _class_weight(w, x)
    ts = _smoothed(t, smoothing, n_classes)
    coef = ts if w is None else ts * _along(w, axis, x.ndim)
    m, log_s, sxm = _lse_parts(x, axis, coef)
    mass = jnp.sum(coef, axis)
    loss = mass * log_s - sxm  # -sum_c w_c t'_c logp_c
    return loss.astype(x.dtype), (w, m, log_s, mass)


@partial(ce_prob.defjvp, symbolic_zeros=True)
def _ce_prob_jvp(axis, smoothing, primals, tangents):
    x, t, w = primals
    dx, dt, dw = tangents
    loss, (w, m, log_s, mass) = _ce_prob_fwd(x, t, w, axis, smoothing)
    n_classes = x.shape[axis]
    ex = partial(jnp.expand_dims, axis=axis)
    dx = None if _zero(dx) else dx.astype(x.dtype)
    dt = None if _zero(dt) else dt.astype(x.dtype)
    dw = None if w is None or _zero(dw) else dw.astype(x.dtype)
    if dx is None and dt is None and dw is None:
        return loss, jnp.zeros_like(loss)

    def tangent(x, t, w, m, log_s, mass, dx, dt, dw):
        # dl = sum_c (mass p_c - coef_c) dx_c + sum_c dcoef_c (-logp_c), coef = w t'
        wb = None if w is None else _along(w, axis, x.ndim)
        shifted = x - ex(m)
        out = 0.0
        if dx is not None:
            ts = _smoothed(t, smoothing, n_classes)
            coef = ts if wb is None else ts * wb
            out = out + jnp.sum((jnp.exp(shifted - ex(log_s)) * ex(mass) - coef) * dx, axis)
        if dt is not None or dw is not None:
            dcoef = 0.0
            if dt is not None:
                dcoef = (1.0 - smoothing) * (dt if wb is None else dt * wb)
            if dw is not None:
                dcoef = dcoef + _smoothed(t, smoothing, n_classes) * _along(dw, axis, x.ndim)
            out = out + jnp.sum(dcoef * (ex(log_s) - shifted), axis)
        return out

    tan = _linear(tangent)(x, t, w, m, log_s, mass, dx, dt, dw)
    return loss, tan.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# nll (log-probability inputs): a gather forward, a one-pass gradient


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def nll_index(x, t, w, axis, ignore_index):
    """Unreduced nll of log-probabilities ``x``: ``-w[t] x[t]``, 0 where ignored, NaN where
    an index is out of range."""
    return _nll_fwd(x, t, w, axis, ignore_index)[0]


def _nll_fwd(x, t, w, axis, ignore_index):
    w = _class_weight(w, x)
    counts, invalid, safe = _index_masks(t, x.shape[axis], ignore_index)
    x_t = jnp.squeeze(jnp.take_along_axis(x, jnp.expand_dims(safe, axis), axis=axis), axis)
    loss = -x_t if w is None else -(x_t * jnp.take(w, safe))
    row = jnp.where(invalid, jnp.nan, jnp.where(counts, 1.0, 0.0)).astype(x.dtype)
    loss = jnp.where(counts | invalid, loss, 0.0) * jnp.where(invalid, jnp.nan, 1.0)
    return loss.astype(x.dtype), (x_t, safe, w, row)


@partial(nll_index.defjvp, symbolic_zeros=True)
def _nll_jvp(axis, ignore_index, primals, tangents):
    x, t, w = primals
    dx, _, dw = tangents
    loss, (x_t, safe, w, row) = _nll_fwd(x, t, w, axis, ignore_index)
    tan = jnp.zeros_like(loss)
    if not _zero(dx):

        def along_x(safe, w, dx):
            # -w_t dx_t as a masked sum over the classes: its transpose writes the gradient
            # in one pass (a select), where a gather's is a scatter
            onehot = lax.broadcasted_iota(safe.dtype, dx.shape, axis) == jnp.expand_dims(
                safe, axis)
            dx_t = jnp.sum(jnp.where(onehot, dx, jnp.zeros((), dx.dtype)), axis)
            return -dx_t if w is None else -(dx_t * jnp.take(w, safe))

        tan = tan + along_x(safe, w, dx.astype(x.dtype))
    if w is not None and not _zero(dw):
        tan = tan - jnp.take(dw.astype(x.dtype), safe) * x_t
    # 0 where ignored (whatever the tangent), NaN where the index is out of range
    return loss, jnp.where(row == 0, 0.0, tan * row).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# binary cross-entropy with logits: the gradient written in one pass from (x, t), nothing saved


def log_sigmoid(x):
    """torch's log_sigmoid kernel, min(x, 0) - log1p(exp(-|x|)). Unlike jax.nn.log_sigmoid
    (-logaddexp(-x, 0), whose selects XLA:CPU runs as a separate loop writing an array), it
    fuses into the reduction that consumes it: a forward that reads its inputs once."""
    return jnp.minimum(x, 0) - jnp.log1p(jnp.exp(-jnp.abs(x)))


def torch_pow(x, e):
    """``x ** e`` for a Python number ``e`` as torch's pow(tensor, scalar) kernel computes the
    integer exponents: ``x`` for 1, ``x * x`` for 2, ``x * x * x`` for 3 (the same bits);
    the general power otherwise (torch's vectorised pow is within 1 ulp, not bit-exact, there).
    Besides torch's rounding, it keeps the common exponents fast: XLA:CPU runs the general
    power as a scalar library call per element (focal's ``(1 - p_t) ** 2.0`` at (4096, 8192)
    took most of the loss's time)."""
    if e == 1:
        return x
    if e in (2, 3):
        return lax.integer_pow(x, int(e))
    return x ** e


@jax.custom_jvp
def bce_logits(x, t):
    """(1 - t) x - log_sigmoid(x), with torch's gradients: sigmoid(x) - t and -x."""
    # torch's kernel (1 - t) * x - log_sigmoid(x), bit for bit, infinities included (not
    # x - t * x, which rounds differently and is NaN at x = +inf, t < 1, where torch gives
    # inf), written 0 - ((t - 1) x + log_sigmoid(x)): fl(t - 1) = -fl(1 - t), rounding is
    # symmetric, and 0 - y turns the one -0 into torch's +0. XLA:CPU's fused reduction
    # materialises the broadcast 1 of (1 - t) as an array the size of x under
    # differentiation; a trailing 0 - y it does not.
    return 0.0 - ((t - 1) * x + log_sigmoid(x))


def _bce_logits_tangent(x, t, dx, dt):
    out = 0.0
    if dx is not None:
        out = out + (jax.nn.sigmoid(x) - t) * dx
    if dt is not None:
        out = out - x * dt
    return out


@partial(bce_logits.defjvp, symbolic_zeros=True)
def _bce_logits_jvp(primals, tangents):
    x, t = primals
    dx, dt = (None if _zero(d) else d for d in tangents)
    out = bce_logits(x, t)
    if dx is None and dt is None:
        return out, jnp.zeros_like(out)
    return out, _linear(_bce_logits_tangent)(x, t, dx, dt) + jnp.zeros_like(out)


@jax.custom_jvp
def bce_logits_pw(x, t, pw):
    """(1 - t) x - ((pw - 1) t + 1) log_sigmoid(x), with torch's gradients (x, t, pw of one
    shape)."""
    return (1 - t) * x - ((pw - 1) * t + 1) * log_sigmoid(x)  # torch's kernel


def _bce_logits_pw_tangent(x, t, pw, dx, dt, dpw):
    ls = log_sigmoid(x)
    out = 0.0
    if dx is not None:
        pt = pw * t
        out = out + ((pt + 1 - t) * jax.nn.sigmoid(x) - pt) * dx
    if dt is not None:
        out = out + (log_sigmoid(-x) - pw * ls) * dt
    if dpw is not None:
        out = out - t * ls * dpw
    return out


@partial(bce_logits_pw.defjvp, symbolic_zeros=True)
def _bce_logits_pw_jvp(primals, tangents):
    x, t, pw = primals
    ds = [None if _zero(d) else d for d in tangents]
    out = bce_logits_pw(x, t, pw)
    if all(d is None for d in ds):
        return out, jnp.zeros_like(out)
    return out, _linear(_bce_logits_pw_tangent)(x, t, pw, *ds) + jnp.zeros_like(out)
