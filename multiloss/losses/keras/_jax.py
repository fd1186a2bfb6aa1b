"""JAX implementations of Keras 3's losses (see the specs in ``__init__.py``).

Each function is Keras 3.15's own formula (``keras/src/losses/losses.py`` and the JAX backend's
``keras/src/backend/jax/nn.py``) written with the same JAX operations in the same order, so that
values and ``jax.grad`` agree with Keras on its JAX backend to rounding: ``jnp.clip`` (half the
gradient at a bound, like ``jnp.maximum``), ``jnp.power``, ``jax.nn.log_sigmoid``, the one-hot
sums of the sparse losses. Call order is Keras', (y_true, y_pred); every loss goes through
``_keras_inputs`` first (Keras' input handling).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ...backends import Terms
from ._constants import EPSILON, EPSILON_F32, FLOATX, LOG2, same_rank_shapes


def _keras_inputs(fn):
    """Keras' input handling before a loss function (``Loss.__call__`` and
    ``LossFunctionWrapper.call``): an integer or bool ``y_pred`` converted to the float dtype
    (``y_true``'s if it is floating, else Keras' floatx, float32; each function casts ``y_true``
    as Keras does), then ``squeeze_or_expand_to_same_rank(y_true, y_pred)``
    (``same_rank_shapes``). The torch twin is ``_torch._keras_inputs``."""

    @functools.wraps(fn)
    def wrapper(y_true, y_pred, **options):
        if not jnp.issubdtype(y_pred.dtype, jnp.floating):
            floating = jnp.issubdtype(y_true.dtype, jnp.floating)
            # the barrier keeps XLA from simplifying the converted values' arithmetic (a 0/0
            # of a bool row gave a number where Keras, eager, gives NaN)
            y_pred = jax.lax.optimization_barrier(
                y_pred.astype(y_true.dtype if floating else FLOATX))
        t_shape, p_shape = same_rank_shapes(y_true.shape, y_pred.shape)
        if t_shape != y_true.shape:
            y_true = jnp.reshape(y_true, t_shape)
        if p_shape != y_pred.shape:
            y_pred = jnp.reshape(y_pred, p_shape)
        return fn(y_true, y_pred, **options)

    return wrapper


def _cast(y_true, y_pred):
    return y_true.astype(y_pred.dtype)


def _mask_terms(loss, valid):
    m = valid.astype(loss.dtype)
    return Terms(loss, m, m)


def _bce(t, p):
    """keras.ops.binary_crossentropy(t, p, from_logits=False) on JAX."""
    p = jnp.clip(p, EPSILON, 1.0 - EPSILON)
    bce = t * jnp.log(p)
    bce += (1.0 - t) * jnp.log(1.0 - p)
    return -bce


@_keras_inputs
def binary_crossentropy(y_true, y_pred, *, from_logits=False, label_smoothing=0.0, axis=-1):
    t = _cast(y_true, y_pred)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        x = y_pred
        loss = -1.0 * t * jax.nn.log_sigmoid(x) - (1.0 - t) * jax.nn.log_sigmoid(-x)
    else:
        loss = _bce(t, y_pred)
    return Terms(jnp.mean(loss, axis=axis))


@_keras_inputs
def binary_focal_crossentropy(y_true, y_pred, *, apply_class_balancing=False, alpha=0.25,
                              gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1):
    t = _cast(y_true, y_pred)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    p = jax.nn.sigmoid(y_pred) if from_logits else y_pred
    bce = _bce(t, p)
    p_t = t * p + (1 - t) * (1 - p)
    focal = jnp.power(1.0 - p_t, gamma) * bce
    if apply_class_balancing:
        focal = (t * alpha + (1 - t) * (1 - alpha)) * focal
    return Terms(jnp.mean(focal, axis=axis))


def _smooth(t, label_smoothing):
    if label_smoothing:
        n = jnp.asarray(t.shape[-1], t.dtype)
        t = t * (1.0 - label_smoothing) + label_smoothing / n
    return t


def _log_prob(y_pred, from_logits, axis):
    if from_logits:
        return jax.nn.log_softmax(y_pred, axis=axis)
    out = y_pred / jnp.sum(y_pred, axis, keepdims=True)
    return jnp.log(jnp.clip(out, EPSILON, 1.0 - EPSILON))


@_keras_inputs
def categorical_crossentropy(y_true, y_pred, *, from_logits=False, label_smoothing=0.0,
                             axis=-1):
    t = _smooth(_cast(y_true, y_pred), label_smoothing)
    return Terms(-jnp.sum(t * _log_prob(y_pred, from_logits, axis), axis=axis))


@_keras_inputs
def categorical_focal_crossentropy(y_true, y_pred, *, alpha=0.25, gamma=2.0, from_logits=False,
                                   label_smoothing=0.0, axis=-1):
    t = _smooth(_cast(y_true, y_pred), label_smoothing)
    p = jax.nn.softmax(y_pred, axis=axis) if from_logits else y_pred
    out = p / jnp.sum(p, axis=axis, keepdims=True)
    out = jnp.clip(out, EPSILON, 1.0 - EPSILON)
    cce = -t * jnp.log(out)
    focal = jnp.multiply(jnp.power(1.0 - out, gamma), alpha) * cce
    return Terms(jnp.sum(focal, axis=axis))


def _labels(y_true, n_classes):
    """Class indices as Keras reads them (int32, a trailing 1 squeezed) and whether each is in
    range (an out-of-range index gives NaN under a trace; concrete ones raise before)."""
    t = y_true.astype(jnp.int32)
    return t, (t >= 0) & (t < n_classes)


@_keras_inputs
def sparse_categorical_crossentropy(y_true, y_pred, *, from_logits=False, ignore_class=None,
                                    axis=-1):
    n_classes = y_pred.shape[-1]
    if y_true.ndim == y_pred.ndim:
        y_true = jnp.squeeze(y_true, axis=-1)
    t, in_range = _labels(y_true, n_classes)
    valid = None
    if ignore_class is not None:
        valid = t != ignore_class
        t = jnp.where(valid, t, 0)
        y_pred = jnp.where(valid[..., None], y_pred, jnp.ones((), y_pred.dtype))
        in_range = in_range | ~valid
    # the barrier keeps XLA from folding the product into a select, which would drop Keras'
    # 0·NaN = NaN of a row whose probabilities are not finite (an inf probability makes
    # p / Σ p NaN at the other classes too; Keras on JAX runs eagerly and keeps it)
    onehot = jax.lax.optimization_barrier(jax.nn.one_hot(t, n_classes, dtype=y_pred.dtype))
    loss = -jnp.sum(onehot * _log_prob(y_pred, from_logits, -1), axis=-1)
    loss = jnp.where(in_range, loss, jnp.asarray(jnp.nan, loss.dtype))
    if valid is None:
        return Terms(loss)
    return _mask_terms(jnp.where(valid, loss, jnp.zeros((), loss.dtype)), valid)


@_keras_inputs
def categorical_generalized_cross_entropy(y_true, y_pred, *, q=0.5):
    n_classes = y_pred.shape[-1]
    t, in_range = _labels(y_true, n_classes)
    # the barrier keeps XLA from folding the product into a select, which would drop Keras'
    # inf·0 = NaN gradients of the other classes where p is 0 or NaN at the target
    onehot = jax.lax.optimization_barrier(jax.nn.one_hot(t, n_classes, dtype=y_pred.dtype))
    p = jnp.sum(y_pred * onehot, axis=-1)
    loss = (1 - jnp.power(p, q)) / q
    return Terms(jnp.where(in_range, loss, jnp.asarray(jnp.nan, loss.dtype)))


# ---------------------------------------------------------------------------------------------
# hinges


def _hinge_labels(t):
    """Keras' convert_binary_labels_to_hinge: {0, 1} labels (all of them, over the whole
    batch) become {-1, 1}; any other labels are used as given."""
    is_binary = jnp.all((t == 0) | (t == 1))
    return jnp.where(is_binary, 2.0 * t - 1.0, t)


@_keras_inputs
def hinge(y_true, y_pred):
    t = _hinge_labels(_cast(y_true, y_pred))
    return Terms(jnp.mean(jnp.maximum(1.0 - t * y_pred, 0.0), axis=-1))


@_keras_inputs
def squared_hinge(y_true, y_pred):
    t = _hinge_labels(_cast(y_true, y_pred))
    return Terms(jnp.mean(jnp.square(jnp.maximum(1.0 - t * y_pred, 0.0)), axis=-1))


@_keras_inputs
def categorical_hinge(y_true, y_pred):
    t = _cast(y_true, y_pred)
    pos = jnp.sum(t * y_pred, axis=-1)
    neg = jnp.max((1.0 - t) * y_pred, axis=-1)
    return Terms(jnp.maximum(neg - pos + 1.0, jnp.zeros((), y_pred.dtype)))


# ---------------------------------------------------------------------------------------------
# regression


@_keras_inputs
def mean_squared_error(y_true, y_pred):
    return Terms(jnp.mean(jnp.square(_cast(y_true, y_pred) - y_pred), axis=-1))


@_keras_inputs
def mean_absolute_error(y_true, y_pred):
    return Terms(jnp.mean(jnp.abs(_cast(y_true, y_pred) - y_pred), axis=-1))


@_keras_inputs
def mean_absolute_percentage_error(y_true, y_pred):
    t = _cast(y_true, y_pred)
    eps = jnp.asarray(EPSILON, y_pred.dtype)
    diff = jnp.abs((t - y_pred) / jnp.maximum(jnp.abs(t), eps))
    return Terms(100.0 * jnp.mean(diff, axis=-1))


@_keras_inputs
def mean_squared_logarithmic_error(y_true, y_pred):
    t = _cast(y_true, y_pred)
    eps = jnp.asarray(EPSILON_F32, y_pred.dtype)
    first = jnp.log(jnp.maximum(y_pred, eps) + 1.0)
    second = jnp.log(jnp.maximum(t, eps) + 1.0)
    return Terms(jnp.mean(jnp.square(first - second), axis=-1))


@_keras_inputs
def huber(y_true, y_pred, *, delta=1.0):
    t = _cast(y_true, y_pred)
    d = jnp.asarray(delta, y_pred.dtype)
    err = y_pred - t
    a = jnp.abs(err)
    half = jnp.asarray(0.5, y_pred.dtype)
    loss = jnp.where(a <= d, half * jnp.square(err), d * a - half * jnp.square(d))
    return Terms(jnp.mean(loss, axis=-1))


@_keras_inputs
def log_cosh(y_true, y_pred):
    t = _cast(y_true, y_pred)
    x = y_pred - t
    log2 = jnp.asarray(LOG2, y_pred.dtype)
    return Terms(jnp.mean(x + jax.nn.softplus(x * -2.0) - log2, axis=-1))


@_keras_inputs
def cosine_similarity(y_true, y_pred, *, axis=-1):
    t = _cast(y_true, y_pred)

    def normalize(x):
        inv = jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
        return x * jnp.minimum(inv, 1.0 / EPSILON)

    return Terms(-jnp.sum(normalize(t) * normalize(y_pred), axis=axis))


@_keras_inputs
def kl_divergence(y_true, y_pred):
    t = jnp.clip(_cast(y_true, y_pred), EPSILON, 1)
    p = jnp.clip(y_pred, EPSILON, 1)
    return Terms(jnp.sum(t * jnp.log(t / p), axis=-1))


@_keras_inputs
def poisson(y_true, y_pred):
    t = _cast(y_true, y_pred)
    eps = jnp.asarray(EPSILON, y_pred.dtype)
    return Terms(jnp.mean(y_pred - t * jnp.log(y_pred + eps), axis=-1))


# ---------------------------------------------------------------------------------------------
# segmentation, sequence, metric learning


@_keras_inputs
def dice(y_true, y_pred, *, axis=None):
    t = _cast(y_true, y_pred)
    inter = jnp.sum(t * y_pred, axis=axis)
    d = jnp.divide(2.0 * inter, jnp.sum(t, axis=axis) + jnp.sum(y_pred, axis=axis) + EPSILON)
    return Terms(1 - d)


@_keras_inputs
def tversky(y_true, y_pred, *, alpha=0.5, beta=0.5, axis=None):
    t = _cast(y_true, y_pred)
    inter = jnp.sum(t * y_pred, axis=axis)
    fp = jnp.sum((1 - y_pred) * t, axis=axis)
    fn = jnp.sum(y_pred * (1 - t), axis=axis)
    tv = jnp.divide(inter, inter + fp * alpha + fn * beta + EPSILON)
    return Terms(1 - tv)


@_keras_inputs
def ctc(y_true, y_pred):
    """Keras' ctc (keras.ops.ctc_loss on JAX, optax's algorithm): y_pred (N, T, C) logits,
    y_true (N, S) labels with 0 as both the blank and the padding; every frame counts."""
    target = y_true.astype(jnp.int32)
    output = y_pred
    num_classes = output.shape[2]
    max_label_length = target.shape[1]
    log_epsilon = -1e5
    label_lengths = jnp.sum(target != 0, axis=-1).astype(jnp.int32)
    logprobs = jax.nn.log_softmax(output)
    repeat = (target[:, :-1] == target[:, 1:]).astype(jnp.float32)
    repeat = jnp.pad(repeat, ((0, 0), (0, 1)))
    logprobs_phi = jnp.transpose(logprobs[:, :, 0:1], (1, 0, 2))
    one_hot = jax.nn.one_hot(target, num_classes=num_classes, dtype=logprobs.dtype)
    logprobs_emit = jnp.transpose(jnp.einsum("btk,bnk->btn", logprobs, one_hot), (1, 0, 2))
    # full_like (not jnp.ones): inside shard_map the scan carry must vary like the body's
    emit_init = jnp.full_like(logprobs_emit[0], log_epsilon)
    phi_init = jnp.concatenate([jnp.full_like(logprobs_phi[0], 0.0), emit_init], axis=-1)

    def update_phi(phi, added):
        return jnp.concatenate([phi[:, :1], jnp.logaddexp(phi[:, 1:], added)], axis=-1)

    def body(prev, x):
        prev_phi, prev_emit = prev
        prev_phi = update_phi(prev_phi, prev_emit + log_epsilon * repeat)
        emit, phi = x
        next_emit = jnp.logaddexp(prev_phi[:, :-1] + emit, prev_emit + emit)
        next_phi = prev_phi + phi
        next_phi = update_phi(next_phi, prev_emit + phi + log_epsilon * (1.0 - repeat))
        return (next_phi, next_emit), None

    (last_phi, last_emit), _ = jax.lax.scan(
        body, (phi_init, emit_init), (logprobs_emit, logprobs_phi))
    last = update_phi(last_phi, last_emit)
    sel = jax.nn.one_hot(label_lengths, num_classes=max_label_length + 1, dtype=last.dtype)
    return Terms(-jnp.einsum("bn,bn->b", last, sel))


@_keras_inputs
def circle(y_true, y_pred, *, gamma=80.0, margin=0.4, remove_diagonal=True):
    labels = y_true.astype(jnp.int32)
    dist = 1 - jnp.matmul(y_pred, jnp.transpose(y_pred))
    dist = jnp.maximum(dist, 0.0)
    pos = labels[:, None] == labels[None, :]
    neg = ~pos
    if remove_diagonal:
        pos = pos & ~jnp.eye(labels.shape[0], dtype=bool)
    posf, negf = pos.astype(dist.dtype), neg.astype(dist.dtype)
    pos_w = jnp.maximum((margin + dist) * posf, 0.0)
    neg_w = jnp.maximum((1 + margin - dist) * negf, 0.0)
    pos_wd = -1 * gamma * pos_w * (margin - dist)
    neg_wd = gamma * neg_w * ((1 - margin) - dist)
    p_loss = jax.scipy.special.logsumexp(jnp.where(pos, pos_wd, -jnp.inf), axis=1)
    n_loss = jax.scipy.special.logsumexp(jnp.where(neg, neg_wd, -jnp.inf), axis=1)
    loss = jax.nn.softplus(p_loss + n_loss)
    return _mask_terms(loss, loss > 0)
