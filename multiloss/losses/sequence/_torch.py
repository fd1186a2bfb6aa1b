"""torch implementations of the sequence losses (see the specs in ``__init__.py``)."""

from __future__ import annotations
