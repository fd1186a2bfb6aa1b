"""Policy-gradient losses of language-model post-training: ``grpo`` (TRL 1.16's GRPO trainer
loss, every ``loss_type`` of its ``GRPOConfig``, GSPO through ``importance_sampling_level``).
Specs only; implementations in ``_jax.py`` and ``_torch.py``.

Every behaviour below was read in ``trl/trainer/grpo_trainer.py`` (``_compute_loss``,
``get_gamma_weights``, ``get_off_policy_mask``) and ``grpo_config.py`` of TRL 1.16.0, and
measured by calling ``GRPOTrainer._compute_loss`` on a small object carrying the fields it
reads (the reference below):

- TRL differentiates every log-prob input its graph touches: ``old_logps`` through the ratio
  (TRL detaches it only where it is absent and taken from ``logps``), ``ref_logps`` through
  the k3 KL term, the advantages; cispo's clipped ratio and vespo's gamma weights are
  detached (``.detach()``, ``@torch.no_grad``);
- ``torch.clamp`` passes the gradient at its bounds (ratio exactly 1 - epsilon or
  1 + epsilon_high), ``torch.min`` of two tensors gives half of it to each side at a tie;
- the means over tokens divide by ``clamp(count, min=1)``: an all-masked completion gives 0,
  and so does an all-masked batch (dapo, bnpo, cispo, vespo);
- per-micro-batch normalisation: grpo, bnpo, dr_grpo, luspo and sapo divide by the number of
  accumulation steps, dapo, cispo and vespo by the global token count over the accumulated
  batch and the processes (``num_items_in_batch``).
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, boolean, one_of, real, register
from .._common import case_id, expect_float, loss_shape_weight

FAMILY = "policy"

#: TRL 1.16's GRPOConfig.loss_type values (every one of them)
LOSS_TYPES = ("dapo", "grpo", "bnpo", "dr_grpo", "luspo", "cispo", "sapo", "vespo")

#: verl's names of the aggregations of the per-token loss (``loss_agg_mode``)
AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                "seq-mean-token-sum-norm")

#: the aggregation each TRL loss type uses
_TRL_AGGREGATION = {
    "grpo": "seq-mean-token-mean", "sapo": "seq-mean-token-mean",
    "bnpo": "token-mean", "dapo": "token-mean", "cispo": "token-mean", "vespo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm", "luspo": "seq-mean-token-sum",
}


def aggregation_of(loss_type: str, loss_agg_mode: str | None) -> str:
    """The aggregation of the per-token loss: ``loss_agg_mode`` where given, else the loss
    type's own (TRL's)."""
    return _TRL_AGGREGATION[loss_type] if loss_agg_mode is None else loss_agg_mode


# ---------------------------------------------------------------------------------------------
# options


def _optional(check):
    def run(name, value):
        return None if value is None else check(name, value)

    return run


def _length(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected None or an int >= 1, got {value!r}")
    return int(value)


OPTIONS = (
    Option("loss_type", "dapo",
           "TRL 1.16's GRPOConfig.loss_type (its default 'dapo'): the per-token loss "
           "(clipped ratio for grpo/bnpo/dr_grpo/dapo/luspo, cispo's detached clipped ratio "
           "times log-prob, sapo's sigmoid gate, vespo's gamma weight times log-prob) and its "
           "aggregation (see loss_agg_mode)", one_of(LOSS_TYPES),
           allowed=" | ".join(repr(t) for t in LOSS_TYPES)),
    Option("beta", 0.0, "KL coefficient (TRL's default 0): adds beta * k3, the estimator "
           "exp(ref - logp) - (ref - logp) - 1, to every token; needs ref_logps where != 0",
           real(), allowed="float"),
    Option("epsilon", 0.2, "lower clipping epsilon: the ratio is clipped to "
           "[1 - epsilon, 1 + epsilon_high]", real(), allowed="float"),
    Option("epsilon_high", None, "upper clipping epsilon (DAPO's clip-higher, 0.28 there); "
           "None: epsilon. For cispo, the largest ratio (ScaleRL's eps_max, 5.0 there), TRL's "
           "use of the same field", _optional(real()), allowed="None | float"),
    Option("delta", None, "two-sided clipping (INTELLECT-2): the unclipped ratio is also "
           "capped at delta (None: off); grpo, bnpo, dr_grpo, dapo, luspo",
           _optional(real()), allowed="None | float"),
    Option("importance_sampling_level", "token",
           "'token': one ratio per token; 'sequence': exp of the masked mean log-ratio of "
           "the completion, one per sequence (GSPO)", one_of(("token", "sequence")),
           allowed="'token' | 'sequence'"),
    Option("use_bias_correction_kl", True, "multiply the KL term by the importance ratio "
           "(TRL 1.16's default True; DeepSeek-V3.2): changes the KL gradient even where the "
           "ratio is 1", boolean, allowed="bool"),
    Option("max_completion_length", 512, "dr_grpo's (and seq-mean-token-sum-norm's) "
           "constant: each sequence's token sum is divided by it (TRL's GRPOConfig default "
           "512); None: T, the completions' padded length (verl's)", _length,
           allowed="None | int >= 1"),
    Option("loss_agg_mode", None,
           "how the masked per-token losses l_it (mask m_it, c_i = sum_t m_it) become the "
           "loss, verl's names: 'token-mean' sum_it l / sum_i c_i (dapo, bnpo, cispo, vespo); "
           "'seq-mean-token-mean' mean_i (sum_t l / max(c_i, 1)) (grpo, sapo); "
           "'seq-mean-token-sum' mean_i sum_t l (luspo); 'seq-mean-token-sum-norm' "
           "sum_it l / (N * max_completion_length) (dr_grpo). None: the loss type's own",
           _optional(one_of(AGGREGATIONS)),
           allowed="None | " + " | ".join(repr(a) for a in AGGREGATIONS)),
    Option("sapo_temperature_pos", 1.0, "sapo's temperature where A > 0", real(),
           allowed="float"),
    Option("sapo_temperature_neg", 1.05, "sapo's temperature where A <= 0", real(),
           allowed="float"),
    Option("vespo_k_pos", 2.0, "vespo's power k where A >= 0", real(), allowed="float"),
    Option("vespo_lambda_pos", 3.0, "vespo's decay lambda where A >= 0", real(),
           allowed="float"),
    Option("vespo_k_neg", 3.0, "vespo's power k where A < 0", real(), allowed="float"),
    Option("vespo_lambda_neg", 2.0, "vespo's decay lambda where A < 0", real(),
           allowed="float"),
    Option("off_policy_mask_threshold", None,
           "DeepSeek-V3.2's off-policy sequence mask: a sequence with A < 0 whose masked "
           "mean of old_logps - logps exceeds it is dropped from the policy term (the KL "
           "term stays); None: off", _optional(real()), allowed="None | float"),
)

INPUTS = (
    InputSpec("logps", "(N, T) per-token log-probabilities of the completions under the "
              "policy being trained"),
    InputSpec("old_logps", "(N, T) per-token log-probabilities under the policy that "
              "sampled the completions (TRL's old_per_token_logps; on-policy: logps with "
              "its gradient stopped, which is TRL's default where it has none)"),
    InputSpec("advantages", "(N,) one advantage per completion, or (N, T) per token"),
    InputSpec("completion_mask", "(N, T) 1 for completion tokens, 0 for padding (bool, "
              "integer or 0/1 floating; TRL's completion_mask, times its tool_mask)",
              differentiable=False),
    InputSpec("ref_logps", "(N, T) per-token log-probabilities under the reference model "
              "(TRL's ref_per_token_logps); needed where beta != 0, else unused",
              optional=True),
)


# ---------------------------------------------------------------------------------------------
# checks


def _grpo_check(named, opts):
    lp, old, adv, mask = (named[k] for k in ("logps", "old_logps", "advantages",
                                              "completion_mask"))
    expect_float("logps", lp)
    if lp.ndim != 2:
        raise ValueError(f"logps: expected shape (N, T) (per-token log-probabilities of N "
                         f"completions of T tokens), got shape {lp.shape}")
    names = [("old_logps", old)]
    ref = named.get("ref_logps")
    if ref is not None:
        names.append(("ref_logps", ref))
    for name, x in names:
        expect_float(name, x)
        if x.shape != lp.shape:
            raise ValueError(f"{name}: expected the shape of logps, {lp.shape}, got {x.shape}")
    expect_float("advantages", adv)
    if adv.shape not in (lp.shape[:1], lp.shape):
        raise ValueError(f"advantages: expected shape {lp.shape[:1]} (one per completion) or "
                         f"{lp.shape} (one per token), got {adv.shape}")
    if mask.kind not in "biuf":
        raise TypeError(f"completion_mask: expected a bool, integer or floating array, got "
                        f"{mask.describe()}")
    if mask.shape != lp.shape:
        raise ValueError(f"completion_mask: expected the shape of logps, {lp.shape}, got "
                         f"{mask.shape}")
    if opts["beta"] != 0.0 and ref is None:
        raise ValueError(f"ref_logps: needed where beta != 0 (the KL term), got none with "
                         f"beta={opts['beta']}; pass the reference model's per-token "
                         f"log-probabilities, or beta=0")
    return lp.shape[:1]


def _warn(opts):
    """TRL's warnings on combinations its papers do not use (GRPOTrainer.__init__)."""
    lt, level = opts["loss_type"], opts["importance_sampling_level"]
    if lt == "luspo" and level != "sequence":
        warnings.warn("grpo: loss_type='luspo' is meant with importance_sampling_level="
                      "'sequence' (TRL warns too)", UserWarning, stacklevel=4)
    if lt == "vespo" and level != "token":
        warnings.warn("grpo: loss_type='vespo' computes sequence-level weights itself; "
                      "importance_sampling_level should be 'token' (TRL warns too)",
                      UserWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------------
# the normaliser (the contract's denominator weights), NumPy


def _normalizer(inputs, opts):
    mask = np.asarray(inputs[3]).astype(np.float64)
    n, t = mask.shape
    agg = aggregation_of(opts["loss_type"], opts["loss_agg_mode"])
    if agg == "token-mean":
        d = mask.sum(-1)
    elif agg == "seq-mean-token-sum-norm":
        length = opts["max_completion_length"]
        d = np.full(n, float(t if length is None else length))
    else:
        d = np.ones(n)
    return d, np.ones(n)


# ---------------------------------------------------------------------------------------------
# the reference: TRL 1.16's GRPOTrainer._compute_loss on a small object


def trl_grpo_loss(torch, logps, old_logps, advantages, mask, ref_logps, opts, *,
                  loss_type=None, num_items=None, max_completion_length=None, steps=1,
                  is_ratio=None):
    """TRL 1.16's ``GRPOTrainer._compute_loss``, called on an object carrying the fields it
    reads (one process, training mode), with ``logps`` standing for the model's per-token
    log-probabilities. ``num_items``: dapo/cispo/vespo's ``num_items_in_batch`` (default: the batch's token count); ``steps``: the gradient
    accumulation steps (and steps_per_generation, TRL's default: the same number);
    ``is_ratio``: vLLM's per-token importance-sampling ratio (TRL's correction on). Constants TRL makes in torch's default dtype (sapo's temperatures, vespo's k and lambda)
    are made in the inputs' dtype."""
    from collections import defaultdict

    from trl.trainer.grpo_trainer import GRPOTrainer

    n, t = logps.shape
    loss_type = opts["loss_type"] if loss_type is None else loss_type
    eps_high = opts["epsilon_high"]
    args = SimpleNamespace(
        use_bias_correction_kl=opts["use_bias_correction_kl"], delta=opts["delta"],
        sapo_temperature_pos=opts["sapo_temperature_pos"],
        sapo_temperature_neg=opts["sapo_temperature_neg"],
        vespo_k_pos=opts["vespo_k_pos"], vespo_lambda_pos=opts["vespo_lambda_pos"],
        vespo_k_neg=opts["vespo_k_neg"], vespo_lambda_neg=opts["vespo_lambda_neg"],
        steps_per_generation=steps)
    if max_completion_length is None:
        max_completion_length = opts["max_completion_length"] or t
    accelerator = SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x,
                                  gather=lambda x: x, gather_for_metrics=lambda x: x)
    self = SimpleNamespace(
        args=args, accelerator=accelerator, model=SimpleNamespace(training=True),
        loss_type=loss_type, beta=opts["beta"], epsilon_low=opts["epsilon"],
        epsilon_high=opts["epsilon"] if eps_high is None else eps_high,
        importance_sampling_level=opts["importance_sampling_level"],
        off_policy_mask_threshold=opts["off_policy_mask_threshold"],
        max_completion_length=max_completion_length, top_entropy_quantile=1.0,
        use_vllm=is_ratio is not None, vllm_importance_sampling_correction=True,
        current_gradient_accumulation_steps=steps,
        _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        get_off_policy_mask=GRPOTrainer.get_off_policy_mask,
        get_gamma_weights=GRPOTrainer.get_gamma_weights,
        _get_per_token_logps_and_entropies=lambda *a, **k: (
            logps, torch.zeros_like(logps), None),
    )
    if num_items is None:
        num_items = mask.sum()
    inputs = {
        "prompt_ids": torch.zeros((n, 0), dtype=torch.int64),
        "prompt_mask": torch.zeros((n, 0), dtype=mask.dtype),
        "completion_ids": torch.zeros((n, t), dtype=torch.int64),
        "completion_mask": mask, "advantages": advantages, "old_per_token_logps": old_logps,
        "num_items_in_batch": torch.as_tensor(num_items),
    }
    if ref_logps is not None:
        inputs["ref_per_token_logps"] = ref_logps
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    default = torch.get_default_dtype()
    torch.set_default_dtype(logps.dtype)
    try:
        return GRPOTrainer._compute_loss(self, None, inputs)
    finally:
        torch.set_default_dtype(default)


