"""Scaling (issue 7, item 5): time and memory of cross_entropy and linear_cross_entropy as the
rows N and the classes C grow, the other dimensions fixed; log-log, with the fitted slope of
each implementation (1: linear growth).

Run by ``python -m benchmarks`` (``--scaling``, on by default; ``--no-scaling`` skips it) in
one worker process per (loss, axis); every point is timed as the main benchmark times a size
(``harness.measure``: interleaved rounds, medians, XLA's compiled memory of the JAX
implementations: temporaries + outputs of forward + backward)."""

from __future__ import annotations

import numpy as np

#: (loss, axis) -> (the swept values, the fixed dimensions, peers). ``quick``: tiny sweeps.
SWEEPS = {
    ("cross_entropy", "N"): ((1024, 2048, 4096), {"C": 32768}, ("eager", "optax")),
    ("cross_entropy", "C"): ((8192, 16384, 32768), {"N": 4096}, ("eager", "optax")),
    ("linear_cross_entropy", "N"): ((1024, 2048, 4096), {"D": 256, "C": 32768},
                                    ("naive", "chunked")),
    ("linear_cross_entropy", "C"): ((8192, 16384, 32768), {"N": 2048, "D": 256},
                                    ("naive", "chunked")),
}
QUICK = {
    ("cross_entropy", "N"): ((64, 128, 256), {"C": 512}, ("eager", "optax")),
    ("cross_entropy", "C"): ((128, 256, 512), {"N": 128}, ("eager", "optax")),
    ("linear_cross_entropy", "N"): ((64, 128, 256), {"D": 32, "C": 512}, ("naive", "chunked")),
    ("linear_cross_entropy", "C"): ((128, 256, 512), {"N": 64, "D": 32}, ("naive", "chunked")),
}


def sweeps(losses, quick=False):
    table = QUICK if quick else SWEEPS
    return [key for key in table if key[0] in losses]


def _inputs(loss, dims, dtype, rng):
    n, c = dims["N"], dims["C"]
    if loss == "cross_entropy":
        x = (rng.standard_normal((n, c), dtype=np.float32) * 3).astype(dtype)
        return (x, rng.integers(0, c, n))
    d = dims["D"]
    x = (rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)).astype(dtype)
    w = rng.standard_normal((c, d), dtype=np.float32).astype(dtype)
    return (x, w, rng.integers(0, c, n))


def run(loss, axis, repeats, warmup, quick=False, dtype="float32"):
    """The entries of one sweep: per point the harness's measurement."""
    import multiloss

    from . import _problems as P
    from .harness import _opts_repr, measure

    values, fixed, peers = (QUICK if quick else SWEEPS)[(loss, axis)]
    spec = multiloss.resolve(loss)
    rng = np.random.default_rng(0)
    out = []
    for v in values:
        dims = {**fixed, axis: v}
        inputs = _inputs(loss, dims, np.dtype(dtype), rng)
        opts = {"reduction": "mean"}
        entry = {"loss": loss, "axis": axis, "value": v, "dims": dims, "dtype": dtype,
                 "shapes": P.describe(inputs), "input_bytes": P.nbytes(inputs),
                 "options": _opts_repr(opts)}
        out.append(measure(entry, spec, inputs, opts, repeats, warmup, peers))
    return out


def slopes(entries):
    """Per (loss, axis, implementation, kind): the least-squares slope of log(time) against
    log(the swept value); and of log(XLA memory) for the JAX implementations."""
    groups = {}
    for e in entries:
        if "median_ms" not in e:
            continue
        for impl, m in e["median_ms"].items():
            for kind in ("fwd", "fwd_bwd"):
                t = m.get(kind)
                if t and t == t and t > 0:
                    groups.setdefault((e["loss"], e["axis"], impl, kind), []).append(
                        (e["value"], t))
        for impl, mem in (e.get("jax_memory") or {}).items():
            fb = mem.get("fwd_bwd")
            if fb:
                b = fb["temp_bytes"] + fb["output_bytes"]
                if b > 0:
                    groups.setdefault((e["loss"], e["axis"], impl, "memory"), []).append(
                        (e["value"], b))
    out = []
    for (loss, axis, impl, kind), pts in groups.items():
        if len(pts) < 2:
            continue
        lx = np.log([p[0] for p in pts])
        ly = np.log([p[1] for p in pts])
        slope = float(np.polyfit(lx, ly, 1)[0])
        out.append({"loss": loss, "axis": axis, "impl": impl, "kind": kind,
                    "slope": slope, "points": len(pts)})
    return out


def print_scaling(entries):
    from . import _common as C

    if not entries:
        return
    print("\nscaling: fwd+bwd median ms per point (XLA compiled MiB of the JAX ones' fwd+bwd); "
          "slope of log(time) against log(N or C), 1 = linear")
    for (loss, axis) in dict.fromkeys((e["loss"], e["axis"]) for e in entries):
        pts = [e for e in entries if e["loss"] == loss and e["axis"] == axis]
        impls = list(dict.fromkeys(k for e in pts for k in e.get("median_ms", {})))
        fixed = ", ".join(f"{k}={v}" for k, v in pts[0]["dims"].items() if k != axis)
        print(f"\n{loss}, {axis} = {', '.join(str(e['value']) for e in pts)} ({fixed})")
        sl = {(s["impl"], s["kind"]): s["slope"] for s in slopes(pts)}
        rows = []
        for impl in impls:
            cells = []
            for e in pts:
                m = e.get("median_ms", {}).get(impl, {})
                t = m.get("fwd_bwd") if m.get("fwd_bwd") is not None else m.get("fwd")
                mem = (e.get("jax_memory") or {}).get(impl, {}).get("fwd_bwd")
                cell = C.fmt(t, ".1f")
                if mem:
                    cell += f" ({(mem['temp_bytes'] + mem['output_bytes']) / 2**20:.0f})"
                cells.append(cell)
            kind = "fwd_bwd" if (impl, "fwd_bwd") in sl else "fwd"
            rows.append([impl, *cells, C.fmt(sl.get((impl, kind))),
                         C.fmt(sl.get((impl, "memory")))])
        print(C.table(("implementation", *(f"{axis}={e['value']}" for e in pts),
                       "time slope", "mem slope"), rows))


def plot(entries, path):
    """The figure of the sweeps (benchmarks/plot.py, ``plot_scaling``)."""
    from .plot import plot_scaling

    return plot_scaling(entries, path)
