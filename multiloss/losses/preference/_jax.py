"""JAX implementations of the preference losses (see the specs in ``__init__.py``): TRL 1.16's
operations, in its order, with torch 2.13's forward formulas and gradients where JAX's differ:

- ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))``, gradient ``1 - z / (1 + z)`` for x < 0
  and ``z / (1 + z)`` otherwise, ``z = exp(-|x|)`` (torch's ``log_sigmoid_backward``;
  ``jax.nn.log_sigmoid`` is ``-softplus(-x)``, whose rounding differs);
- ``sigmoid(x) = 1 / (1 + exp(-x))`` with gradient ``y (1 - y)`` (torch's CPU kernel and
  ``sigmoid_backward``);
- ``relu``: torch's ``threshold_backward`` (``multiloss.losses.generative._jax._relu``);
- ``sort``: stable, the order torch's CPU sort gives (aot, aot_unpaired).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ...backends import Terms
from ..generative._jax import _relu

_LOG2 = math.log(2)


@jax.custom_jvp
def _log_sigmoid(x):
    """torch.nn.functional.logsigmoid, forward and gradient (see the module doc)."""
    zero = jnp.zeros((), x.dtype)
    return jnp.minimum(x, zero) - jnp.log1p(jnp.exp(-jnp.abs(x)))


@_log_sigmoid.defjvp
def _log_sigmoid_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    z = jnp.exp(-jnp.abs(x))
    q = z / (1 + z)
    return _log_sigmoid(x), t * jnp.where(x < 0, 1 - q, q)


@jax.custom_jvp
def _sigmoid(x):
    """torch.sigmoid: 1 / (1 + exp(-x)), gradient y (1 - y)."""
    return 1 / (1 + jnp.exp(-x))


@_sigmoid.defjvp
def _sigmoid_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = _sigmoid(x)
    return y, t * (y * (1 - y))


def _scores(logratios, f_divergence_type):
    if f_divergence_type == "forward_kl":
        return 1 - jnp.exp(-logratios)
    if f_divergence_type == "js_divergence":
        return _LOG2 + _log_sigmoid(logratios)
    return logratios


def _smoothed(z, label_smoothing):
    return -_log_sigmoid(z) * (1 - label_smoothing) - _log_sigmoid(-z) * label_smoothing


def _dpo_one(loss_type, c, r, rc, rr, beta, label_smoothing, discopop_tau,
             f_divergence_type):
    chosen_logratios = c - rc
    rejected_logratios = r - rr
    chosen_scores = _scores(chosen_logratios, f_divergence_type)
    rejected_scores = _scores(rejected_logratios, f_divergence_type)
    delta_score = chosen_scores - rejected_scores
    if loss_type in ("sigmoid", "sigmoid_norm"):
        return -_log_sigmoid(beta * delta_score)
    if loss_type == "hinge":
        return _relu(1 - beta * delta_score)
    if loss_type == "ipo":
        return (delta_score - 1 / (2 * beta)) ** 2
    if loss_type == "exo_pair":
        eps = jnp.asarray(label_smoothing, c.dtype)
        qw = _sigmoid(beta * delta_score)
        log_qw = _log_sigmoid(beta * delta_score)
        log_pw = jnp.log1p(-eps)
        ql = _sigmoid(-beta * delta_score)
        log_ql = _log_sigmoid(-beta * delta_score)
        log_pl = jnp.log(eps)
        return qw * (log_qw - log_pw) + ql * (log_ql - log_pl)
    if loss_type == "nca_pair":
        chosen_rewards = beta * chosen_logratios
        rejected_rewards = beta * rejected_logratios
        return (-_log_sigmoid(chosen_rewards) - 0.5 * _log_sigmoid(-chosen_rewards)
                - 0.5 * _log_sigmoid(-rejected_rewards))
    if loss_type == "robust":
        clean = -(1 - label_smoothing) * _log_sigmoid(beta * delta_score)
        flipped = -label_smoothing * _log_sigmoid(-beta * delta_score)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    if loss_type == "bco_pair":
        return (-_log_sigmoid(beta * chosen_logratios)
                - _log_sigmoid(-(beta * rejected_logratios)))
    if loss_type == "sppo_hard":
        return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    if loss_type == "aot":
        logratios = jnp.sort(c - r, axis=0, stable=True)
        ref_logratios = jnp.sort(rc - rr, axis=0, stable=True)
        return _smoothed(beta * (logratios - ref_logratios), label_smoothing)
    if loss_type == "aot_unpaired":
        cs = jnp.sort(chosen_logratios, axis=0, stable=True)
        rs = jnp.sort(rejected_logratios, axis=0, stable=True)
        return _smoothed(beta * (cs - rs), label_smoothing)
    if loss_type == "apo_zero":
        return (1 - _sigmoid(beta * chosen_logratios)) + _sigmoid(beta * rejected_logratios)
    if loss_type == "apo_down":
        return _sigmoid(beta * chosen_logratios) + (
            1 - _sigmoid(beta * (chosen_logratios - rejected_logratios)))
    if loss_type == "discopop":
        logits = delta_score * beta
        modulation = _sigmoid(logits / discopop_tau)
        return -_log_sigmoid(logits) * (1 - modulation) + jnp.exp(-logits) * modulation
    raise ValueError(f"loss_type: unknown {loss_type!r}")  # pragma: no cover - validated


def dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1,
        loss_type=("sigmoid",), loss_weights=None, label_smoothing=0.0, discopop_tau=0.05,
        f_divergence_type="reverse_kl"):
    dtype = jnp.result_type(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    c, r, rc, rr = (x.astype(dtype) for x in (chosen_logps, rejected_logps, ref_chosen_logps,
                                              ref_rejected_logps))
    weights = loss_weights or (1.0,) * len(loss_type)
    loss = None
    for t, w in zip(loss_type, weights):
        part = _dpo_one(t, c, r, rc, rr, beta, label_smoothing, discopop_tau, f_divergence_type)
        part = part * w if len(loss_type) > 1 or w != 1.0 else part
        loss = part if loss is None else loss + part
    return Terms(loss)


def _cpo_logits(c, r, alpha):
    if alpha != 0.0:  # AlphaPO's reward (1 - p^-alpha) / alpha
        return (1 - jnp.exp(c) ** -alpha) / alpha - (1 - jnp.exp(r) ** -alpha) / alpha
    return c - r


def _cpo_losses(c, r, beta, loss_type, label_smoothing, simpo_gamma, alpha):
    logits = _cpo_logits(c, r, alpha)
    if loss_type == "simpo":
        logits = logits - simpo_gamma / beta
        return _smoothed(beta * logits, label_smoothing)
    if loss_type == "sigmoid":
        return _smoothed(beta * logits, label_smoothing)
    if loss_type == "hinge":
        return _relu(1 - beta * logits)
    return (logits - 1 / (2 * beta)) ** 2  # ipo


def cpo(chosen_logps, rejected_logps, chosen_nll=None, *, beta=0.1, loss_type="sigmoid",
        label_smoothing=0.0, simpo_gamma=0.5, cpo_alpha=1.0, alpha=0.0):
    nll_in = () if chosen_nll is None else (chosen_nll,)  # left out: no NLL term
    dtype = jnp.result_type(chosen_logps, rejected_logps, *nll_in)
    c, r = chosen_logps.astype(dtype), rejected_logps.astype(dtype)
    loss = _cpo_losses(c, r, beta, loss_type, label_smoothing, simpo_gamma, alpha)
    if cpo_alpha != 0.0 and chosen_nll is not None:
        loss = loss + cpo_alpha * chosen_nll.astype(dtype)
    return Terms(loss)


def simpo(chosen_logps, rejected_logps, *, beta=0.1, simpo_gamma=0.5, label_smoothing=0.0,
          alpha=0.0):
    dtype = jnp.result_type(chosen_logps, rejected_logps)
    c, r = chosen_logps.astype(dtype), rejected_logps.astype(dtype)
    return Terms(_cpo_losses(c, r, beta, "simpo", label_smoothing, simpo_gamma, alpha))


def _log1mexp(x):
    """TRL's log1mexp: log(1 - exp(x)), log1p(-exp(x)) below -ln 2, log(-expm1(x)) above."""
    return jnp.where(x < -0.6931471805599453, jnp.log1p(-jnp.exp(x)), jnp.log(-jnp.expm1(x)))


