"""Ranking and embedding losses: margin_ranking, hinge_embedding, cosine_embedding,
triplet_margin, triplet_margin_with_distance. Specs only; implementations in ``_jax.py`` and
``_torch.py``."""

from __future__ import annotations