#: the loss types whose TRL loss of one row is that row's token mean
_ROW_MEANS = ("grpo", "sapo", "bnpo")


def _row_sums(torch, inputs, opts):
    """Each sequence's masked token sum of TRL's per-token loss (N,), from TRL called on that
    row alone with its normaliser 1 (dapo, cispo, vespo: num_items 1; dr_grpo: length 1;
    luspo: the sum itself; grpo, sapo and bnpo: the row's mean times max(count, 1))."""
    lp, old, adv, mask = inputs[:4]
    ref = inputs[4] if len(inputs) > 4 else None
    lt = opts["loss_type"]
    out = []
    for i in range(lp.shape[0]):
        row = [x[i:i + 1] for x in (lp, old, adv, mask)] + [
            None if ref is None else ref[i:i + 1]]
        v = trl_grpo_loss(torch, *row, opts, num_items=1, max_completion_length=1)
        if lt in _ROW_MEANS:
            v = v * mask[i].sum().clamp(min=1.0).to(v.dtype)
        out.append(v)
    return torch.stack(out) if out else lp.sum(-1)


def _reference(torch, inputs, opts, reduction):
    lp, old, adv, mask = inputs[:4]
    ref = inputs[4] if len(inputs) > 4 else None
    own = _TRL_AGGREGATION[opts["loss_type"]]
    agg = aggregation_of(opts["loss_type"], opts["loss_agg_mode"])
    if reduction == "mean" and agg == own:  # TRL's own normalisation of the whole batch
        return trl_grpo_loss(torch, lp, old, adv, mask, ref, opts)
    if agg == own == "seq-mean-token-mean":  # TRL's per-row mean itself
        per_seq = torch.stack([trl_grpo_loss(torch, *(x[i:i + 1] for x in inputs[:4]),
                                             None if ref is None else ref[i:i + 1], opts)
                               for i in range(lp.shape[0])]) if lp.shape[0] else lp.sum(-1)
    else:
        sums = _row_sums(torch, inputs, opts)
        count = mask.to(sums.dtype).sum(-1)
        per_seq = sums / count.clamp(min=1.0) if agg == "seq-mean-token-mean" else sums
    if reduction == "none":
        return per_seq
    if reduction == "sum":
        return per_seq.sum()
    d, _ = _normalizer([x.detach().numpy() for x in inputs], opts)
    den = float(np.sum(d))
    return per_seq.sum() / den if den else per_seq.sum() * 0  # TRL's clamp(min=1)


