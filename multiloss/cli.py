"""The ``multiloss`` command: ``multiloss list``, ``multiloss info NAME``,
``multiloss parity`` (every registered loss over its sample grid on both backends against the
reference, in float64 and float32), ``multiloss bench`` (the benchmarks, docs/benchmarks.md)
and ``multiloss demo`` (a torch recipe and its Flax/optax port
trained side by side, see multiloss/demo.py)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

DTYPES = ("float64", "float32")
_CHUNK = 24  # cases per work unit

DESCRIPTION = (
    "One loss name, the same loss on JAX and PyTorch, with torch's numbers, gradients and "
    "weighting. Commands: list (the losses), info NAME (one loss's options, formula and "
    "reference), parity (every loss against its reference library), demo (a torch recipe and "
    "its Flax/optax port trained side by side), bench (speed and memory against the peers)."
)

#: The framework packages a command may need, and the extra that installs each.
_EXTRAS = {"torch": "torch", "jax": "jax", "jaxlib": "jax", "flax": "jax", "optax": "jax"}


def _cmd_list(args) -> int:
    from . import _registry

    rows = [(s.name, s.family, ", ".join(s.aliases)) for s in _registry.specs()]
    width = max(len(r[0]) for r in rows)
    fam = max(len(r[1]) for r in rows)
    print(f"{'loss':{width}}  {'family':{fam}}  aliases")
    for name, family, aliases in rows:
        print(f"{name:{width}}  {family:{fam}}  {aliases}")
    print("\nmodules with parameters (multiloss.nn, not multiloss.get):")
    for torch_name, (name, where) in _registry.MODULE_LOSSES.items():
        print(f"{name:{width}}  {torch_name}: {where}")
    return 0


def _cmd_info(args) -> int:
    from . import info

    d = info(args.name)
    print(f"{d['name']} ({d['family']}): {d['summary']}")
    print(f"aliases: {', '.join(d['aliases'])}")
    print(f"inputs, in {d['order']} (positional, or as keywords of their names):")
    for i in d["inputs"]:
        print(f"  {i['name']}{' (optional)' if i['optional'] else ''}: {i['doc']}")
    print("options:")
    for o in d["options"]:
        allowed = f" [{o['allowed']}]" if o["allowed"] else ""
        print(f"  {o['name']}={o['default']!r}{allowed}: {o['doc']}")
    print(f"formula:\n  {d['formula'].replace(chr(10), chr(10) + '  ')}")
    print(f"reference: {d['reference']}")
    if d["notes"]:
        print(f"notes: {d['notes']}")
    return 0


# ---------------------------------------------------------------------------------------------
# parity

#: Exit codes of ``multiloss parity``: every case agrees (0), a mismatch or a backend error
#: (1), a usage error (2), incomplete: something that ran agrees, but a backend or a reference
#: library is not installed, so some results were not compared (3).
EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _work_unit(unit):
    """Run the cases ``indices`` of one loss in one dtype on ``backends`` (in a worker)."""
    name, dtype, indices, seed, backends = unit
    import warnings

    from . import testing

    warnings.filterwarnings("ignore")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if dtype == "float64" and "jax" in backends:
        testing.enable_x64()
    spec = testing.resolve(name)
    samples = testing.samples_for(spec, dtype, seed)
    return [testing.compare(spec, samples[i], dtype, backends).__dict__ for i in indices]


def _units(names, dtypes, seed, full, backends):
    """Work units in loss order (float64 first): a loss's chosen cases in chunks."""
    from . import testing

    units = []
    for dtype in dtypes:
        for name in names:
            spec = testing.resolve(name)
            samples = testing.samples_for(spec, dtype, seed)
            chosen = samples if full else testing.quick_samples(samples)
            indices = [i for i, s in enumerate(samples) if any(s is c for c in chosen)]
            for start in range(0, len(indices), _CHUNK):
                units.append((spec.name, dtype, indices[start:start + _CHUNK], seed, backends))
    return units


