"""The JAX backend: the weighting contract (docs/weighting.md) and the jitted loss object.

``reduce`` is the one implementation of every reduction, sample weighting and the
nothing-counts rule on JAX; every loss goes through it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import InputChecks, Terms

NAME = "jax"


def _divide(num, den, empty: str):
    """num / den, and where den == 0: NaN (empty="nan") or 0 (empty="zero"), with a zero
    gradient either way (torch's gradient of a mean over nothing)."""
    fill = jnp.nan if empty == "nan" else 0.0
    if isinstance(den, (int, float)):  # a static count
        if den == 0:
            return num * 0 + jnp.asarray(fill, num.dtype)
        return num / den
    zero = den == 0
    out = num / jnp.where(zero, jnp.ones_like(den), den)
    return jnp.where(zero, jnp.asarray(fill, out.dtype), out)


def reduce(terms: Terms, reduction: str, sample_weight=None, empty: str = "nan"):
    """Reduce a loss's ``Terms`` as the weighting contract says.

    none: s * l;  sum: sum(s * l);  mean: sum(s * l * r) / sum(s * d);
    sum_over_batch_size: sum(s * l) / sum(count);  batchmean: sum(s * l) / l.shape[0];
    with s the sample weight (1 if None), d the loss's denominator weights (1 if None) and
    r the loss's mean scale (``Terms.scale``, 1 if None; ctc's 1 / target length).
    """
    loss = terms.loss
    if sample_weight is not None:
        sample_weight = jnp.asarray(sample_weight).astype(loss.dtype)
        loss = loss * sample_weight
    if reduction == "none":
        return loss
    num = jnp.sum(loss)
    if reduction == "sum":
        return num
    if reduction == "mean":
        if terms.scale is not None:
            num = jnp.sum(loss * terms.scale)
        d = terms.weight
        if sample_weight is not None:
            d = sample_weight if d is None else d * sample_weight
            den = jnp.sum(jnp.broadcast_to(d, loss.shape))
        elif d is None:
            den = loss.size
        else:
            den = jnp.sum(d)
    elif reduction == "sum_over_batch_size":
        den = loss.size if terms.count is None else jnp.sum(terms.count.astype(loss.dtype))
    elif reduction == "batchmean":
        den = loss.shape[0] if loss.ndim else 1
    else:  # pragma: no cover - options are validated when the loss is made
        raise ValueError(f"reduction: unknown {reduction!r}")
    return _divide(num, den, empty)


def _as_array(x, name):
    if isinstance(x, (jax.Array, np.ndarray, jax.core.Tracer)):
        return x
    if type(x).__module__.startswith("torch"):
        raise TypeError(
            f"{name}: expected a NumPy or JAX array, got a torch.Tensor; use the torch backend "
            f"or convert with .numpy()"
        )
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from e


def _concrete(x):
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _option_array(value):
    if isinstance(value, jax.Array):
        return value
    if hasattr(value, "detach"):  # a torch tensor given as an option
        value = value.detach().cpu().numpy()
    return jnp.asarray(np.asarray(value))


class Loss:
    """A multiloss loss on JAX: a pure callable, jit-compiled once per (options, shapes, dtypes).

    ``loss(*inputs, sample_weight=None)`` takes NumPy or JAX arrays in torch's positional
    order and returns a JAX array. It works inside ``jax.jit``, ``jax.grad`` and ``jax.vmap``.
    Shape and dtype checks run once per call signature; where the class indices are concrete
    (not traced) their values are checked too. Under a trace an invalid class index gives NaN.
    """

    backend = NAME

    def __init__(self, spec, options: dict):
        self.spec = spec
        self.options = dict(options)
        self.__doc__ = spec.doc()
        fn = spec.implementation(NAME)
        array_names = [o.name for o in spec.options if o.kind == "array"]
        static = {
            o.name: options[o.name] for o in spec.options if o.kind != "array"
        }
        self._arrays = {
            k: _option_array(options[k]) for k in array_names if options[k] is not None
        }
        reduction, empty = options["reduction"], options["empty_reduction"]
        self._checks = InputChecks(spec, self.options)

        def run(arrays, inputs, sample_weight):
            terms = fn(*inputs, **static, **arrays)
            return reduce(terms, reduction, sample_weight, empty)

        self._run = jax.jit(run)

    def __call__(self, *inputs, sample_weight=None):
        checks = self._checks
        checks.count(inputs)
        inputs = tuple(_as_array(x, n) for x, n in zip(inputs, checks.names))
        if sample_weight is not None:
            sample_weight = _as_array(sample_weight, "sample_weight")
        checks(inputs, sample_weight, _concrete)
        return self._run(self._arrays, inputs, sample_weight)

    def __repr__(self):
        opts = ", ".join(
            f"{k}={'<array>' if hasattr(v, 'shape') else repr(v)}"
            for k, v in self.options.items()
        )
        return f"multiloss.{self.spec.name}[jax]({opts})"


def make(spec, options):
    return Loss(spec, options)
