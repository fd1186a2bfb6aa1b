"""The specs of the fused-linear post-training losses (``linear_dpo``, ``linear_grpo``, ...),
built from their plain loss's spec and a ``Form`` (``_forms.py``): the same options plus the
head's (``linear_bias``, ``ignore_index``, ``chunk_size``, ``memory_budget``), the same
reference (TRL 1.16) applied to the log-probs of the materialised logits (TRL's own
``selective_log_softmax``), the same normaliser. Framework-free."""

from __future__ import annotations

import functools

import numpy as np

from ..._registry import (
    _SPECS,
    ArrayInfo,
    InputSpec,
    LossSpec,
    Option,
    Sample,
    array_option,
    boolean,
    integer,
    register,
)
from .._common import case_id, expect_float, expect_same_dtype, loss_shape_weight
from ..classification._linear_spec import _positive_int_or_none
from . import IGNORE_INDEX
from ._forms import FORMS

#: The choice of differentiation path, the same option on every fused-linear loss.
GRAD_IN_FORWARD = Option(
    "grad_in_forward", True,
    "True: each chunk's gradient is computed in the forward pass (three matrix products per "
    "chunk, Liger's approach; reverse mode only: a jax.custom_vjp, a torch autograd function "
    "without torch.func support). False: the chunks run in a loop whose body is "
    "rematerialised and differentiated by the framework's own autodiff (four products per "
    "chunk: the backward recomputes the chunk's logits), so that forward mode (jax.jvp, "
    "jacfwd, linearize; torch.func.jvp), second order, jax.vmap/shard_map and torch.func "
    "(grad, vmap, jvp, hessian) work; memory stays one chunk's (docs/fused-linear.md)",
    boolean, allowed="bool")

#: How each differentiation path transforms (the specs' notes).
_PATHS = (
    "The default path (grad_in_forward=True) is on JAX a jax.custom_vjp (jit, grad, vmap, "
    "shard_map; jax.hessian and Hessian-vector products, forward over reverse, work; jax.jvp, "
    "jacfwd and linearize raise: called eagerly, an error naming the option) and on torch an autograd function (double "
    "backward recomputes with autograd; torch.func raises, naming the option). "
    "grad_in_forward=False differentiates the chunks with the framework's own autodiff, each "
    "rematerialised (four matrix products per chunk instead of three, the frozen head's "
    "logits computed twice, the same memory): every JAX transform, and on torch torch.func "
    "(grad, vmap, jvp, jacrev, jacfwd, hessian), forward AD, double backward and "
    "torch.compile.")


def _options(form):
    unit = "pairs" if form.paired else "sequences"
    out = [
        Option("linear_bias", None, "the head's bias, shape (V,): an option, not an input (a "
               "buffer on torch, a jit argument on JAX), as linear_cross_entropy's",
               array_option(ndim=1), kind="array", allowed="None | array (V,)"),
    ]
    if form.ref:
        out.append(Option("ref_linear_bias", None, "the reference head's bias, shape (V,)",
                          array_option(ndim=1), kind="array", allowed="None | array (V,)"))
    out += [
        Option("ignore_index", IGNORE_INDEX, "the target token id that is not scored "
               "(prompt and padding positions): log-prob 0, TRL's and Liger's -100", integer,
               allowed="int"),
        Option("chunk_size", None, f"{unit} per chunk (None: as many as memory_budget holds)",
               _positive_int_or_none, allowed="None | int >= 1"),
        Option("memory_budget", None, "bytes for a chunk's temporaries (its logits, the "
               "reference's, their gradient); None: 128 MiB", _positive_int_or_none,
               allowed="None | int bytes"),
        GRAD_IN_FORWARD,
    ]
    return tuple(out)


