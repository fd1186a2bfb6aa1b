"""The benchmark of every registered loss: ``python -m benchmarks`` (or ``multiloss bench``).

For each loss and size (small, medium, large; ``benchmarks/_problems.py``) it times the
forward and the forward + backward of multiloss on JAX and on torch, the native peers
(torch.nn.functional through the spec's reference, torch.compile of it, optax and Keras where
they have the loss) and the floors (one read of the inputs; one fresh write of arrays of the
gradients' shapes). One worker process per loss; inside it, per size, every implementation is
called in turn in each of ``--repeats`` rounds after ``--warmup`` calls, and a ratio is the
median over the rounds of the two times of the same round. Medians in ms, ratios, the machine,
versions and allocator settings go to a table, a JSON file and PNG figures
(benchmarks/plot.py), in the current directory unless ``--out`` names another. See
docs/benchmarks.md.

Benchmarks are never assertions of the test suite: nothing here fails on a slow result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import _common as C

#: Outputs go to the current directory unless --out names another: never into the source tree
#: by default (benchmarks/results/ holds the committed runs; write there only on purpose).
DEFAULT_OUT = Path(".")
ALL_SIZES = ("small", "medium", "large")
#: The default run: these losses at every size, every other one at DEFAULT_SIZES.
HEADLINE = ("cross_entropy", "nll", "binary_cross_entropy_with_logits", "focal",
            "linear_cross_entropy")
DEFAULT_SIZES = ("medium",)
QUICK_SIZES = ("small",)
#: torch.compile's peer by default only for these (compiling takes 10-60 s per loss and size).
COMPILE_LOSSES = ("cross_entropy",)
MEMORY_LOSSES = ("cross_entropy", "linear_cross_entropy")
#: Losses per worker process (the headline losses get one each).
GROUP = 16


# ---------------------------------------------------------------------------------------------
# worker: one loss, every size


def _opts_repr(opts):
    return {k: v for k, v in opts.items() if not hasattr(v, "shape")}


def run_losses(names, sizes, repeats, warmup, peers, dtype="float32"):
    """run_loss of each loss in turn (one worker process for all of them)."""
    out = []
    for name in names:
        out.extend(run_loss(name, sizes, repeats, warmup, peers, dtype))
    return out


def run_loss(name, sizes, repeats, warmup, peers, dtype="float32"):
    import multiloss

    from . import _problems as P

    spec = multiloss.resolve(name)
    out = []
    for size in sizes:
        try:
            inputs, opts, how = P.make(spec, size, dtype)
        except Exception as e:  # noqa: BLE001 - a loss without usable inputs: reported
            out.append({"loss": spec.name, "size": size, "dtype": dtype,
                        "error": f"inputs: {type(e).__name__}: {e}"})
            continue
        entry = {"loss": spec.name, "size": size, "shapes": P.describe(inputs),
                 "input_bytes": P.nbytes(inputs), "inputs": how, "options": _opts_repr(opts),
                 "dtype": dtype}
        measure(entry, spec, inputs, opts, repeats, warmup, peers)
        out.append(entry)
    return out


def measure(entry, spec, inputs, opts, repeats, warmup, peers, memory=True):
    """Time every implementation of ``spec`` on ``inputs`` into ``entry`` (medians, every
    round's times, ratios, XLA's memory analysis of the JAX ones)."""
    from . import _impls as I

    try:
        impls = I.build(spec, inputs, opts, peers)
    except Exception as e:  # noqa: BLE001
        entry["error"] = f"{type(e).__name__}: {e}"
        return entry
    calls = {}
    for impl, (fwd, fb, _) in impls.items():
        calls[(impl, "fwd")] = fwd
        if fb is not None:
            calls[(impl, "fwd_bwd")] = fb
    times = C.interleaved(calls, repeats, warmup)
    entry["times_s"] = {f"{k[0]} | {k[1]}": v for k, v in times.items()}
    entry["median_ms"] = {}
    for (impl, kind), v in times.items():
        m = entry["median_ms"].setdefault(impl, {})
        m[kind] = 1e3 * C.median(v) if isinstance(v, list) else None
        if not isinstance(v, list):
            m.setdefault("error", v)
    entry["ratios"] = _ratios(times)
    if memory:
        entry["jax_memory"] = _jax_memory(impls, inputs)
    del impls, calls
    return entry


def _per_round(times, key):
    v = times.get(key)
    return v if isinstance(v, list) and v else None


def _ratios(times):
    from . import _impls as I

    def rounds(impl, kind):
        return _per_round(times, (impl, kind))

    def div(num, den):
        if num is None or den is None or len(num) != len(den):
            return None
        return C.median([a / b for a, b in zip(num, den) if b > 0])

    def pick_min(*series):
        series = [s for s in series if s is not None]
        if not series:
            return None
        return [min(v) for v in zip(*series)]

    read = pick_min(rounds(I.READ_JAX, "fwd"), rounds(I.READ_TORCH, "fwd"))
    write = pick_min(rounds(I.WRITE_JAX, "fwd"), rounds(I.WRITE_TORCH, "fwd"))
    floor_fb = None if read is None or write is None else [a + b for a, b in zip(read, write)]
    refs = {"torch": I.TORCH_EAGER, "optax": I.OPTAX, "compile": I.TORCH_COMPILE,
            "naive": I.JAX_NAIVE, "chunked": I.TORCH_CHUNKED, "cce": I.JAX_CCE}
    impls = sorted({k[0] for k in times})
    out = {}
    for impl in impls:
        r = {}
        for kind in ("fwd", "fwd_bwd"):
            mine = rounds(impl, kind)
            for tag, ref in refs.items():
                val = div(mine, rounds(ref, kind))
                if val is not None and ref != impl:
                    r[f"{kind}_vs_{tag}"] = val
            val = div(mine, read if kind == "fwd" else floor_fb)
            if val is not None and impl not in I.FLOORS:
                r[f"{kind}_vs_floor"] = val
        out[impl] = r
    return out


def _jax_memory(impls, inputs):
    """XLA's compiled memory analysis of each JAX implementation's forward and fwd+bwd."""
    import jax.numpy as jnp

    args = tuple(jnp.asarray(a) for a in inputs)
    out = {}
    for impl, (_, _, extra) in impls.items():
        if not extra:
            continue
        rec = {}
        for kind, fn in zip(("fwd", "fwd_bwd"), extra):
            if fn is None:
                continue
            try:
                m = fn.lower(*args).compile().memory_analysis()
            except Exception:  # noqa: BLE001
                m = None
            if m is not None:
                rec[kind] = {"temp_bytes": int(m.temp_size_in_bytes),
                             "output_bytes": int(m.output_size_in_bytes)}
        if rec:
            out[impl] = rec
    return out


def measure_peak(name, size, impl, dtype="float32"):
    """Peak resident memory above the inputs of the first forward+backward of the torch
    implementation ``impl``, in a fresh process (nothing freed before it, so every allocation
    shows). JAX implementations: None; their exact figure is XLA's compiled memory analysis
    (an RSS delta would miss the buffers XLA reuses from the compiler's freed memory)."""
    import multiloss

    from . import _impls as I
    from . import _problems as P

    spec = multiloss.resolve(name)
    inputs, opts, _ = P.make(spec, size, dtype)
    impls = I.build(spec, inputs, opts, I.PEERS, torch_only=True)
    if impl not in impls:
        return None  # a JAX implementation: XLA's compiled memory analysis is exact
    _, fb, extra = impls[impl]
    if fb is None or extra:
        return None  # JAX: XLA's compiled memory analysis is exact (see run_loss)
    del impls
    return C.peak_rss_delta(fb)


# ---------------------------------------------------------------------------------------------
# small-call overhead (the wrappers' cost on a (32, 10) batch)


def overhead(framework, calls=300, rounds=31):
    """Per-call time of a multiloss loss against the same computation called directly, on a
    (32, 10) cross-entropy batch (int64 labels as NumPy gives them, converted to each
    framework's arrays once), in rounds that alternate the calls. ``framework`` "jax": the
    loss object against ``jax.jit`` of the same function (and optax's), each call blocked on
    (its full cost), and the same calls not waited on (what a call costs before it returns:
    JAX dispatches asynchronously); "torch": the module against ``F.cross_entropy``. One
    framework per process: torch's OpenMP threads spin after a call and would take the cores
    from JAX's calls."""
    import numpy as np

    import multiloss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 10), dtype=np.float32)
    t = rng.integers(0, 10, 32)

    def loop(fn):
        def run():
            for _ in range(calls):
                fn()
        return run

    if framework == "jax":
        import jax
        import jax.numpy as jnp
        import optax

        jx, jt = jnp.asarray(x), jnp.asarray(t)
        ml = multiloss.get("cross_entropy", backend="jax")
        unchecked = multiloss.get("cross_entropy", backend="jax", validate=False)
        direct = jax.jit(lambda x, t: ml(x, t))
        ox = jax.jit(lambda x, t: optax.softmax_cross_entropy_with_integer_labels(x, t).mean())

        def dispatched(fn):  # the calls return as soon as XLA has the work: wait once
            def run():
                for _ in range(calls):
                    out = fn(jx, jt)
                out.block_until_ready()
            return run

        fns = {
            "multiloss-jax loss(x, t)": loop(lambda: ml(jx, jt).block_until_ready()),
            "multiloss-jax validate=False": loop(
                lambda: unchecked(jx, jt).block_until_ready()),
            "jax.jit(lambda x, t: loss(x, t))": loop(lambda: direct(jx, jt).block_until_ready()),
            "jax.jit(optax CE)": loop(lambda: ox(jx, jt).block_until_ready()),
            "multiloss-jax, not waited on": dispatched(ml),
            "multiloss-jax validate=False, not waited on": dispatched(unchecked),
            "direct jit, not waited on": dispatched(direct),
        }
        d = "jax.jit(lambda x, t: loss(x, t))"
        pairs = {
            "jax: multiloss / direct jit": ("multiloss-jax loss(x, t)", d),
            "jax: multiloss validate=False / direct jit": ("multiloss-jax validate=False", d),
            "jax, calls not waited on: multiloss / direct jit": (
                "multiloss-jax, not waited on", "direct jit, not waited on"),
            "jax, calls not waited on: validate=False / direct jit": (
                "multiloss-jax validate=False, not waited on", "direct jit, not waited on"),
        }
    else:
        import torch
        import torch.nn.functional as F

        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        mt = multiloss.get("cross_entropy", backend="torch")
        fns = {
            "multiloss-torch module(x, t)": loop(lambda: mt(tx, tt)),
            "torch F.cross_entropy(x, t)": loop(lambda: F.cross_entropy(tx, tt)),
        }
        pairs = {"torch: multiloss / F.cross_entropy": ("multiloss-torch module(x, t)",
                                                        "torch F.cross_entropy(x, t)")}
    times = C.interleaved(fns, rounds, 1)
    per_call = {k: 1e6 * C.median(v) / calls for k, v in times.items()}
    # the median over rounds of the two calls' ratio within a round (load drifts between
    # rounds, much less within one)
    ratios = {k: C.median([a / b for a, b in zip(times[m], times[d])])
              for k, (m, d) in pairs.items()}
    return {"per_call_us": per_call, "ratios": ratios, "calls": calls, "rounds": rounds}


