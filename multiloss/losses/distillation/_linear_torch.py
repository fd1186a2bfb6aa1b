"""The fused-linear distillation losses on torch: the plain functions of ``_torch.py`` on each
chunk of tokens (the default path: their closed forms, ``_closed_torch.py``)
(``multiloss.losses._lm._torch.linear_distillation``; specs: ``_lm/_spec.py``)."""

from __future__ import annotations

from .._lm._torch import linear_distillation
from . import _closed_torch as _closed
from . import _torch as _plain

linear_generalized_jsd = linear_distillation(
    _plain.generalized_jsd, _closed.closed(_closed.generalized_jsd_rows, False, 14))
linear_forward_kl = linear_distillation(
    _plain.forward_kl, _closed.closed(_closed.forward_kl_rows, True, 5))
linear_reverse_kl = linear_distillation(
    _plain.reverse_kl, _closed.closed(_closed.reverse_kl_rows, True, 8))
linear_symmetric_kl = linear_distillation(
    _plain.symmetric_kl, _closed.closed(_closed.symmetric_kl_rows, True, 10))
linear_tvd = linear_distillation(_plain.tvd, _closed.closed(_closed.tvd_rows, False, 5))

__all__ = ["linear_forward_kl", "linear_generalized_jsd", "linear_reverse_kl",
           "linear_symmetric_kl", "linear_tvd"]
