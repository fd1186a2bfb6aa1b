"""Preference losses of LLM post-training with TRL 1.16's numbers: ``dpo`` (every
``DPOConfig.loss_type`` that is a function of the four sequence log-probs), ``cpo`` and
``simpo`` (TRL's CPO trainer, ``trl.experimental.cpo``), ``orpo`` (``trl.experimental.orpo``)
and ``kto`` (``KTOTrainer``). Specs only; implementations in ``_jax.py`` and ``_torch.py``.

Inputs are per-sequence log-probabilities, shape (N,): one entry per pair (dpo, cpo, simpo,
orpo) or per example (kto), summed over the completion's tokens, or averaged where TRL
averages them (TRL's ``average_log_prob=True``: cpo's ipo and simpo, simpo, orpo; dpo's
ipo and sigmoid_norm, see below). The sequence log-prob helper (issue 16, item 4) gives both.

The reference is TRL 1.16 itself, called from its own code (``_trl_reference``): the DPO and
KTO losses are in ``DPOTrainer._compute_loss`` / ``KTOTrainer._compute_loss``, which run
the model; they are called on a small object carrying the config fields they read and a
stand-in model whose per-token log-probs are the given sequence log-probs (one completion
token per sequence), with the reference log-probs precomputed (``precompute_ref_log_probs``);
the per-pair losses (``per_sequence_loss``, KTO's ``losses``) are read from the method's
frame as it runs. CPO's ``cpo_loss`` and ORPO's ``odds_ratio_loss`` are methods of their own,
called the same way. float64 references run with torch's default dtype float64 (TRL makes
exo_pair's epsilon in the default dtype) and with ORPO's ``.float()`` upcast kept at float64.

What TRL 1.16 has that is left out (each needs more than the sequence log-probs):

- dpo ``loss_type="sft"``: the NLL of the chosen tokens (the token-level log-probs); add
  ``cross_entropy`` of the chosen completions to the loss instead;
- dpo ``ld_alpha`` (LD-DPO) weights the tokens beyond the shared length: a property of the
  per-token log-probs; give the LD-weighted sums as the inputs;
- dpo ``use_weighting`` (WPO) needs the per-token ``log_sum_sq_probs`` of the model's output;
- dpo ``f_divergence_type="alpha_divergence"``: TRL 1.16 clamps in a dtype table without
  float64 (a KeyError for float64 inputs); not offered;
- dpo ipo and sigmoid_norm divide the scores by the completion lengths
  (``completion_mask.sum(1).clamp(min=1)``): here the inputs are the length-averaged log-probs
  (the same numbers for the default ``f_divergence_type``); with another f-divergence TRL
  divides f(summed log-ratio) by the length, not a function of the averages: raises;
- earlier releases' ``reference_free`` (1.16 has none: give ``ref_*_logps`` of zeros) and
  ``label_smoothing`` on sigmoid (1.16 reads it in robust, exo_pair, aot, aot_unpaired only;
  for a smoothed sigmoid use ``robust`` or cpo's sigmoid).
"""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, one_of, real, register
from .._common import REDUCTIONS, expect_float, loss_shape_weight

FAMILY = "preference"

#: The reference library's version the semantics were read from and measured on.
TRL_VERSION = "1.16.0"

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                  "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop",
                  "sigmoid_norm")
#: DPO loss types that sort the batch (a pair's loss depends on the other pairs)
SORTING = ("aot", "aot_unpaired")
#: the loss types TRL allows with an f-divergence other than reverse_kl (less 'sft')
F_DIVERGENCE_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust",
                      "discopop")
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence")
#: the DPO loss types that divide by each sequence's count of scored tokens (TRL's
#: ``completion_mask.sum(dim=1).clamp(min=1.0)``)
DPO_LENGTH_NORMALISED = ("ipo", "sigmoid_norm")
CPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo")
KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")


# ---------------------------------------------------------------------------------------------
# options


def _dpo_loss_type(name, value):
    types = (value,) if isinstance(value, str) else value
    if not isinstance(types, (tuple, list)) or not types:
        raise TypeError(f"{name}: expected a loss type (str) or a non-empty list of them, got "
                        f"{type(value).__name__} {value!r}")
    for t in types:
        if t not in DPO_LOSS_TYPES:
            hint = (" ('sft' needs the chosen tokens' NLL, not a function of the four "
                    "log-prob inputs: add cross_entropy of the chosen completions)"
                    if t == "sft" else "")
            raise ValueError(f"{name}: expected one of {list(DPO_LOSS_TYPES)} or a list of "
                             f"them, got {t!r}{hint}")
    if len(set(types)) != len(types):
        raise ValueError(f"{name}: each loss type at most once (give one weight in "
                         f"loss_weights instead), got {list(types)}")
    return tuple(types)


def _loss_weights(name, value):
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or not value:
        raise TypeError(f"{name}: expected None or a list of real numbers, got "
                        f"{type(value).__name__} {value!r}")
    return tuple(real()(name, v) for v in value)


BETA = Option("beta", 0.1, "the temperature beta of the implicit reward beta log(pi / pi_ref) "
              "(TRL's beta; for ipo, the regularisation tau)", real(0.0))
LABEL_SMOOTHING = Option(
    "label_smoothing", 0.0, "the probability that a preference label is flipped (conservative "
    "loss); dpo reads it in robust ([0, 0.5)), exo_pair (> 0, EXO's epsilon), aot and "
    "aot_unpaired", real(0.0, 1.0))


def _dpo_warn(opts):
    """Cross-option checks (TRL's DPOTrainer.__init__ raises or warns on the same)."""
    types, w = opts["loss_type"], opts["loss_weights"]
    if w is not None and len(w) != len(types):
        raise ValueError(f"loss_weights: expected one weight per loss type ({len(types)}: "
                         f"{list(types)}), got {len(w)}")
    beta, ls = opts["beta"], opts["label_smoothing"]
    for t in ("ipo", "sppo_hard"):
        if t in types and beta == 0.0:
            raise ValueError(f"beta: loss_type {t!r} divides by beta; expected beta > 0, got 0")
    if "robust" in types and not ls < 0.5:
        raise ValueError(f"label_smoothing: loss_type 'robust' divides by 1 - 2 "
                         f"label_smoothing; expected a value in [0, 0.5), got {ls}")
    if "exo_pair" in types and ls == 0.0:
        raise ValueError("label_smoothing: loss_type 'exo_pair' takes log(label_smoothing); "
                         "expected a value in (0, 1] (the EXO paper recommends 1e-3), got 0.0")
    f = opts["f_divergence_type"]
    if f != "reverse_kl":
        bad = [t for t in types if t not in F_DIVERGENCE_TYPES]
        if bad:
            raise ValueError(f"f_divergence_type: {f!r} only with loss types "
                             f"{list(F_DIVERGENCE_TYPES)} (TRL raises), got {bad}")
        norm = [t for t in types if t in DPO_LENGTH_NORMALISED]
        if norm:
            raise ValueError(
                f"f_divergence_type: {f!r} with {norm}: TRL divides f(summed log-ratio) by the "
                f"completion length, not a function of the length-averaged log-probs these "
                f"loss types take here; use f_divergence_type='reverse_kl'")


