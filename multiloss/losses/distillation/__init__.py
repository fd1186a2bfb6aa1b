"""Distillation losses on (student_logits, teacher_logits, labels): generalized_jsd (TRL's GKD),
forward_kl, reverse_kl, symmetric_kl (torchtune's), tvd (Liger-Kernel's total variation).

Specs only; the implementations are in ``_jax.py`` and ``_torch.py`` beside this file. Every
loss is per token: the logits are (..., V), the labels (...), and the unreduced loss is the
divergence of each token's two distributions summed over the vocabulary (0 where the label is
``ignore_index``). The default reduction, "mean", divides the sum by the number of tokens
that count (TRL's and Liger's "batchmean", torchtune's ``normalize=True``), and a batch where
nothing counts gives 0 (``empty_reduction="zero"``, as all three libraries do).

The family's shared fields are filled by ``distillation_spec``; each loss states only its
name, formula, reference, options and notes.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from ..._registry import InputSpec, LossSpec, Option, Sample, integer, real, register
from .._common import REDUCTIONS, case_id, expect_float, loss_shape_weight

FAMILY = "distillation"

#: The versions the semantics were read from (and the tests compare against).
TRL_VERSION = "1.16.0"
TORCHTUNE_VERSION = "0.6.1"
LIGER_VERSION = "0.8.5"

INPUTS = (
    InputSpec("student_logits", "the student's logits, shape (..., V): any leading shape "
              "(tokens (N, V), a batch of sequences (B, T, V))"),
    InputSpec("teacher_logits", "the teacher's logits, the student's shape; differentiated "
              "(none of the references detaches it: detach it yourself for a frozen teacher)"),
    InputSpec("labels", "integer labels of shape (...) (the logits' without V): only where a "
              "label equals ignore_index does it matter (the token is left out); the values "
              "are not class indices. Optional: left out or None, every token counts",
              differentiable=False, optional=True),
)


def _labels(lib, inputs, opts):
    """The labels of a call, or where they are left out, labels where every token counts (a
    value other than ignore_index), of ``lib``'s kind (numpy or torch)."""
    if len(inputs) > 2 and inputs[2] is not None:
        return inputs[2]
    value = 0 if opts["ignore_index"] != 0 else 1
    if lib is np:
        return np.full(np.shape(inputs[0])[:-1], value, np.int64)
    return lib.full(inputs[0].shape[:-1], value, dtype=lib.int64, device=inputs[0].device)


IGNORE_INDEX = Option("ignore_index", -100, "tokens whose label equals it contribute nothing "
                      "(neither loss nor count); TRL hard-codes -100", integer, allowed="int")

_COMMON_NOTES = (
    "Reductions: 'mean' (default) = sum over the tokens that count / their number: TRL's and "
    "Liger's default reduction 'batchmean' (accepted as an alias) with labels, torchtune's "
    "normalize=True; 'sum' = TRL's 'sum', torchtune's normalize=False. TRL's and Liger's "
    "'mean' (divided by tokens x V as well) is 'mean' / V here; their 'none' is elementwise "
    "(tokens, V) with the ignored tokens dropped, ours per token (...) with ignored tokens 0. "
    "Nothing counting (all labels ignored) gives 0 with a zero gradient, as in TRL, torchtune "
    "and Liger (empty_reduction='zero'; 'nan' is the contract's other choice). An ignored "
    "token's loss is 0, as its reference makes it: dropped in generalized_jsd and tvd (TRL "
    "indexes, Liger does not read the row), multiplied by the mask in the torchtune losses "
    "(a NaN or an infinity in an ignored token then gives NaN, as in torchtune). "
    "float16/bfloat16 logits are computed in float32 and the result rounded to their dtype "
    "(torchtune upcasts too but returns float32)."
)


# ---------------------------------------------------------------------------------------------
# checks and normaliser


