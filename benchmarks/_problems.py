"""Size-scaled inputs for every registered loss: NumPy inputs in each spec's positional order
and the options of the benchmark (the loss's defaults, reduction "mean"; kl_div "batchmean").

Losses with a generator here get inputs of realistic shapes at three sizes; any other
registered loss (one added later) is benchmarked on its spec's first sample, tiled along the
batch axis (axis 0 of every input whose first dimension is the batch's) to the sizes' row
counts, which keeps its values valid."""

from __future__ import annotations

import numpy as np

SIZES = ("small", "medium", "large")

#: (rows, columns) per size: classes for class losses, features for element-wise ones.
CLASS = {"small": (32, 10), "medium": (512, 1000), "large": (4096, 32768)}
ELEMENTWISE = {"small": (32, 10), "medium": (512, 1000), "large": (4096, 8192)}
QUADRATIC = {"small": (32, 10), "medium": (256, 64), "large": (1024, 256)}  # O(N C^2) on JAX
MARGIN = {"small": (32, 10), "medium": (512, 1000), "large": (4096, 4096)}
EMBEDDING = {"small": (32, 10), "medium": (512, 256), "large": (16384, 1024)}
CTC = {"small": (50, 4, 20, 10), "medium": (200, 32, 64, 50), "large": (400, 64, 128, 100)}
LINEAR = {"small": (32, 64, 100), "medium": (512, 256, 4096), "large": (4096, 1024, 32768)}
#: (completions, tokens) of a policy-gradient batch: a GRPO step of 512 completions of 4096
#: tokens at "large"
POLICY = {"small": (8, 64), "medium": (64, 1024), "large": (512, 4096)}
FALLBACK_ROWS = {"small": 32, "medium": 4096, "large": 262144}