def _cpo_warn(opts):
    lt = opts.get("loss_type", "simpo")
    if opts["beta"] == 0.0 and lt in ("ipo", "simpo"):
        raise ValueError(f"beta: loss_type {lt!r} divides by beta; expected beta > 0, got 0")


# ---------------------------------------------------------------------------------------------
# checks


def _check_seq(names):
    def check(named, opts):
        first = named[names[0]]
        for n in names:
            x = named.get(n)
            if x is None:  # an optional input left out (chosen_nll)
                continue
            expect_float(n, x)
            if x.ndim != 1:
                raise ValueError(f"{n}: expected shape (N,) (one sequence log-prob per "
                                 f"{'example' if 'labels' in named else 'pair'}), got shape "
                                 f"{x.shape}")
            if x.shape != first.shape:
                raise ValueError(f"{n}: expected the shape of {names[0]}, {first.shape}, got "
                                 f"{x.shape}")
        return first.shape

    return check


_check_dpo = _check_seq(("chosen_logps", "rejected_logps", "ref_chosen_logps",
                         "ref_rejected_logps"))
_check_pair_nll = _check_seq(("chosen_logps", "rejected_logps", "chosen_nll"))
_check_simpo = _check_seq(("chosen_logps", "rejected_logps"))
_check_kto_seq = _check_seq(("logps", "ref_logps"))


def _check_kto(named, opts):
    shape = _check_kto_seq(named, opts)
    y, kl = named["labels"], named.get("kl")
    if y.kind not in "biu":
        raise TypeError(f"labels: expected a bool (or 0/1 integer) array, True for a desirable "
                        f"completion, got {y.describe()}")
    if y.shape != shape:
        raise ValueError(f"labels: expected shape {shape} (one label per example), got "
                         f"{y.shape}")
    if kl is None:  # left out: z_ref = 0
        return shape
    expect_float("kl", kl)
    if kl.shape != ():
        raise ValueError(f"kl: expected a scalar (0-d array), the batch's KL estimate, got "
                         f"shape {kl.shape}")
    return shape


def _check_labels(values, infos, opts):
    y = values.get("labels")
    if y is not None and y.size and not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][0]
        raise ValueError(f"labels: expected 0 or 1 (False or True), got {bad}")


def _normalizer(inputs, opts):
    n = np.shape(inputs[0])
    return np.ones(n), np.ones(n)


# ---------------------------------------------------------------------------------------------
# the reference: TRL 1.16, called from its own code


def _trl(module):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the preference references need trl=={TRL_VERSION}: {e}",
                          name="trl") from e


def _frame_locals(fn, args, names):
    """``fn(*args)`` and the last value each local of ``names`` had in fn's frame (read by a
    trace function on that frame alone): TRL's per-pair losses, which its methods only
    average."""
    code = fn.__code__
    seen: dict = {}

    def local(frame, event, arg):
        if event in ("line", "return"):
            loc = frame.f_locals
            key = loc.get("loss_type")
            for n in names:
                if n in loc:
                    seen[(n, key)] = loc[n]
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is code else None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        out = fn(*args)
    finally:
        sys.settrace(old)
    return out, seen


class _DefaultDtype:
    """torch's default dtype set to the inputs' while TRL runs (TRL makes constants in it)."""

    def __init__(self, torch, dtype):
        self.torch, self.dtype = torch, dtype

    def __enter__(self):
        self.old = self.torch.get_default_dtype()
        if self.dtype in (self.torch.float32, self.torch.float64):
            self.torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        self.torch.set_default_dtype(self.old)


def _accelerator(device):
    return SimpleNamespace(device=device, gather_for_metrics=lambda x: x, gather=lambda x: x)


def _stub_outputs(torch, log_probs):
    z = torch.zeros_like(log_probs).detach()
    return SimpleNamespace(log_probs=log_probs, entropy=z, mean_logits=z,
                           is_top1=torch.zeros(z.shape, dtype=torch.bool), aux_loss=None)


def _metrics():
    from collections import defaultdict

    return defaultdict(lambda: defaultdict(list))


