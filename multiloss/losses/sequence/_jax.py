"""JAX implementations of the sequence losses (see the specs in ``__init__.py``).

ctc: torch's CPU kernel (aten/src/ATen/native/LossCTC.cpp) transcribed to ``jax.lax.scan``,
vectorised over the batch and over the extended (blank-interleaved) target states, with the
same order of floating-point operations in the recursions:

* forward: the log-space alpha recursion, one scan step per frame, each sequence frozen after
  its own ``input_lengths[b]`` frames; the loss is ``-log(alpha[T_b - 1, 2 S_b] +
  alpha[T_b - 1, 2 S_b - 1])``.
* gradient (a ``jax.custom_jvp`` whose tangent is linear in ``d log_probs``): torch's beta
  recursion in a reverse scan, then the posterior
  of every state, ``exp(alpha + beta + nll - lp)``, summed per class (a segment sum), and
  torch's gradient ``(exp(lp) - posterior) * g`` on each sequence's frames, 0 after them. It
  is torch's raw gradient, which assumes normalised log-probabilities (pytorch#52241), not the
  derivative of the forward as a function of arbitrary ``log_probs``; composed with
  ``log_softmax``, both are the true gradient.

Memory is linear in T: the alphas and betas, (T, N, 2 S + 1) each, as torch keeps; nothing is
(T, T) or (T, S, S). Every log-sum-exp is guarded as in torch (a max of -inf is replaced by
0), so -inf states give -inf, never NaN. The gradient is NaN exactly where torch's formula is
(every frame of an infinite loss without ``zero_infinity``, and where ``log_probs`` is -inf).

Differentiation: the tangent of the loss is ``sum_{t,c} grad[t, c] d log_probs[t, c]`` with
torch's gradient ``grad``, so reverse mode gives torch's gradient (its transpose), forward mode
(``jax.jvp``, ``jacfwd``) the same directional derivative, and second order (``jax.hessian``,
``jacrev(jacrev)``, Hessian-vector products) the derivative of torch's gradient, computed
through the recursions (every log-sum-exp has a zero derivative where all its terms are -inf,
so -inf states give no NaN). torch itself has no double backward for ``ctc_loss``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ...backends import Terms


def _pad_right(x, k, fill):
    """out[..., s] = x[..., s - k] (fill where s < k), same shape."""
    n = x.shape[-1]
    pad = [(0, 0)] * (x.ndim - 1) + [(k, 0)]
    return jnp.pad(x, pad, constant_values=fill)[..., :n]


def _pad_left(x, k, fill):
    """out[..., s] = x[..., s + k] (fill where s + k is past the end), same shape."""
    pad = [(0, 0)] * (x.ndim - 1) + [(0, k)]
    return jnp.pad(x, pad, constant_values=fill)[..., k:]


def _safe_log(s, m):
    """log(s) + m, -inf where s == 0 (every term -inf), with a zero derivative there: log's
    derivative at 0 (inf) times the terms' (0) is NaN in reverse-over-reverse mode."""
    empty = s == 0
    return jnp.where(empty, -jnp.inf, jnp.log(jnp.where(empty, jnp.ones_like(s), s)) + m)


def _lse3(a, b, c):
    # torch's log(exp(a - m) + exp(b - m) + exp(c - m)) + m, with m = 0 where all are -inf
    m = jnp.maximum(jnp.maximum(a, b), c)
    m = jnp.where(m == -jnp.inf, jnp.zeros_like(m), m)
    return _safe_log(jnp.exp(a - m) + jnp.exp(b - m) + jnp.exp(c - m), m)


def _emissions(lp, ext):
    """log_probs of each extended state: (T, N, L), e[t, b, s] = lp[t, b, l'_b[s]]."""
    return jnp.take_along_axis(lp, jnp.broadcast_to(ext, (lp.shape[0],) + ext.shape), axis=2)


