"""The fused-linear post-training losses (issue 17 item 4): forward + backward (gradients of
the hidden states and the head's weight) of ``linear_<loss>`` against the same loss on the
materialised logits, at N*T = 4096 tokens, D = 1024, V = 32768, float32 by default.

    python -m benchmarks.fused_linear [--losses linear_dpo,linear_grpo] [--tokens 4096]
        [--seq 256] [--dim 1024] [--vocab 32768] [--repeats 2] [--out DIR]

Implementations (each a fresh process, so that its peak memory is its own):
- ``jax_fused``: ``multiloss.get("linear_<loss>", backend="jax")``, jax.grad, jitted;
- ``jax_naive``: ``multiloss.sequence_logps`` of the materialised logits ``x @ W.T``, then
  ``multiloss.get("<loss>", backend="jax")``, jax.grad, jitted;
- ``torch_fused``: ``multiloss.get("linear_<loss>", backend="torch")``, backward;
- ``torch_eager``: the materialised logits, TRL 1.16's ``selective_log_softmax``, the plain
  ``<loss>`` (TRL's formulas), backward;
- ``liger``: Liger-Kernel 0.8.5's ``liger_kernel.chunked_loss`` module (plain torch,
  ``compiled=False``: torch.compile of its chunk function is for GPUs), where it has the loss
  (forward / reverse KL: its chunked JSD at beta 0 / 1; symmetric KL and TVD: none that runs
  on CPU, its TVD being a Triton kernel).

Time: the median of ``--repeats`` calls after one warm-up (``--repeats 0``: the first call,
which for JAX runs the executable compiled for the memory analysis, so no compilation). Peak extra memory: JAX, XLA's
compiled memory analysis of the jitted forward+backward (temporaries + outputs); torch, the
peak resident memory above the inputs during one forward+backward (sampled). Ratios are
against ``jax_naive`` (JAX) and ``torch_eager`` (torch). Benchmarks, not tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import _common as C

LOSSES = ("linear_dpo", "linear_cpo", "linear_simpo", "linear_orpo", "linear_kto",
          "linear_grpo", "linear_generalized_jsd", "linear_forward_kl", "linear_reverse_kl",
          "linear_symmetric_kl", "linear_tvd")
DISTILLATION = LOSSES[6:]
IMPLS = ("jax_fused", "jax_naive", "torch_fused", "torch_eager", "liger")
#: the option of each loss benchmarked (Liger's defaults where it has the loss)
OPTIONS = {"linear_dpo": {}, "linear_cpo": {}, "linear_simpo": {}, "linear_orpo": {},
           "linear_kto": {}, "linear_grpo": {"loss_type": "dapo"},
           **{name: {} for name in LOSSES[6:]}}


def problem(name, tokens, seq, dim, vocab, seed=0):
    """NumPy inputs of ``name``: rows = tokens / seq sequences (pairs: half chosen, half
    rejected), the first eighth of each sequence a prompt (ignored)."""
    rng = np.random.default_rng(seed)
    rows = tokens // seq
    x = (rng.standard_normal((rows, seq, dim)) / np.sqrt(dim)).astype(np.float32)
    w = rng.standard_normal((vocab, dim), dtype=np.float32)
    lab = rng.integers(0, vocab, (rows, seq))
    lab[:, : seq // 8] = -100
    if name in DISTILLATION:  # the teacher: the student's hidden states, perturbed
        return {"input": x, "linear_weight": w,
                "teacher_input": (x + rng.standard_normal(x.shape) * 0.1).astype(np.float32),
                "teacher_linear_weight": (w + rng.standard_normal(w.shape) * 0.1).astype(
                    np.float32),
                "labels": lab}
    out = {"input": x, "linear_weight": w, "target": lab}
    if name in ("linear_dpo", "linear_kto"):
        out["ref_input"] = (x + rng.standard_normal(x.shape) * 0.01).astype(np.float32)
        out["ref_linear_weight"] = (w + rng.standard_normal(w.shape) * 0.01).astype(np.float32)
    if name == "linear_kto":
        out["labels"] = np.arange(rows) % 2 == 0
        out["kl"] = np.asarray(0.1, np.float32)
    if name == "linear_grpo":
        out["old_logps"] = (-rng.uniform(5, 15, (rows, seq))).astype(np.float32)
        out["advantages"] = rng.standard_normal(rows).astype(np.float32)
        out["completion_mask"] = (lab != -100).astype(np.int64)
    return out


def _plain_inputs_jax(name, tok, seq_sum, seq_avg, inputs, n):
    """The plain loss's inputs from the per-token and per-sequence log-probs (JAX)."""
    import jax.numpy as jnp

    if name == "linear_dpo":
        rl = inputs["_ref_seq"]
        return (seq_sum[:n], seq_sum[n:], rl[:n], rl[n:])
    if name in ("linear_cpo", "linear_orpo"):
        lab = inputs["target"]
        cnt = jnp.sum(lab[:n] != -100)
        nll = jnp.broadcast_to(-jnp.sum(tok[:n]) / cnt, (n,))
        s = seq_avg if name == "linear_orpo" else seq_sum
        return (s[:n], s[n:], nll)
    if name == "linear_simpo":
        return (seq_avg[:n], seq_avg[n:])
    if name == "linear_kto":
        return (seq_sum, inputs["_ref_seq"], inputs["labels"], inputs["kl"])
    return (tok, inputs["old_logps"], inputs["advantages"], inputs["completion_mask"])


