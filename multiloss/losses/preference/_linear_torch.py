"""The fused-linear preference losses on torch: the plain functions of ``_torch.py`` on each chunk
of pairs (``multiloss.losses._lm._torch.linear_form``; the specs: ``_lm/_spec.py``)."""

from __future__ import annotations

from .._lm._forms import FORMS
from .._lm._torch import linear_form
from . import _torch as _plain

linear_dpo = linear_form(FORMS["linear_dpo"], _plain.dpo)
linear_cpo = linear_form(FORMS["linear_cpo"], _plain.cpo)
linear_simpo = linear_form(FORMS["linear_simpo"], _plain.simpo)
linear_orpo = linear_form(FORMS["linear_orpo"], _plain.orpo)
linear_kto = linear_form(FORMS["linear_kto"], _plain.kto)

__all__ = ["linear_cpo", "linear_dpo", "linear_kto", "linear_orpo", "linear_simpo"]