def _log_softmax(x, axis=1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _class(rng, size, dtype, log=False):
    n, c = CLASS[size]
    x = (rng.standard_normal((n, c), dtype=np.float32) * 3).astype(dtype)
    if log:
        x = _log_softmax(x).astype(dtype)
    return (x, rng.integers(0, c, n)), {}


def _pair(rng, size, dtype, table=ELEMENTWISE):
    n, d = table[size]
    return rng.standard_normal((n, d), dtype=np.float32).astype(dtype), (n, d)


def _elementwise(name):
    def make(rng, size, dtype):
        a, (n, d) = _pair(rng, size, dtype)
        b = rng.standard_normal((n, d), dtype=np.float32).astype(dtype)
        sign = np.where(rng.random((n, d)) < 0.5, -1.0, 1.0).astype(dtype)
        if name == "binary_cross_entropy":
            return (rng.uniform(0.01, 0.99, (n, d)).astype(dtype),
                    (rng.random((n, d)) < 0.5).astype(dtype)), {}
        if name in ("binary_cross_entropy_with_logits", "multilabel_soft_margin", "focal"):
            return (a * 3, (rng.random((n, d)) < 0.5).astype(dtype)), {}
        if name == "soft_margin":
            return (a, sign), {}
        if name == "hinge_embedding":
            return (np.abs(a), sign), {}
        if name == "poisson_nll":
            return (a, rng.poisson(2.0, (n, d)).astype(dtype)), {}
        if name == "gaussian_nll":
            return (a, b, rng.uniform(0.1, 2.0, (n, d)).astype(dtype)), {}
        if name == "kl_div":
            return (_log_softmax(a).astype(dtype), np.exp(_log_softmax(b)).astype(dtype)), {
                "reduction": "batchmean"}
        if name == "margin_ranking":
            return (a.reshape(-1), b.reshape(-1), sign.reshape(-1)), {}
        return (a, b), {}

    return make


def _multi_margin(rng, size, dtype):
    n, c = MARGIN[size]
    return (rng.standard_normal((n, c), dtype=np.float32).astype(dtype), rng.integers(0, c, n)), {}


def _multilabel_margin(rng, size, dtype):
    n, c = QUADRATIC[size]
    t = np.full((n, c), -1, np.int64)
    k = max(1, c // 8)
    t[:, :k] = np.argsort(rng.random((n, c)), axis=1)[:, :k]
    return (rng.standard_normal((n, c), dtype=np.float32).astype(dtype), t), {}


def _embedding(name):
    def make(rng, size, dtype):
        n, d = EMBEDDING[size]
        a, b, c = (rng.standard_normal((n, d), dtype=np.float32).astype(dtype) for _ in range(3))
        if name == "cosine_embedding":
            return (a, b, np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dtype)), {}
        opts = {"distance_function": None} if name == "triplet_margin_with_distance" else {}
        return (a, b, c), opts

    return make


def _ctc(rng, size, dtype):
    t_len, n, c, s = CTC[size]
    x = rng.standard_normal((t_len, n, c), dtype=np.float32)
    lp = _log_softmax(x, axis=2).astype(dtype)
    tl = rng.integers(max(1, s * 3 // 5), s + 1, n)
    il = rng.integers(max(1, t_len * 3 // 4), t_len + 1, n)
    tg = rng.integers(1, c, (n, s))
    return (lp, tg, il, tl), {}


def _linear(rng, size, dtype):
    n, d, v = LINEAR[size]
    x = (rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)).astype(dtype)
    w = rng.standard_normal((v, d), dtype=np.float32).astype(dtype)
    return (x, w, rng.integers(0, v, n)), {}


def _grpo(rng, size, dtype):
    """Per-token log-probs of completions of random lengths, old and reference ones near them
    (ratios around 1, some clipped), one advantage per completion; dapo with the KL term."""
    n, t = POLICY[size]
    lp = -rng.uniform(0.05, 3.0, (n, t)).astype(dtype)
    old = (lp + rng.standard_normal((n, t), dtype=np.float32) * 0.3).astype(dtype)
    ref = (lp + rng.standard_normal((n, t), dtype=np.float32) * 0.3).astype(dtype)
    mask = np.arange(t)[None, :] < rng.integers(1, t + 1, n)[:, None]
    adv = rng.standard_normal(n, dtype=np.float32).astype(dtype)
    return (lp, old, adv, mask, ref), {"beta": 0.04, "epsilon_high": 0.28}


GENERATORS = {
    "grpo": _grpo,
    "cross_entropy": _class,
    "nll": lambda rng, size, dtype: _class(rng, size, dtype, log=True),
    "multi_margin": _multi_margin,
    "multilabel_margin": _multilabel_margin,
    "ctc": _ctc,
    "linear_cross_entropy": _linear,
    "cosine_embedding": _embedding("cosine_embedding"),
    "triplet_margin": _embedding("triplet_margin"),
    "triplet_margin_with_distance": _embedding("triplet_margin_with_distance"),
}
for _name in ("mse", "l1", "huber", "smooth_l1", "binary_cross_entropy",
              "binary_cross_entropy_with_logits", "soft_margin", "multilabel_soft_margin",
              "hinge_embedding", "poisson_nll", "gaussian_nll", "kl_div", "margin_ranking",
              "focal"):
    GENERATORS[_name] = _elementwise(_name)


#: (tokens, sequence length, D, V) of the fused-linear losses (benchmarks/fused_linear.py)
FUSED = {"small": (64, 16, 32, 256), "medium": (1024, 128, 256, 4096),
         "large": (4096, 256, 1024, 32768)}


def _fused(name):
    def gen(rng, size, dtype):
        from .fused_linear import problem

        inputs = problem(name, *FUSED[size], seed=int(rng.integers(1 << 30)))
        return tuple(a.astype(dtype) if a.dtype == np.float32 else a
                     for a in inputs.values()), {}

    return gen


for _name in ("linear_dpo", "linear_cpo", "linear_simpo", "linear_orpo", "linear_kto",
              "linear_grpo", "linear_generalized_jsd", "linear_forward_kl", "linear_reverse_kl",
              "linear_symmetric_kl", "linear_tvd"):
    GENERATORS[_name] = _fused(_name)


def _tiled(spec, size, dtype):
    """The spec's first sample tiled along its batch axis to FALLBACK_ROWS[size] rows."""
    from multiloss import testing

    sample = testing.samples_for(spec, np.dtype(dtype).name)[0]
    inputs = [np.asarray(a) for a in sample.inputs]
    rows = inputs[0].shape[0] if inputs[0].ndim else 1
    reps = max(1, FALLBACK_ROWS[size] // max(rows, 1))
    out = []
    for a in inputs:
        if a.ndim and a.shape[0] == rows:
            a = np.concatenate([a] * reps, axis=0)
        out.append(a)
    opts = {k: v for k, v in sample.options.items() if k != "reduction"}
    return tuple(out), opts


def make(spec, size, dtype="float32", seed=0):
    """(inputs, options, how) of loss ``spec`` at ``size``; ``how``: "scaled" (a generator of
    this module) or "tiled" (the spec's first sample, tiled)."""
    rng = np.random.default_rng(seed)
    gen = GENERATORS.get(spec.name)
    if gen is not None:
        inputs, opts = gen(rng, size, np.dtype(dtype))
        how = "scaled"
    else:
        inputs, opts = _tiled(spec, size, dtype)
        how = "tiled"
    opts = {"reduction": "mean", **opts}
    if opts["reduction"] not in spec.reductions:
        opts["reduction"] = spec.reductions[0]
    return tuple(inputs), opts, how


def describe(inputs) -> str:
    return " ".join("x".join(map(str, np.shape(a))) or "()" for a in inputs)


def nbytes(inputs) -> int:
    return int(sum(np.asarray(a).nbytes for a in inputs))
