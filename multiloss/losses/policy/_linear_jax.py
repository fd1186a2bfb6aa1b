"""linear_grpo on JAX: the plain ``grpo`` of ``_jax.py`` on each chunk of sequences
(``multiloss.losses._lm._jax.linear_form``; the spec: ``_lm/_spec.py``)."""

from __future__ import annotations

from .._lm._forms import FORMS
from .._lm._jax import linear_form
from . import _jax as _plain

linear_grpo = linear_form(FORMS["linear_grpo"], _plain.grpo)

__all__ = ["linear_grpo"]
