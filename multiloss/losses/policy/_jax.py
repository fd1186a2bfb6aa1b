"""JAX implementation of the policy-gradient losses (specs and formulas in ``__init__.py``):
TRL 1.16's ``GRPOTrainer._compute_loss`` step for step, with torch's gradients at the
clipping boundaries (the twin of ``_torch.py``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ...backends import Terms
from . import aggregation_of

_LOG_1E8 = math.log(1e-8)


def _clamp(x, lo=None, hi=None):
    """torch.clamp: the value clipped, the gradient passed where lo <= x <= hi (boundaries
    included; jnp.clip's maximum/minimum would give half of it at x == lo or x == hi). NaN
    stays NaN."""
    if lo is not None:
        x = jnp.where(x < lo, jnp.asarray(lo, x.dtype), x)
    if hi is not None:
        x = jnp.where(x > hi, jnp.asarray(hi, x.dtype), x)
    return x


def _gamma_weights(advantages, log_ratio, mask, k_pos, lambda_pos, k_neg, lambda_neg):
    """TRL's ``GRPOTrainer.get_gamma_weights`` (VESPO), without gradient as TRL's."""
    log_ratio, advantages = jax.lax.stop_gradient((log_ratio, advantages))
    seq = jnp.sum(jnp.clip(log_ratio, -20.0, 20.0) * mask, -1, keepdims=True)
    log_w = jnp.clip(seq, _LOG_1E8, 20.0)
    w = jnp.exp(log_w)
    nonneg = advantages >= 0
    dt = log_w.dtype
    k = jnp.where(nonneg, jnp.asarray(k_pos, dt), jnp.asarray(k_neg, dt))
    lam = jnp.maximum(jnp.where(nonneg, jnp.asarray(lambda_pos, dt),
                                jnp.asarray(lambda_neg, dt)), 1e-4)
    log_phi = lam + k * log_w - lam * w
    return jnp.nan_to_num(jnp.exp(log_phi), nan=0.0, posinf=0.0, neginf=0.0)


def _off_policy_mask(advantages, logps, old_logps, mask, threshold):
    """TRL's ``GRPOTrainer.get_off_policy_mask`` with the old log-probs as the sampling ones."""
    kl = jnp.nan_to_num(old_logps - jax.lax.stop_gradient(logps), nan=0.0)
    avg = jnp.sum(kl * mask, 1, keepdims=True) / jnp.maximum(
        jnp.sum(mask, 1, keepdims=True), 1.0)
    keep = (advantages >= 0) | (avg <= threshold)
    return jax.lax.stop_gradient(keep.astype(mask.dtype))


def per_token_loss(logps, old_logps, advantages, mask, ref_logps=None, *, beta=0.0,
                   epsilon=0.2, epsilon_high=None, delta=None, loss_type="dapo",
                   importance_sampling_level="token", use_bias_correction_kl=True,
                   sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, vespo_k_pos=2.0,
                   vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0,
                   off_policy_mask_threshold=None):
    """The per-token loss of TRL's ``_compute_loss`` before its aggregation: (N, T), or
    (N, 1) at the sequence level without a KL term. ``mask`` is in the loss's dtype."""
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    log_ratio = logps - old_logps
    if importance_sampling_level == "token":
        log_w = log_ratio
    else:
        log_w = (jnp.sum(log_ratio * mask, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0))[:, None]
    coef_1 = jnp.exp(log_w)
    if beta != 0.0:
        d = ref_logps - logps
        kl = jnp.exp(d) - d - 1
        if use_bias_correction_kl:
            kl = kl * coef_1
    if loss_type == "cispo":
        loss = -jax.lax.stop_gradient(_clamp(coef_1, hi=eps_high)) * advantages * logps
    elif loss_type == "sapo":
        dt = coef_1.dtype
        tau = jnp.where(advantages > 0, jnp.asarray(sapo_temperature_pos, dt),
                        jnp.asarray(sapo_temperature_neg, dt))
        loss = -(jax.nn.sigmoid(tau * (coef_1 - 1)) * 4 / tau) * advantages
    elif loss_type == "vespo":
        phi = _gamma_weights(advantages, log_ratio, mask, vespo_k_pos, vespo_lambda_pos,
                             vespo_k_neg, vespo_lambda_neg)
        loss = -phi * advantages * logps
    else:  # grpo, bnpo, dr_grpo, dapo, luspo
        coef_2 = _clamp(coef_1, 1 - epsilon, 1 + eps_high)
        if delta is not None:
            coef_1 = _clamp(coef_1, hi=delta)
        # jnp.minimum, as torch.min of two tensors, gives half the gradient to each at a tie
        loss = -jnp.minimum(coef_1 * advantages, coef_2 * advantages)
    if off_policy_mask_threshold is not None:
        loss = loss * _off_policy_mask(advantages, logps, old_logps, mask,
                                       off_policy_mask_threshold)
    if beta != 0.0:
        loss = loss + beta * kl
    return loss


def grpo(logps, old_logps, advantages, completion_mask, ref_logps=None, *,
         loss_type="dapo", loss_agg_mode=None, max_completion_length=512, **options):
    """The per-sequence terms (``Terms``) of TRL's GRPO loss; see ``multiloss.losses.policy``."""
    mask = completion_mask.astype(logps.dtype)
    tok = per_token_loss(logps, old_logps, advantages, mask, ref_logps, loss_type=loss_type,
                         **options)
    total = jnp.sum(tok * mask, -1)
    agg = aggregation_of(loss_type, loss_agg_mode)
    if agg == "seq-mean-token-mean":
        return Terms(total / jnp.maximum(jnp.sum(mask, -1), 1.0))
    if agg == "token-mean":
        return Terms(total, jnp.sum(mask, -1))
    if agg == "seq-mean-token-sum-norm":
        length = mask.shape[-1] if max_completion_length is None else max_completion_length
        return Terms(total, jnp.full_like(total, float(length)))
    return Terms(total)  # seq-mean-token-sum

from ._linear_jax import *  # noqa: E402, F401, F403  (the fused-linear forms: _linear_jax.py)
