"""torch implementations of the preference losses (see the specs in ``__init__.py``): TRL
1.16's operations, transcribed line by line (``F.logsigmoid``, ``torch.sigmoid``,
``torch.relu``, ``torch.sort``), unreduced; the backend reduces the ``Terms``.

Each function takes the log-prob inputs in the spec's order and the bound options as keywords
(``reduction`` is passed by the backend and not used: every function returns ``Terms``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...backends import Terms

_LOG2 = math.log(2)


def _scores(logratios, f_divergence_type):
    """TRL's f-DPO scores f'(pi / pi_ref) of the log-ratios (DPOTrainer._compute_loss)."""
    if f_divergence_type == "forward_kl":
        return 1 - torch.exp(-logratios)
    if f_divergence_type == "js_divergence":
        return _LOG2 + F.logsigmoid(logratios)
    return logratios  # reverse_kl: standard DPO


def _smoothed(z, label_smoothing):
    return -F.logsigmoid(z) * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing


def _dpo_one(loss_type, c, r, rc, rr, beta, label_smoothing, discopop_tau,
             f_divergence_type):
    chosen_logratios = c - rc
    rejected_logratios = r - rr
    chosen_scores = _scores(chosen_logratios, f_divergence_type)
    rejected_scores = _scores(rejected_logratios, f_divergence_type)
    delta_score = chosen_scores - rejected_scores
    if loss_type in ("sigmoid", "sigmoid_norm"):
        return -F.logsigmoid(beta * delta_score)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta_score)
    if loss_type == "ipo":
        return (delta_score - 1 / (2 * beta)) ** 2
    if loss_type == "exo_pair":
        eps = torch.tensor(label_smoothing, dtype=c.dtype, device=c.device)
        qw = torch.sigmoid(beta * delta_score)
        log_qw = F.logsigmoid(beta * delta_score)
        log_pw = torch.log1p(-eps)
        ql = torch.sigmoid(-beta * delta_score)
        log_ql = F.logsigmoid(-beta * delta_score)
        log_pl = torch.log(eps)
        return qw * (log_qw - log_pw) + ql * (log_ql - log_pl)
    if loss_type == "nca_pair":
        chosen_rewards = beta * chosen_logratios
        rejected_rewards = beta * rejected_logratios
        return (-F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards)
                - 0.5 * F.logsigmoid(-rejected_rewards))
    if loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta_score)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta_score)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    if loss_type == "bco_pair":
        return -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-(beta * rejected_logratios))
    if loss_type == "sppo_hard":
        return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    if loss_type == "aot":
        logratios, _ = torch.sort(c - r, dim=0, stable=True)
        ref_logratios, _ = torch.sort(rc - rr, dim=0, stable=True)
        return _smoothed(beta * (logratios - ref_logratios), label_smoothing)
    if loss_type == "aot_unpaired":
        cs, _ = torch.sort(chosen_logratios, dim=0, stable=True)
        rs, _ = torch.sort(rejected_logratios, dim=0, stable=True)
        return _smoothed(beta * (cs - rs), label_smoothing)
    if loss_type == "apo_zero":
        return (1 - torch.sigmoid(beta * chosen_logratios)) + torch.sigmoid(
            beta * rejected_logratios)
    if loss_type == "apo_down":
        return torch.sigmoid(beta * chosen_logratios) + (
            1 - torch.sigmoid(beta * (chosen_logratios - rejected_logratios)))
    if loss_type == "discopop":
        logits = delta_score * beta
        modulation = torch.sigmoid(logits / discopop_tau)
        return -F.logsigmoid(logits) * (1 - modulation) + torch.exp(-logits) * modulation
    raise ValueError(f"loss_type: unknown {loss_type!r}")  # pragma: no cover - validated


def dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
        reduction=None, beta=0.1, loss_type=("sigmoid",), loss_weights=None,
        label_smoothing=0.0, discopop_tau=0.05, f_divergence_type="reverse_kl"):
    weights = loss_weights or (1.0,) * len(loss_type)
    loss = None
    for t, w in zip(loss_type, weights):
        part = _dpo_one(t, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
                        beta, label_smoothing, discopop_tau, f_divergence_type)
        part = part * w if len(loss_type) > 1 or w != 1.0 else part
        loss = part if loss is None else loss + part
    return Terms(loss)


def _cpo_logits(c, r, alpha):
    if alpha != 0.0:  # AlphaPO's reward (1 - p^-alpha) / alpha
        return (1 - torch.exp(c).pow(-alpha)) / alpha - (1 - torch.exp(r).pow(-alpha)) / alpha
    return c - r


def _cpo_losses(c, r, beta, loss_type, label_smoothing, simpo_gamma, alpha):
    logits = _cpo_logits(c, r, alpha)
    if loss_type == "simpo":
        logits = logits - simpo_gamma / beta
        return _smoothed(beta * logits, label_smoothing)
    if loss_type == "sigmoid":
        return _smoothed(beta * logits, label_smoothing)
    if loss_type == "hinge":
        return torch.relu(1 - beta * logits)
    return (logits - 1 / (2 * beta)) ** 2  # ipo


def cpo(chosen_logps, rejected_logps, chosen_nll=None, *, reduction=None, beta=0.1,
        loss_type="sigmoid", label_smoothing=0.0, simpo_gamma=0.5, cpo_alpha=1.0, alpha=0.0):
    loss = _cpo_losses(chosen_logps, rejected_logps, beta, loss_type, label_smoothing,
                       simpo_gamma, alpha)
    if cpo_alpha != 0.0 and chosen_nll is not None:  # left out: no NLL term
        loss = loss + cpo_alpha * chosen_nll
    return Terms(loss)


def simpo(chosen_logps, rejected_logps, *, reduction=None, beta=0.1, simpo_gamma=0.5,
          label_smoothing=0.0, alpha=0.0):
    return Terms(_cpo_losses(chosen_logps, rejected_logps, beta, "simpo", label_smoothing,
                             simpo_gamma, alpha))


def _log1mexp(x):
    """TRL's log1mexp (experimental/orpo/orpo_trainer.py): log(1 - exp(x)), branched at -ln 2."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)),
                       torch.log(-torch.expm1(x)))