# ---------------------------------------------------------------------------------------------
# reporting


def print_results(results):
    for e in results:
        print(f"\n{e['loss']} [{e['size']}] inputs {e['shapes']} "
              f"({e['input_bytes'] / 2**20:.1f} MiB, {e['inputs']}), {e['dtype']}, "
              f"options {e['options']}")
        if "error" in e:
            print(f"  error: {e['error']}")
            continue
        tags = [t for t in ("torch", "optax", "compile", "naive", "chunked", "cce", "floor")
                if any(f"{k}_vs_{t}" in r for r in e["ratios"].values()
                       for k in ("fwd", "fwd_bwd"))]
        rows = []
        for impl, m in e["median_ms"].items():
            r = e["ratios"].get(impl, {})
            rows.append([impl, C.fmt(m.get("fwd")), C.fmt(m.get("fwd_bwd")),
                         *(C.fmt(r.get(f"{k}_vs_{t}")) for t in tags for k in ("fwd", "fwd_bwd")),
                         m.get("error", "")[:60]])
        head = [f"{k}/{t}" for t in tags for k in ("fwd", "f+b")]
        print(C.table(("implementation", "fwd ms", "f+b ms", *head, "error"), rows))
        mem = e.get("jax_memory") or {}
        if mem:
            print("  XLA compiled memory (MiB, temporaries + outputs) of fwd+bwd: " + ", ".join(
                f"{k}: {(v['fwd_bwd']['temp_bytes'] + v['fwd_bwd']['output_bytes']) / 2**20:.1f}"
                for k, v in mem.items() if "fwd_bwd" in v))