def dpo_reference_terms(torch, inputs, opts, metrics=None):
    """TRL 1.16's per-pair DPO loss (``DPOTrainer._compute_loss``), combined over the loss
    types with ``loss_weights``: (per-pair loss, TRL's returned loss). ``metrics``: a
    ``defaultdict(lambda: defaultdict(list))`` TRL logs into (``rewards/chosen``, ...)."""
    trainer = _trl("trl.trainer.dpo_trainer").DPOTrainer
    c, r, rc, rr = inputs
    n = c.shape[0]
    log_probs = torch.cat([c, r])[:, None]  # one completion token per sequence
    types = list(opts["loss_type"])
    weights = list(opts["loss_weights"] or [1.0] * len(types))
    self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_accelerator(c.device),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type=opts["f_divergence_type"], f_alpha_divergence_coef=0.5,
        loss_types=types, loss_weights=weights, beta=opts["beta"],
        label_smoothing=opts["label_smoothing"], use_weighting=False,
        args=SimpleNamespace(discopop_tau=opts["discopop_tau"]),
        _metrics=_metrics() if metrics is None else metrics,
        _total_train_tokens=0, _tp_size=1)
    batch = {"input_ids": torch.zeros((2 * n, 2), dtype=torch.long),
             "attention_mask": torch.ones((2 * n, 2), dtype=torch.long),
             "completion_mask": torch.tensor([[0, 1]] * (2 * n), dtype=torch.long),
             "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    outputs = _stub_outputs(torch, log_probs)

    def model(**kwargs):
        return outputs

    with _DefaultDtype(torch, c.dtype):
        loss, seen = _frame_locals(trainer._compute_loss, (self, model, batch, False),
                                   ("per_sequence_loss",))
    per_pair = None
    for t, w in zip(types, weights):
        part = seen[("per_sequence_loss", t)]
        part = part * w if len(types) > 1 or w != 1.0 else part
        per_pair = part if per_pair is None else per_pair + part
    return per_pair, loss


def kto_reference_terms(torch, inputs, opts, metrics=None):
    """TRL 1.16's per-example KTO loss (``KTOTrainer._compute_loss``, its ``losses`` put back
    in the input order): (per-example loss, TRL's returned loss, a nanmean). ``metrics``: as
    in ``dpo_reference_terms``."""
    mod = _trl("trl.trainer.kto_trainer")
    logps, ref_logps, labels = inputs[:3]
    # kl left out: z_ref = 0 (one KL sequence of log-prob 0)
    kl = inputs[3] if len(inputs) > 3 else torch.zeros((), dtype=logps.dtype)
    n = logps.shape[0]
    calculate_kl = opts["loss_type"] == "kto"
    self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_accelerator(logps.device),
        aux_loss_enabled=False, precompute_ref_logps=True, calculate_KL=calculate_kl,
        loss_type=opts["loss_type"], beta=opts["beta"],
        desirable_weight=opts["desirable_weight"],
        undesirable_weight=opts["undesirable_weight"],
        _metrics=_metrics() if metrics is None else metrics,
        _total_train_tokens=0, _tp_size=1)
    self._compute_kl_logps = lambda m, b: mod.KTOTrainer._compute_kl_logps(self, m, b)
    kl_ids = torch.zeros((1, 2), dtype=torch.long)  # one KL sequence: its mean is kl exactly
    batch = {"input_ids": torch.zeros((n, 2), dtype=torch.long),
             "attention_mask": torch.ones((n, 2), dtype=torch.long),
             "completion_mask": torch.tensor([[0, 1]] * n, dtype=torch.long).reshape(n, 2),
             "label": labels.to(torch.bool), "ref_logps": ref_logps,
             "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(kl_ids),
             "KL_completion_mask": torch.tensor([[0, 1]]),
             "ref_KL_logps": torch.zeros(1, dtype=kl.dtype)}
    main = _stub_outputs(torch, logps[:, None])
    kl_out = _stub_outputs(torch, kl.detach().reshape(1, 1))

    def model(**kwargs):
        return kl_out if kwargs["input_ids"] is kl_ids else main

    with _DefaultDtype(torch, logps.dtype):
        loss, seen = _frame_locals(mod.KTOTrainer._compute_loss, (self, model, batch, False),
                                   ("losses", "chosen_idx", "rejected_idx"))
    losses = seen[("losses", None)]
    order = torch.cat([seen[("chosen_idx", None)], seen[("rejected_idx", None)]])
    return losses[torch.argsort(order)], loss


def _cpo_self(torch, opts, loss_type, device):
    return SimpleNamespace(alpha=opts.get("alpha", 0.0), loss_type=loss_type,
                           simpo_gamma=opts["simpo_gamma"], beta=opts["beta"],
                           label_smoothing=opts["label_smoothing"],
                           accelerator=_accelerator(device))


def _reduced(torch, per_pair, reduction, trl_mean):
    if reduction == "none":
        return per_pair
    if reduction == "sum":
        return per_pair.sum()
    return trl_mean


def _ref_dpo(torch, inputs, opts, reduction):
    if inputs[0].shape[0] == 0:  # TRL's mean of no pair: NaN; per pair: nothing
        return _reduced(torch, inputs[0] * 0, reduction, inputs[0].sum() * np.nan)
    per_pair, loss = dpo_reference_terms(torch, inputs, opts)
    return _reduced(torch, per_pair, reduction, loss)


def _ref_cpo_like(loss_type_of, with_nll):
    def reference(torch, inputs, opts, reduction):
        trainer = _trl("trl.experimental.cpo.cpo_trainer").CPOTrainer
        c, r = inputs[0], inputs[1]
        self = _cpo_self(torch, opts, loss_type_of(opts), c.device)
        with _DefaultDtype(torch, c.dtype):
            losses = trainer.cpo_loss(self, c, r)[0]
        # chosen_nll left out: TRL's loss without the NLL term (its cpo_alpha=0)
        alpha = opts.get("cpo_alpha", 0.0) if with_nll and len(inputs) > 2 else 0.0
        if alpha == 0.0:  # TRL: nll_loss = torch.tensor(0.0)
            return _reduced(torch, losses, reduction, losses.mean())
        nll = inputs[2]
        # TRL: loss = losses.mean() + self.cpo_alpha * policy_nll_loss
        return _reduced(torch, losses + alpha * nll, reduction,
                        losses.mean() + alpha * nll.mean())

    return reference


def _keep_dtype(torch):
    class Keep(torch.Tensor):
        """ORPO's ``.float()`` kept at the input's dtype (float64 references)."""

        def float(self, *args, **kwargs):
            return self

    return Keep


def _ref_orpo(torch, inputs, opts, reduction):
    trainer = _trl("trl.experimental.orpo.orpo_trainer").ORPOTrainer
    c, r = inputs[:2]
    # chosen_nll left out: the odds-ratio term alone (TRL's loss with an NLL of 0)
    nll = inputs[2] if len(inputs) > 2 else torch.zeros_like(c)
    self = SimpleNamespace(beta=opts["beta"], accelerator=_accelerator(c.device))
    if c.dtype == torch.float64:
        keep = _keep_dtype(torch)
        c, r = c.as_subclass(keep), r.as_subclass(keep)
    with _DefaultDtype(torch, inputs[0].dtype):
        losses = trainer.odds_ratio_loss(self, c, r)[0].as_subclass(torch.Tensor)
    # TRL: loss = policy_nll_loss - losses.mean()
    return _reduced(torch, nll - losses, reduction, nll.mean() - losses.mean())


def _ref_kto(torch, inputs, opts, reduction):
    if inputs[0].shape[0] == 0:
        return _reduced(torch, inputs[0] * 0, reduction, inputs[0].sum() * np.nan)
    per_example, loss = kto_reference_terms(torch, inputs, opts)
    return _reduced(torch, per_example, reduction, loss)


# ---------------------------------------------------------------------------------------------
# the rewards TRL logs


