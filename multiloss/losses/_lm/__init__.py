"""Language-model head primitives shared by the post-training and distillation families (no
loss of its own is registered here): per-token and per-sequence log-probabilities of the label
tokens, from materialised logits (``sequence_logps``) or chunked from hidden states and the
head's weight without materialising the logits (``linear_sequence_logps``, the primitive of the
fused-linear losses ``linear_dpo``, ``linear_grpo``, ...). One module per backend
(``_jax.py``, ``_torch.py``); this package imports no framework."""

from __future__ import annotations

#: TRL's and torch's ignored label.
IGNORE_INDEX = -100

#: Default bytes for a chunk's temporaries in the fused losses (its logits, their gradient and
#: the per-chunk loss's intermediates); the same as linear_cross_entropy's.
DEFAULT_MEMORY_BUDGET = 128 * 2**20
#: Temporaries of the size of a chunk's logits that a fused loss's chunk holds at once (the
#: logits, the reference's, the log-softmax's intermediates and the logits' gradient).
TEMPORARIES = 5
#: Logits-sized temporaries of a torch distillation form's chunk: the student's logits (written
#: over by their gradient) and the teacher's, in two buffers allocated once per call, and the
#: intermediates of the closed form's blocks of rows (DISTILL_BLOCK of a chunk's logits; see
#: distillation/_closed_torch.py): 481 tokens at V = 32768 float32 and the default budget.
#: (Before the closed forms, the chunk ran the plain loss under autograd, about five
#: logits-sized buffers live, and the divisor was 4: 256-token chunks.)
DISTILL_BLOCK = 0.125
DISTILL_TEMPORARIES = 2 + DISTILL_BLOCK


def units_per_chunk(n_units, rows_per_unit, n_classes, itemsize, chunk_size=None,
                    memory_budget=None, temporaries=TEMPORARIES):
    """Units (pairs, sequences or tokens) per chunk of a fused loss: ``chunk_size`` where given,
    else as many as fit in ``memory_budget`` bytes (at least 1), balanced over the chunks."""
    n = max(1, int(n_units))
    if chunk_size is not None:
        per = max(1, min(int(chunk_size), n))
    else:
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
        per_unit = temporaries * max(1, rows_per_unit) * max(1, n_classes) * itemsize
        per = max(1, min(n, int(budget // per_unit)))
    chunks = -(-n // per)
    return -(-n // chunks)
