"""ctc: time and memory of multiloss's ctc on both backends against torch's F.ctc_loss and
optax.ctc_loss.

    python -m benchmarks.ctc [--out ctc.json] [--repeats 10]

(the JSON goes to ``ctc.json`` in the current directory unless ``--out`` names another path)

(``python -m benchmarks --loss ctc`` times ctc with the other losses' protocol, at three
sizes; this script is the detailed CTC report: agreement with torch and T-scaling of memory.)

Problem (the defaults): T = 200 frames, N = 32 sequences, C = 64 classes, padded targets of
width S = 50 with lengths drawn in [30, 50], input lengths in [150, 200], float32 log_softmax
inputs. Times are the median of ``--repeats`` runs after ``--warmup`` runs, of the forward
(the loss) and of the forward and backward (the loss and its gradient w.r.t. the inputs), with
torch's "mean" reduction everywhere (optax: mean_b(l_b / S_b) computed from its per-sequence
losses). JAX functions are jit-compiled and take every input as an argument (lengths and
targets are data, not constants). optax.ctc_loss takes logits and applies log_softmax itself
(idempotent on log_softmax inputs), which is part of its cost. Memory: XLA's compiled
``memory_analysis()`` of the forward+backward at several T (temporaries, excluding inputs and
outputs), to show that it grows linearly in T.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import _common

#: In the current directory: never into the source tree by default.
DEFAULT_OUT = Path("ctc.json")


def _problem(n_frames, n, n_classes, width, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_frames, n, n_classes))
    x = x - x.max(-1, keepdims=True)
    lp = (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float32)
    tl = rng.integers(min(30, width), width + 1, size=n)
    il = rng.integers(max(1, n_frames * 3 // 4), n_frames + 1, size=n)
    tg = rng.integers(1, n_classes, size=(n, width))
    return lp, tg.astype(np.int64), il.astype(np.int64), tl.astype(np.int64)


def _median_ms(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), [1e3 * t for t in times]


def _jax_fns(loss_fn):
    import jax

    fwd = jax.jit(loss_fn)
    both = jax.jit(jax.value_and_grad(loss_fn))
    return fwd, both


def _multiloss_jax():
    import multiloss

    loss = multiloss.get("ctc", backend="jax")
    return lambda lp, tg, il, tl: loss(lp, tg, il, tl)


def _optax_mean():
    import jax.numpy as jnp
    import optax

    def f(lp, tg, il, tl):
        n_frames, width = lp.shape[0], tg.shape[1]
        pad_t = (jnp.arange(n_frames)[None] >= il[:, None]).astype(lp.dtype)
        pad_s = (jnp.arange(width)[None] >= tl[:, None]).astype(lp.dtype)
        per = optax.ctc_loss(jnp.transpose(lp, (1, 0, 2)), pad_t, tg, pad_s)
        return jnp.mean(per / jnp.maximum(tl, 1).astype(lp.dtype))

    return f


def time_all(args):
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F

    import multiloss

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    lp, tg, il, tl = _problem(args.T, args.N, args.C, args.S)
    rows, values, grads = [], {}, {}

    jargs = tuple(jnp.asarray(a) for a in (lp, tg, il, tl))
    for name, fn in (("multiloss-jax", _multiloss_jax()), ("optax.ctc_loss (jit)", _optax_mean())):
        fwd, both = _jax_fns(fn)
        values[name] = float(fwd(*jargs))
        grads[name] = np.asarray(both(*jargs)[1])
        f_ms, f_all = _median_ms(lambda fwd=fwd: fwd(*jargs).block_until_ready(), args.repeats,
                                 args.warmup)
        b_ms, b_all = _median_ms(lambda both=both: jax.block_until_ready(both(*jargs)),
                                 args.repeats, args.warmup)
        rows.append({"impl": name, "fwd_ms": f_ms, "fwd_bwd_ms": b_ms, "fwd_runs_ms": f_all,
                     "fwd_bwd_runs_ms": b_all})

    # the loss object called directly (no user jit): its shape and value checks included
    loss = multiloss.get("ctc", backend="jax")
    f_ms, f_all = _median_ms(lambda: loss(*jargs).block_until_ready(), args.repeats,
                             args.warmup)
    rows.append({"impl": "multiloss-jax (plain call, checks)", "fwd_ms": f_ms,
                 "fwd_bwd_ms": float("nan"), "fwd_runs_ms": f_all, "fwd_bwd_runs_ms": []})

    targs = [torch.from_numpy(a) for a in (lp, tg, il, tl)]
    x = targs[0].clone().requires_grad_(True)
    ml_torch = multiloss.get("ctc", backend="torch")
    for name, fn in (("multiloss-torch", lambda x, *r: ml_torch(x, *r)),
                     ("torch F.ctc_loss", lambda x, *r: F.ctc_loss(x, *r))):
        with torch.no_grad():
            values[name] = float(fn(targs[0], *targs[1:]))
        (g,) = torch.autograd.grad(fn(x, *targs[1:]), x)
        grads[name] = g.numpy()

        def fwd(fn=fn):
            with torch.no_grad():
                fn(targs[0], *targs[1:])

        def both(fn=fn):
            x.grad = None
            fn(x, *targs[1:]).backward()

        f_ms, f_all = _median_ms(fwd, args.repeats, args.warmup)
        b_ms, b_all = _median_ms(both, args.repeats, args.warmup)
        rows.append({"impl": name, "fwd_ms": f_ms, "fwd_bwd_ms": b_ms, "fwd_runs_ms": f_all,
                     "fwd_bwd_runs_ms": b_all})

    by = {r["impl"]: r for r in rows}
    for r in rows:
        for ref, key in (("torch F.ctc_loss", "torch"), ("optax.ctc_loss (jit)", "optax")):
            r[f"fwd_vs_{key}"] = r["fwd_ms"] / by[ref]["fwd_ms"]
            r[f"fwd_bwd_vs_{key}"] = r["fwd_bwd_ms"] / by[ref]["fwd_bwd_ms"]
    ref = grads["torch F.ctc_loss"]
    scale = float(np.abs(ref).max())
    agreement = {k: {"value_rel": abs(values[k] - values["torch F.ctc_loss"])
                     / abs(values["torch F.ctc_loss"]),
                     "grad_rel": float(np.abs(g - ref).max()) / scale}
                 for k, g in grads.items()}
    return rows, values, agreement


def memory(args):
    """Compiled temporary memory of the jitted value-and-gradient, at several T."""
    import jax
    import jax.numpy as jnp

    out = []
    for n_frames in args.memory_T:
        row = {"T": n_frames}
        for name, fn in (("multiloss-jax", _multiloss_jax()), ("optax", _optax_mean())):
            shapes = (jax.ShapeDtypeStruct((n_frames, args.N, args.C), jnp.float32),
                      jax.ShapeDtypeStruct((args.N, args.S), jnp.int32),
                      jax.ShapeDtypeStruct((args.N,), jnp.int32),
                      jax.ShapeDtypeStruct((args.N,), jnp.int32))
            mem = jax.jit(jax.value_and_grad(fn)).lower(*shapes).compile().memory_analysis()
            row[name] = None if mem is None else mem.temp_size_in_bytes
        out.append(row)
    return out


def machine():
    return _common.machine()


def versions():
    return _common.versions()


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def print_report(rows, mem, values, agreement, cfg):
    print(f"ctc, float32, T={cfg['T']} N={cfg['N']} C={cfg['C']} S={cfg['S']}, reduction='mean'; "
          f"median of {cfg['repeats']} runs after {cfg['warmup']} warm-up runs")
    head = ("implementation", "fwd ms", "fwd+bwd ms", "fwd/torch", "f+b/torch", "fwd/optax",
            "f+b/optax")
    body = [(r["impl"], _fmt(r["fwd_ms"], ".2f"), _fmt(r["fwd_bwd_ms"], ".2f"),
             _fmt(r["fwd_vs_torch"], ".2f"), _fmt(r["fwd_bwd_vs_torch"], ".2f"),
             _fmt(r["fwd_vs_optax"], ".2f"), _fmt(r["fwd_bwd_vs_optax"], ".2f")) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for b in body:
        print("  ".join(c.ljust(w) for c, w in zip(b, widths)))
    print("agreement with torch F.ctc_loss (relative to its value, and to its gradient's max; "
          "optax's gradient is w.r.t. its logits, equal on log_softmax inputs): " + ", ".join(
              f"{k} {a['value_rel']:.1e} / {a['grad_rel']:.1e}" for k, a in agreement.items()))
    if mem:
        print("\ncompiled temporary memory of the jitted value-and-gradient (MiB):")
        print("T      multiloss-jax   optax")
        for m in mem:
            mib = {k: (None if m[k] is None else m[k] / 2**20) for k in ("multiloss-jax", "optax")}
            print(f"{m['T']:<6} {_fmt(mib['multiloss-jax'], '<15.2f')} {_fmt(mib['optax'], '.2f')}")


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ctc",
        description="Time and memory of multiloss's ctc on JAX and torch against torch's "
                    "F.ctc_loss and optax.ctc_loss, on float32 log_softmax inputs of T frames, "
                    "N sequences, C classes and padded targets of width S; agreement of values "
                    "and gradients with torch; XLA's compiled memory against T. "
                    "See benchmarks/ctc.py and docs/benchmarks.md.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="JSON output path (default: ctc.json in the current directory)")
    p.add_argument("--repeats", type=int, default=10,
                   help="timed runs per measurement, at least 5 (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed runs before the timed ones, after compiling "
                        "(default: %(default)s)")
    p.add_argument("-T", type=int, default=200,
                   help="frames per sequence (default: %(default)s); the input lengths are "
                        "drawn in [3T/4, T]")
    p.add_argument("-N", type=int, default=32, help="sequences in the batch (default: "
                   "%(default)s)")
    p.add_argument("-C", type=int, default=64,
                   help="classes, the blank (0) included (default: %(default)s)")
    p.add_argument("-S", type=int, default=50,
                   help="width of the padded targets (default: %(default)s); the target "
                        "lengths are drawn in [min(30, S), S]")
    p.add_argument("--memory-T", type=int, nargs="*", default=[100, 200, 400],
                   help="frame counts of the memory analysis; given without values: skip it "
                        "(default: 100 200 400)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads; 0: torch's default (default: %(default)s)")
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.repeats < 5:
        p.error("--repeats: at least 5")
    rows, values, agreement = time_all(args)
    mem = memory(args) if args.memory_T else []
    cfg = {k: getattr(args, k) for k in ("T", "N", "C", "S", "repeats", "warmup")}
    cfg.update(dtype="float32", reduction="mean", memory_T=args.memory_T)
    print_report(rows, mem, values, agreement, cfg)
    result = {"benchmark": "ctc", "config": cfg, "machine": machine(), "versions": versions(),
              "results": rows, "values": values, "agreement_with_torch": agreement,
              "memory_temp_bytes": mem,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