def _inputs(form, plain):
    lead = "(2N, T" if form.paired else "(N, T"
    rows = f"{lead}, D): the N chosen sequences, then the N rejected (TRL's and Liger's " \
           "concatenation)" if form.paired else f"{lead}, D)"
    out = [
        InputSpec("input", f"the policy's hidden states before the head, {rows}"),
        InputSpec("linear_weight", "the policy's head (lm_head) weight, (V, D)"),
        InputSpec("target", f"the token ids scored at each position, {lead}) integer, "
                  "ignore_index where a position is not scored; aligned with input (shift "
                  "them for a causal LM: hidden[:, :-1], ids[:, 1:])", differentiable=False),
    ]
    if form.ref:
        out += [InputSpec("ref_input", f"the reference model's hidden states, {lead}, "
                          "D_ref); frozen (no gradient, as TRL's and Liger's reference)",
                          differentiable=False),
                InputSpec("ref_linear_weight", "the reference model's head weight, (V, "
                          "D_ref); frozen", differentiable=False)]
    byname = {i.name: i for i in plain.inputs}
    out += [byname[e] for e in form.extras]  # as the plain loss's (optional where it is)
    return tuple(out)


def _plain_infos(form, plain, named, n, t):
    dt = named["input"].dtype
    shape = (n, t) if form.family == "policy" else (n,)
    out = {}
    for i in plain.inputs:
        if i.name in form.extras:
            if named.get(i.name) is not None:
                out[i.name] = named[i.name]
        else:
            out[i.name] = ArrayInfo(shape, "f", dt)
    return out


def _check(form, plain):
    def check(named, opts):
        x, w, t = named["input"], named["linear_weight"], named["target"]
        expect_float("input", x, "floating-point hidden states")
        expect_float("linear_weight", w, "a floating-point head weight")
        expect_same_dtype("linear_weight", w, "input", x,
                          "expected m1 and m2 to have the same dtype, but got: {ref} != {x}")
        if x.ndim != 3:
            raise ValueError(f"input: expected hidden states of shape (rows, T, D), got shape "
                             f"{x.shape}")
        if w.ndim != 2 or w.shape[1] != x.shape[2]:
            raise ValueError(f"linear_weight: expected shape (V, {x.shape[2]}) (D: input's "
                             f"last dimension), got {w.shape}")
        if t.kind not in "iu":
            raise TypeError(f"target: expected integer token ids, got {t.describe()}")
        if t.shape != x.shape[:2]:
            raise ValueError(f"target: expected shape {x.shape[:2]} (input's rows and "
                             f"positions), got {t.shape}")
        if form.paired and x.shape[0] % 2:
            raise ValueError(f"input: expected an even number of rows (N chosen then N "
                             f"rejected sequences), got {x.shape[0]}")
        if form.ref:
            rx, rw = named["ref_input"], named["ref_linear_weight"]
            expect_float("ref_input", rx)
            expect_float("ref_linear_weight", rw)
            if rx.ndim != 3 or rx.shape[:2] != x.shape[:2]:
                raise ValueError(f"ref_input: expected shape {x.shape[:2] + ('D_ref',)}, got "
                                 f"{rx.shape}")
            if rw.shape != (w.shape[0], rx.shape[2]):
                raise ValueError(f"ref_linear_weight: expected shape ({w.shape[0]}, "
                                 f"{rx.shape[2]}), got {rw.shape}")
        for key, size in (("linear_bias", w.shape[0]), ("ref_linear_bias", w.shape[0])):
            b = opts.get(key)
            if b is not None and tuple(b.shape) != (size,):
                raise ValueError(f"{key}: expected shape ({size},), got {tuple(b.shape)}")
        n = x.shape[0] // 2 if form.paired else x.shape[0]
        return tuple(plain.check(_plain_infos(form, plain, named, n, x.shape[1]), opts))

    return check


def _check_values(form, plain):
    def check(values, infos, opts):
        t = values.get("target")
        if t is not None and t.size:
            v = infos["linear_weight"].shape[0]
            ignore = opts["ignore_index"]
            bad = ((t < 0) | (t >= v)) & (t != ignore)
            if bad.any():
                pos = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"target: expected token ids in [0, {v}) or equal "
                                 f"ignore_index={ignore}, got {t[bad][0]} at index {pos}")
        if plain.check_values is not None:
            rest = {k: v for k, v in values.items() if k != "target"}
            if rest:
                plain.check_values(rest, infos, opts)

    return check


# ---------------------------------------------------------------------------------------------
# the reference: the plain loss's (TRL) on TRL's selective_log_softmax of the logits