# ---------------------------------------------------------------------------------------------
# samples


def _data(rng, n, t, dtype, lengths=None, spread=0.3, per_token_adv=False):
    """Log-probs in (-3, -0.05), old and reference ones within ``spread`` of them (ratios
    around 1, some beyond 1 +- 0.2), advantages N(0, 1), masks of the given lengths
    (right-padded)."""
    lp = -rng.uniform(0.05, 3.0, size=(n, t))
    old = lp + rng.normal(size=(n, t)) * spread
    ref = lp + rng.normal(size=(n, t)) * spread
    adv = rng.normal(size=(n, t) if per_token_adv else (n,))
    if lengths is None:
        lengths = rng.integers(1, t + 1, size=n)
    mask = (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return lp.astype(dtype), old.astype(dtype), adv.astype(dtype), mask, ref.astype(dtype)


def _grpo_samples(rng, dtype):
    name = "grpo"
    n, t = 4, 5
    # the defaults (dapo, beta 0), without the optional ref_logps
    yield Sample(f"{name}[dapo,defaults,no-ref]", _data(rng, n, t, dtype, (5, 3, 1, 4))[:4], {})
    # each loss type with options combined, reductions, sample weights and masks of each kind;
    # ref_logps given where beta != 0 (and once where it is unused: sapo)
    cases = (
        ("dapo", {"epsilon_high": 0.28, "beta": 0.04}, True, "bool"),
        ("grpo", {"beta": 0.04, "reduction": "mean", "empty_reduction": "nan"}, False, None),
        ("bnpo", {"epsilon": 0.1, "reduction": "sum"}, False, None),
        ("dr_grpo", {"max_completion_length": 8, "delta": 1.3, "beta": 0.1,
                     "use_bias_correction_kl": False, "reduction": "none"}, True, "float"),
        ("luspo", {"importance_sampling_level": "sequence", "beta": 0.02,
                   "empty_reduction": "nan"}, False, None),
        ("cispo", {"epsilon_high": 1.1, "beta": 0.05, "loss_agg_mode": "seq-mean-token-mean"},
         True, None),
        ("sapo", {"sapo_temperature_neg": 1.2, "reduction": "mean", "empty_reduction": "nan",
                  "per_token_adv": True}, False, None),
        ("vespo", {"off_policy_mask_threshold": 0.05, "beta": 0.03,
                   "loss_agg_mode": "seq-mean-token-sum-norm", "max_completion_length": None},
         True, None),
    )
    for lt, opts, sw, mask_kind in cases:
        opts = {"loss_type": lt, **opts}
        per_token = opts.pop("per_token_adv", False)
        data = _data(rng, n, t, dtype, (5, 2, 4, 3), spread=0.4, per_token_adv=per_token)
        lp, old, adv, mask, ref = data
        if mask_kind == "bool":
            mask = mask.astype(bool)
        elif mask_kind == "float":
            mask = mask.astype(dtype)
        inputs = (lp, old, adv, mask) + ((ref,) if opts.get("beta") or lt == "sapo" else ())
        w = loss_shape_weight(rng, (n,), dtype) if sw else None
        yield Sample(case_id(f"{name}[{lt}]", {k: v for k, v in opts.items()
                                                 if k != "loss_type"} | {"sw": sw}),
                     inputs, opts, w)
    # the clipping boundaries exactly: on-policy (ratio 1) with epsilon 0 (bounds 1 and 1) and
    # delta 1; zero advantages in two rows; an all-masked completion
    lp, _, adv, mask, ref = _data(rng, n, t, dtype, (5, 0, 3, 2))
    adv[1:3] = 0
    yield Sample(f"{name}[grpo,exact-clip-bounds,zero-advantages,masked-row]",
                 (lp, lp.copy(), adv, mask, ref),
                 {"loss_type": "grpo", "epsilon": 0.0, "epsilon_high": 0.0, "delta": 1.0,
                  "beta": 0.1, "reduction": "none"})
    # every completion of the batch masked: TRL's 0 (empty_reduction "zero", the default)
    lp, old, adv, mask, ref = _data(rng, 3, 4, dtype, (0, 0, 0))
    yield Sample(f"{name}[dapo,all-masked-batch,zero]", (lp, old, adv, mask, ref),
                 {"loss_type": "dapo", "beta": 0.1})


def _grpo_random(rng, dtype):
    n, t = int(rng.integers(0, 5)), int(rng.integers(1, 6))
    lt = str(rng.choice(LOSS_TYPES))
    opts = {"loss_type": lt, "reduction": str(rng.choice(("mean", "sum", "none")))}
    if rng.random() < 0.5:
        opts["beta"] = float(rng.choice([0.01, 0.1]))
    if rng.random() < 0.3:
        opts["importance_sampling_level"] = "sequence"
    if rng.random() < 0.3:
        opts["loss_agg_mode"] = str(rng.choice(AGGREGATIONS))
    if rng.random() < 0.3:
        opts["epsilon_high"] = float(rng.choice([0.28, 1.5]))
    data = _data(rng, n, t, dtype, spread=float(rng.choice([0.0, 0.3, 1.0])),
                 per_token_adv=bool(rng.random() < 0.2))
    if "beta" not in opts and rng.random() < 0.5:
        data = data[:4]  # ref_logps left out
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.4 else None
    return Sample(case_id("grpo[random]", opts), data, opts, sw)


def heterogeneous_batch(rng, n=16, t=6):
    """A batch of ``n`` completions whose parts differ on purpose (for the data-parallel and
    accumulation tests: multiloss.testing._heterogeneous_cases): rows 0-1 every token masked,
    rows 4-5 zero advantages, the others of lengths 1 to t, ratios up to e^+-1."""
    lengths = rng.integers(1, t + 1, size=n)
    lengths[0:2] = 0
    lp, old, adv, mask, ref = _data(rng, n, t, np.float64, lengths, spread=0.5)
    adv[4:6] = 0.0
    return lp, old, adv, mask, ref


# ---------------------------------------------------------------------------------------------
# the family constructor and the specs


_NOTES_COMMON = (
    "Inputs are per-token log-probabilities (N, T) (TRL's per_token_logps); "
    "reduction='none' gives one term per completion whose contract mean is the loss. "
    "The default empty_reduction is 'zero': TRL's token means divide by clamp(count, min=1), "
    "so a batch with every completion masked gives 0 (a batch of no rows: 0 too, where TRL's "
    "grpo/sapo mean over no rows is NaN). Gradient accumulation and data parallelism: TRL "
    "divides dapo/cispo/vespo by the global token count over the accumulated batch and the "
    "processes, and the others by the number of accumulation steps; here every aggregation "
    "is a ratio of sums, so normalizer=the sum of loss.denominator(...) over the "
    "micro-batches (and axis_name/process_group over devices) gives the whole batch's loss "
    "exactly: tokens for token-mean, sequences for the seq-mean ones, N * length for "
    "seq-mean-token-sum-norm. That is TRL's number for dapo, cispo, vespo, grpo, sapo, luspo "
    "and dr_grpo (with micro-batches of equal size), not for bnpo, whose TRL loss is the "
    "average of the micro-batches' own token means (call it without a normalizer and divide "
    "by the number of steps for that). Not here (they need more inputs than log-probs): "
    "TRL's top_entropy_quantile and entropy bonus (the entropies), vLLM's importance-sampling "
    "correction (importance_sampling_ratio; vespo without it), the MoE aux loss. A fractional "
    "mask whose total lies in (0, 1) is divided by that total here and by 1 in TRL.")


def policy_spec(name, summary, formula, reference_name, *, samples, random_sample,
                reference, notes="", aliases=()):
    """A spec of the policy-gradient family: the inputs, options, checks and normaliser
    shared by the family (one per-sequence term, TRL's normalisations as denominators)."""
    return LossSpec(
        name=name, family=FAMILY, summary=summary, inputs=INPUTS, options=OPTIONS,
        formula=formula, reference_name=reference_name, check=_grpo_check,
        samples=samples, random_sample=random_sample, reference=reference,
        normalizer=_normalizer, aliases=aliases, default_empty_reduction="zero",
        notes=" ".join(x for x in (notes, _NOTES_COMMON) if x), warn=_warn)


register(policy_spec(
    "grpo",
    "TRL 1.16's GRPO trainer loss (every GRPOConfig.loss_type; GSPO, DAPO, Dr. GRPO, "
    "CISPO, SAPO, LUSPO, VESPO) from per-token log-probabilities",
    "r_it = exp(logp_it - old_it) (token level) or exp(sum_t m_it (logp_it - old_it) / "
    "max(c_i, 1)) (sequence level, GSPO); A_i the advantage, m_it the mask, c_i = sum_t m_it\n"
    "grpo, bnpo, dr_grpo, dapo, luspo: l_it = -min(min(r, delta) A, clip(r, 1 - eps, "
    "1 + eps_high) A)\n"
    "cispo: l_it = -sg(min(r, eps_high)) A logp_it;  sapo: l_it = -4 sigmoid(tau (r - 1)) / "
    "tau A\n"
    "vespo: l_it = -sg(phi_i) A logp_it, phi = exp(lam + k log w - lam w), w = exp(sum_t "
    "m_it clip(logp - old, -20, 20)) clipped to [1e-8, e^20]\n"
    "beta != 0: l_it += beta (exp(ref - logp) - (ref - logp) - 1) (* r_it where "
    "use_bias_correction_kl)\n"
    "aggregation (loss_agg_mode, or the loss type's): token-mean sum_it m l / sum_i c_i; "
    "seq-mean-token-mean mean_i sum_t m l / max(c_i, 1); seq-mean-token-sum mean_i "
    "sum_t m l; seq-mean-token-sum-norm sum_it m l / (N L)",
    "trl 1.16.0 GRPOTrainer._compute_loss (trl/trainer/grpo_trainer.py)",
    samples=_grpo_samples, random_sample=_grpo_random, reference=_reference,
))

from .._lm._spec import register_forms as _register_forms  # noqa: E402  (the fused-linear forms)

_register_forms(FAMILY)