def preference_rewards(loss, *inputs, **named):
    """The chosen and rejected rewards TRL 1.16 logs (``rewards/chosen``,
    ``rewards/rejected``; their difference is ``rewards/margins``), without gradient, for a
    preference loss made by ``multiloss.get`` and that loss's inputs, on its backend:

    - dpo: ``beta (chosen_logps - ref_chosen_logps)``, ``beta (rejected_logps -
      ref_rejected_logps)`` (for every loss type and f-divergence, as TRL);
    - cpo, simpo, orpo: ``beta chosen_logps``, ``beta rejected_logps`` (cpo and simpo with
      ``alpha != 0``: AlphaPO's ``beta (1 - p^-alpha) / alpha``, p = exp(logps));
    - kto: ``beta (logps - ref_logps)`` of the desirable examples (NaN at the undesirable
      ones) and of the undesirable ones (NaN at the desirable ones): TRL logs the nansum over
      the count of each, i.e. ``nanmean`` of each array.

    Returns ``(chosen_rewards, rejected_rewards)``, arrays of shape (N,) of the backend's kind;
    TRL logs their means over the batch (gathered over the ranks).
    """
    spec = getattr(loss, "spec", None)
    if spec is None or spec.family != FAMILY:
        raise TypeError(f"loss: expected a preference loss made by multiloss.get (dpo, cpo, "
                        f"simpo, orpo, kto), got {loss!r}")
    checks = loss._checks
    inputs = checks.trim(checks.positional(inputs, named) if named else tuple(inputs))
    checks.count(inputs)
    backend = importlib.import_module(f"multiloss.losses.{FAMILY}._{loss.backend}")
    if loss.backend == "jax":
        import jax.numpy as jnp

        inputs = tuple(jnp.asarray(x) for x in inputs)
    else:
        import torch

        inputs = tuple(x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
                       for x in inputs)
    return backend.rewards(spec.name, inputs, loss.options)


# ---------------------------------------------------------------------------------------------
# samples


def _logps(rng, n, dtype, lo=2.0, hi=40.0):
    """Summed sequence log-probs: negative, a few nats to tens of nats."""
    return -rng.uniform(lo, hi, size=n)


def _pairs(rng, n, spread=3.0):
    c = _logps(rng, n, None)
    r = _logps(rng, n, None)
    rc = c + rng.normal(size=n) * spread
    rr = r + rng.normal(size=n) * spread
    return c, r, rc, rr


def _cast(dtype, *xs):
    return tuple(np.asarray(x, dtype=dtype) for x in xs)


_SIG_MIX = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
            "sppo_hard", "apo_zero", "apo_down", "discopop", "sigmoid_norm")


def _dpo_samples(rng, dtype):
    n = 6
    c, r, rc, rr = _pairs(rng, n)
    base = _cast(dtype, c, r, rc, rr)
    sw = loss_shape_weight(rng, (n,), dtype)
    yield Sample("dpo[defaults]", base, {})
    # the types' options and reductions (every type is also in the edge cases below)
    yield Sample("dpo[hinge+ipo+exo_pair+sppo_hard,weights,ls=1e-3,none,sw]", base,
                 {"loss_type": ("hinge", "ipo", "exo_pair", "sppo_hard"),
                  "loss_weights": (0.5, 1.0, 2.0, 0.25), "label_smoothing": 1e-3,
                  "reduction": "none", "beta": 0.3}, sw)
    yield Sample("dpo[aot,ls=0.1,mean]", base, {"loss_type": "aot", "label_smoothing": 0.1})
    yield Sample("dpo[aot_unpaired,none,sw]", base,
                 {"loss_type": "aot_unpaired", "reduction": "none", "beta": 0.2}, sw)
    for f, types in (("forward_kl", ("sigmoid", "robust", "discopop")),
                     ("js_divergence", ("hinge", "exo_pair", "robust"))):
        yield Sample(f"dpo[f={f},{'+'.join(types)},sum]", base,
                     {"f_divergence_type": f, "loss_type": types, "label_smoothing": 0.05,
                      "reduction": "sum", "discopop_tau": 0.3})
    # equal chosen and rejected log-probs (a tie: zero margin), and beta = 0
    tie = _cast(dtype, c, c, rc, rc)
    yield Sample("dpo[tie-equal-chosen-rejected,every-type,none]", tie,
                 {"loss_type": _SIG_MIX, "label_smoothing": 0.1, "reduction": "none"})
    yield Sample("dpo[zero-beta,sum]", base,
                 {"loss_type": ("sigmoid", "hinge", "nca_pair", "bco_pair", "apo_zero",
                                "apo_down", "discopop", "robust", "aot"),
                  "beta": 0.0, "label_smoothing": 0.2, "reduction": "sum"})
    # saturation: margins of +-1e3 nats (beta * margin far past logsigmoid's range)
    big = np.array([1e3, -1e3, 50.0, -50.0, 400.0, -400.0])
    sat = _cast(dtype, c + big, c, rc, c)
    yield Sample("dpo[saturated-margins-1e4,every-type,none]", sat,
                 {"loss_type": _SIG_MIX, "label_smoothing": 0.1, "reduction": "none"})
    inf, nan = np.inf, np.nan
    bad = _cast(dtype, [-inf, -3.0, nan, -2.0, -inf, -4.0], [-5.0, -inf, -1.0, nan, -inf, -6.0],
                [-2.0, -3.0, -1.0, -2.0, -1.0, -inf], [-1.0, -2.0, -2.0, -3.0, -4.0, -inf])
    yield Sample("dpo[inf-nan,every-type,none]", bad,
                 {"loss_type": _SIG_MIX, "label_smoothing": 0.1, "reduction": "none"})
    empty = _cast(dtype, *([np.zeros(0)] * 4))
    yield Sample("dpo[empty-batch,mean]", empty, {})


def _dpo_random(rng, dtype):
    n = int(rng.integers(0, 6))
    c, r, rc, rr = _pairs(rng, n, float(rng.choice([0.5, 3.0, 30.0])))
    t = str(rng.choice(DPO_LOSS_TYPES))
    opts = {"loss_type": t, "beta": float(rng.choice([0.05, 0.1, 1.0])),
            "reduction": str(rng.choice(REDUCTIONS)),
            "label_smoothing": float(rng.choice([0.01, 0.2]))}
    if rng.random() < 0.3 and t in F_DIVERGENCE_TYPES and t not in DPO_LENGTH_NORMALISED:
        opts["f_divergence_type"] = str(rng.choice(F_DIVERGENCES))
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
    return Sample(f"dpo[random,{t}]", _cast(dtype, c, r, rc, rr), opts, sw)


def _avg(rng, n):
    return -rng.uniform(0.05, 3.0, size=n)