def _torch_tokens(torch, x, w, b, lab, ignore):
    """TRL 1.16's per-token log-probs as its fused LM head (``add_fused_lm_head``, what its
    DPO and GRPO trainers call) computes them: only the positions whose label is not ignored
    are projected, through ``selective_log_softmax``; the others are 0 (their hidden states
    never enter: a NaN there changes nothing)."""
    from trl.trainer.utils import selective_log_softmax

    mask = lab != ignore
    z = torch.nn.functional.linear(x[mask], w, b)
    tok = torch.zeros(lab.shape, dtype=z.dtype, device=z.device)
    if not mask.any():  # nothing scored (an empty batch): selective_log_softmax of no row
        return tok + 0 * z.sum(), mask.to(tok.dtype)  # raises; keeps the graph to x, w
    tok = tok.masked_scatter(mask, selective_log_softmax(z, lab[mask]))
    return tok, mask.to(tok.dtype)


def _pairs_torch(torch, a, n):
    return torch.cat([a[:n], a[n:]], dim=1)


def _reference(form, plain):
    def reference(torch, inputs, opts, reduction):
        x, w, lab = inputs[:3]
        lab = lab.long()
        ignore = opts["ignore_index"]
        rest = list(inputs[3:]) + [None] * (2 * form.ref + len(form.extras) - len(inputs) + 3)
        tok, valid = _torch_tokens(torch, x, w, opts["linear_bias"], lab, ignore)
        rtok = None
        if form.ref:
            with torch.no_grad():  # the frozen reference model
                rtok, _ = _torch_tokens(torch, rest[0].detach(), rest[1].detach(),
                                        opts.get("ref_linear_bias"), lab, ignore)
            rest = rest[2:]
        extras = rest
        n = x.shape[0] // 2 if form.paired else x.shape[0]
        if form.paired:
            tok, valid = _pairs_torch(torch, tok, n), _pairs_torch(torch, valid, n)
            rtok = None if rtok is None else _pairs_torch(torch, rtok, n)
        scale = None
        if form.nll:
            scale = (n / (lab[:n] != ignore).sum().to(tok.dtype)).expand(n)
        args = form.to_plain(tok, valid, rtok, extras, scale, opts)
        while args and args[-1] is None:
            args = args[:-1]
        return plain.reference(torch, args, opts, reduction)

    return reference


def _normalizer(form, plain):
    def normalizer(inputs, opts):
        x, lab = np.asarray(inputs[0]), np.asarray(inputs[2])
        n = x.shape[0] // 2 if form.paired else x.shape[0]
        t = lab.shape[1] * (2 if form.paired else 1)
        zeros = np.zeros((n, t))
        extras = list(inputs[3 + 2 * form.ref:])
        extras = [None if e is None else np.asarray(e) for e in extras]
        extras += [None] * (len(form.extras) - len(extras))
        args = form.to_plain(zeros, zeros + 1, zeros if form.ref else None, extras,
                             np.ones(n) if form.nll else None, opts)
        while args and args[-1] is None:
            args = args[:-1]
        return plain.normalizer(args, opts)

    return normalizer


# ---------------------------------------------------------------------------------------------
# samples: small problems (3 pairs or 4 sequences of 4 tokens, D = 3, V = 6)

#: options of the plain loss per fused loss (combined with reductions, weights, chunks)
CASES = {
    "linear_dpo": ({}, {"loss_type": "ipo", "beta": 0.5},
                   {"loss_type": ["sigmoid", "bco_pair"], "loss_weights": [0.7, 0.3]},
                   {"loss_type": "robust", "label_smoothing": 0.1}),
    "linear_cpo": ({}, {"loss_type": "simpo"}, {"loss_type": "hinge", "cpo_alpha": 0.5}),
    "linear_simpo": ({}, {"beta": 2.0, "simpo_gamma": 1.0}),
    "linear_orpo": ({}, {"beta": 0.5}),
    "linear_kto": ({}, {"loss_type": "apo_zero_unpaired", "desirable_weight": 1.3}),
    "linear_grpo": ({}, {"loss_type": "grpo", "beta": 0.04},
                    {"loss_type": "dr_grpo", "importance_sampling_level": "sequence"},
                    {"loss_type": "bnpo", "epsilon_high": 0.28}),
}
#: (reduction, sample weight, chunk options, bias) cycled over the cases
VARIANTS = (("mean", False, {}, False), ("none", True, {"chunk_size": 2}, True),
            ("sum", False, {"chunk_size": 1}, True), ("mean", True, {"memory_budget": 100},
                                                       False))