class _Progress:
    """Progress on stderr: a bar redrawn in place on a terminal; elsewhere (a log, CI) a line
    at every tenth of the cases, naming the loss reached in the report's order and the ETA."""

    def __init__(self, total, stream=None, steps=10):
        stream = sys.stderr if stream is None else stream
        self.total, self.done, self.stream = total, 0, stream
        self.t0 = time.perf_counter()
        self.tty = stream.isatty()
        self.steps, self.shown = steps, 0

    def update(self, n, label):
        self.done += n
        frac = self.done / max(self.total, 1)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        if self.tty:
            bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
            line = f"[{bar}] {self.done}/{self.total} cases {elapsed:4.0f}s ETA {eta:4.0f}s {label}"
            self.stream.write("\r" + line[:110].ljust(110))
        elif int(frac * self.steps) > self.shown or self.done == self.total:
            self.shown = int(frac * self.steps)
            self.stream.write(f"parity {100 * frac:3.0f}%  {self.done}/{self.total} cases, "
                              f"{elapsed:.0f} s, ETA {eta:.0f} s  (at {label})\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()


def _median(xs):
    xs = sorted(x for x in xs if not math.isnan(x))
    if not xs:
        return float("nan")
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else 0.5 * (xs[m - 1] + xs[m])


def _backends(choice):
    """The backends to run ("both": those installed) and the ones skipped, with why."""
    wanted = ("jax", "torch") if choice == "both" else (choice,)
    have = tuple(b for b in wanted if _installed(b))
    skipped = [b for b in wanted if b not in have]
    if not have:
        raise ImportError(
            f"parity: {' and '.join(wanted)} not installed; install a backend with "
            f"pip install 'multiloss[jax]' or 'multiloss[torch]' (torch==2.13.0 first)")
    return have, skipped


def _verdict(cases, backends):
    bad = [c for c in cases if not c.ok]
    if bad:
        return f"FAIL ({len(bad)})"
    missing = sorted({c.missing for c in cases if c.missing})
    if missing:
        return f"ran, not compared (no {', '.join(missing)})"
    return "ok"


def _cmd_parity(args) -> int:
    from . import testing

    names = [testing.resolve(n).name for n in args.loss] if args.loss else [
        s.name for s in testing.all_specs()
    ]
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    backends, skipped = _backends(args.backend)
    units = _units(names, dtypes, args.seed, args.full, backends)
    total = sum(len(u[2]) for u in units)
    jobs = max(1, min(args.jobs, len(units)))
    print(f"multiloss parity: {total} cases ({'every case' if args.full else 'representative cases; --full for every case'}) "
          f"of {len(names)} losses in {', '.join(dtypes)} on {', '.join(backends)}"
          + "".join(f"; {b} skipped (not installed: pip install 'multiloss[{b}]')"
                    for b in skipped), file=sys.stderr, flush=True)
    progress = _Progress(total)
    results = []
    if jobs == 1:
        for u in units:
            results.extend(_work_unit(u))
            progress.update(len(u[2]), f"{u[0]} {u[1]}")
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_work_unit, u) for u in units]
            for u, fut in zip(units, futures):  # in loss order
                results.extend(fut.result())
                progress.update(len(u[2]), f"{u[0]} {u[1]}")
    progress.close()

    rows, failed, missing = [], [], set()
    for dtype in dtypes:
        for name in names:
            rs = [r for r in results if r["loss"] == name and r["dtype"] == dtype]
            cases = [testing.CaseResult(**r) for r in rs]
            bad = [c for c in cases if not c.ok]
            failed.extend(bad)
            missing.update(c.missing for c in cases if c.missing)
            rows.append({
                "loss": name,
                "dtype": dtype,
                "cases": len(cases),
                "max_value_error": max((c.value_error for c in cases), default=0.0),
                "max_grad_error": max((c.grad_error for c in cases), default=0.0),
                "jax_ms": 1e3 * _median([c.jax_seconds for c in cases]),
                "torch_ms": 1e3 * _median([c.torch_seconds for c in cases]),
                "tolerance": testing.TOLERANCE[dtype],
                "verdict": _verdict(cases, backends),
            })
    _print_table(rows)
    for c in failed[:20]:
        errs = ", ".join(f"{k}={v:.2e}" for k, v in c.errors.items()
                         if v > testing.TOLERANCE[c.dtype])
        print(f"FAIL {c.dtype} {c.case}: {errs} {c.message}")
    n_cases = sum(r["cases"] for r in rows)
    print(f"{n_cases} cases, {len(failed)} mismatches; tolerances (relative to the reference's "
          f"scale): " + ", ".join(f"{d} {testing.TOLERANCE[d]:.1e}" for d in dtypes)
          + "; times: median value+gradient call per case after compilation")
    incomplete = sorted(missing) or skipped
    if skipped:
        print(f"INCOMPLETE: backend(s) {', '.join(skipped)} not installed, so not run "
              f"(pip install 'multiloss[{skipped[0]}]')")
    if missing:
        print(f"INCOMPLETE: reference libraries not installed: {', '.join(sorted(missing))}; "
              f"the losses they define ran on {', '.join(backends)} but were not compared "
              f"(the README's install command installs every reference)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": rows, "cases": results, "backends": list(backends),
                       "skipped_backends": skipped, "missing_references": sorted(missing)},
                      f, indent=1, default=float)
        print(f"wrote {args.json}")
    if failed:
        return EXIT_MISMATCH
    return EXIT_INCOMPLETE if incomplete else EXIT_OK