def _cpo_samples(rng, dtype):
    n = 6
    c, r = _avg(rng, n), _avg(rng, n)
    nll = np.full(n, -c.mean() * 1.3)
    base = _cast(dtype, c, r, nll)
    sw = loss_shape_weight(rng, (n,), dtype)
    yield Sample("cpo[defaults]", base, {})
    yield Sample("cpo[hinge,none,sw]", base, {"loss_type": "hinge", "reduction": "none",
                                              "beta": 2.0}, sw)
    yield Sample("cpo[ipo,cpo_alpha=0.5,sum]", base,
                 {"loss_type": "ipo", "cpo_alpha": 0.5, "reduction": "sum", "beta": 0.5})
    yield Sample("cpo[simpo,ls=0.1,gamma=0.8,none]", base,
                 {"loss_type": "simpo", "label_smoothing": 0.1, "simpo_gamma": 0.8,
                  "beta": 2.0, "reduction": "none"})
    yield Sample("cpo[sigmoid,alphapo,alpha=0.25,ls=0.2,none]", base,
                 {"alpha": 0.25, "label_smoothing": 0.2, "reduction": "none"})
    yield Sample("cpo[tie-equal-chosen-rejected,zero-beta,hinge,none]", _cast(dtype, c, c, nll),
                 {"loss_type": "hinge", "beta": 0.0, "reduction": "none"})
    big = np.array([1e3, -1e3, 50.0, -50.0, 400.0, -400.0])
    yield Sample("cpo[saturated-margins-1e4,none]", _cast(dtype, c, c - big, nll),
                 {"beta": 1.0, "label_smoothing": 0.1, "reduction": "none"})
    inf, nan = np.inf, np.nan
    yield Sample("cpo[inf-nan,none]",
                 _cast(dtype, [-inf, -1.0, nan, -2.0], [-1.0, -inf, -1.0, nan],
                       [1.0, 2.0, 3.0, inf]), {"reduction": "none"})
    yield Sample("cpo[empty-batch,mean]", _cast(dtype, *([np.zeros(0)] * 3)), {})
    yield Sample("cpo[no-chosen_nll,simpo,none]", _cast(dtype, c, r),
                 {"loss_type": "simpo", "reduction": "none"})


def _cpo_random(rng, dtype):
    n = int(rng.integers(0, 6))
    c, r = _avg(rng, n), _avg(rng, n)
    nll = rng.uniform(0.1, 3.0, size=n)
    opts = {"loss_type": str(rng.choice(CPO_LOSS_TYPES)),
            "beta": float(rng.choice([0.1, 1.0, 2.5])), "reduction": str(rng.choice(REDUCTIONS)),
            "label_smoothing": float(rng.choice([0.0, 0.1])),
            "cpo_alpha": float(rng.choice([0.0, 1.0])),
            "alpha": float(rng.choice([0.0, 0.0, 0.3]))}
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
    return Sample(f"cpo[random,{opts['loss_type']}]", _cast(dtype, c, r, nll), opts, sw)


def _simpo_samples(rng, dtype):
    n = 6
    c, r = _avg(rng, n), _avg(rng, n)
    base = _cast(dtype, c, r)
    yield Sample("simpo[defaults]", base, {})
    yield Sample("simpo[beta=2,gamma=1.2,ls=0.1,none,sw]", base,
                 {"beta": 2.0, "simpo_gamma": 1.2, "label_smoothing": 0.1, "reduction": "none"},
                 loss_shape_weight(rng, (n,), dtype))
    yield Sample("simpo[alphapo,alpha=0.25,sum]", base, {"alpha": 0.25, "reduction": "sum",
                                                         "beta": 2.5})
    yield Sample("simpo[tie-equal-chosen-rejected,gamma=0,none]", _cast(dtype, c, c),
                 {"simpo_gamma": 0.0, "reduction": "none"})
    big = np.array([1e3, -1e3, 50.0, -50.0, 400.0, -400.0])
    yield Sample("simpo[saturated-margins-1e4,none]", _cast(dtype, c, c - big),
                 {"beta": 2.0, "reduction": "none"})
    inf, nan = np.inf, np.nan
    yield Sample("simpo[inf-nan,none]", _cast(dtype, [-inf, -1.0, nan, -2.0],
                                              [-1.0, -inf, -1.0, nan]), {"reduction": "none"})
    yield Sample("simpo[empty-batch,mean]", _cast(dtype, np.zeros(0), np.zeros(0)), {})


def _simpo_random(rng, dtype):
    n = int(rng.integers(0, 6))
    opts = {"beta": float(rng.choice([0.1, 2.0])), "simpo_gamma": float(rng.choice([0.0, 0.5])),
            "label_smoothing": float(rng.choice([0.0, 0.1])),
            "reduction": str(rng.choice(REDUCTIONS))}
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
    return Sample("simpo[random]", _cast(dtype, _avg(rng, n), _avg(rng, n)), opts, sw)


def _orpo_samples(rng, dtype):
    n = 6
    c, r = _avg(rng, n), _avg(rng, n)
    nll = np.full(n, -c.mean())
    base = _cast(dtype, c, r, nll)
    yield Sample("orpo[defaults]", base, {})
    yield Sample("orpo[beta=0.5,none,sw]", base, {"beta": 0.5, "reduction": "none"},
                 loss_shape_weight(rng, (n,), dtype))
    # log1p(-exp) on both sides of its branch at -ln 2, and near logp = 0 (p -> 1)
    near = np.array([-0.6931471805599453, -0.69314718056, -1e-6, -1e-12, -30.0, -0.5])
    yield Sample("orpo[near-zero-logp,branch,none]",
                 _cast(dtype, near, near[::-1].copy(), nll), {"reduction": "none"})
    yield Sample("orpo[tie-equal-chosen-rejected,zero-beta,sum]", _cast(dtype, c, c, nll),
                 {"beta": 0.0, "reduction": "sum"})
    inf, nan = np.inf, np.nan
    yield Sample("orpo[inf-nan-exact-zero,none]",
                 _cast(dtype, [-inf, -1.0, nan, 0.0], [-1.0, -inf, -1.0, -2.0],
                       [1.0, 2.0, 1.0, 1.0]), {"reduction": "none"})
    yield Sample("orpo[empty-batch,mean]", _cast(dtype, *([np.zeros(0)] * 3)), {})
    yield Sample("orpo[no-chosen_nll,none]", _cast(dtype, c, r), {"reduction": "none"})


def _orpo_random(rng, dtype):
    n = int(rng.integers(0, 6))
    opts = {"beta": float(rng.choice([0.1, 1.0])), "reduction": str(rng.choice(REDUCTIONS))}
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
    return Sample("orpo[random]", _cast(dtype, _avg(rng, n), _avg(rng, n),
                                        rng.uniform(0.1, 2.0, n)), opts, sw)