def orpo(chosen_logps, rejected_logps, chosen_nll=None, *, reduction=None, beta=0.1):
    log_odds = (chosen_logps - rejected_logps) - (
        _log1mexp(chosen_logps) - _log1mexp(rejected_logps))
    loss = -beta * F.logsigmoid(log_odds)
    return Terms(loss if chosen_nll is None else chosen_nll + loss)  # None: odds ratio alone


def kto(logps, ref_logps, labels, kl=None, *, reduction=None, beta=0.1, loss_type="kto",
        desirable_weight=1.0, undesirable_weight=1.0):
    logratios = logps - ref_logps
    if loss_type == "kto":
        z = (logratios.new_zeros(()) if kl is None  # left out: z_ref = 0
             else kl.detach().clamp(min=0).to(logratios.dtype))
        chosen = 1 - torch.sigmoid(beta * (logratios - z))
        rejected = 1 - torch.sigmoid(beta * (z - logratios))
    else:  # apo_zero_unpaired
        chosen = 1 - torch.sigmoid(beta * logratios)
        rejected = torch.sigmoid(beta * logratios)
    labels = labels.to(torch.bool)
    return Terms(torch.where(labels, desirable_weight * chosen, undesirable_weight * rejected))


# ---------------------------------------------------------------------------------------------
# the rewards TRL logs (multiloss.preference_rewards)


def rewards(name, inputs, opts):
    """(chosen_rewards, rejected_rewards), detached, as TRL 1.16 logs them (see
    ``multiloss.losses.preference.preference_rewards``)."""
    beta = opts["beta"]
    if name == "dpo":
        c, r, rc, rr = inputs
        return (beta * (c - rc)).detach(), (beta * (r - rr)).detach()
    if name == "kto":
        logps, ref_logps, labels = inputs[:3]
        rw = (beta * (logps - ref_logps)).detach()
        labels = labels.to(torch.bool)
        nan = torch.full_like(rw, float("nan"))
        return torch.where(labels, rw, nan), torch.where(labels, nan, rw)
    c, r = inputs[0], inputs[1]
    alpha = opts.get("alpha", 0.0)
    if alpha != 0.0:
        c = (1 - torch.exp(c).pow(-alpha)) / alpha
        r = (1 - torch.exp(r).pow(-alpha)) / alpha
    return (beta * c).detach(), (beta * r).detach()

from ._linear_torch import *  # noqa: E402, F401, F403  (the fused-linear forms: _linear_torch.py)