def _problem(rng, form, dtype, n, t=4, d=3, v=6, ignore=True):
    rows = 2 * n if form.paired else n
    x = (rng.normal(size=(rows, t, d)) * 0.7).astype(dtype)
    w = (rng.normal(size=(v, d)) * 0.7).astype(dtype)
    lab = rng.integers(0, v, size=(rows, t)).astype(np.int64)
    if ignore:
        lab[:, 0] = IGNORE_INDEX  # a prompt position
        if rows > 1 and t > 2:  # every sequence keeps a scored token (the edge case has none)
            lab[1, -1] = IGNORE_INDEX
    inputs = [x, w, lab]
    if form.ref:
        inputs += [(x + rng.normal(size=x.shape) * 0.1).astype(dtype),
                   (w + rng.normal(size=w.shape) * 0.1).astype(dtype)]
    if form.name == "linear_kto":
        inputs += [np.arange(n) % 2 == 0, np.asarray(rng.uniform(0.0, 0.5), dtype)]
    if form.family == "policy":
        mask = (lab != IGNORE_INDEX).astype(np.int64)
        old = (-rng.uniform(0.5, 3.0, size=(n, t))).astype(dtype)
        adv = rng.normal(size=n).astype(dtype)
        ref = (-rng.uniform(0.5, 3.0, size=(n, t))).astype(dtype)
        inputs += [old, adv, mask, ref]
    return inputs


def _fill(rng, dtype, opts, v=6):
    opts = dict(opts)
    for key in ("linear_bias", "ref_linear_bias"):
        if opts.get(key) is True:
            opts[key] = (rng.normal(size=v) * 0.3).astype(dtype)
    return opts


def _samples(form):
    n = 3 if form.paired else 4

    def samples(rng, dtype):
        for i, plain_opts in enumerate(CASES[form.name]):
            red, sw, chunks, bias = VARIANTS[i % len(VARIANTS)]
            opts = {**plain_opts, **chunks, "reduction": red}
            if i == 1:  # the second differentiation path, on a per-unit cotangent
                opts["grad_in_forward"] = False
            if bias:
                opts["linear_bias"] = True
                if form.ref:
                    opts["ref_linear_bias"] = True
            inputs = _problem(rng, form, dtype, n)
            if form.family == "policy" and not plain_opts.get("beta"):
                inputs = inputs[:-1]  # ref_logps left out
            opts = _fill(rng, dtype, opts)
            w = loss_shape_weight(rng, (n,), dtype) if sw else None
            yield Sample(case_id(f"{form.name}[{i}]", {**opts, "sw": sw}), tuple(inputs),
                         opts, w)
        # edge: a sequence with no scored token (its log-prob 0; the average forms' 0/0 is
        # TRL's NaN, so they get a sequence with one), one row per chunk
        inputs = _problem(rng, form, dtype, n)
        inputs[2][-1, :] = IGNORE_INDEX
        if form.name in ("linear_simpo", "linear_orpo"):  # averaged: one scored token
            inputs[2][-1, -1] = 1
        if form.family == "policy":
            inputs[-2][-1, :] = 0  # an all-masked completion
            inputs = inputs[:-1]
        left_out = ""
        if "kl" in form.extras:  # kto's kl left out (z_ref = 0, TRL's loss without it)
            inputs, left_out = inputs[:-1], "no-kl,"
        yield Sample(f"{form.name}[edge:unscored-sequence,{left_out}chunk_size=1]",
                     tuple(inputs), {"chunk_size": 1})
        # edge: nothing counts: an empty batch (no pair), every completion masked (grpo)
        if form.family == "policy":
            inputs = _problem(rng, form, dtype, n)
            inputs[-2][:] = 0
            yield Sample(f"{form.name}[edge:all-masked-empty-mean]", tuple(inputs[:-1]), {})
        else:
            yield Sample(f"{form.name}[edge:empty-batch]", tuple(_problem(rng, form, dtype, 0)),
                         {})

    return samples