def _kto_samples(rng, dtype):
    n = 6
    logps = _logps(rng, n, dtype)
    ref = logps + rng.normal(size=n) * 3
    labels = np.array([True, False, True, True, False, False])
    kl = np.asarray(0.7, dtype)
    base = (*_cast(dtype, logps, ref), labels, kl)
    yield Sample("kto[defaults]", base, {})
    yield Sample("kto[weights,beta=0.5,none,sw]", base,
                 {"desirable_weight": 1.33, "undesirable_weight": 0.75, "beta": 0.5,
                  "reduction": "none"}, loss_shape_weight(rng, (n,), dtype))
    yield Sample("kto[apo_zero_unpaired,int-labels,sum]",
                 (*_cast(dtype, logps, ref), labels.astype(np.int64), kl),
                 {"loss_type": "apo_zero_unpaired", "reduction": "sum"})
    yield Sample("kto[negative-kl-clamped-to-zero,none]",
                 (*_cast(dtype, logps, ref), labels, np.asarray(-2.0, dtype)),
                 {"reduction": "none"})
    yield Sample("kto[tie-equal-logps,zero-beta,all-desirable,none]",
                 (*_cast(dtype, logps, logps), np.ones(n, bool), kl),
                 {"beta": 0.0, "reduction": "none"})
    big = np.array([1e3, -1e3, 50.0, -50.0, 400.0, -400.0])
    yield Sample("kto[saturated-margins-1e4,none]",
                 (*_cast(dtype, ref + big, ref), labels, kl), {"beta": 1.0, "reduction": "none"})
    inf, nan = np.inf, np.nan
    yield Sample("kto[inf-nan,none]",
                 (*_cast(dtype, [-inf, -1.0, nan, -2.0], [-1.0, -inf, -1.0, nan]),
                  np.array([True, False, False, True]), kl), {"reduction": "none"})
    # TRL's mean is a nanmean: the contract's mean propagates NaN (a documented difference)
    yield Sample("kto[nan-input,mean]",
                 (*_cast(dtype, [-3.0, nan, -2.0], [-1.0, -1.0, -4.0]),
                  np.array([True, False, False]), kl), {}, contract_reference=True)
    yield Sample("kto[no-kl,none]", (*_cast(dtype, logps, ref), labels), {"reduction": "none"})
    yield Sample("kto[empty-batch,mean]",
                 (*_cast(dtype, np.zeros(0), np.zeros(0)), np.zeros(0, bool), kl), {})


def _kto_random(rng, dtype):
    n = int(rng.integers(0, 6))
    logps = _logps(rng, n, dtype)
    opts = {"loss_type": str(rng.choice(KTO_LOSS_TYPES)), "beta": float(rng.choice([0.1, 1.0])),
            "desirable_weight": float(rng.choice([1.0, 1.5])),
            "reduction": str(rng.choice(REDUCTIONS))}
    sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.5 else None
    return Sample(f"kto[random,{opts['loss_type']}]",
                  (*_cast(dtype, logps, logps + rng.normal(size=n)), rng.random(n) < 0.5,
                   np.asarray(float(rng.normal()), dtype)), opts, sw)


# ---------------------------------------------------------------------------------------------
# specs


_NOTES_COMMON = (
    "Inputs are sequence log-probs, not logits (the sequence log-prob helper or "
    "linear_<loss> compute them). reduction='mean' is TRL's mean over the batch (with "
    "sample_weight: the weighted mean; normalizer: the global pair count for gradient "
    "accumulation); 'none' gives TRL's per-pair losses. float16/bfloat16 inputs are computed "
    "in float32 and rounded to their dtype (TRL computes in the model's dtype; orpo returns "
    "float32, as TRL's). "
    "Liger-Kernel's chunked losses (liger_kernel.chunked_loss) compute the same formulas "
    "from the hidden states: docs/post-training.md.")


def preference_spec(name, summary, inputs, options, formula, reference, reference_name,
                    check, samples, random_sample, notes="", **fields) -> LossSpec:
    """A preference loss's spec: the family's shared fields (normaliser, notes, defaults)
    filled in, the loss's own given."""
    return register(LossSpec(
        name=name, family=FAMILY, summary=summary, inputs=inputs, options=options,
        formula=formula, reference_name=reference_name, check=check, samples=samples,
        random_sample=random_sample, reference=reference, normalizer=_normalizer,
        notes=(notes + " " if notes else "") + _NOTES_COMMON, **fields))


def _seq(name, doc, optional=False):
    return InputSpec(name, doc, optional=optional)


_C = _seq("chosen_logps", "the policy's log-prob of each chosen completion, shape (N,)")
_R = _seq("rejected_logps", "the policy's log-prob of each rejected completion, shape (N,)")
_NLL = _seq("chosen_nll", "the NLL term per pair, shape (N,): TRL's is the token-mean "
            "cross-entropy of the batch's chosen completions, one number; give it broadcast "
            "to (N,) (np.full) for TRL's loss; left out (or None): no NLL term, TRL's "
            "cpo_alpha=0", optional=True)

#: TRL 1.16's ipo and sigmoid_norm divide the scores by completion_mask.sum(dim=1).clamp(
#: min=1.0), a float32 tensor (torch's default dtype): with either among the loss types, the
#: float16/bfloat16 loss is float32 (LossSpec.converts of the bound options). TRL's other
#: loss types keep the inputs' dtype (alpha_divergence's .float() is cast back, exo_pair's
#: 0-dim epsilon does not promote, the Python float weights neither).
_FLOAT32_LOGPS = {n: ("f", "float32+") for n in ("chosen_logps", "rejected_logps",
                                                   "ref_chosen_logps", "ref_rejected_logps")}


def _dpo_converts(opts):
    return _FLOAT32_LOGPS if any(t in DPO_LENGTH_NORMALISED for t in opts["loss_type"]) else {}


