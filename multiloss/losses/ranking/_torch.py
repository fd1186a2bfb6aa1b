"""torch implementations of the ranking losses (see the specs in ``__init__.py``)."""

from __future__ import annotations