def print_memory(mem):
    if not mem:
        return
    print("\ntorch implementations: peak resident memory above the inputs during the first "
          "forward+backward of a fresh process (MiB; JAX ones: XLA's compiled analysis above):")
    rows = [[m["loss"], m["size"], m["impl"],
             C.fmt(None if m["bytes"] is None else m["bytes"] / 2**20, ".1f"),
             m.get("error", "")[:60]] for m in mem]
    print(C.table(("loss", "size", "implementation", "peak MiB", "error"), rows))


def print_overhead(ov):
    if not ov:
        return
    print(f"\nsmall-call overhead, cross_entropy on (32, 10), per call (median of {ov['rounds']} "
          f"rounds of {ov['calls']} calls):")
    print(C.table(("call", "us"), [[k, C.fmt(v, ".1f")] for k, v in ov["per_call_us"].items()]))
    print("  " + ", ".join(f"{k}: {v:.2f}x" for k, v in ov["ratios"].items()))


# ---------------------------------------------------------------------------------------------
# orchestration


def _child(args_list, env_extra, timeout):
    env = dict(os.environ)
    env.update(env_extra)
    env.setdefault("KERAS_BACKEND", "jax")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "benchmarks.harness", *args_list], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _parse_env(pairs):
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"benchmarks: --env expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = v
    return out