def _check(named, opts):
    s, t, y = named["student_logits"], named["teacher_logits"], named.get("labels")
    expect_float("student_logits", s, "floating-point logits of shape (..., V)")
    expect_float("teacher_logits", t, "floating-point logits of shape (..., V)")
    if s.ndim < 1:
        raise ValueError(f"student_logits: expected shape (..., V), got a scalar {s.describe()}")
    if t.shape != s.shape:
        raise ValueError(f"teacher_logits: expected the student_logits' shape {s.shape}, got "
                         f"shape {t.shape}")
    if y is None:  # left out: every token counts
        return s.shape[:-1]
    if y.kind not in "iu":
        raise TypeError(f"labels: expected integer labels of shape {s.shape[:-1]}, got "
                        f"{y.describe()}")
    if y.shape != s.shape[:-1]:
        raise ValueError(f"labels: expected shape {s.shape[:-1]} (student_logits' shape "
                         f"without V), got shape {y.shape}")
    return s.shape[:-1]


def _normalizer(inputs, opts):
    keep = (np.asarray(_labels(np, inputs, opts)) != opts["ignore_index"]).astype(np.float64)
    return keep, keep


# ---------------------------------------------------------------------------------------------
# references


def _trl_gkd():
    """TRL's GKDTrainer (``trl.experimental.gkd``), its experimental-API warning silenced."""
    import warnings

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.gkd import GKDTrainer
    return GKDTrainer


_TT = "_multiloss_torchtune_kd_losses"


def torchtune_kd_losses():
    """torchtune's ``modules/loss/kd_losses.py`` loaded by file path (the torchtune package's
    ``__init__`` imports torchao), under a private name. Its ``F`` is replaced by a module
    whose ``softmax`` / ``log_softmax`` upcast to ``promote_types(float32, input dtype)``:
    torchtune's float32 upcast of float16/bfloat16/float32 logits is unchanged, and float64
    logits stay float64 (torchtune computes them in float32) so that the float64 comparison
    is against its formulas at float64 precision."""
    mod = sys.modules.get(_TT)
    if mod is not None:
        return mod
    spec = importlib.util.find_spec("torchtune")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the distillation references need torchtune=={TORCHTUNE_VERSION}",
                          name="torchtune")
    path = os.path.join(spec.submodule_search_locations[0], "modules", "loss", "kd_losses.py")
    file_spec = importlib.util.spec_from_file_location(_TT, path)
    mod = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(mod)
    import types

    import torch
    import torch.nn.functional as F

    def _upcast(fn):
        def call(x, dim, dtype=None):
            if dtype is not None:
                dtype = torch.promote_types(dtype, x.dtype)
            return fn(x, dim=dim, dtype=dtype)

        return call

    mod.F = types.SimpleNamespace(softmax=_upcast(F.softmax), log_softmax=_upcast(F.log_softmax))
    sys.modules[_TT] = mod
    return mod


def _trl_reference(torch, inputs, opts, reduction):
    """TRL 1.16's ``GKDTrainer.generalized_jsd_loss`` (a staticmethod). 'none': its elementwise
    output without labels, summed over V, 0 where ignored; 'mean': its 'batchmean' with
    labels; 'sum': its 'sum'. TRL's mask is labels != -100: labels equal to another
    ignore_index are mapped to -100."""
    s, t, y = *inputs[:2], _labels(torch, inputs, opts)
    gkd = _trl_gkd()
    kw = dict(beta=opts["beta"], temperature=opts["temperature"])
    keep = y != opts["ignore_index"]
    if reduction == "none":
        jsd = gkd.generalized_jsd_loss(s, t, None, reduction="none", **kw).sum(-1)
        return torch.where(keep, jsd, torch.zeros_like(jsd))
    labels = torch.where(keep, torch.zeros_like(y), torch.full_like(y, -100))
    red = {"mean": "batchmean", "sum": "sum"}[reduction]
    return gkd.generalized_jsd_loss(s, t, labels, reduction=red, **kw)