preference_spec(
    "dpo",
    "Direct Preference Optimization and its TRL 1.16 variants (DPOTrainer's loss_type).",
    aliases=("dpo_loss", "DPOLoss"),
    inputs=(_C, _R,
            _seq("ref_chosen_logps", "the reference model's log-prob of each chosen "
                 "completion, shape (N,)"),
            _seq("ref_rejected_logps", "the reference model's log-prob of each rejected "
                 "completion, shape (N,)")),
    options=(
        BETA,
        Option("loss_type", "sigmoid",
               "a DPOConfig.loss_type of TRL 1.16, or a list of them combined with "
               "loss_weights (MPO: ['sigmoid', 'bco_pair']). 'sft' is left out (it needs the "
               "chosen tokens' NLL); ipo and sigmoid_norm take length-averaged log-probs",
               _dpo_loss_type, allowed=" | ".join(repr(t) for t in DPO_LOSS_TYPES)
               + " | a list of them"),
        Option("loss_weights", None, "one weight per loss type (None: 1.0 each): the loss is "
               "sum_k w_k loss_k", _loss_weights, allowed="None | list of float"),
        LABEL_SMOOTHING,
        Option("discopop_tau", 0.05, "DiscoPOP's temperature tau (loss_type='discopop')",
               real(0.0, lo_open=True)),
        Option("f_divergence_type", "reverse_kl",
               "f-DPO's divergence: the scores are f'(pi / pi_ref) of the log-ratios "
               "(reverse_kl: the log-ratios themselves); 'alpha_divergence' is left out",
               one_of(F_DIVERGENCES), allowed=" | ".join(repr(f) for f in F_DIVERGENCES)),
    ),
    formula=(
        "per pair, u_c = chosen_logps - ref_chosen_logps, u_r = rejected_logps - "
        "ref_rejected_logps,\n"
        "s = f'(u) the scores (reverse_kl: u; forward_kl: 1 - e^-u; js_divergence: log 2 + "
        "logsigmoid(u)),\n"
        "d = s_c - s_r, ls = label_smoothing, sm(z) = -(1-ls) logsigmoid(z) - ls "
        "logsigmoid(-z):\n"
        "sigmoid, sigmoid_norm: -logsigmoid(beta d)   hinge: relu(1 - beta d)\n"
        "ipo: (d - 1/(2 beta))^2   exo_pair: KL([q, 1-q] || [1-ls, ls]), q = sigmoid(beta d)\n"
        "nca_pair: -logsigmoid(beta u_c) - logsigmoid(-beta u_c)/2 - logsigmoid(-beta u_r)/2\n"
        "robust: (-(1-ls) logsigmoid(beta d) + ls logsigmoid(-beta d)) / (1 - 2 ls)\n"
        "bco_pair: -logsigmoid(beta u_c) - logsigmoid(-beta u_r)\n"
        "sppo_hard: (u_c - 1/(2 beta))^2 + (u_r + 1/(2 beta))^2\n"
        "aot: sm(beta (sort(c - r) - sort(rc - rr)))   aot_unpaired: sm(beta (sort(u_c) - "
        "sort(u_r)))\n"
        "apo_zero: 1 - sigmoid(beta u_c) + sigmoid(beta u_r)\n"
        "apo_down: sigmoid(beta u_c) + 1 - sigmoid(beta (u_c - u_r))\n"
        "discopop: -logsigmoid(beta d) (1 - m) + e^(-beta d) m, m = sigmoid(beta d / tau)\n"
        "a list of loss types: sum_k w_k loss_k; 'mean' = the mean over pairs (TRL's)"),
    reference=_ref_dpo,
    reference_name=f"TRL {TRL_VERSION}, trl.DPOTrainer._compute_loss (called with the config "
                   f"fields it reads and precomputed reference log-probs; the per-pair losses "
                   f"read from its frame): multiloss.losses.preference.dpo_reference_terms",
    notes="aot and aot_unpaired sort the batch: the i-th loss belongs to the i-th sorted "
    "margin, not to pair i, so the batch cannot be split over devices or micro-batches "
    "(axis_name / process_group raise) and a sample_weight weights sorted positions, as "
    "TRL's WPO refuses to. TRL 1.16 has no reference_free and no label_smoothing on sigmoid "
    "(earlier releases had): give zero reference log-probs; use robust for a smoothed "
    "sigmoid. ld_alpha, use_weighting (WPO) and 'sft' need the per-token log-probs: left "
    "out. ipo and sigmoid_norm: TRL divides the scores by the completion lengths; pass "
    "length-averaged log-probs (equal numbers for f_divergence_type='reverse_kl'); TRL's "
    "token count is float32, so with ipo or sigmoid_norm among the loss types float16/"
    "bfloat16 log-probs are computed in float32 and the loss is float32, as TRL's (which "
    "subtracts the reference log-probs in the inputs' dtype first: its numbers differ from "
    "this by that rounding).",
    converts=_dpo_converts,
    check=_check_dpo,
    samples=_dpo_samples,
    random_sample=_dpo_random,
    warn=_dpo_warn,
    batch_coupled=lambda o: any(t in SORTING for t in o["loss_type"]),
)

_CPO_OPTIONS = (
    BETA,
    LABEL_SMOOTHING,
    Option("simpo_gamma", 0.5, "SimPO's target reward margin gamma (loss_type='simpo')",
           real()),
)
_ALPHA = Option("alpha", 0.0, "AlphaPO's reward shape alpha: the rewards become (1 - "
                "p^-alpha) / alpha, p = exp(logps) (0: the log-probs themselves)", real())

_CPO_FORMULA = (
    "per pair, x = chosen_logps - rejected_logps (alpha != 0: x = (1 - p_c^-a)/a - (1 - "
    "p_r^-a)/a, p = e^logps),\n"
    "ls = label_smoothing, sm(z) = -(1-ls) logsigmoid(z) - ls logsigmoid(-z):\n"
    "sigmoid: sm(beta x)   hinge: relu(1 - beta x)   ipo: (x - 1/(2 beta))^2\n"
    "simpo: sm(beta (x - gamma / beta)) = sm(beta x - gamma)\n")

preference_spec(
    "cpo",
    "Contrastive Preference Optimization (TRL 1.16's CPOTrainer), with its NLL term.",
    aliases=("cpo_loss", "CPOLoss"),
    inputs=(_C, _R, _NLL),
    options=(
        *_CPO_OPTIONS,
        Option("loss_type", "sigmoid", "TRL's CPOConfig.loss_type ('alphapo' is simpo with "
               "alpha != 0 and cpo_alpha=0)", one_of(CPO_LOSS_TYPES),
               allowed=" | ".join(repr(t) for t in CPO_LOSS_TYPES)),
        Option("cpo_alpha", 1.0, "the weight of the NLL term (TRL's cpo_alpha)", real()),
        _ALPHA,
    ),
    formula=_CPO_FORMULA + "the pair's loss adds cpo_alpha * chosen_nll; 'mean' = mean over "
    "pairs = TRL's losses.mean() + cpo_alpha * nll_loss",
    reference=_ref_cpo_like(lambda o: o["loss_type"], with_nll=True),
    reference_name=f"TRL {TRL_VERSION}, trl.experimental.cpo.CPOTrainer.cpo_loss, plus "
                   f"cpo_alpha * nll as its get_batch_loss_metrics adds it",
    notes="TRL computes ipo and simpo on length-averaged log-probs (average_log_prob=True), "
    "the others on summed ones: give those. The NLL is an input, not computed from logits; "
    "TRL's is one token-mean over the batch's chosen completions.",
    check=_check_pair_nll,
    samples=_cpo_samples,
    random_sample=_cpo_random,
    warn=_cpo_warn,
)

