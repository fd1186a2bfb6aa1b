"""Loss families, one package per task, as optax's ``losses/`` layout: each package's
``__init__`` registers its specs; ``_jax.py`` and ``_torch.py`` hold one function per loss,
named as the spec. Importing this package imports neither torch nor jax."""

from . import (  # noqa: F401  (registers the specs)
    classification,
    detection,
    distillation,
    distribution,
    generative,
    keras,
    metric,
    policy,
    preference,
    ranking,
    regression,
    segmentation,
    self_supervised,
    sequence,
)