def _torchtune_reference(cls_name, ratio=False):
    """torchtune 0.6.1's ``ForwardKLLoss`` / ``ReverseKLLoss`` / ``SymmetricKLLoss`` (float64
    kept float64, ``torchtune_kd_losses``). 'mean': normalize=True; 'sum': normalize=False;
    'none': one call with normalize=False per token (torchtune has no unreduced form), 0
    where ignored."""

    def reference(torch, inputs, opts, reduction):
        s, t, y = *inputs[:2], _labels(torch, inputs, opts)
        cls = getattr(torchtune_kd_losses(), cls_name)
        kw = {"sym_kd_ratio": opts["sym_kd_ratio"]} if ratio else {}
        loss = cls(ignore_index=opts["ignore_index"], **kw)
        v = s.shape[-1]
        s2, t2, y2 = s.reshape(-1, v), t.reshape(-1, v), y.reshape(-1)
        if reduction != "none":
            return loss(s2, t2, y2, normalize=reduction == "mean")
        rows = [loss(s2[i:i + 1], t2[i:i + 1], y2[i:i + 1], normalize=False).reshape(())
                for i in range(s2.shape[0])]
        out = torch.stack(rows) if rows else s2.sum(-1)
        # torchtune's dtype: float32 for float16/bfloat16/float32 logits (float64 kept)
        return out.reshape(y.shape).to(torch.promote_types(s.dtype, torch.float32))

    return reference


def _tvd_reference(torch, inputs, opts, reduction):
    """Liger-Kernel 0.8.5's total variation distance (``ops/tvd.py``, ``ops/fused_ce_tvd.py``:
    0.5 * sum_v |softmax(student) - softmax(teacher)| per token, |.|'s gradient 0 at a tie,
    tokens whose label is ignore_index left out, 'batchmean' = sum / tokens that count),
    written on plain torch here: Liger's kernels are Triton, which does not run on CPU, and
    it ships no plain-torch TVD."""
    s, t, y = *inputs[:2], _labels(torch, inputs, opts)
    F = torch.nn.functional
    per = 0.5 * (F.softmax(s, dim=-1) - F.softmax(t, dim=-1)).abs().sum(-1)
    keep = y != opts["ignore_index"]
    per = torch.where(keep, per, torch.zeros_like(per))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    n = keep.sum()
    return per.sum() / n.clamp_min(1)


# ---------------------------------------------------------------------------------------------
# samples