def _alpha(em, aux, keep):
    """The alpha recursion: the last alpha of each sequence, and every alpha if ``keep``."""
    ext, skip, il, tle = aux[:4]
    ninf = jnp.array(-jnp.inf, em.dtype)
    s = jnp.arange(ext.shape[1])
    alpha0 = jnp.where((s == 0) | ((s == 1) & (tle > 0)[:, None]), em[0], ninf)

    def step(prev, x):
        t, e = x
        la3 = jnp.where(skip, _pad_right(prev, 2, ninf), ninf)
        new = _lse3(prev, _pad_right(prev, 1, ninf), la3) + e
        new = jnp.where((t < il)[:, None], new, prev)  # frozen after the sequence's end
        return new, new if keep else None

    last, rest = jax.lax.scan(step, alpha0, (jnp.arange(1, em.shape[0]), em[1:]))
    alphas = jnp.concatenate([alpha0[None], rest], axis=0) if keep else None
    return last, alphas


def _nll_of(last, aux):
    _, _, il, tle, impossible, invalid = aux
    dt = last.dtype
    l1 = jnp.take_along_axis(last, (2 * tle)[:, None], axis=1)[:, 0]
    l2 = jnp.take_along_axis(last, jnp.maximum(2 * tle - 1, 0)[:, None], axis=1)[:, 0]
    l2 = jnp.where(tle > 0, l2, -jnp.inf)
    m = jnp.maximum(l1, l2)
    m = jnp.where(m == -jnp.inf, jnp.zeros_like(m), m)
    ll = jnp.where(tle > 0, _safe_log(jnp.exp(l1 - m) + jnp.exp(l2 - m), m), l1)
    # no frames: likelihood 1 of an empty target, 0 otherwise (torch)
    ll = jnp.where(il == 0, jnp.where(tle == 0, jnp.zeros_like(ll), -jnp.inf), ll)
    nll = -ll
    nll = jnp.where(impossible, jnp.array(jnp.inf, dt), nll)
    return jnp.where(invalid, jnp.array(jnp.nan, dt), nll)


def _zero_inf(nll, zero_infinity):
    return jnp.where(nll == jnp.inf, jnp.zeros_like(nll), nll) if zero_infinity else nll


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _ctc_nll(lp, aux, zero_infinity):
    last, _ = _alpha(_emissions(lp, aux[0]), aux, keep=False)
    return _zero_inf(_nll_of(last, aux), zero_infinity)


@partial(_ctc_nll.defjvp, symbolic_zeros=True)
def _ctc_nll_jvp(zero_infinity, primals, tangents):
    # the tangent is linear in d(log_probs), sum over (t, c) of torch's gradient times it:
    # reverse mode transposes it into torch's gradient times the cotangent (the alphas of the
    # forward, the betas and posteriors computed once); forward mode, and the derivatives of
    # torch's gradient (jax.hessian), follow from the same expression
    lp, aux = primals
    dlp = tangents[0]
    em = _emissions(lp, aux[0])
    if isinstance(dlp, SymbolicZero):
        last, _ = _alpha(em, aux, keep=False)
        out = _zero_inf(_nll_of(last, aux), zero_infinity)
        return out, jnp.zeros_like(out)
    last, alphas = _alpha(em, aux, keep=True)
    nll = _nll_of(last, aux)
    grad = _ctc_grad(lp, aux, nll, em, alphas, zero_infinity)
    return _zero_inf(nll, zero_infinity), jnp.sum(grad * dlp.astype(lp.dtype), axis=(0, 2))


