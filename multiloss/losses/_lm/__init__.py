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
#: The divisor of the budget for a torch distillation form's chunk (its logits: budget / 4, 256
#: tokens of 32 MiB at V = 32768 float32 and the default budget). Measured at 4096 tokens, D 1024,
#: V 32768 (peak RSS above the inputs, forward + backward, torch eager 3218 MiB): 5 (196-token
#: chunks of 25 MiB) 733-874 MiB; 10 (98 tokens) 518-610 MiB and 1.3x the time; 4 (256 tokens)
#: 394 MiB at the time of 5; 3 (316 tokens) 450 MiB. The chunk runs the plain loss under
#: autograd (about five logits-sized buffers live); most of the rest is what glibc's heap keeps
#: between chunks of buffers under its 32 MiB mmap threshold (with MALLOC_MMAP_THRESHOLD_=128 KiB
#: the 196-token chunks peak at 396 MiB): chunk buffers of 32 MiB are mapped and unmapped. A
#: glibc effect: at 4000 tokens, V 32000 (250-token chunks of 30.5 MiB) 740 MiB (5: 967 MiB).
DISTILL_TEMPORARIES = 4


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
        per = max(1, min(n, budget // per_unit))
    chunks = -(-n // per)
    return -(-n // chunks)