def _problem(rng, dtype, shape, ignore="some", scale=2.0):
    s = (rng.normal(size=shape) * scale).astype(dtype)
    t = (rng.normal(size=shape) * scale).astype(dtype)
    y = rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int64)
    if ignore == "some" and y.size > 1:
        y.flat[:: max(2, y.size // 3)] = -100
    elif ignore == "all":
        y[...] = -100
    return s, t, y


def _samples_for(name, variants):
    """The family's grid: ``variants`` is a list of option dicts, combined with shapes,
    reductions and sample weights into few cases, plus the shared edge cases."""

    def samples(rng, dtype):
        cases = [((2, 3, 5), "mean", False), ((4, 6), "sum", True), ((2, 3, 5), "none", True),
                 ((5, 4), "sum_over_batch_size", False), ((7,), "mean", False)]
        for i, (shape, red, sw) in enumerate(cases):
            opts = {**variants[i % len(variants)], "reduction": red}
            s, t, y = _problem(rng, dtype, shape, "some" if len(shape) > 1 else "none")
            w = loss_shape_weight(rng, y.shape, dtype) if sw else None
            # the 1-d case leaves the optional labels out (every token counts)
            yield Sample(case_id(f"{name}[{len(shape)}d{',no-labels' if len(shape) == 1 else ''}]",
                                 {**opts, "sw": sw}),
                         (s, t) if len(shape) == 1 else (s, t, y), opts, w)
        base = variants[-1]
        s, t, y = _problem(rng, dtype, (3, 4), "all")
        for empty in ("zero", "nan"):
            # the references give 0 for a mean over nothing: the contract's "nan" is checked
            # against the contract's formula on their unreduced output
            yield Sample(case_id(f"{name}[all-ignored]", {**base, "empty_reduction": empty}),
                         (s, t, y), {**base, "empty_reduction": empty},
                         contract_reference=empty == "nan")
        s, t, y = _problem(rng, dtype, (3, 5), "some")
        y[1] = 7  # another ignore_index
        yield Sample(case_id(f"{name}[ignore_index=7]", base), (s, t, y),
                     {**base, "ignore_index": 7, "reduction": "sum"})
        # -inf logits (a vocabulary mask): in the student, the teacher and both at one place
        s, t, y = _problem(rng, dtype, (3, 5), "none")
        s[0, 1] = -np.inf
        t[1, 2] = -np.inf
        s[2, 3] = t[2, 3] = -np.inf
        yield Sample(case_id(f"{name}[-inf-logits]", base), (s, t, y), {**base,
                                                                       "reduction": "none"})
        s, t, y = _problem(rng, dtype, (3, 5), "some", scale=3e3)
        yield Sample(case_id(f"{name}[logits+-1e4]", base), (s, t, y), base)

    return samples


def _random_for(name, draw):
    def random_sample(rng, dtype):
        rank = int(rng.integers(1, 4))
        shape = tuple(int(d) for d in rng.integers(0, 4, size=rank - 1)) + (
            int(rng.integers(1, 6)),)
        s, t, y = _problem(rng, dtype, shape, str(rng.choice(["some", "none", "all"])))
        opts = {"reduction": str(rng.choice(REDUCTIONS)), **draw(rng)}
        if rng.random() < 0.3:
            opts["empty_reduction"] = "nan"
        w = loss_shape_weight(rng, y.shape, dtype) if rng.random() < 0.4 else None
        nothing = opts.get("empty_reduction") == "nan" and not (y != -100).any()
        return Sample(case_id(f"{name}[random]", opts), (s, t, y), opts, w,
                      contract_reference=bool(nothing))

    return random_sample


# ---------------------------------------------------------------------------------------------
# the family constructor


#: torchtune's F.softmax / F.log_softmax(..., dtype=torch.float32): float16/bfloat16 logits
#: computed in float32 and the loss float32 (LossSpec.converts)
_TORCHTUNE_UPCAST = {"student_logits": ("f", "float32+"), "teacher_logits": ("f", "float32+")}
_TORCHTUNE_NOTE = ("torchtune computes in float32 even for float64 logits; multiloss keeps "
                   "float64. float16/bfloat16 logits are computed in float32 and the loss is "
                   "float32, as torchtune's (its softmax and log_softmax with "
                   "dtype=torch.float32).")


def distillation_spec(name, summary, formula, reference, reference_name, *, options=(),
                      variants=({},), draw=lambda rng: {}, aliases=(), notes="", converts=None):
    """Register one distillation loss: the family's inputs, checks, normaliser, reductions
    ('batchmean' an alias of 'mean'), empty rule (0) and sample grid; the loss states its
    own name, formula, reference, options and notes."""
    return register(LossSpec(
        name=name,
        family=FAMILY,
        summary=summary,
        aliases=aliases,
        inputs=INPUTS,
        options=(*options, IGNORE_INDEX),
        formula=formula,
        reference_name=reference_name,
        check=_check,
        samples=_samples_for(name, list(variants)),
        random_sample=_random_for(name, draw),
        reference=reference,
        normalizer=_normalizer,
        reduction_aliases={"batchmean": "mean"},
        default_empty_reduction="zero",
        notes=(notes + " " + _COMMON_NOTES).strip(),
        converts=converts or {},
    ))


BETA = Option("beta", 0.5, "interpolation of the generalized JSD: 0 is the forward KL "
              "KL(teacher || student), 1 the reverse KL(student || teacher), between them the "
              "JSD of the mixture beta * teacher + (1 - beta) * student", real(0.0, 1.0),
              allowed="float in [0, 1]")
TEMPERATURE = Option("temperature", 1.0, "both logits are divided by it before the softmax",
                     real(0.0, lo_open=True), allowed="float > 0")
RATIO = Option("sym_kd_ratio", 0.5, "weight of the forward KL; 1 - sym_kd_ratio weighs the "
               "reverse KL", real(0.0, 1.0), allowed="float in [0, 1]")


distillation_spec(
    "generalized_jsd",
    "Generalized Jensen-Shannon divergence between teacher and student token distributions "
    "(TRL's GKD loss).",
    formula=(
        "s = log_softmax(student_logits / T), t = log_softmax(teacher_logits / T), per token:\n"
        "beta = 0: sum_v e^t (t - s) = KL(teacher || student);\n"
        "beta = 1: sum_v e^s (s - t) = KL(student || teacher);\n"
        "else m = log((1 - beta) e^s + beta e^t) (a log-sum-exp) and\n"
        "  l = beta * sum_v e^t (t - m) + (1 - beta) * sum_v e^s (s - m);\n"
        "0 where labels == ignore_index; 'mean' = sum(l) / number of tokens that count."),
    reference=_trl_reference,
    reference_name=f"trl.experimental.gkd.GKDTrainer.generalized_jsd_loss (TRL {TRL_VERSION})",
    options=(BETA, TEMPERATURE),
    variants=({"beta": 0.0, "temperature": 2.0}, {"beta": 1.0}, {"beta": 0.1,
              "temperature": 0.5}, {"beta": 0.5}),
    draw=lambda rng: {"beta": float(rng.choice([0.0, 0.3, 0.5, 1.0])),
                      "temperature": float(rng.choice([0.5, 1.0, 2.0]))},
    aliases=("gkd", "generalized_jsd_loss", "gkd_loss"),
    notes=(
        "TRL's beta = 0 is KL(teacher || student), the forward KL of torchtune's naming, but "
        "the true KL: torchtune's ForwardKLLoss (forward_kl) is the cross-entropy "
        "-sum p_t log q_s, which exceeds it by the teacher's entropy (same student "
        "gradient). The teacher is not detached (TRL's loss differentiates it too; its "
        "trainer computes the teacher under no_grad). -inf logits: TRL's value is NaN where "
        "both logits are -inf (0 * (-inf - -inf)) and, for 0 < beta < 1, where one is; so is "
        "ours. TRL's 'batchmean' without labels divides by the first dimension of the logits "
        "(the batch of (B, T, V)); ours by the number of tokens (B * T): use reduction='sum' "
        "and divide by B for TRL's number there. logits_are_probs (TRL's probability inputs, "
        "clamped at 1e-8) is not supported: pass logits."),
)

distillation_spec(
    "forward_kl",
    "Forward KL distillation loss (torchtune's ForwardKLLoss): the cross-entropy of the "
    "student under the teacher's distribution.",
    formula=(
        "p_t = softmax(teacher_logits), log q_s = log_softmax(student_logits), per token:\n"
        "l = -sum_v p_t log q_s, each term 0 where the student's logit is infinite;\n"
        "0 where labels == ignore_index; 'mean' = sum(l) / number of tokens that count."),
    reference=_torchtune_reference("ForwardKLLoss"),
    reference_name=f"torchtune.modules.loss.ForwardKLLoss (torchtune {TORCHTUNE_VERSION})",
    aliases=("ForwardKLLoss", "fkl", "forward_kl_loss"),
    notes=(
        "As torchtune: the value is the cross-entropy H(teacher, student), the KL plus the "
        "teacher's entropy (generalized_jsd with beta=0 is the KL itself); the gradient "
        "w.r.t. the student is the KL's. The gradient w.r.t. the teacher is the "
        "cross-entropy's, and NaN where the student's logit is -inf (torchtune's masked "
        "product 0 * log q_s = 0 * -inf), as in torchtune. " + _TORCHTUNE_NOTE),
    converts=_TORCHTUNE_UPCAST,
)

distillation_spec(
    "reverse_kl",
    "Reverse KL distillation loss KL(student || teacher) (torchtune's ReverseKLLoss).",
    formula=(
        "q_s = softmax(student_logits), per token:\n"
        "l = sum_v q_s (log q_s - log p_t), each term 0 where either logit is infinite;\n"
        "0 where labels == ignore_index; 'mean' = sum(l) / number of tokens that count."),
    reference=_torchtune_reference("ReverseKLLoss"),
    reference_name=f"torchtune.modules.loss.ReverseKLLoss (torchtune {TORCHTUNE_VERSION})",
    aliases=("ReverseKLLoss", "rkl", "reverse_kl_loss"),
    notes=(
        "As torchtune, the gradient of a token with a -inf logit (student or teacher) is "
        "NaN (the masked product q_s * log q_s backpropagates 0 * -inf), though its value is "
        "finite: mask vocabulary entries with a large negative number (e.g. -1e4), not -inf. "
        + _TORCHTUNE_NOTE),
    converts=_TORCHTUNE_UPCAST,
)

distillation_spec(
    "symmetric_kl",
    "Symmetric KL distillation loss (torchtune's SymmetricKLLoss): a weighted sum of "
    "forward_kl and reverse_kl.",
    formula=(
        "l = sym_kd_ratio * forward_kl + (1 - sym_kd_ratio) * reverse_kl per token (the "
        "two\nlosses' per-token terms); 'mean' = sum(l) / number of tokens that count."),
    reference=_torchtune_reference("SymmetricKLLoss", ratio=True),
    reference_name=f"torchtune.modules.loss.SymmetricKLLoss (torchtune {TORCHTUNE_VERSION})",
    options=(RATIO,),
    variants=({"sym_kd_ratio": 0.0}, {"sym_kd_ratio": 1.0}, {"sym_kd_ratio": 0.3}),
    draw=lambda rng: {"sym_kd_ratio": float(rng.choice([0.0, 0.25, 0.5, 1.0]))},
    aliases=("SymmetricKLLoss", "skl", "symmetric_kl_loss"),
    notes=(
        "forward_kl's and reverse_kl's notes hold (the cross-entropy value of the forward "
        "part; NaN gradients at -inf logits, also with sym_kd_ratio 0 or 1, since both parts "
        "are computed, as in torchtune)."),
    converts=_TORCHTUNE_UPCAST,
)

distillation_spec(
    "tvd",
    "Total variation distance between the student's and the teacher's token distributions "
    "(Liger-Kernel's TVD).",
    formula=(
        "p = softmax(student_logits), q = softmax(teacher_logits), per token:\n"
        "l = 0.5 * sum_v |p - q| (|.|'s gradient 0 at p == q);\n"
        "0 where labels == ignore_index; 'mean' = sum(l) / number of tokens that count."),
    reference=_tvd_reference,
    reference_name=(f"Liger-Kernel {LIGER_VERSION}'s TVD (liger_kernel/ops/tvd.py, "
                    "fused_ce_tvd.py), written on plain torch (Liger's kernels are Triton)"),
    aliases=("total_variation_distance", "LigerTVDLoss", "tv_distance"),
    notes=(
        "Liger's LigerTVDLoss takes probabilities (p, q); its fused_ce_tvd and this loss take "
        "logits (softmax applied). Liger differentiates only p (the student); multiloss "
        "differentiates the teacher too (d/dq = -0.5 sign(p - q) through the softmax)."),
)

from .._lm._spec import register_distillation as _register_fused  # noqa: E402  (linear_*)

_register_fused()
