"""Sequence losses: ctc. Specs only; implementations in ``_jax.py`` and ``_torch.py``."""

from __future__ import annotations
