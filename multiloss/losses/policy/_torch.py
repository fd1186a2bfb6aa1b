"""torch implementation of the policy-gradient losses (specs and formulas in ``__init__.py``):
TRL 1.16's ``GRPOTrainer._compute_loss`` step for step, returning the per-sequence terms of
the weighting contract (the JAX twin is ``_jax.py``)."""

from __future__ import annotations

import math

import torch

from ...backends import Terms
from . import aggregation_of

_LOG_1E8 = math.log(1e-8)


def _gamma_weights(advantages, log_ratio, mask, k_pos, lambda_pos, k_neg, lambda_neg):
    """TRL's ``GRPOTrainer.get_gamma_weights`` (VESPO) without vLLM's sampling ratio, under
    no_grad as TRL's: phi(w) = exp(lam + k log w - lam w), w the sequence's summed ratio."""
    with torch.no_grad():
        seq = (log_ratio.clamp(-20.0, 20.0) * mask).sum(-1, keepdim=True)
        log_w = seq.clamp(_LOG_1E8, 20.0)
        w = torch.exp(log_w)
        nonneg = advantages >= 0
        kw = {"dtype": torch.promote_types(log_w.dtype, torch.float32), "device": log_w.device}
        k = torch.where(nonneg, torch.tensor(k_pos, **kw), torch.tensor(k_neg, **kw))
        lam = torch.where(nonneg, torch.tensor(lambda_pos, **kw),
                          torch.tensor(lambda_neg, **kw)).clamp(min=1e-4)
        log_phi = lam + k * log_w - lam * w
        return torch.exp(log_phi).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def _off_policy_mask(advantages, logps, old_logps, mask, threshold):
    """TRL's ``GRPOTrainer.get_off_policy_mask`` (DeepSeek-V3.2's sequence mask) with the
    old log-probs as the sampling ones (TRL's choice without vLLM): 0 where A < 0 and the
    sequence's mean (old - new) exceeds the threshold."""
    kl = torch.nan_to_num(old_logps - logps.detach(), nan=0.0)
    avg = (kl * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1.0)
    return ((advantages >= 0) | (avg <= threshold)).to(mask.dtype)


def per_token_loss(logps, old_logps, advantages, mask, ref_logps=None, *, beta=0.0,
                   epsilon=0.2, epsilon_high=None, delta=None, loss_type="dapo",
                   importance_sampling_level="token", use_bias_correction_kl=True,
                   sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, vespo_k_pos=2.0,
                   vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0,
                   off_policy_mask_threshold=None):
    """The per-token loss of TRL's ``_compute_loss`` before its aggregation: (N, T), or
    (N, 1) at the sequence level without a KL term. ``mask`` is in the loss's dtype."""
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    log_ratio = logps - old_logps
    if importance_sampling_level == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_w)
    if beta != 0.0:
        d = ref_logps - logps
        kl = torch.exp(d) - d - 1
        if use_bias_correction_kl:
            kl = kl * coef_1
    if loss_type == "cispo":
        loss = -torch.clamp(coef_1, max=eps_high).detach() * advantages * logps
    elif loss_type == "sapo":
        # TRL's temperatures are float32 tensors (torch's default dtype): a bfloat16 ratio's
        # gate is computed in float32 there
        kw = {"dtype": torch.promote_types(coef_1.dtype, torch.float32), "device": coef_1.device}
        tau = torch.where(advantages > 0, torch.tensor(sapo_temperature_pos, **kw),
                          torch.tensor(sapo_temperature_neg, **kw))
        loss = -(torch.sigmoid(tau * (coef_1 - 1)) * 4 / tau) * advantages
    elif loss_type == "vespo":
        phi = _gamma_weights(advantages, log_ratio, mask, vespo_k_pos, vespo_lambda_pos,
                             vespo_k_neg, vespo_lambda_neg)
        loss = -phi * advantages * logps
    else:  # grpo, bnpo, dr_grpo, dapo, luspo
        coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + eps_high)
        if delta is not None:
            coef_1 = torch.clamp(coef_1, max=delta)
        loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if off_policy_mask_threshold is not None:
        loss = loss * _off_policy_mask(advantages, logps, old_logps, mask,
                                       off_policy_mask_threshold)
    if beta != 0.0:
        loss = loss + beta * kl
    return loss


def grpo(logps, old_logps, advantages, completion_mask, ref_logps=None, *, reduction=None,
         loss_type="dapo", loss_agg_mode=None, max_completion_length=512, **options):
    """The per-sequence terms (``Terms``) of TRL's GRPO loss; see ``multiloss.losses.policy``."""
    mask = completion_mask.to(logps.dtype)
    tok = per_token_loss(logps, old_logps, advantages, mask, ref_logps, loss_type=loss_type,
                         **options).to(logps.dtype)  # sapo/vespo's float32 constants
    total = (tok * mask).sum(-1)
    agg = aggregation_of(loss_type, loss_agg_mode)
    if agg == "seq-mean-token-mean":
        return Terms(total / mask.sum(-1).clamp(min=1.0))
    if agg == "token-mean":
        return Terms(total, mask.sum(-1))
    if agg == "seq-mean-token-sum-norm":
        length = mask.shape[-1] if max_completion_length is None else max_completion_length
        return Terms(total, torch.full_like(total, float(length)))
    return Terms(total)  # seq-mean-token-sum

from ._linear_torch import *  # noqa: E402, F401, F403  (the fused-linear forms: _linear_torch.py)