def build_jax(name, impl, inputs, opts):
    import jax
    import jax.numpy as jnp

    import multiloss

    arrays = {k: jnp.asarray(v) for k, v in inputs.items()}
    keys = list(arrays)
    if impl == "jax_fused":
        loss = multiloss.get(name, backend="jax", **opts)

        def f(x, w, rest):
            return loss(x, w, *rest)
    else:
        plain = multiloss.get(name[len("linear_"):], backend="jax", **opts)
        rows = arrays["input"].shape[0]
        n = rows // 2 if name in ("linear_dpo", "linear_cpo", "linear_simpo",
                                  "linear_orpo") else rows
        lab = arrays["target"] if "target" in arrays else None

        def f(x, w, rest):
            named = dict(zip(keys[2:], rest))
            if name in DISTILLATION:
                zt = jax.lax.stop_gradient(named["teacher_input"] @ named["teacher_linear_weight"].T)
                return plain(x @ w.T, zt, named["labels"])
            tok, s = multiloss.sequence_logps(x @ w.T, lab)
            cnt = jnp.sum(lab != -100, -1)
            extra = dict(named)
            if "ref_input" in named:
                _, rs = multiloss.sequence_logps(
                    jax.lax.stop_gradient(named["ref_input"] @ named["ref_linear_weight"].T),
                    lab)
                extra["_ref_seq"] = rs
            extra["target"] = lab
            return plain(*_plain_inputs_jax(name, tok, s, s / cnt, extra, n))

    rest = tuple(arrays[k] for k in keys[2:])
    fb = jax.jit(jax.grad(f, argnums=(0, 1)))
    x, w = arrays["input"], arrays["linear_weight"]
    compiled = fb.lower(x, w, rest).compile()
    m = compiled.memory_analysis()
    mem = int(m.temp_size_in_bytes) + int(m.output_size_in_bytes)

    def run():  # the executable compiled above: no compilation in the timed calls
        jax.block_until_ready(compiled(x, w, rest))

    return run, mem


def build_torch(name, impl, inputs, opts):
    import torch

    import multiloss

    t = {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}
    x = t["input"].requires_grad_(True)
    w = t["linear_weight"].requires_grad_(True)
    rows = x.shape[0]
    paired = name in ("linear_dpo", "linear_cpo", "linear_simpo", "linear_orpo")
    n = rows // 2 if paired else rows
    lab = t["target"] if "target" in t else t["labels"]
    rest = [t[k] for k in list(t)[2 if name in DISTILLATION else 3:]]
    if impl == "torch_fused":
        loss = multiloss.get(name, backend="torch", **opts)

        def step():
            out = loss(x, w, *rest) if name in DISTILLATION else loss(x, w, lab, *rest)
            out.backward()
            return out
    elif impl == "torch_eager":
        from trl.trainer.utils import selective_log_softmax

        plain = multiloss.get(name[len("linear_"):], backend="torch", **opts)

        def logps(z):
            mask = lab != -100
            tok = selective_log_softmax(z, torch.where(mask, lab, 0)) * mask
            return tok, tok.sum(-1), tok.sum(-1) / mask.sum(-1)

        def step():
            if name in DISTILLATION:
                with torch.no_grad():
                    zt = t["teacher_input"] @ t["teacher_linear_weight"].T
                out = plain(x @ w.T, zt, lab)
                out.backward()
                return out
            tok, s, a = logps(x @ w.T)
            if name in ("linear_dpo", "linear_kto"):
                with torch.no_grad():
                    _, rs, _ = logps(t["ref_input"] @ t["ref_linear_weight"].T)
            if name == "linear_dpo":
                args = (s[:n], s[n:], rs[:n], rs[n:])
            elif name in ("linear_cpo", "linear_orpo"):
                nll = (-tok[:n].sum() / (lab[:n] != -100).sum()).expand(n)
                v = a if name == "linear_orpo" else s
                args = (v[:n], v[n:], nll)
            elif name == "linear_simpo":
                args = (a[:n], a[n:])
            elif name == "linear_kto":
                args = (s, rs, t["labels"], t["kl"])
            else:
                args = (tok, t["old_logps"], t["advantages"], t["completion_mask"])
            out = plain(*args)
            out.backward()
            return out
    else:
        from liger_kernel import chunked_loss as L

        if name == "linear_dpo":
            m = L.LigerFusedLinearDPOLoss(compiled=False)

            def call():
                return m(w, x, lab, ref_input=t["ref_input"],
                         ref_weight=t["ref_linear_weight"])
        elif name == "linear_cpo":
            m = L.LigerFusedLinearCPOLoss(compiled=False)

            def call():
                return m(w, x, lab)
        elif name == "linear_simpo":
            m = L.LigerFusedLinearSimPOLoss(compiled=False, compute_nll_loss=False)

            def call():
                return m(w, x, lab)
        elif name == "linear_orpo":
            m = L.LigerFusedLinearORPOLoss(compiled=False)

            def call():
                return m(w, x, lab)
        elif name == "linear_kto":
            m = L.LigerFusedLinearKTOLoss(compiled=False, use_ref_model=True)

            def call():
                return m(x, w, lab, preference_labels=t["labels"], ref_input=t["ref_input"],
                         ref_weight=t["ref_linear_weight"], kl=t["kl"])
        elif name == "linear_generalized_jsd":
            m = L.LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0,
                                          compiled=False)

            def call():
                return m(x.view(-1, x.shape[-1]), w, t["teacher_input"].view(-1, x.shape[-1]),
                         t["teacher_linear_weight"], lab.view(-1))
        elif name in ("linear_forward_kl", "linear_reverse_kl"):
            # Liger's chunked JSD at beta 0 (forward KL) / 1 (reverse KL): the same divergence
            # per token (its normalisation differs: sum over the batch's rows / their count)
            m = L.LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0,
                                          beta=0.0 if name == "linear_forward_kl" else 1.0,
                                          compiled=False)

            def call():
                return m(x.view(-1, x.shape[-1]), w, t["teacher_input"].view(-1, x.shape[-1]),
                         t["teacher_linear_weight"], lab.view(-1))
        elif name in DISTILLATION:
            raise NotImplementedError(f"Liger has no chunked {name[len('linear_'):]} that runs "
                                      "on CPU (its TVD is a Triton kernel)")
        else:
            m = L.LigerFusedLinearGRPOLoss(compiled=False, beta=0.0, use_ref_model=False)

            def call():
                return m(x, w, lab, t["completion_mask"], t["advantages"],
                         old_per_token_logps=t["old_logps"])

        def step():
            out = call()
            out = out[0] if isinstance(out, tuple) else out
            out.backward()
            return out

    def run():
        x.grad = w.grad = None
        step()

    return run, None


