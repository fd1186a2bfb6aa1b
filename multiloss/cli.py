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


def _cmd_list(args) -> int:
    from . import _registry

    rows = [(s.name, s.family, ", ".join(s.aliases)) for s in _registry.specs()]
    width = max(len(r[0]) for r in rows)
    fam = max(len(r[1]) for r in rows)
    print(f"{'loss':{width}}  {'family':{fam}}  aliases")
    for name, family, aliases in rows:
        print(f"{name:{width}}  {family:{fam}}  {aliases}")
    return 0


def _cmd_info(args) -> int:
    from . import info

    d = info(args.name)
    print(f"{d['name']} ({d['family']}): {d['summary']}")
    print(f"aliases: {', '.join(d['aliases'])}")
    print(f"inputs, in {d['order']} (positional, or as keywords of their names):")
    for i in d["inputs"]:
        print(f"  {i['name']}: {i['doc']}")
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


def _work_unit(unit):
    """Run cases [start, stop) of one loss in one dtype (in a worker process)."""
    name, dtype, start, stop, seed = unit
    import warnings

    from . import testing

    warnings.filterwarnings("ignore")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if dtype == "float64":
        testing.enable_x64()
    spec = testing.resolve(name)
    samples = testing.samples_for(spec, dtype, seed)[start:stop]
    return [testing.compare(spec, s, dtype).__dict__ for s in samples]


def _units(names, dtypes, seed):
    from . import testing

    units = []
    for dtype in dtypes:
        for name in names:
            spec = testing.resolve(name)
            n = len(testing.samples_for(spec, dtype, seed))
            for start in range(0, n, _CHUNK):
                units.append((spec.name, dtype, start, min(n, start + _CHUNK), seed))
    return units


class _Progress:
    def __init__(self, total, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.t0 = time.perf_counter()
        self.tty = stream.isatty()

    def update(self, n, label):
        self.done += n
        frac = self.done / max(self.total, 1)
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        elapsed = time.perf_counter() - self.t0
        line = f"[{bar}] {self.done}/{self.total} cases {elapsed:5.0f}s {label}"
        if self.tty:
            self.stream.write("\r" + line[:100].ljust(100))
        else:
            self.stream.write(line + "\n")
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


def _cmd_parity(args) -> int:
    from . import testing

    names = [testing.resolve(n).name for n in args.loss] if args.loss else [
        s.name for s in testing.all_specs()
    ]
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    units = _units(names, dtypes, args.seed)
    total = sum(u[3] - u[2] for u in units)
    jobs = max(1, min(args.jobs, len(units)))
    progress = _Progress(total)
    results = []
    if jobs == 1:
        for u in units:
            results.extend(_work_unit(u))
            progress.update(u[3] - u[2], f"{u[0]} {u[1]}")
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_work_unit, u): u for u in units}
            for fut in as_completed(futures):
                u = futures[fut]
                results.extend(fut.result())
                progress.update(u[3] - u[2], f"{u[0]} {u[1]}")
    progress.close()

    rows, failed = [], []
    for dtype in dtypes:
        for name in names:
            rs = [r for r in results if r["loss"] == name and r["dtype"] == dtype]
            cases = [testing.CaseResult(**r) for r in rs]
            bad = [c for c in cases if not c.ok]
            failed.extend(bad)
            rows.append({
                "loss": name,
                "dtype": dtype,
                "cases": len(cases),
                "max_value_error": max((c.value_error for c in cases), default=0.0),
                "max_grad_error": max((c.grad_error for c in cases), default=0.0),
                "jax_ms": 1e3 * _median([c.jax_seconds for c in cases]),
                "torch_ms": 1e3 * _median([c.torch_seconds for c in cases]),
                "tolerance": testing.TOLERANCE[dtype],
                "verdict": "ok" if not bad else f"FAIL ({len(bad)})",
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": rows, "cases": results}, f, indent=1, default=float)
        print(f"wrote {args.json}")
    return 1 if failed else 0


def _print_table(rows):
    head = ("loss", "dtype", "cases", "max value err", "max grad err", "jax ms", "torch ms",
            "verdict")
    body = [
        (r["loss"], r["dtype"], str(r["cases"]), f"{r['max_value_error']:.2e}",
         f"{r['max_grad_error']:.2e}", f"{r['jax_ms']:.3f}", f"{r['torch_ms']:.3f}", r["verdict"])
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
    parser = argparse.ArgumentParser(prog="multiloss", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="print the registry of losses")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("info", help="print one loss's options, formula and reference")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("parity", help="the parity report of every loss on both backends")
    p.add_argument("--loss", action="append", help="only this loss (repeatable)")
    p.add_argument("--dtype", choices=(*DTYPES, "both"), default="both")
    p.add_argument("--json", metavar="PATH", help="write the summary and every case as JSON")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: min(2, CPUs))")
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
    except (ValueError, TypeError, ImportError) as e:
        print(f"multiloss: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