def _random(form):
    def random_sample(rng, dtype):
        n = int(rng.integers(1, 4))
        inputs = _problem(rng, form, dtype, n, t=int(rng.integers(2, 5)),
                          d=int(rng.integers(1, 4)), v=int(rng.integers(2, 7)))
        v = inputs[1].shape[0]
        cases = CASES[form.name]
        opts = dict(cases[int(rng.integers(0, len(cases)))])
        opts["reduction"] = str(rng.choice(["mean", "sum", "none"]))
        if rng.random() < 0.5:
            opts["chunk_size"] = int(rng.integers(1, 3))
        if rng.random() < 0.4:
            opts["linear_bias"] = (rng.normal(size=v) * 0.3).astype(dtype)
        if form.family == "policy" and not opts.get("beta"):
            inputs = inputs[:-1]
        if "kl" in form.extras and rng.random() < 0.3:  # kto's kl left out
            inputs = inputs[:-1]
        sw = loss_shape_weight(rng, (n,), dtype) if rng.random() < 0.4 else None
        return Sample(case_id(f"{form.name}[random]", opts), tuple(inputs), opts, sw)

    return random_sample


# ---------------------------------------------------------------------------------------------


def _converts(form, plain):
    """The plain loss's float32 upcast of its inputs (orpo: TRL's ``.float()`` of the
    log-probs; forward_kl ...: torchtune's float32 softmax of the logits; dpo's ipo and
    sigmoid_norm: TRL's float32 token count) moved to the heads' inputs: float16/bfloat16
    hidden states and heads computed in float32 (the logits, the log-probs, the loss) and the
    result float32, as the reference's. Where the plain loss's ``converts`` is a function of
    the options, so is the form's (the form's options hold the plain loss's)."""
    if callable(plain.converts):
        return functools.partial(_moved_of, form, plain.converts)
    return _moved(form, plain.converts)


def _moved_of(form, converts, opts):
    return _moved(form, converts(opts))


def _moved(form, rules):
    if not any(rule[1] == "float32+" for rule in rules.values()):
        return {}
    if form is None:  # a distillation form
        names = ("input", "linear_weight", "teacher_input", "teacher_linear_weight")
    else:
        names = ("input", "linear_weight") + (("ref_input", "ref_linear_weight") if form.ref
                                              else ())
    return {name: ("f", "float32+") for name in names}