def _ctc_grad(lp, aux, nll, em, alphas, zero_infinity):
    """torch's gradient of each sequence's loss w.r.t. log_probs (T, N, C), cotangent 1."""
    ext, skip, il, tle, _, invalid = aux
    n_frames, n, n_classes = lp.shape
    dt = lp.dtype
    ninf = jnp.array(-jnp.inf, dt)
    s = jnp.arange(ext.shape[1])
    tl2 = (2 * tle)[:, None]
    init = (s == tl2) | ((s == tl2 - 1) & (tle > 0)[:, None])
    skip_next = _pad_left(skip, 2, False)  # skip_next[s] = skip[s + 2]

    def step(beta_next, x):
        t, e = x
        lb3 = jnp.where(skip_next, _pad_left(beta_next, 2, ninf), ninf)
        rec = _lse3(beta_next, _pad_left(beta_next, 1, ninf), lb3) + e
        beta = jnp.where((t == il - 1)[:, None], jnp.where(init, e, ninf),
                         jnp.where((t < il - 1)[:, None], rec, ninf))
        return beta, beta

    # like em[0] (not jnp.full): inside shard_map the scan carry must vary like the body's
    beta_end = jnp.full_like(em[0], -jnp.inf)
    _, betas = jax.lax.scan(step, beta_end, (jnp.arange(n_frames), em), reverse=True)
    # the posterior of each state, alpha beta / (y Z): torch's exp(lcab + nll - lp) state by
    # state, at most 1, so the per-class sums need no shift
    post = jnp.exp((alphas + betas + nll[:, None]) - em)
    # per-class sums: a segment sum over (N L) states with time as the inner axis
    ids = (jnp.arange(n)[:, None] * n_classes + ext).reshape(-1)
    gamma = jax.ops.segment_sum(post.reshape(n_frames, -1).T, ids, num_segments=n * n_classes)
    gamma = gamma.T.reshape(n_frames, n, n_classes)
    grad = jnp.exp(lp) - gamma
    # torch's formula is NaN where nll is inf (lcab = -inf) and where lp = -inf
    nan = ~(nll < jnp.inf)[:, None] | (lp == -jnp.inf)
    grad = jnp.where(nan, jnp.array(jnp.nan, dt), grad)
    keep = jnp.arange(n_frames)[:, None] < il[None, :]  # (T, N): the frames of each sequence
    if zero_infinity:
        keep = keep & (nll != jnp.inf)[None, :]
    grad = jnp.where(keep[..., None], grad, jnp.zeros_like(grad))
    return jnp.where(invalid[:, None], jnp.array(jnp.nan, dt), grad)


def _labels(targets, tl, n, n_frames):
    """Padded labels (N, S') from padded (N, S) or concatenated targets, S' = min(S, T) (a
    target longer than T frames has no alignment), and where the layout is invalid."""
    if targets.ndim == 2:
        width = targets.shape[1]
        return targets[:, : min(width, n_frames)], tl > width
    total = targets.shape[0]
    width = min(total, n_frames)
    if width == 0:
        labels = jnp.zeros((n, 0), targets.dtype)
    else:
        offsets = jnp.cumsum(tl) - tl
        labels = targets[jnp.clip(offsets[:, None] + jnp.arange(width), 0, total - 1)]
    return labels, jnp.broadcast_to(jnp.sum(tl) != total, tl.shape)


def _interleave(fill, x):
    """[fill, x0, fill, x1, ..., fill] along the last axis: (N, S) -> (N, 2 S + 1)."""
    n, width = x.shape
    f = jnp.full((n, 1), fill, x.dtype)
    both = jnp.stack([jnp.broadcast_to(f, x.shape), x], axis=2).reshape(n, 2 * width)
    return jnp.concatenate([both, f], axis=1)


def ctc(log_probs, targets, input_lengths, target_lengths, *, blank=0, zero_infinity=False):
    unbatched = log_probs.ndim == 2
    lp = log_probs[:, None, :] if unbatched else log_probs
    n_frames, n, n_classes = lp.shape
    il = jnp.reshape(input_lengths, (n,))
    tl = jnp.reshape(target_lengths, (n,))
    labels, bad_layout = _labels(targets, tl, n, n_frames)
    width = labels.shape[1]
    inside = jnp.arange(width) < tl[:, None]
    bad_label = inside & ((labels < 0) | (labels >= n_classes) | (labels == blank))
    # invalid inputs only a trace can carry (concrete ones raise before the call): NaN
    invalid = bad_layout | (il < 0) | (il > n_frames) | (tl < 0) | jnp.any(bad_label, axis=1)
    safe = jnp.where(inside & ~bad_label, labels, blank).astype(jnp.int32)
    ext = _interleave(blank, safe)  # the extended target l': blanks around every label
    # the skip transition s - 2 -> s: into a label that differs from the previous label
    differs = jnp.concatenate([jnp.zeros((n, min(width, 1)), bool),
                               safe[:, 1:] != safe[:, :-1]], axis=1)
    skip = _interleave(False, differs)
    il_c = jnp.clip(il, 0, n_frames).astype(jnp.int32)
    tle = jnp.clip(tl, 0, width).astype(jnp.int32)
    impossible = tl > width  # longer than the frames: no alignment (torch: inf)
    aux = (ext, skip, il_c, tle, impossible, invalid)
    loss = _ctc_nll(lp, aux, bool(zero_infinity))
    scale = 1 / jnp.maximum(tl, 1).astype(lp.dtype)
    if unbatched:
        loss, scale = loss[0], scale[0]
    return Terms(loss, scale=scale)
