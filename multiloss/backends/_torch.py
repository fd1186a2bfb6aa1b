"""The torch backend: the weighting contract (docs/weighting.md) and the loss module.

``reduce`` is the one implementation of every reduction, sample weighting and the
nothing-counts rule on torch. Where nothing of the contract is asked for beyond torch's own
reduction, the loss function calls torch's kernel with that reduction directly.
"""

from __future__ import annotations

import numpy as np
import torch

from . import InputChecks, Terms

NAME = "torch"
_NATIVE = ("none", "sum", "mean", "batchmean")


def _divide(num, den, empty: str):
    fill = float("nan") if empty == "nan" else 0.0
    if isinstance(den, (int, float)):
        if den == 0:
            return num * 0 + fill
        return num / den
    zero = den == 0
    out = num / torch.where(zero, torch.ones_like(den), den)
    return torch.where(zero, torch.full_like(out, fill), out)


def reduce(terms: Terms, reduction: str, sample_weight=None, empty: str = "nan"):
    """Reduce a loss's ``Terms`` as the weighting contract says (see the JAX twin in
    ``multiloss.backends._jax.reduce``; the two implement the same formulas)."""
    loss = terms.loss
    if sample_weight is not None:
        sample_weight = sample_weight.to(loss.dtype)
        loss = loss * sample_weight
    if reduction == "none":
        return loss
    num = loss.sum()
    if reduction == "sum":
        return num
    if reduction == "mean":
        if terms.scale is not None:
            num = (loss * terms.scale).sum()
        d = terms.weight
        if sample_weight is not None:
            d = sample_weight if d is None else d * sample_weight
            den = torch.broadcast_to(d, loss.shape).sum()
        elif d is None:
            den = loss.numel()
        else:
            den = d.sum()
    elif reduction == "sum_over_batch_size":
        den = loss.numel() if terms.count is None else terms.count.to(loss.dtype).sum()
    elif reduction == "batchmean":
        den = loss.shape[0] if loss.ndim else 1
    else:  # pragma: no cover - options are validated when the loss is made
        raise ValueError(f"reduction: unknown {reduction!r}")
    return _divide(num, den, empty)


def promote(*tensors):
    """Cast floating tensors to their common dtype (JAX's and NumPy's promotion), so that
    mixed float32/float64 inputs give the same dtype on both backends (torch's kernels differ:
    huber_loss keeps the input's dtype, binary_cross_entropy raises)."""
    first = tensors[0].dtype
    if all(t.dtype == first for t in tensors):  # the common case: nothing to do
        return tensors
    dtype = torch.result_type(*tensors)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)


def _concrete(x):
    return x.detach().cpu().numpy()


def _option_tensor(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    # a copy: a buffer must not share memory with the caller's array (load_state_dict writes it)
    return torch.tensor(np.array(value))


class Loss(torch.nn.Module):
    """A multiloss loss on torch: a ``torch.nn.Module`` whose array options (``weight``,
    ``pos_weight``) are buffers, so ``.to(device)`` and ``state_dict`` carry them.

    ``loss(*inputs, sample_weight=None)`` takes torch tensors (or NumPy arrays) in torch's
    positional order and returns a tensor, differentiable by autograd.
    """

    backend = NAME

    def __init__(self, spec, options: dict):
        super().__init__()
        self.spec = spec
        self.options = dict(options)
        self.__doc__ = spec.doc()
        self._fn = spec.implementation(NAME)
        self._array_names = tuple(o.name for o in spec.options if o.kind == "array")
        self._static = {o.name: options[o.name] for o in spec.options if o.kind != "array"}
        for name in self._array_names:
            v = options[name]
            self.register_buffer(name, None if v is None else _option_tensor(v))
        self._reduction = options["reduction"]
        self._native = options["empty_reduction"] == "nan" and self._reduction in _NATIVE
        self._empty = options["empty_reduction"]
        self._checks = InputChecks(spec, self.options)

    def _device(self, inputs):
        for x in inputs:
            if isinstance(x, torch.Tensor):
                return x.device
        for name in self._array_names:
            b = getattr(self, name)
            if b is not None:
                return b.device
        return None

    def _as_tensor(self, x, name, device):
        if isinstance(x, torch.Tensor):
            return x
        if type(x).__module__.startswith("jax"):
            raise TypeError(
                f"{name}: expected a torch tensor or NumPy array, got a JAX array; use the jax "
                f"backend or convert with numpy.asarray"
            )
        try:
            return torch.as_tensor(np.asarray(x), device=device)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}") from e

    def forward(self, *inputs, sample_weight=None):
        checks = self._checks
        checks.count(inputs)
        if not all(isinstance(x, torch.Tensor) for x in inputs) or (
            sample_weight is not None and not isinstance(sample_weight, torch.Tensor)
        ):
            device = self._device(inputs)
            inputs = tuple(self._as_tensor(x, n, device) for x, n in zip(inputs, checks.names))
            if sample_weight is not None:
                sample_weight = self._as_tensor(sample_weight, "sample_weight", device)
        checks(inputs, sample_weight, _concrete)
        arrays = {name: getattr(self, name) for name in self._array_names}
        native = self._native and sample_weight is None
        out = self._fn(*inputs, reduction=self._reduction if native else None,
                       **self._static, **arrays)
        if isinstance(out, Terms):
            return reduce(out, self._reduction, sample_weight, self._empty)
        return out

    def extra_repr(self):
        return ", ".join(
            f"{k}={'<array>' if hasattr(v, 'shape') else repr(v)}"
            for k, v in self.options.items()
            if k not in self._array_names
        )


def make(spec, options):
    return Loss(spec, options)
