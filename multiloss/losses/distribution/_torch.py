"""torch implementation of kl_div: torch's own kernel."""

from __future__ import annotations

import torch.nn.functional as F

from ...backends import Terms


def kl_div(input, target, *, reduction, log_target=False):
    if reduction in (None, "mean"):  # "mean": reduced by the contract (torch would warn per call)
        return Terms(F.kl_div(input, target, reduction="none", log_target=log_target))
    return F.kl_div(input, target, reduction=reduction, log_target=log_target)
