"""multiloss: one loss name, the same loss on JAX and on PyTorch.

    >>> import multiloss
    >>> ce = multiloss.get("cross_entropy", backend="jax", label_smoothing=0.1)
    >>> ce_t = multiloss.get("CrossEntropyLoss", backend="torch", label_smoothing=0.1)

Both compute torch's numbers, gradients and weighting (docs/weighting.md). Importing multiloss
imports neither torch nor jax: a backend is imported when first asked for.
"""

from __future__ import annotations

# multiloss.nn (framework modules, loaded lazily) and multiloss.optim (torch's optimizers on
# optax) import no framework either
from . import nn, optim
from ._combine import LossParts, combine
from ._from_torch import from_torch
from ._logps import SequenceLogps, linear_sequence_logps, sequence_logps
from ._registry import available, info, resolve
from .backends import BACKENDS
from .backends import load as _load_backend

__version__ = "0.1.0"
__all__ = ["LossParts", "SequenceLogps", "available", "combine", "from_torch", "get", "info",
           "linear_sequence_logps", "nn", "optim", "preference_rewards", "resolve",
           "sequence_logps", "__version__"]


def get(name: str, backend: str = "jax", **options):
    """The loss ``name`` on ``backend`` ("jax" or "torch"), with torch's option names and
    defaults (``reduction="mean"``, ``weight``, ``ignore_index=-100``, ...).

    Options are validated now: an unknown option raises TypeError listing the valid ones, a bad
    value raises ValueError naming the option and what is allowed. On "jax" the result is a
    jit-compiled pure callable; on "torch" a ``torch.nn.Module``. Either is called as
    ``loss(*inputs, sample_weight=None)`` with the loss's positional order, torch's (Keras'
    ``(y_true, y_pred)`` for ``keras.*``; ``info(name)["order"]`` says which), or with the
    inputs as keywords of their names.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)}, got {backend!r}")
    spec = resolve(name)
    bound = spec.bind(options)
    return _load_backend(backend).make(spec, bound)


def preference_rewards(loss, *inputs, **named):
    """The chosen and rejected rewards TRL logs for a preference loss (dpo, cpo, simpo, orpo,
    kto) made by :func:`get`, on that loss's inputs and backend, without gradient:
    ``(chosen_rewards, rejected_rewards)``, each of shape (N,).
    See ``multiloss.losses.preference.preference_rewards``."""
    from .losses.preference import preference_rewards as rewards

    return rewards(loss, *inputs, **named)