def _spec(form):
    plain = _SPECS[form.plain]
    unit = "pair" if form.paired else "sequence"
    how = "or their means over the scored tokens"
    return LossSpec(
        name=form.name,
        family=form.family,
        summary=f"{form.plain} of a language-model head's log-probs, computed from the hidden "
                f"states in chunks of whole {unit}s without materialising the logits "
                f"(Liger-Kernel's fused-linear {form.plain} on both backends).",
        aliases=(f"fused_linear_{form.plain}", f"{form.plain}_linear"),
        inputs=_inputs(form, plain),
        options=(*plain.options, *_options(form)),
        default_empty_reduction=plain.default_empty_reduction,  # grpo's 0, TRL's clamp

        formula=(
            f"logp[i, t] = log_softmax(input[i, t] @ linear_weight.T + linear_bias)"
            f"[target[i, t]] (0 where target == ignore_index);\n"
            f"sequence log-probs: the sums over t ({how} where the plain loss's TRL recipe "
            f"averages: ipo, sigmoid_norm, simpo, orpo);\n"
            + ("the reference's likewise from ref_input @ ref_linear_weight.T + "
               "ref_linear_bias (no gradient);\n" if form.ref else "")
            + ("NLL term of a pair: -(sum of its chosen tokens' logp) * N / (the batch's "
               "chosen tokens), whose mean over pairs is TRL's token-mean NLL;\n"
               if form.nll else "")
            + f"then {form.plain} (its formula: multiloss.info('{form.plain}')), per {unit}."),
        reference_name=f"{plain.reference_name}; the log-probs from TRL 1.16's "
                       f"trl.trainer.utils.selective_log_softmax of the materialised logits "
                       f"(torch's F.linear)",
        notes=(f"Equals {form.plain} on the log-probs of the materialised logits (float64 "
               f"1e-10). Chunks of whole {unit}s: each chunk's loss and its gradient for a "
               f"cotangent of 1 per {unit} are computed in the forward (three matrix "
               f"products, as the materialised logits' forward + backward), scaled in the "
               f"backward when the cotangent is the same for every {unit} (reduction 'mean' "
               f"or 'sum' without sample_weight), recomputed otherwise (three more). Memory: "
               f"one chunk's logits (memory_budget) instead of all of them. {_PATHS} "
               f"Labels are aligned with input (no shift), as Liger's "
               f"chunked losses take them. "
               + ("The reference model is frozen: ref_input and ref_linear_weight get no "
                  "gradient. " if form.ref else "")
               + ("reduction='none' gives each pair's loss with its share of the NLL term "
                  "(their mean and sum are TRL's). " if form.nll else "")
               + ("ref_logps (and old_logps) are per-token inputs, precomputed as TRL does "
                  "at generation time. " if form.family == "policy" else "")
               + (("With loss_type ipo or sigmoid_norm (TRL's float32 token count), "
                   if callable(plain.converts) else "")
                  + f"float16/bfloat16 hidden states and heads are converted to float32 (the "
                  f"logits, log-probs and loss computed in float32) and the loss is float32, "
                  f"as TRL's (its {form.plain} " + ("divides by a float32 count"
                                                    if callable(plain.converts) else
                                                    "upcasts the log-probs, .float()")
                  + "): TRL computes "
                  "the logits and log-probs in the model's dtype first, so its float16 "
                  "numbers differ from this (its own float32 computation on the same "
                  "values) by its rounding of the log-probs; Liger-Kernel's are float32 "
                  "too (log_softmax of the logits in float32). Mixed float dtypes of the "
                  "hidden states and the head are accepted (both converted), where torch's "
                  "F.linear raises. " if _converts(form, plain) else "")),
        check=_check(form, plain),
        check_values=_check_values(form, plain),
        value_args=("target",) + tuple(a for a in plain.value_args if a in form.extras),
        samples=_samples(form),
        random_sample=_random(form),
        reference=_reference(form, plain),
        normalizer=_normalizer(form, plain),
        warn=plain.warn,
        batch_coupled=plain.batch_coupled,
        converts=_converts(form, plain),
    )


def register_forms(family):
    """Register the fused-linear losses of ``family`` (after its plain losses)."""
    for form in FORMS.values():
        if form.family == family:
            register(_spec(form))



# ---------------------------------------------------------------------------------------------
# the fused-linear distillation losses: the plain loss per token of the student's and the
# teacher's logits, computed from their hidden states and heads in chunks of tokens

DISTILLATION = ("generalized_jsd", "forward_kl", "reverse_kl", "symmetric_kl", "tvd")
#: plain options per fused distillation loss (combined with reductions, weights, chunks)
DISTILLATION_CASES = {
    "generalized_jsd": ({}, {"beta": 0.0, "temperature": 2.0}, {"beta": 1.0}),
    "forward_kl": ({},),
    "reverse_kl": ({},),
    "symmetric_kl": ({"sym_kd_ratio": 0.3},),
    "tvd": ({},),
}


def _distill_inputs(plain):
    labels = plain.inputs[2]
    return (
        InputSpec("input", "the student's hidden states before its head, shape (..., D): "
                  "any leading shape (tokens (N, D), sequences (B, T, D))"),
        InputSpec("linear_weight", "the student's head (lm_head) weight, (V, D)"),
        InputSpec("teacher_input", "the teacher's hidden states, (..., D_teacher) with the "
                  "student's leading shape; frozen (no gradient, as Liger's fused JSD)",
                  differentiable=False),
        InputSpec("teacher_linear_weight", "the teacher's head weight, (V, D_teacher); frozen",
                  differentiable=False),
        replace_doc(labels, labels.doc.replace("(the logits' without V)",
                                               "(input's without D)")),
    )


def replace_doc(inp, doc, optional=None):
    from dataclasses import replace

    return replace(inp, doc=doc, optional=inp.optional if optional is None else optional)