def build_parser(prog="python -m benchmarks"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time every registered loss (forward, forward + backward) on multiloss's "
                    "JAX and torch backends against the libraries that have it (torch "
                    "eager and torch.compile, optax, Keras) and the memory floors (one read "
                    "of the inputs, one fresh write of the gradients). Writes a table, "
                    "NAME.json and the figures NAME.png and NAME_scaling.png to the current "
                    "directory unless --out names another. See docs/benchmarks.md.")
    p.add_argument("--loss", action="append", help="only this loss (repeatable; default: all)")
    p.add_argument("--sizes", nargs="+", choices=ALL_SIZES,
                   help="sizes of every selected loss (default: small medium large for the "
                        f"headline losses {', '.join(HEADLINE)}, medium for the others; "
                        "--quick: small)")
    p.add_argument("--full", action="store_true",
                   help="every loss at every size, torch.compile of every one (hours here; "
                        "default: off)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: the small size, no torch.compile peer, tiny scaling "
                        "sweeps, no peak-memory or overhead runs, 1 warm-up call (default: off)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed rounds, at least 5 (default: 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2; "
                   "--quick 1); the last sizes the measurement")
    p.add_argument("--peers", nargs="*", default=None,
                   help="peers to time besides multiloss and the floors: eager compile optax "
                        "keras naive chunked cce (default: all, compile only for "
                        f"{', '.join(COMPILE_LOSSES)}; --quick: all but compile)")
    p.add_argument("--scaling", dest="scaling", action="store_true", default=None,
                   help="time and memory against N and C for cross_entropy and "
                        "linear_cross_entropy (default: on where they are selected)")
    p.add_argument("--no-scaling", dest="scaling", action="store_false",
                   help="skip the scaling sweeps")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output directory of NAME.json, NAME.png, NAME_scaling.png "
                        "(default: the current directory; created if missing)")
    p.add_argument("--name", default="benchmark",
                   help="file stem of the outputs (default: benchmark)")
    p.add_argument("--no-plot", action="store_true",
                   help="skip the PNGs (default: drawn; they need matplotlib)")
    p.add_argument("--plot-per-loss", action="store_true",
                   help="also NAME_per_loss.png: the time panels of every loss, one row each "
                        "(default: off; NAME.png is one page: the headline losses' times and "
                        "every loss's ratio to its reference)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory runs of the torch implementations "
                        "(cross_entropy and linear_cross_entropy at their largest selected "
                        "size, one fresh process each; default: run, except with --quick)")
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the small-call overhead measurement (default: run, except with "
                        "--quick)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE",
                   help="environment of the worker processes (recorded), e.g. "
                        "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (default: none added)")
    p.add_argument("--timeout", type=int, default=3600,
                   help="seconds per worker process (default: 3600)")
    # worker modes (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-memory", metavar="IMPL", help=argparse.SUPPRESS)
    p.add_argument("--worker-overhead", metavar="FRAMEWORK", help=argparse.SUPPRESS)
    p.add_argument("--worker-scaling", metavar="AXIS", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p


def _worker(args):
    from . import _impls as I

    if args.worker_overhead:
        res = overhead(args.worker_overhead)
    elif args.worker_memory:
        try:
            res = {"bytes": measure_peak(args.loss[0], args.sizes[0], args.worker_memory)}
        except Exception as e:  # noqa: BLE001
            res = {"bytes": None, "error": f"{type(e).__name__}: {e}"}
    elif args.worker_scaling:
        from . import scaling

        res = scaling.run(args.loss[0], args.worker_scaling, args.repeats, args.warmup,
                          args.quick)
    else:
        peers = tuple(args.peers) if args.peers is not None else I.PEERS
        res = run_losses(args.loss, args.sizes, args.repeats, args.warmup, peers)
    args.result.write_text(json.dumps(res, default=float))
    return 0


def plan(names, args):
    """[(losses, sizes, peers)]: the worker processes of the timing runs. Default: each
    headline loss alone at every size (torch.compile where COMPILE_LOSSES has it), the others
    GROUP per process at DEFAULT_SIZES without torch.compile."""
    from . import _impls as I

    def peers_for(name):
        if args.peers is not None:
            return list(args.peers)
        if args.quick:
            return [p for p in I.PEERS if p != "compile"]
        if args.full or name in COMPILE_LOSSES:
            return list(I.PEERS)
        return [p for p in I.PEERS if p != "compile"]

    def sizes_for(name):
        if args.sizes:
            return tuple(args.sizes)
        if args.quick:
            return QUICK_SIZES
        if args.full or name in HEADLINE:
            return ALL_SIZES
        return DEFAULT_SIZES

    jobs, pending = [], {}
    for name in names:
        key = (sizes_for(name), tuple(peers_for(name)))
        if name in HEADLINE and not args.quick:
            jobs.append(([name], *key))
            continue
        group = pending.setdefault(key, [])
        group.append(name)
        if len(group) == GROUP:
            jobs.append((list(group), *key))
            group.clear()
    jobs += [(group, *key) for key, group in pending.items() if group]
    return jobs


def main(argv=None, prog="python -m benchmarks"):
    args = build_parser(prog).parse_args(argv)
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.worker or args.worker_memory or args.worker_overhead or args.worker_scaling:
        return _worker(args)
    if args.repeats < 5:
        print("benchmarks: --repeats must be at least 5 (medians of >= 5 runs)", file=sys.stderr)
        return 2
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("benchmarks: the PNG plot needs matplotlib, which is not installed: "
                  "pip install matplotlib (it is in multiloss's 'dev' extra), or pass --no-plot",
                  file=sys.stderr)
            return 2
    import multiloss

    from . import _impls as I
    from . import scaling as S

    names = [multiloss.resolve(n).name for n in args.loss] if args.loss else multiloss.available()
    names = list(dict.fromkeys(names))
    jobs = plan(names, args)
    do_scaling = args.scaling if args.scaling is not None else True
    if args.quick:
        args.no_memory = args.no_overhead = True
    env = _parse_env(args.env)
    t_start = time.perf_counter()
    results, memory, failures, scaled = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        def call(extra, label):
            path = Path(tmp) / "result.json"
            if path.exists():
                path.unlink()
            try:
                proc = _child([*extra, "--result", str(path)], env, args.timeout)
            except subprocess.TimeoutExpired:
                failures.append({"what": label, "stderr": f"timeout after {args.timeout}s"})
                print(f"  {label}: worker timed out", file=sys.stderr)
                return None
            if proc.returncode != 0 or not path.exists():
                failures.append({"what": label, "stderr": proc.stderr[-2000:]})
                print(f"  {label}: worker failed ({proc.returncode}): "
                      f"{proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return None
            return json.loads(path.read_text())

        def stamp(text):
            print(f"[{time.perf_counter() - t_start:6.0f}s] {text}", file=sys.stderr, flush=True)

        for losses, sizes, peers in jobs:
            t0 = time.perf_counter()
            stamp(f"{' '.join(losses)}: {' '.join(sizes)}")
            extra = ["--worker", "--sizes", *sizes, "--repeats", str(args.repeats),
                     "--warmup", str(args.warmup), "--peers", *peers]
            for n in losses:
                extra += ["--loss", n]
            res = call(extra, " ".join(losses))
            if res:
                results.extend(res)
                print_results(res)
            print(f"  ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
        if do_scaling:
            for loss, axis in S.sweeps(names, args.quick):
                stamp(f"scaling {loss} against {axis}")
                extra = ["--worker-scaling", axis, "--loss", loss, "--repeats",
                         str(args.repeats), "--warmup", str(args.warmup)]
                res = call(extra + (["--quick"] if args.quick else []),
                           f"scaling {loss} {axis}")
                if res:
                    scaled.extend(res)
        if not args.no_memory:
            for name in names:
                if name not in MEMORY_LOSSES:
                    continue
                mine = [e for e in results if e["loss"] == name and "median_ms" in e]
                if not mine:
                    continue
                entry = max(mine, key=lambda e: ALL_SIZES.index(e["size"]))
                jax_impls = set(entry.get("jax_memory") or {})
                for impl in entry["median_ms"]:
                    if impl in I.FLOORS or "compile" in impl or impl in jax_impls:
                        continue
                    stamp(f"memory {name} {entry['size']} {impl}")
                    res = call(["--worker-memory", impl, "--loss", name, "--sizes",
                                entry["size"]], f"memory {name} {impl}")
                    if res is not None:
                        memory.append({"loss": name, "size": entry["size"], "impl": impl, **res})
        ov = None
        if not args.no_overhead:
            parts = [call(["--worker-overhead", f], f"overhead {f}") for f in ("jax", "torch")]
            parts = [r for r in parts if r is not None]
            if parts:
                ov = {"per_call_us": {}, "ratios": {}, "calls": parts[0]["calls"],
                      "rounds": parts[0]["rounds"]}
                for r in parts:
                    ov["per_call_us"].update(r["per_call_us"])
                    ov["ratios"].update(r["ratios"])
    S.print_scaling(scaled)
    print_memory(memory)
    print_overhead(ov)
    elapsed = time.perf_counter() - t_start
    from . import _common

    report = {
        "benchmark": "multiloss losses against their peers",
        "command": " ".join([prog, *(argv if argv is not None else sys.argv[1:])]),
        "config": {"losses": names, "jobs": [list(map(list, j)) for j in jobs],
                   "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
                   "full": args.full, "scaling": do_scaling, "worker_env": env,
                   "dtype": "float32"},
        "machine": _common.machine(),
        "versions": _common.versions(),
        "elapsed_s": elapsed,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": results,
        "scaling": scaled,
        "scaling_slopes": S.slopes(scaled),
        "peak_memory": memory,
        "overhead": ov,
        "failures": failures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    jpath = args.out / f"{args.name}.json"
    jpath.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"\nwrote {jpath}")
    if not args.no_plot:
        from . import plot as P

        for path in P.plot_report(report, args.out, args.name, per_loss=args.plot_per_loss):
            print(f"wrote {path}")
    print(f"elapsed {elapsed:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