def worker(name, impl, dims, repeats):
    """One implementation of one loss in this process: its peak memory (first call) and
    median time."""
    inputs = problem(name, *dims)
    opts = OPTIONS[name]
    entry = {"loss": name, "impl": impl}
    try:
        if impl.startswith("jax"):
            run, mem = build_jax(name, impl, inputs, opts)
            t0 = time.perf_counter()
            run()
            entry["first_s"] = time.perf_counter() - t0
        else:
            run, _ = build_torch(name, impl, inputs, opts)
            t0 = time.perf_counter()
            mem = C.peak_rss_delta(run)
            entry["first_s"] = time.perf_counter() - t0
        entry["peak_extra_bytes"] = mem
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        if not repeats:  # --repeats 0: the first call's time (JAX: compiled beforehand)
            times = [entry["first_s"]]
        entry["times_s"] = times
        entry["median_s"] = float(np.median(times))
    except Exception as e:  # noqa: BLE001 - reported
        entry["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return entry


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=".")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    dims = (a.tokens, a.seq, a.dim, a.vocab)
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker[0], a.worker[1], dims, a.repeats)))
        return
    results = []
    for name in a.losses.split(","):
        for impl in a.impls.split(","):
            cmd = [sys.executable, "-m", "benchmarks.fused_linear", "--worker", name, impl,
                   "--tokens", str(a.tokens), "--seq", str(a.seq), "--dim", str(a.dim),
                   "--vocab", str(a.vocab), "--repeats", str(a.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            entry = json.loads(lines[-1][7:]) if lines else {
                "loss": name, "impl": impl, "error": out.stderr[-500:]}
            print(json.dumps(entry), flush=True)
            results.append(entry)
    rows = []
    by = {(r["loss"], r["impl"]): r for r in results}
    for name in a.losses.split(","):
        for impl in a.impls.split(","):
            r = by.get((name, impl), {})
            base = by.get((name, "jax_naive" if impl.startswith("jax") else "torch_eager"), {})
            mem, t = r.get("peak_extra_bytes"), r.get("median_s")
            bm, bt = base.get("peak_extra_bytes"), base.get("median_s")
            rows.append([name, impl, C.fmt(None if mem is None else mem / 2**20, ".0f"),
                         C.fmt(None if t is None else t, ".2f"),
                         C.fmt(mem / bm if mem and bm else None),
                         C.fmt(t / bt if t and bt else None), r.get("error", "")[:60]])
    text = C.table(["loss", "impl", "peak extra MiB", "median s", "memory ratio", "time ratio",
                    "error"], rows)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"dims": {"tokens": a.tokens, "seq": a.seq, "dim": a.dim, "vocab": a.vocab,
                        "dtype": "float32"}, "machine": C.machine(), "versions": C.versions(),
               "results": results, "table": text}
    (out / "fused_linear.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
