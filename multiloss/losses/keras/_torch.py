"""torch implementations of Keras 3's losses (see the specs in ``__init__.py``): Keras 3.15's
formulas written with torch operations whose gradients are JAX's (the reference is Keras on its
JAX backend): ``clip`` as ``minimum(maximum(x, lo), hi)`` (half the gradient at a bound, as
``jnp.clip``), ``softplus`` as ``logaddexp(x, 0)`` (jax.nn.softplus; torch's F.softplus
switches to x above 20), ``amax`` (the gradient shared between tied maxima, as ``jnp.max``).
The hinge losses' ``maximum`` and ``amax`` are custom Functions with JAX's gradients (shared
between tied arguments or maxima; at a NaN result none for ``maximum``, NaN over the row for
``amax``; a NaN or infinite incoming gradient multiplied, not masked), the gradients Keras
gives at NaN and infinite inputs. They have no custom jvp (Dynamo refuses one), so
torch.func's forward mode does not reach the hinge losses; the other losses keep torch's ops,
whose gradients equal JAX's at finite inputs (and at the non-finite inputs the sweep covers)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ...backends import Terms
from ._constants import EPSILON, EPSILON_F32, FLOATX, LOG2, same_rank_shapes


def _keras_inputs(fn):
    """Keras' input handling before a loss function: an integer or bool ``y_pred`` converted to
    the float dtype (``y_true``'s if floating, else float32), then
    ``squeeze_or_expand_to_same_rank(y_true, y_pred)``. The twin of ``_jax._keras_inputs``."""

    @functools.wraps(fn)
    def wrapper(y_true, y_pred, **options):
        if not y_pred.is_floating_point():
            floating = y_true.is_floating_point()
            y_pred = y_pred.to(y_true.dtype if floating else getattr(torch, FLOATX))
        t_shape, p_shape = same_rank_shapes(y_true.shape, y_pred.shape)
        if t_shape != tuple(y_true.shape):
            y_true = y_true.reshape(t_shape)
        if p_shape != tuple(y_pred.shape):
            y_pred = y_pred.reshape(p_shape)
        return fn(y_true, y_pred, **options)

    return wrapper


def _c(value, like):
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


class _Chooser(torch.autograd.Function):
    """jnp.maximum / jnp.minimum (lax.max_p / lax.min_p) with JAX's gradient: d/dx = g * (x == out)
    / (2 if y == out else 1), and the same for y (half the gradient to each of tied arguments;
    none to either where the result is NaN, as NaN equals nothing). A product, as JAX's, so a NaN
    or infinite ``g`` gives NaN where the factor is 0. torch.maximum's backward differs at NaN: it
    gives the whole ``g`` to both arguments, and it masks ``g`` rather than multiplying it.

    In torch.func's form (``setup_context``, a generated vmap rule), as ``_LogAddExp``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, y, is_max):
        return torch.maximum(x, y) if is_max else torch.minimum(x, y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, _ = inputs
        ctx.save_for_backward(x, y, output)

    @staticmethod
    def backward(ctx, g):
        x, y, out = ctx.saved_tensors
        x_is, y_is = x == out, y == out
        one, two = torch.ones_like(g), torch.full_like(g, 2.0)
        zero = torch.zeros_like(g)
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = g * (torch.where(x_is, one, zero) / torch.where(y_is, two, one))
        if ctx.needs_input_grad[1]:
            gy = g * (torch.where(y_is, one, zero) / torch.where(x_is, two, one))
        return gx, gy, None


def _maximum(x, y):
    """jnp.maximum, with JAX's gradient (``_Chooser``)."""
    x, y = torch.broadcast_tensors(x, y)
    return _Chooser.apply(x, y, True)


class _AMax(torch.autograd.Function):
    """jnp.max over one axis (lax.reduce_max_p) with JAX's gradient (_reduce_chooser_jvp_rule):
    g / count(x == max) * (x == max), the gradient shared between tied maxima, and NaN over the
    whole row where the max is NaN (nothing equals it: 0 / 0). torch.amax's backward gives 0
    there, and masks rather than multiplies an infinite or NaN ``g``.

    In torch.func's form (``setup_context``, a generated vmap rule), as ``_LogAddExp``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        return torch.amax(x, dim=dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, dim = inputs
        ctx.dim = dim
        ctx.save_for_backward(x, output)

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        at = torch.where(x == out.unsqueeze(ctx.dim), torch.ones_like(x), torch.zeros_like(x))
        counts = torch.sum(at, dim=ctx.dim, keepdim=True)
        return (g.unsqueeze(ctx.dim) / counts) * at, None


def _amax(x, dim):
    """jnp.max(x, axis=dim), with JAX's gradient (``_AMax``)."""
    return _AMax.apply(x, dim % x.dim())


def _clip(x, lo, hi):
    return torch.minimum(torch.maximum(x, _c(lo, x)), _c(hi, x))


def _no_pos_inf(x):
    return torch.where(x == float("inf"), torch.zeros_like(x), x)


class _LogAddExp(torch.autograd.Function):
    """jnp.logaddexp with JAX's value and gradient formulas (jax._src.lax.other.logaddexp):
    amax + log1p(exp(-|x1 - x2|)), and d/dx_i = exp(x_i - out) with +inf replaced by 0.
    torch.logaddexp's backward, g / (1 + exp(x_j - x_i)), rounds differently where the
    arguments are large (ctc's log(0) = -1e5 paths: 1e-11 relative).

    In torch.func's form (``setup_context`` apart from ``forward``, and a vmap rule generated
    from these torch operations), so that torch.func.grad, vmap and jacrev compose with it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x1, x2):
        amax = torch.maximum(x1, x2)
        delta = x1 - x2
        return torch.where(torch.isnan(delta), x1 + x2,
                           amax + torch.log1p(torch.exp(-torch.abs(delta))))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs, output)

    @staticmethod
    def backward(ctx, g):
        x1, x2, out = ctx.saved_tensors
        o = _no_pos_inf(out)
        g1 = g * torch.exp(_no_pos_inf(x1) - o)
        g2 = g * torch.exp(_no_pos_inf(x2) - o)
        return g1.sum_to_size(x1.shape), g2.sum_to_size(x2.shape)


def _logaddexp(x1, x2):
    x1, x2 = torch.broadcast_tensors(x1, x2)
    return _LogAddExp.apply(x1, x2)


def _softplus(x):
    """jax.nn.softplus: logaddexp(x, 0)."""
    return _logaddexp(x, torch.zeros_like(x))


def _abs(x):
    """|x| with JAX's gradient: +1 at 0 (and at -0.0); torch.abs's is 0 there."""
    return torch.where(x >= 0, x, -x)


def _cast(y_true, y_pred):
    return y_true.to(y_pred.dtype)


def _mask_terms(loss, valid):
    m = valid.to(loss.dtype)
    return Terms(loss, m, m)


def _bce(t, p):
    p = _clip(p, EPSILON, 1.0 - EPSILON)
    bce = t * torch.log(p)
    bce = bce + (1.0 - t) * torch.log(1.0 - p)
    return -bce


@_keras_inputs
def binary_crossentropy(y_true, y_pred, *, reduction, from_logits=False, label_smoothing=0.0,
                        axis=-1):
    t = _cast(y_true, y_pred)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        x = y_pred
        loss = -1.0 * t * F.logsigmoid(x) - (1.0 - t) * F.logsigmoid(-x)
    else:
        loss = _bce(t, y_pred)
    return Terms(torch.mean(loss, dim=axis))


@_keras_inputs
def binary_focal_crossentropy(y_true, y_pred, *, reduction, apply_class_balancing=False,
                              alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                              axis=-1):
    t = _cast(y_true, y_pred)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    p = torch.sigmoid(y_pred) if from_logits else y_pred
    bce = _bce(t, p)
    p_t = t * p + (1 - t) * (1 - p)
    focal = torch.pow(1.0 - p_t, gamma) * bce
    if apply_class_balancing:
        focal = (t * alpha + (1 - t) * (1 - alpha)) * focal
    return Terms(torch.mean(focal, dim=axis))


def _smooth(t, label_smoothing):
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / _c(t.shape[-1], t)
    return t


def _log_prob(y_pred, from_logits, axis):
    if from_logits:
        return torch.log_softmax(y_pred, dim=axis)
    out = y_pred / torch.sum(y_pred, dim=axis, keepdim=True)
    return torch.log(_clip(out, EPSILON, 1.0 - EPSILON))


@_keras_inputs
def categorical_crossentropy(y_true, y_pred, *, reduction, from_logits=False,
                             label_smoothing=0.0, axis=-1):
    t = _smooth(_cast(y_true, y_pred), label_smoothing)
    return Terms(-torch.sum(t * _log_prob(y_pred, from_logits, axis), dim=axis))


@_keras_inputs
def categorical_focal_crossentropy(y_true, y_pred, *, reduction, alpha=0.25, gamma=2.0,
                                   from_logits=False, label_smoothing=0.0, axis=-1):
    t = _smooth(_cast(y_true, y_pred), label_smoothing)
    p = torch.softmax(y_pred, dim=axis) if from_logits else y_pred
    out = p / torch.sum(p, dim=axis, keepdim=True)
    out = _clip(out, EPSILON, 1.0 - EPSILON)
    cce = -t * torch.log(out)
    focal = torch.pow(1.0 - out, gamma) * alpha * cce
    return Terms(torch.sum(focal, dim=axis))


def _one_hot(t, n_classes, dtype):
    return (t[..., None] == torch.arange(n_classes, device=t.device)).to(dtype)


def _labels(y_true, n_classes):
    t = y_true.to(torch.int32)
    return t, (t >= 0) & (t < n_classes)


def _nan_where(ok, loss):
    return torch.where(ok, loss, _c(float("nan"), loss))


@_keras_inputs
def sparse_categorical_crossentropy(y_true, y_pred, *, reduction, from_logits=False,
                                    ignore_class=None, axis=-1):
    n_classes = y_pred.shape[-1]
    if y_true.ndim == y_pred.ndim:
        y_true = torch.squeeze(y_true, dim=-1)
    t, in_range = _labels(y_true, n_classes)
    valid = None
    if ignore_class is not None:
        valid = t != ignore_class
        t = torch.where(valid, t, torch.zeros_like(t))
        y_pred = torch.where(valid[..., None], y_pred, _c(1.0, y_pred))
        in_range = in_range | ~valid
    onehot = _one_hot(t, n_classes, y_pred.dtype)
    loss = _nan_where(in_range, -torch.sum(onehot * _log_prob(y_pred, from_logits, -1), dim=-1))
    if valid is None:
        return Terms(loss)
    return _mask_terms(torch.where(valid, loss, _c(0.0, loss)), valid)


@_keras_inputs
def categorical_generalized_cross_entropy(y_true, y_pred, *, reduction, q=0.5):
    n_classes = y_pred.shape[-1]
    t, in_range = _labels(y_true, n_classes)
    p = torch.sum(y_pred * _one_hot(t, n_classes, y_pred.dtype), dim=-1)
    return Terms(_nan_where(in_range, (1 - torch.pow(p, q)) / q))


# ---------------------------------------------------------------------------------------------
# hinges


def _hinge_labels(t):
    is_binary = torch.all((t == 0) | (t == 1))
    return torch.where(is_binary, 2.0 * t - 1.0, t)


def _relu(x):
    """jnp.maximum(x, 0.0), with JAX's gradient (half at 0, none at NaN)."""
    return _maximum(x, _c(0.0, x))


@_keras_inputs
def hinge(y_true, y_pred, *, reduction):
    t = _hinge_labels(_cast(y_true, y_pred))
    return Terms(torch.mean(_relu(1.0 - t * y_pred), dim=-1))


@_keras_inputs
def squared_hinge(y_true, y_pred, *, reduction):
    t = _hinge_labels(_cast(y_true, y_pred))
    return Terms(torch.mean(torch.square(_relu(1.0 - t * y_pred)), dim=-1))


@_keras_inputs
def categorical_hinge(y_true, y_pred, *, reduction):
    t = _cast(y_true, y_pred)
    pos = torch.sum(t * y_pred, dim=-1)
    neg = _amax((1.0 - t) * y_pred, dim=-1)
    return Terms(_relu(neg - pos + 1.0))


# ---------------------------------------------------------------------------------------------
# regression


@_keras_inputs
def mean_squared_error(y_true, y_pred, *, reduction):
    return Terms(torch.mean(torch.square(_cast(y_true, y_pred) - y_pred), dim=-1))


@_keras_inputs
def mean_absolute_error(y_true, y_pred, *, reduction):
    return Terms(torch.mean(_abs(_cast(y_true, y_pred) - y_pred), dim=-1))


@_keras_inputs
def mean_absolute_percentage_error(y_true, y_pred, *, reduction):
    t = _cast(y_true, y_pred)
    diff = _abs((t - y_pred) / torch.maximum(_abs(t), _c(EPSILON, y_pred)))
    return Terms(100.0 * torch.mean(diff, dim=-1))


@_keras_inputs
def mean_squared_logarithmic_error(y_true, y_pred, *, reduction):
    t = _cast(y_true, y_pred)
    eps = _c(EPSILON_F32, y_pred)
    first = torch.log(torch.maximum(y_pred, eps) + 1.0)
    second = torch.log(torch.maximum(t, eps) + 1.0)
    return Terms(torch.mean(torch.square(first - second), dim=-1))


@_keras_inputs
def huber(y_true, y_pred, *, reduction, delta=1.0):
    t = _cast(y_true, y_pred)
    d = _c(delta, y_pred)
    err = y_pred - t
    a = _abs(err)
    half = _c(0.5, y_pred)
    loss = torch.where(a <= d, half * torch.square(err), d * a - half * torch.square(d))
    return Terms(torch.mean(loss, dim=-1))


@_keras_inputs
def log_cosh(y_true, y_pred, *, reduction):
    x = y_pred - _cast(y_true, y_pred)
    return Terms(torch.mean(x + _softplus(x * -2.0) - _c(LOG2, x), dim=-1))


@_keras_inputs
def cosine_similarity(y_true, y_pred, *, reduction, axis=-1):
    t = _cast(y_true, y_pred)

    def normalize(x):
        inv = torch.rsqrt(torch.sum(torch.square(x), dim=axis, keepdim=True))
        return x * torch.minimum(inv, _c(1.0 / EPSILON, x))

    return Terms(-torch.sum(normalize(t) * normalize(y_pred), dim=axis))


@_keras_inputs
def kl_divergence(y_true, y_pred, *, reduction):
    t = _clip(_cast(y_true, y_pred), EPSILON, 1.0)
    p = _clip(y_pred, EPSILON, 1.0)
    return Terms(torch.sum(t * torch.log(t / p), dim=-1))


@_keras_inputs
def poisson(y_true, y_pred, *, reduction):
    t = _cast(y_true, y_pred)
    return Terms(torch.mean(y_pred - t * torch.log(y_pred + _c(EPSILON, y_pred)), dim=-1))


# ---------------------------------------------------------------------------------------------
# segmentation, sequence, metric learning


def _sum(x, axis):
    return torch.sum(x) if axis is None else torch.sum(x, dim=axis)


@_keras_inputs
def dice(y_true, y_pred, *, reduction, axis=None):
    t = _cast(y_true, y_pred)
    inter = _sum(t * y_pred, axis)
    d = (2.0 * inter) / (_sum(t, axis) + _sum(y_pred, axis) + EPSILON)
    return Terms(1 - d)


@_keras_inputs
def tversky(y_true, y_pred, *, reduction, alpha=0.5, beta=0.5, axis=None):
    t = _cast(y_true, y_pred)
    inter = _sum(t * y_pred, axis)
    fp = _sum((1 - y_pred) * t, axis)
    fn = _sum(y_pred * (1 - t), axis)
    return Terms(1 - inter / (inter + fp * alpha + fn * beta + EPSILON))


@_keras_inputs
def ctc(y_true, y_pred, *, reduction):
    """Keras' ctc on JAX (optax's forward algorithm with log(0) as -1e5), step by step."""
    target = y_true.to(torch.int64)
    out_dtype = y_pred.dtype
    # Keras computes in result_type(dtype, float32): float16 / bfloat16 in float32
    y_pred = y_pred.to(torch.promote_types(y_pred.dtype, torch.float32))
    batch_size, _, num_classes = y_pred.shape
    max_label_length = target.shape[1]
    log_eps = -1e5
    label_lengths = torch.sum(target != 0, dim=-1)
    logprobs = torch.log_softmax(y_pred, dim=-1)
    repeat = (target[:, :-1] == target[:, 1:]).to(torch.float32)
    repeat = F.pad(repeat, (0, 1)).to(y_pred.dtype)
    logprobs_phi = logprobs[:, :, 0:1].transpose(0, 1)
    one_hot = _one_hot(target, num_classes, logprobs.dtype)
    logprobs_emit = torch.einsum("btk,bnk->btn", logprobs, one_hot).transpose(0, 1)
    phi = torch.full((batch_size, max_label_length + 1), log_eps, dtype=y_pred.dtype,
                     device=y_pred.device)
    phi[:, 0] = 0.0
    emit = torch.full((batch_size, max_label_length), log_eps, dtype=y_pred.dtype,
                      device=y_pred.device)

    def update_phi(p, added):
        return torch.cat([p[:, :1], _logaddexp(p[:, 1:], added)], dim=-1)

    for step in range(logprobs_emit.shape[0]):
        e, ph = logprobs_emit[step], logprobs_phi[step]
        prev_phi = update_phi(phi, emit + log_eps * repeat)
        next_emit = _logaddexp(prev_phi[:, :-1] + e, emit + e)
        next_phi = prev_phi + ph
        phi = update_phi(next_phi, emit + ph + log_eps * (1.0 - repeat))
        emit = next_emit
    last = update_phi(phi, emit)
    sel = _one_hot(label_lengths, max_label_length + 1, last.dtype)
    return Terms(-torch.einsum("bn,bn->b", last, sel).to(out_dtype))


@_keras_inputs
def circle(y_true, y_pred, *, reduction, gamma=80.0, margin=0.4, remove_diagonal=True):
    labels = y_true.to(torch.int32)
    dist = 1 - torch.matmul(y_pred, y_pred.T)
    dist = _relu(dist)
    pos = labels[:, None] == labels[None, :]
    neg = ~pos
    if remove_diagonal:
        pos = pos & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    posf, negf = pos.to(dist.dtype), neg.to(dist.dtype)
    pos_w = _relu((margin + dist) * posf)
    neg_w = _relu((1 + margin - dist) * negf)
    pos_wd = -1 * gamma * pos_w * (margin - dist)
    neg_wd = gamma * neg_w * ((1 - margin) - dist)
    ninf = _c(float("-inf"), dist)
    p_loss = torch.logsumexp(torch.where(pos, pos_wd, ninf), dim=1)
    n_loss = torch.logsumexp(torch.where(neg, neg_wd, ninf), dim=1)
    loss = _softplus(p_loss + n_loss)
    return _mask_terms(loss, loss > 0)