def orpo(chosen_logps, rejected_logps, chosen_nll=None, *, beta=0.1):
    nll_in = () if chosen_nll is None else (chosen_nll,)  # left out: the odds-ratio term alone
    dtype = jnp.result_type(chosen_logps, rejected_logps, *nll_in)
    c, r = chosen_logps.astype(dtype), rejected_logps.astype(dtype)
    log_odds = (c - r) - (_log1mexp(c) - _log1mexp(r))
    loss = -beta * _log_sigmoid(log_odds)
    return Terms(loss if chosen_nll is None else chosen_nll.astype(dtype) + loss)


def kto(logps, ref_logps, labels, kl=None, *, beta=0.1, loss_type="kto", desirable_weight=1.0,
        undesirable_weight=1.0):
    dtype = jnp.result_type(logps, ref_logps, *(() if kl is None else (kl,)))
    logratios = logps.astype(dtype) - ref_logps.astype(dtype)
    if loss_type == "kto":
        kl = jnp.zeros((), dtype) if kl is None else kl.astype(dtype)  # left out: z_ref = 0
        z = jax.lax.stop_gradient(jnp.maximum(kl, jnp.zeros((), dtype)))
        chosen = 1 - _sigmoid(beta * (logratios - z))
        rejected = 1 - _sigmoid(beta * (z - logratios))
    else:  # apo_zero_unpaired
        chosen = 1 - _sigmoid(beta * logratios)
        rejected = _sigmoid(beta * logratios)
    labels = labels.astype(bool)
    return Terms(jnp.where(labels, desirable_weight * chosen, undesirable_weight * rejected))


# ---------------------------------------------------------------------------------------------
# the rewards TRL logs (multiloss.preference_rewards)


def rewards(name, inputs, opts):
    """(chosen_rewards, rejected_rewards), without gradient, as TRL 1.16 logs them (see
    ``multiloss.losses.preference.preference_rewards``)."""
    sg = jax.lax.stop_gradient
    beta = opts["beta"]
    if name == "dpo":
        c, r, rc, rr = inputs
        return sg(beta * (c - rc)), sg(beta * (r - rr))
    if name == "kto":
        logps, ref_logps, labels = inputs[:3]
        rw = sg(beta * (logps - ref_logps))
        labels = labels.astype(bool)
        return jnp.where(labels, rw, jnp.nan), jnp.where(labels, jnp.nan, rw)
    c, r = inputs[0], inputs[1]
    alpha = opts.get("alpha", 0.0)
    if alpha != 0.0:
        c = (1 - jnp.exp(c) ** -alpha) / alpha
        r = (1 - jnp.exp(r) ** -alpha) / alpha
    return sg(beta * c), sg(beta * r)

from ._linear_jax import *  # noqa: E402, F401, F403  (the fused-linear forms: _linear_jax.py)
