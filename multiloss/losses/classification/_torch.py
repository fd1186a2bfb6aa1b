"""torch implementations of the classification losses: torch's own kernels.

Each function takes ``reduction``: a torch reduction to compute natively, or ``None`` for the
unreduced ``Terms`` that ``multiloss.backends._torch`` reduces (sample weights,
"sum_over_batch_size", ``empty_reduction="zero"``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...backends import Terms
from ...backends._torch import promote
from ._linear_torch import linear_cross_entropy  # noqa: F401  (the spec's implementation)


def _class_terms(loss, target, weight, ignore_index, dtype):
    if target.is_floating_point():
        return Terms(loss)
    counts = target != ignore_index
    safe = torch.where(counts, target, 0)
    w_t = torch.ones((), dtype=dtype, device=loss.device) if weight is None else weight[safe]
    return Terms(loss, torch.where(counts, w_t, 0).to(dtype), counts)


def _cast(weight, like):
    return None if weight is None else weight.to(like.dtype)


def _indices(target):
    # torch's kernels take int64 (or uint8) class indices; JAX's default integer is int32
    if target.is_floating_point() or target.dtype in (torch.int64, torch.uint8):
        return target
    return target.long()


def _native(reduction, weight):
    # torch's class-weighted mean has a NaN gradient when the weights of the targets sum to 0
    # (its zero-gradient rule covers only all-ignored batches): the contract reduces it instead
    return None if reduction == "mean" and weight is not None else reduction


#: torch's reduction enum (torch.nn._reduction.get_enum)
_ENUM = {"none": 0, "mean": 1, "sum": 2}


def _plain(*tensors) -> bool:
    """Whether these are plain tensors (or None): then cross_entropy and nll call the op that
    F.cross_entropy / F.nll_loss call, without their Python wrapper (its legacy arguments and
    its __torch_function__ dispatch, which only a tensor subclass needs): the small-call hot
    path. Same op, same numbers; a subclass goes through torch.nn.functional."""
    return all(t is None or type(t) is torch.Tensor for t in tensors)


_COMPILED: dict = {}


def _compiled_cross_entropy(reduction, ignore_index, label_smoothing):
    """torch.compile of F.cross_entropy with these options (one per combination)."""
    key = (reduction, ignore_index, label_smoothing)
    fn = _COMPILED.get(key)
    if fn is None:
        def ce(input, target, weight):
            return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
                                   reduction=reduction, label_smoothing=label_smoothing)

        fn = _COMPILED[key] = torch.compile(ce)
    return fn


def cross_entropy(input, target, *, reduction, weight=None, ignore_index=-100, label_smoothing=0.0,
                  compile=False, shift=False):
    if shift:  # transformers' causal-LM shift along the sequence (last) axis
        input, target = input[..., :-1], target[..., 1:]
    weight = _cast(weight, input)
    reduction = _native(reduction, weight)
    target = _indices(target)
    if compile:
        loss = _compiled_cross_entropy(reduction or "none", ignore_index, label_smoothing)(
            input, target, weight)
    elif _plain(input, target, weight):
        loss = torch._C._nn.cross_entropy_loss(input, target, weight, _ENUM[reduction or "none"],
                                               ignore_index, label_smoothing)
    else:
        loss = F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
                               reduction=reduction or "none", label_smoothing=label_smoothing)
    if reduction is not None:
        return loss
    return _class_terms(loss, target, weight, ignore_index, loss.dtype)


def nll(input, target, *, reduction, weight=None, ignore_index=-100):
    weight = _cast(weight, input)
    reduction = _native(reduction, weight)
    target = _indices(target)
    if _plain(input, target, weight):
        loss = torch._C._nn.nll_loss_nd(input, target, weight, _ENUM[reduction or "none"],
                                        ignore_index)
    else:
        loss = F.nll_loss(input, target, weight=weight, ignore_index=ignore_index,
                          reduction=reduction or "none")
    if reduction is not None:
        return loss
    return _class_terms(loss, target, weight, ignore_index, loss.dtype)


# On CPU, torch's kernels raise IndexError for a class index out of range that is not
# ignore_index: the torch backend's hot path lets them check (one pass over the indices fewer)
# and raises multiloss' own message when they do. The compiled mode is not relied on for it.
cross_entropy.kernel_checks_values = lambda static: not static.get("compile", False)
nll.kernel_checks_values = True


def _direct(op, *options):
    """The torch backend's hot path of one call signature (``fn.direct``): the op itself, for
    plain tensors with int64/uint8 indices or probabilities, reduced natively, without a class
    weight at the call (``general``, the whole function, otherwise: it is read per call, as a
    buffer may be reassigned)."""

    def direct(inputs, reduction, static, buffers, general):
        x, t = inputs
        if (reduction is None or static.get("compile") or static.get("shift")
                or type(x) is not torch.Tensor
                or type(t) is not torch.Tensor
                or not (t.is_floating_point() or t.dtype in (torch.int64, torch.uint8))):
            return None
        enum = _ENUM[reduction]
        args = tuple(static[k] for k in options)

        def call(inputs):
            if buffers["weight"] is not None:
                return general(inputs)
            return op(*inputs, None, enum, *args)

        return call

    return direct


cross_entropy.direct = _direct(torch._C._nn.cross_entropy_loss, "ignore_index",
                               "label_smoothing")
nll.direct = _direct(torch._C._nn.nll_loss_nd, "ignore_index")


def binary_cross_entropy(input, target, *, reduction, weight=None):
    input, target = promote(input, target)
    weight = None if weight is None else weight.to(input.dtype).expand_as(input)
    loss = F.binary_cross_entropy(input, target, weight=weight, reduction=reduction or "none")
    return loss if reduction is not None else Terms(loss)


binary_cross_entropy.kernel_checks_values = True  # torch checks input and target in [0, 1]


def binary_cross_entropy_with_logits(input, target, *, reduction, weight=None, pos_weight=None):
    input, target = promote(input, target)
    loss = F.binary_cross_entropy_with_logits(
        input, target, weight=_cast(weight, input), pos_weight=_cast(pos_weight, input),
        reduction=reduction or "none",
    )
    return loss if reduction is not None else Terms(loss)


def _empty_batch(reduction, input):
    # on an empty batch, torch's margin kernels return uninitialised memory for "sum" (and for
    # multilabel_margin's "mean"; multi_margin's "mean" is 0): the contract reduces it instead
    empty = input.ndim == 2 and input.shape[0] == 0
    return None if empty and reduction != "none" else reduction


def multi_margin(input, target, *, reduction, p=1, margin=1.0, weight=None):
    reduction = _empty_batch(reduction, input)
    loss = F.multi_margin_loss(input, _long(target), p=p, margin=margin,
                               weight=_cast(weight, input), reduction=reduction or "none")
    return loss if reduction is not None else Terms(loss)


def multilabel_margin(input, target, *, reduction):
    reduction = _empty_batch(reduction, input)
    loss = F.multilabel_margin_loss(input, _long(target), reduction=reduction or "none")
    return loss if reduction is not None else Terms(loss)


def soft_margin(input, target, *, reduction):
    input, target = promote(input, target)
    loss = F.soft_margin_loss(input, target, reduction=reduction or "none")
    return loss if reduction is not None else Terms(loss)


def multilabel_soft_margin(input, target, *, reduction, weight=None):
    input, target = promote(input, target)
    loss = F.multilabel_soft_margin_loss(input, target, weight=_cast(weight, input),
                                         reduction=reduction or "none")
    return loss if reduction is not None else Terms(loss)


def _long(target):
    # torch's margin kernels take int64 only
    return target if target.dtype == torch.int64 else target.long()

from ._more_torch import *  # noqa: E402,F401,F403  (focal, softmax_focal, ...: the extras)
