"""torch implementations of the sequence losses (see the specs in ``__init__.py``): torch's own
kernel, ``torch.nn.functional.ctc_loss``.

Each function takes ``reduction``: a torch reduction to compute natively, or ``None`` for the
unreduced ``Terms`` that ``multiloss.backends._torch`` reduces (sample weights,
"sum_over_batch_size", ``empty_reduction="zero"``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...backends import Terms


def ctc(log_probs, targets, input_lengths, target_lengths, *, reduction, blank=0,
        zero_infinity=False):
    loss = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank,
                      reduction=reduction or "none", zero_infinity=zero_infinity)
    if reduction is not None:
        return loss
    # torch's "mean" is mean_b(l_b / max(S_b, 1)): the contract's per-element mean scale
    tl = target_lengths.to(device=loss.device, dtype=loss.dtype).reshape(loss.shape)
    return Terms(loss, scale=1 / torch.clamp_min(tl, 1))