def _distill_check(plain):
    def check(named, opts):
        x, w = named["input"], named["linear_weight"]
        tx, tw, y = named["teacher_input"], named["teacher_linear_weight"], named.get("labels")
        for name, a in (("input", x), ("linear_weight", w), ("teacher_input", tx),
                        ("teacher_linear_weight", tw)):
            expect_float(name, a)
        expect_same_dtype("linear_weight", w, "input", x,
                          "expected m1 and m2 to have the same dtype, but got: {ref} != {x}")
        if x.ndim < 1 or w.ndim != 2 or w.shape[1] != x.shape[-1]:
            raise ValueError(f"linear_weight: expected shape (V, {x.shape[-1] if x.ndim else 'D'}"
                             f") (D: input's last dimension), got {w.shape}")
        if tx.shape[:-1] != x.shape[:-1] or tx.ndim != x.ndim:
            raise ValueError(f"teacher_input: expected the leading shape of input, "
                             f"{x.shape[:-1]}, and a last dimension D_teacher, got {tx.shape}")
        if tw.ndim != 2 or tw.shape != (w.shape[0], tx.shape[-1]):
            raise ValueError(f"teacher_linear_weight: expected shape ({w.shape[0]}, "
                             f"{tx.shape[-1]}), got {tw.shape}")
        for key, size in (("linear_bias", w.shape[0]), ("teacher_linear_bias", w.shape[0])):
            b = opts.get(key)
            if b is not None and tuple(b.shape) != (size,):
                raise ValueError(f"{key}: expected shape ({size},), got {tuple(b.shape)}")
        v = w.shape[0]
        logits = ArrayInfo(x.shape[:-1] + (v,), "f", x.dtype)
        return tuple(plain.check({"student_logits": logits, "teacher_logits": logits,
                                  "labels": y}, opts))

    return check


def _distill_reference(plain):
    def reference(torch, inputs, opts, reduction):
        x, w, tx, tw = inputs[:4]
        labels = inputs[4] if len(inputs) > 4 else None
        z = torch.nn.functional.linear(x, w, opts["linear_bias"])
        with torch.no_grad():  # the frozen teacher
            zt = torch.nn.functional.linear(tx.detach(), tw.detach(),
                                            opts["teacher_linear_bias"])
        args = (z, zt) if labels is None else (z, zt, labels)
        return plain.reference(torch, args, opts, reduction)

    return reference


def _distill_normalizer(plain):
    def normalizer(inputs, opts):
        x = np.asarray(inputs[0])
        labels = inputs[4] if len(inputs) > 4 and inputs[4] is not None else np.zeros(
            x.shape[:-1], np.int64) + (0 if opts["ignore_index"] != 0 else 1)
        return plain.normalizer((None, None, np.asarray(labels)), opts)

    return normalizer


def _distill_problem(rng, dtype, lead, d=3, dt=4, v=6):
    x = (rng.normal(size=lead + (d,)) * 0.8).astype(dtype)
    w = (rng.normal(size=(v, d)) * 0.8).astype(dtype)
    tx = (rng.normal(size=lead + (dt,)) * 0.8).astype(dtype)
    tw = (rng.normal(size=(v, dt)) * 0.8).astype(dtype)
    lab = rng.integers(0, v, size=lead).astype(np.int64)
    if lab.size > 2:
        lab.flat[::3] = IGNORE_INDEX
    return [x, w, tx, tw, lab]


def _distill_samples(name):
    fused = f"linear_{name}"

    def samples(rng, dtype):
        for i, plain_opts in enumerate(DISTILLATION_CASES[name]):
            for j, (red, sw, chunks, bias) in enumerate(VARIANTS):
                if j > 1 and i:  # the chunk/bias variants once per loss
                    continue
                opts = {**plain_opts, **chunks, "reduction": red}
                if j == 1 and not i:  # the second differentiation path
                    opts["grad_in_forward"] = False
                if bias:
                    opts["linear_bias"] = True
                    opts["teacher_linear_bias"] = True
                lead = (2, 3)
                inputs = _distill_problem(rng, dtype, lead)
                opts = _fill(rng, dtype, {k: v for k, v in opts.items()
                                          if k != "ref_linear_bias"})
                if opts.get("teacher_linear_bias") is True:
                    opts["teacher_linear_bias"] = (rng.normal(size=6) * 0.3).astype(dtype)
                w = loss_shape_weight(rng, lead, dtype) if sw else None
                yield Sample(case_id(f"{fused}[{i}]", {**opts, "sw": sw}), tuple(inputs),
                             opts, w)
        inputs = _distill_problem(rng, dtype, (4,))
        inputs[4][:] = IGNORE_INDEX
        yield Sample(f"{fused}[edge:all-ignored-empty-mean,chunk_size=1]", tuple(inputs),
                     {"chunk_size": 1})

    return samples


