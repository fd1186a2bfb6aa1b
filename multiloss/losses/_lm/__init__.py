"""Language-model head primitives shared by the post-training and distillation families (no
loss of its own is registered here): per-token and per-sequence log-probabilities of the label
tokens, from materialised logits (``sequence_logps``) or chunked from hidden states and the
head's weight without materialising the logits (``linear_sequence_logps``, the primitive of the
fused-linear losses ``linear_dpo``, ``linear_grpo``, ...). One module per backend
(``_jax.py``, ``_torch.py``); this package imports no framework."""

from __future__ import annotations

#: TRL's and torch's ignored label.
IGNORE_INDEX = -100
