"""linear_grpo on torch: the plain ``grpo`` of ``_torch.py`` on each chunk of sequences
(``multiloss.losses._lm._torch.linear_form``; the spec: ``_lm/_spec.py``)."""

from __future__ import annotations

from .._lm._forms import FORMS
from .._lm._torch import linear_form
from . import _torch as _plain

linear_grpo = linear_form(FORMS["linear_grpo"], _plain.grpo)

__all__ = ["linear_grpo"]