preference_spec(
    "simpo",
    "SimPO: reference-free preference loss on length-averaged log-probs (TRL's CPOTrainer "
    "with loss_type='simpo', cpo_alpha=0).",
    aliases=("simpo_loss", "SimPOLoss"),
    inputs=(_seq("chosen_logps", "the policy's average per-token log-prob of each chosen "
                 "completion, shape (N,)"),
            _seq("rejected_logps", "the policy's average per-token log-prob of each rejected "
                 "completion, shape (N,)")),
    options=(*_CPO_OPTIONS, _ALPHA),
    formula=_CPO_FORMULA.split("sigmoid: ")[0] + "loss = sm(beta x - gamma)   (TRL's simpo: "
    "sm(beta (x - gamma / beta)))",
    reference=_ref_cpo_like(lambda o: "simpo", with_nll=False),
    reference_name=f"TRL {TRL_VERSION}, trl.experimental.cpo.CPOTrainer.cpo_loss with "
                   f"loss_type='simpo' (cpo_alpha=0: no NLL term, TRL's SimPO recipe)",
    notes="TRL's defaults (beta 0.1, gamma 0.5); the SimPO paper uses beta 2.0-2.5. CPO-SimPO "
    "(the NLL term added) is cpo with loss_type='simpo'. 'alphapo' (TRL's syntactic sugar) is "
    "simpo with alpha != 0.",
    check=_check_simpo,
    samples=_simpo_samples,
    random_sample=_simpo_random,
    warn=_cpo_warn,
)

preference_spec(
    "orpo",
    "Odds Ratio Preference Optimization (TRL 1.16's ORPOTrainer): NLL minus beta times the "
    "log-sigmoid of the log odds ratio.",
    aliases=("orpo_loss", "ORPOLoss"),
    inputs=(_seq("chosen_logps", "the policy's average per-token log-prob of each chosen "
                 "completion, shape (N,)"),
            _seq("rejected_logps", "the policy's average per-token log-prob of each rejected "
                 "completion, shape (N,)"),
            _seq("chosen_nll", "the NLL term per pair, shape (N,): TRL's is the token-mean "
                 "cross-entropy over the chosen prompts and completions, one number; give it "
                 "broadcast to (N,) for TRL's loss; left out (or None): the odds-ratio term "
                 "alone", optional=True)),
    options=(BETA,),
    formula=(
        "per pair, log_odds = (c - r) - (log1mexp(c) - log1mexp(r)), c, r the average "
        "log-probs,\n"
        "log1mexp(x) = log(1 - e^x): log1p(-e^x) for x < -ln 2, log(-expm1(x)) above "
        "(TRL's, stable near x = 0);\n"
        "loss = chosen_nll - beta logsigmoid(log_odds); 'mean' = TRL's nll - "
        "losses.mean()"),
    reference=_ref_orpo,
    reference_name=f"TRL {TRL_VERSION}, trl.experimental.orpo.ORPOTrainer.odds_ratio_loss "
                   f"(and nll - losses.mean() as its get_batch_loss_metrics)",
    notes="TRL casts the log-probs to float32 (.float()) before the odds ratio: float64 "
    "inputs are computed in float64 here (the float64 reference keeps TRL's code at float64); "
    "float16/bfloat16 log-probs are upcast to float32 and the loss is float32, as TRL's. At c = 0 "
    "exactly (p = 1) the odds are infinite: loss -beta*0, gradient NaN as in TRL.",
    check=_check_pair_nll,
    # TRL's .float(): float16/bfloat16 log-probs computed and returned in float32
    converts={"chosen_logps": ("f", "float32+"), "rejected_logps": ("f", "float32+")},
    samples=_orpo_samples,
    random_sample=_orpo_random,
)

preference_spec(
    "kto",
    "Kahneman-Tversky Optimization on unpaired desirable/undesirable completions (TRL 1.16's "
    "KTOTrainer).",
    aliases=("kto_loss", "KTOLoss"),
    inputs=(
        _seq("logps", "the policy's log-prob of each completion, shape (N,)"),
        _seq("ref_logps", "the reference model's log-prob of each completion, shape (N,)"),
        InputSpec("labels", "True (1) for a desirable completion, False (0) for an "
                  "undesirable one, shape (N,)", differentiable=False),
        InputSpec("kl", "the KL estimate z_ref, a scalar: TRL's mean of KL_logps - "
                  "ref_KL_logps over the mismatched (prompt, completion) pairs of the batch "
                  "(averaged over the ranks); clamped at 0, not differentiated (TRL detaches "
                  "it); unused by apo_zero_unpaired; left out (or None): 0, TRL's loss "
                  "without a KL estimate", differentiable=False, optional=True),
    ),
    options=(
        BETA,
        Option("loss_type", "kto", "TRL's KTOConfig.loss_type", one_of(KTO_LOSS_TYPES),
               allowed=" | ".join(repr(t) for t in KTO_LOSS_TYPES)),
        Option("desirable_weight", 1.0, "the weight of a desirable example's loss", real(0.0)),
        Option("undesirable_weight", 1.0, "the weight of an undesirable example's loss",
               real(0.0)),
    ),
    formula=(
        "per example, u = logps - ref_logps, z = max(kl, 0) (no gradient):\n"
        "kto: desirable w_d (1 - sigmoid(beta (u - z))), undesirable w_u (1 - sigmoid(beta "
        "(z - u)))\n"
        "apo_zero_unpaired: desirable w_d (1 - sigmoid(beta u)), undesirable w_u "
        "sigmoid(beta u)\n"
        "'mean' = mean over the N examples (the weights are not in the denominator, as TRL)"),
    reference=_ref_kto,
    reference_name=f"TRL {TRL_VERSION}, trl.KTOTrainer._compute_loss (with precomputed "
                   f"reference log-probs and one KL sequence whose log-prob is kl; the "
                   f"per-example losses read from its frame): "
                   f"multiloss.losses.preference.kto_reference_terms",
    notes="TRL's loss is losses.nanmean(): a NaN example's loss is left out of its mean; the "
    "contract's mean propagates it (NaN; reduction='none' and nanmean give TRL's number). "
    "TRL concatenates the desirable losses before the undesirable ones; 'none' keeps the "
    "input order.",
    check=_check_kto,
    check_values=_check_labels,
    value_args=("labels",),
    samples=_kto_samples,
    random_sample=_kto_random,
)

from .._lm._spec import register_forms as _register_forms  # noqa: E402  (the fused-linear forms)

_register_forms(FAMILY)
