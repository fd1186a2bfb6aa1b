"""torch implementations of the GAN losses (see the specs in ``__init__.py``): the reference's
operations (``F.binary_cross_entropy_with_logits``, ``F.relu``), unreduced; the backend
reduces the ``Terms``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...backends import Terms
from ...backends._torch import promote


def _bce(x, target):
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target), reduction="none")


def gan_discriminator(real_logits, fake_logits, *, reduction, kind="nonsaturating"):
    real, fake = promote(real_logits, fake_logits)
    if kind in ("nonsaturating", "minimax"):
        loss = _bce(real, 1.0) + _bce(fake, 0.0)
    elif kind == "hinge":
        loss = F.relu(1.0 - real) + F.relu(1.0 + fake)
    elif kind == "wasserstein":
        loss = fake - real
    else:
        loss = 0.5 * (real - 1.0) ** 2 + 0.5 * fake ** 2
    return Terms(loss)


def gan_generator(fake_logits, *, reduction, kind="nonsaturating"):
    fake = fake_logits
    if kind == "nonsaturating":
        loss = _bce(fake, 1.0)
    elif kind == "minimax":
        loss = -_bce(fake, 0.0)
    elif kind in ("hinge", "wasserstein"):
        loss = -fake
    else:
        loss = 0.5 * (fake - 1.0) ** 2
    return Terms(loss)
