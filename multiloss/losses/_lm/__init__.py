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
#: The divisor of the budget for a torch distillation form's chunk on its paths that run the
#: plain loss under autograd (create_graph, grad_in_forward=False: about five logits-sized
#: buffers live; measured at 4096 tokens, D 1024, V 32768: 256-token chunks peaked at 394 MiB
#: above the inputs, 196-token ones at 733-874 MiB, mostly glibc's heap between chunks).
DISTILL_TEMPORARIES = 4
#: The default path runs a closed form per chunk (distillation/_closed_torch.py) in
#: DISTILL_BLOCKS blocks of its rows: its temporaries are the student's logits (overwritten by
#: their gradient) and the teacher's, two buffers allocated once per call, and one block's
#: intermediates (the form's count of them / DISTILL_BLOCKS): 2 + 5/6 logits (forward_kl,
#: tvd), 2 + 8/6 (reverse_kl), 2 + 10/6 (symmetric_kl), 2 + 14/6 (generalized_jsd): chunks of
#: 361, 307, 279, 236 tokens at V 32768 float32 (342, 293, 274, 228 balanced over 4096).
#: Blocks of a sixth of the chunk: smaller ones (14 rows at V 32768) made the closed form up
#: to 9x slower on a loaded 2-core machine (each op a parallel region), a sixth about as fast
#: as one block (whose intermediates would be chunk-sized).
DISTILL_BLOCKS = 6


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