def _ms(x):
    return "-" if math.isnan(x) else f"{x:.3f}"


def _print_table(rows):
    head = ("loss", "dtype", "cases", "max value err", "max grad err", "jax ms", "torch ms",
            "verdict")
    body = [
        (r["loss"], r["dtype"], str(r["cases"]), f"{r['max_value_error']:.2e}",
         f"{r['max_grad_error']:.2e}", _ms(r["jax_ms"]), _ms(r["torch_ms"]), r["verdict"])
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for b in body:
        print("  ".join(c.ljust(w) for c, w in zip(b, widths)))


def _cmd_bench(argv) -> int:
    """``multiloss bench [OPTIONS]``: the benchmark harness of a source checkout
    (``python -m benchmarks``, benchmarks/harness.py), its options passed through."""
    try:
        from benchmarks import harness
    except ImportError:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not os.path.isfile(os.path.join(root, "benchmarks", "harness.py")):
            print("multiloss: bench runs the benchmarks/ directory of a multiloss source "
                  "checkout, which this installation does not have", file=sys.stderr)
            return 2
        sys.path.insert(0, root)
        from benchmarks import harness
    return harness.main(argv, prog="multiloss bench")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # every option is the harness's (multiloss bench --help)
        return _cmd_bench(argv[1:])
    parser = argparse.ArgumentParser(prog="multiloss", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="print the registry of losses")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("info", help="print one loss's options, formula and reference")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser(
        "parity", help="the parity report: every loss on both backends against its reference",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run every registered loss on the installed backends against its "
                    "reference library (values and gradients) and print one row per loss and "
                    "dtype. By default two representative cases per loss and dtype (404 cases, "
                    "about 95 s on 2 idle cores); --full runs every case of every grid (5,770; "
                    "several times longer, and much longer under load). Exit status: 0 every case agrees, 1 a mismatch or a backend "
                    "error, 2 a usage error, 3 incomplete (a backend or a reference library "
                    "is not installed: what ran agrees, the rest was skipped).")
    p.add_argument("--loss", action="append", help="only this loss (repeatable; default: all)")
    p.add_argument("--dtype", choices=(*DTYPES, "both"), default="both", help="dtypes to run")
    p.add_argument("--backend", choices=("jax", "torch", "both"), default="both",
                   help="backends to run ('both': those installed)")
    p.add_argument("--full", action="store_true",
                   help="every case of every grid, not the representative ones")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write the summary and every case as JSON to PATH")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample grid")
    p.set_defaults(func=_cmd_parity)
    from . import demo

    p = sub.add_parser("demo", help="a torch recipe and its Flax/optax port trained side by side",
                       description=demo.__doc__.split("\n\n")[1].replace("\n", " "))
    demo.add_arguments(p)
    p.set_defaults(func=demo.run_cli)
    sub.add_parser("bench", add_help=False,
                   help="time every loss against its peers and the memory floors "
                        "(python -m benchmarks; multiloss bench --help)")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ImportError as e:
        name = (getattr(e, "name", None) or "").split(".")[0]
        if name in _EXTRAS:
            print(f"multiloss {args.command}: needs {name}, which is not installed; install it "
                  f"with pip install 'multiloss[{_EXTRAS[name]}]'"
                  + (" (pip install torch==2.13.0 first for the CPU build)"
                     if name == "torch" else ""), file=sys.stderr)
        else:
            print(f"multiloss {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError) as e:
        print(f"multiloss: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