def _distill_random(name):
    def random_sample(rng, dtype):
        lead = tuple(int(k) for k in rng.integers(1, 4, size=int(rng.integers(1, 3))))
        inputs = _distill_problem(rng, dtype, lead, d=int(rng.integers(1, 4)),
                                  v=int(rng.integers(2, 7)))
        cases = DISTILLATION_CASES[name]
        opts = dict(cases[int(rng.integers(0, len(cases)))])
        opts["reduction"] = str(rng.choice(["mean", "sum", "none"]))
        if rng.random() < 0.5:
            opts["chunk_size"] = int(rng.integers(1, 4))
        sw = loss_shape_weight(rng, lead, dtype) if rng.random() < 0.4 else None
        return Sample(case_id(f"linear_{name}[random]", opts), tuple(inputs), opts, sw)

    return random_sample


def _distill_spec(name):
    plain = _SPECS[name]
    return LossSpec(
        name=f"linear_{name}",
        family=plain.family,
        summary=f"{name} of a student's and a teacher's language-model heads, computed from "
                f"their hidden states in chunks of tokens without materialising the logits "
                f"(Liger-Kernel's fused-linear distillation on both backends).",
        aliases=(f"fused_linear_{name}",),
        inputs=_distill_inputs(plain),
        options=(*plain.options,
                 Option("linear_bias", None, "the student head's bias, shape (V,)",
                        array_option(ndim=1), kind="array", allowed="None | array (V,)"),
                 Option("teacher_linear_bias", None, "the teacher head's bias, shape (V,)",
                        array_option(ndim=1), kind="array", allowed="None | array (V,)"),
                 Option("chunk_size", None, "tokens per chunk (None: as many as "
                        "memory_budget holds)", _positive_int_or_none,
                        allowed="None | int >= 1"),
                 Option("memory_budget", None, "bytes for a chunk's temporaries (the "
                        "student's and the teacher's logits, their softmax, the gradient); "
                        "None: 128 MiB", _positive_int_or_none, allowed="None | int bytes"),
                 GRAD_IN_FORWARD),
        formula=(f"student_logits = input @ linear_weight.T + linear_bias, teacher_logits = "
                 f"teacher_input @ teacher_linear_weight.T + teacher_linear_bias (no "
                 f"gradient);\nthen {name} per token (its formula: multiloss.info('{name}'))."),
        reference_name=f"{plain.reference_name}; on the materialised logits (torch's F.linear)",
        notes=(f"Equals {name} on the materialised logits with the teacher detached (float64 "
               f"1e-10). Chunks of tokens: each chunk's loss and its gradient for a cotangent "
               f"of 1 per token are computed in the forward, scaled in the backward when the "
               f"cotangent is the same for every token ('mean' and 'sum' without "
               f"sample_weight; an ignored token's loss is 0 with a zero gradient, so its "
               f"cotangent does not matter), recomputed otherwise. The teacher is frozen (its "
               f"hidden states and head get no gradient; the plain {name} differentiates "
               f"teacher_logits). {_PATHS}"
               + (" float16/bfloat16 hidden states and heads are converted to float32 (the "
                  "logits and the loss computed in float32) and the loss is float32, as "
                  "torchtune's (its float32 softmax of the logits, which it takes in the "
                  "model's dtype: its float16 numbers differ from this by that rounding of "
                  "the logits). Mixed float dtypes of the hidden states and the heads are "
                  "accepted (converted)." if _converts(None, plain) else "")),
        check=_distill_check(plain),
        samples=_distill_samples(name),
        random_sample=_distill_random(name),
        reference=_distill_reference(plain),
        normalizer=_distill_normalizer(plain),
        reductions=plain.reductions,
        reduction_aliases=plain.reduction_aliases,
        default_empty_reduction=plain.default_empty_reduction,
        converts=_converts(None, plain),
    )


def register_distillation():
    """Register the fused-linear distillation losses (after the plain ones)."""
    for name in DISTILLATION:
        register(_distill_spec(name))
