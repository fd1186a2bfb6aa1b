"""The fused-linear distillation losses on JAX: the plain functions of ``_jax.py`` on each
chunk of tokens (``multiloss.losses._lm._jax.linear_distillation``; specs: ``_lm/_spec.py``)."""

from __future__ import annotations

from .._lm._jax import linear_distillation
from . import _jax as _plain

linear_generalized_jsd = linear_distillation(_plain.generalized_jsd)
linear_forward_kl = linear_distillation(_plain.forward_kl)
linear_reverse_kl = linear_distillation(_plain.reverse_kl)
linear_symmetric_kl = linear_distillation(_plain.symmetric_kl)
linear_tvd = linear_distillation(_plain.tvd)

__all__ = ["linear_forward_kl", "linear_generalized_jsd", "linear_reverse_kl",
           "linear_symmetric_kl", "linear_tvd"]
