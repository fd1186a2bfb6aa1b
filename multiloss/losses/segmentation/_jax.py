"""JAX implementations of the segmentation losses (see the specs in ``__init__.py``).

The operations are segmentation_models_pytorch's, one by one, with torch 2.13's autograd at
the non-smooth points: ``clamp_min`` passes the gradient where ``x >= min`` (and keeps NaN);
``|p - t|`` has gradient 0 at p == t (JAX's too); relu passes none at 0 (torch's
``threshold_backward`` on the result). Where smp removes ignored pixels (lovasz), they are
sorted last here and contribute nothing: shapes stay static under jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ...backends import Terms


def _clamp_min(x, lo):
    """torch.clamp_min(x, lo): NaN stays NaN; the gradient passes where x >= lo."""
    return jnp.where(x < lo, jnp.asarray(lo, x.dtype), x)


@jax.custom_jvp
def _relu(x):
    """torch.relu: NaN stays NaN; the gradient is 0 where the result is <= 0 (NaN passes)."""
    return jnp.where(x <= 0, jnp.zeros_like(x), x)


_relu.defjvps(lambda g, ans, x: jnp.where(ans <= 0, jnp.zeros_like(g), g))


@jax.custom_jvp
def _abs(x):
    """torch.abs (and vector_norm(ord=1)): the gradient is sign(x) * g, 0 at x == 0 (JAX's
    abs passes g there)."""
    return jnp.abs(x)


_abs.defjvps(lambda g, ans, x: jnp.sign(x) * g)


def _times(x, mask):
    """x * mask as torch computes it (a NaN or inf of x stays NaN where mask is 0, in the value
    and the gradient): XLA would rewrite a product with a converted boolean into a select,
    which drops them; the barrier keeps the product."""
    return x * jax.lax.optimization_barrier(mask.astype(x.dtype))


def _probs(x, mode, from_logits):
    if not from_logits:
        return x
    if mode == "multiclass":
        return jnp.exp(jax.nn.log_softmax(x, axis=1))
    return jnp.exp(jax.nn.log_sigmoid(x))


def _nan_if(bad, dtype):
    """1, or NaN where a class index is out of range (reachable only under a trace)."""
    return jnp.where(jnp.any(bad), jnp.asarray(jnp.nan, dtype), jnp.asarray(1, dtype))


def _flatten(x, target, mode, ignore_index, p):
    """smp's layout: (p, t, bad) with p and t of shape (N, C, P) (C = 1 for binary), p and t
    zeroed where the target is ignore_index, t one-hot for multiclass, and ``bad`` the
    class indices out of range (None but for multiclass)."""
    n = x.shape[0]
    npix = int(np.prod(x.shape[2:], dtype=np.int64))
    bad = None
    if mode == "binary":
        size = int(np.prod(x.shape[1:], dtype=np.int64))
        p = p.reshape(n, 1, size)
        t = target.reshape(n, 1, size)
        if ignore_index is not None:
            m = t != ignore_index
            p = _times(p, m)
            t = t * m
    elif mode == "multiclass":
        c = x.shape[1]
        t = target.reshape(n, npix)
        p = p.reshape(n, c, npix)
        in_range = (t >= 0) & (t < c)
        if ignore_index is not None:
            m = t != ignore_index
            p = _times(p, m[:, None, :])
            t = jax.nn.one_hot(t * m, c, dtype=x.dtype, axis=1) * m[:, None, :]
            bad = m & ~in_range
        else:
            t = jax.nn.one_hot(t, c, dtype=x.dtype, axis=1)
            bad = ~in_range
    else:
        c = x.shape[1]
        p = p.reshape(n, c, npix)
        t = target.reshape(n, c, npix)
        if ignore_index is not None:
            m = t != ignore_index
            p = _times(p, m)
            t = t * m
    return p, t.astype(x.dtype), bad


def _overlap(input, target, *, mode, classes, log_loss, from_logits, smooth, ignore_index, eps,
             class_weights, alpha, beta, gamma):
    x = input
    dtype = x.dtype
    target = jax.lax.stop_gradient(target)
    p, t, bad = _flatten(x, target, mode, ignore_index, _probs(x, mode, from_logits))
    dims = (0, 2)
    output_sum = jnp.sum(p, axis=dims)
    target_sum = jnp.sum(t, axis=dims)
    difference = jnp.sum(_abs(p - t), axis=dims)
    intersection = (output_sum + target_sum - difference) / 2
    fp = output_sum - intersection
    fn = target_sum - intersection
    score = (intersection + smooth) / _clamp_min(
        intersection + alpha * fp + beta * fn + smooth, eps)
    loss = -jnp.log(_clamp_min(score, eps)) if log_loss else 1.0 - score
    loss = _times(loss, target_sum > 0)
    if bad is not None:
        loss = loss * _nan_if(bad, dtype)
    w = None if class_weights is None else jnp.asarray(class_weights).astype(dtype)
    if classes is not None:
        idx = jnp.asarray(classes)
        loss = loss[idx]
        w = None if w is None else w[idx]
    if gamma != 1.0:
        value = jnp.mean(loss) if w is None else jnp.sum(loss * w) / jnp.sum(w)
        return Terms(value ** gamma)
    if w is None:
        return Terms(loss)
    return Terms(loss * w, weight=w)


def dice(input, target, *, mode="multiclass", classes=None, log_loss=False, from_logits=True,
         smooth=0.0, ignore_index=None, eps=1e-7, class_weights=None):
    return _overlap(input, target, mode=mode, classes=classes, log_loss=log_loss,
                    from_logits=from_logits, smooth=smooth, ignore_index=ignore_index, eps=eps,
                    class_weights=class_weights, alpha=0.5, beta=0.5, gamma=1.0)


def jaccard(input, target, *, mode="multiclass", classes=None, log_loss=False,
            from_logits=True, smooth=0.0, ignore_index=None, eps=1e-7, class_weights=None):
    return _overlap(input, target, mode=mode, classes=classes, log_loss=log_loss,
                    from_logits=from_logits, smooth=smooth, ignore_index=ignore_index, eps=eps,
                    class_weights=class_weights, alpha=1.0, beta=1.0, gamma=1.0)


def tversky(input, target, *, mode="multiclass", classes=None, log_loss=False,
            from_logits=True, smooth=0.0, ignore_index=None, eps=1e-7, class_weights=None,
            alpha=0.5, beta=0.5, gamma=1.0):
    return _overlap(input, target, mode=mode, classes=classes, log_loss=log_loss,
                    from_logits=from_logits, smooth=smooth, ignore_index=ignore_index, eps=eps,
                    class_weights=class_weights, alpha=alpha, beta=beta, gamma=gamma)


# ---------------------------------------------------------------------------------------------
# lovasz


def _lovasz_grad(gt, valid):
    """smp's _lovasz_grad along the last axis, over sorted labels; invalid entries (sorted
    last) add nothing to the union."""
    gts = jnp.sum(gt, axis=-1, keepdims=True)
    intersection = gts - jnp.cumsum(gt, axis=-1)
    union = gts + jnp.cumsum((1 - gt) * valid, axis=-1)
    jaccard = 1.0 - intersection / union
    return jnp.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)


def _sorted_dot(errors, gt, valid, hinge):
    """sum_i f(e_(i)) g_i along the last axis, errors sorted descending (stable), invalid
    entries last and out of the sum."""
    dtype = errors.dtype
    key = jnp.where(valid, errors, jnp.asarray(-jnp.inf, dtype))
    perm = jnp.argsort(key, axis=-1, descending=True, stable=True)
    es = jnp.take_along_axis(errors, perm, axis=-1)
    gs = jnp.take_along_axis(jnp.where(valid, gt, jnp.zeros_like(gt)), perm, axis=-1)
    vs = jnp.take_along_axis(valid, perm, axis=-1)
    g = _lovasz_grad(gs, vs.astype(dtype))
    # 0 past the valid entries (where a row without valid entries has 0 / 0): also keeps
    # NaN out of the gradient of the unselected branch
    g = jax.lax.stop_gradient(jnp.where(vs, g, jnp.zeros_like(g)))
    f = _relu(es) if hinge else es
    return jnp.sum(jnp.where(vs, f * g, jnp.zeros_like(f)), axis=-1)


def lovasz(input, target, *, mode="multiclass", per_image=False, ignore_index=None,
           from_logits=True):
    x = input
    dtype = x.dtype
    n = x.shape[0]
    target = jax.lax.stop_gradient(target)
    rows = n if per_image else 1
    if mode in ("binary", "multilabel"):
        size = int(np.prod(x.shape[1:], dtype=np.int64)) * (1 if per_image else n)
        logits = x.reshape(rows, size)
        raw = target.reshape(rows, size)
        valid = (raw != ignore_index) if ignore_index is not None else \
            jnp.ones(raw.shape, bool)
        labels = raw.astype(dtype)
        signs = 2.0 * labels - 1.0
        errors = 1.0 - logits * signs
        loss = _sorted_dot(errors, labels, valid, hinge=True)
        return Terms(loss if per_image else loss.reshape(()))
    c = x.shape[1]
    p = jax.nn.softmax(x, axis=1)
    npix = int(np.prod(x.shape[2:], dtype=np.int64)) * (1 if per_image else n)
    p = jnp.moveaxis(p, 1, -1).reshape(rows, npix, c)
    p = jnp.swapaxes(p, 1, 2)  # (rows, C, P)
    lab = target.reshape(rows, npix)
    valid = (lab != ignore_index) if ignore_index is not None else jnp.ones(lab.shape, bool)
    bad = valid & ((lab < 0) | (lab >= c))
    fg = ((lab[:, None, :] == jnp.arange(c)[None, :, None]) & valid[:, None, :]).astype(dtype)
    errors = _abs(fg - p)
    vmask = jnp.broadcast_to(valid[:, None, :], fg.shape)
    per_class = _sorted_dot(errors, fg, vmask, hinge=False)  # (rows, C)
    present = jnp.sum(fg, axis=-1) > 0
    count = jnp.sum(present, axis=-1)
    total = jnp.sum(jnp.where(present, per_class, jnp.zeros_like(per_class)), axis=-1)
    loss = total / jnp.maximum(count, 1).astype(dtype)
    loss = loss * _nan_if(bad, dtype)
    return Terms(loss if per_image else loss.reshape(()))


# ---------------------------------------------------------------------------------------------
# generalized dice


def generalized_dice(input, target, *, mode="multiclass", from_logits=True, ignore_index=None,
                     w_type="square", smooth_nr=1e-5, smooth_dr=1e-5, batch=False):
    x = input
    dtype = x.dtype
    target = jax.lax.stop_gradient(target)
    if not from_logits:
        p = x
    elif mode == "multiclass":
        p = jax.nn.softmax(x, axis=1)
    else:
        p = jax.nn.sigmoid(x)
    p, t, bad = _flatten(x, target, mode, ignore_index, p)
    axes = (0, 2) if batch else (2,)
    intersection = jnp.sum(t * p, axis=axes)
    ground_o = jnp.sum(t, axis=axes)
    pred_o = jnp.sum(p, axis=axes)
    denominator = ground_o + pred_o
    if w_type == "square":
        w = 1.0 / (ground_o * ground_o)
    elif w_type == "simple":
        w = 1.0 / ground_o
    else:
        w = jnp.ones_like(ground_o)
    infs = jnp.isinf(w)
    w = jnp.where(infs, jnp.zeros_like(w), w)
    if w.shape[-1]:
        w = w + infs.astype(dtype) * jnp.max(w, axis=-1, keepdims=True)
    w = jax.lax.stop_gradient(w)
    numer = 2.0 * jnp.sum(intersection * w, axis=-1) + smooth_nr
    denom = jnp.sum(denominator * w, axis=-1) + smooth_dr
    loss = 1.0 - numer / denom
    if bad is not None:
        loss = loss * _nan_if(bad, dtype)
    return Terms(loss)
