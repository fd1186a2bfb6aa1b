"""The figures of a benchmark run, and ``python -m benchmarks.plot RUN.json``: the same figures
drawn again from a run's JSON (``python -m benchmarks`` draws them at the end of a run).

- ``STEM.png`` (the default figure, one page): the headline losses' time against input size
  (forward, forward + backward; log-log, one line per implementation, the floor dashed; a
  run with one size per loss gives bars instead of single dots), and a summary of every
  loss: the forward + backward time of multiloss on torch and on JAX divided by the spec's
  reference on torch (``torch F (eager)``: torch.nn.functional, torchvision, kornia, ... as
  the spec names it), at the size most losses were run at. One colour per implementation
  in every panel; the legends sit outside the data.
- ``STEM_per_loss.png`` (``--plot-per-loss``): the two time panels of every loss, one row
  each (79 rows for the registry: a long figure).
- ``STEM_scaling.png``: the scaling sweeps (``benchmarks/scaling.py``).

The floors are drawn as one line each: ``floor`` is the faster of the two reads of the inputs
(forward), and that plus the faster of the two fresh writes of the gradients' shapes
(forward + backward), as the ratios ``fwd/floor`` and ``f+b/floor`` of the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from . import _impls as I
from .harness import HEADLINE  # the losses of the default figure's time panels

FLOOR = "floor (read; + fresh write of the gradients)"
KINDS = (("fwd", "forward"), ("fwd_bwd", "forward + backward"))

#: implementation -> (label, colour, line style, line width); one colour per implementation in
#: every figure (multiloss: blue on JAX, orange on torch, as the demo's figure; drawn wider
#: and below the others, so that a peer on the same values leaves a visible edge).
STYLE = {
    I.ML_JAX: ("multiloss-jax", "#1f77b4", "-", 3.4),
    I.ML_JAX_SMALL: ("multiloss-jax, memory_budget=2MiB", "#6baed6", "-", 1.8),
    I.ML_TORCH: ("multiloss-torch", "#ff7f0e", "-", 3.4),
    I.ML_TORCH_COMPILED: ("multiloss-torch, compile=True", "#fdae6b", "-", 1.8),
    I.TORCH_EAGER: ("reference on torch (eager)", "#d62728", "-", 1.6),
    I.TORCH_COMPILE: ("torch.compile(reference)", "#e377c2", "-", 1.6),
    I.OPTAX: ("optax (jit)", "#2ca02c", "-", 1.6),
    I.KERAS: ("keras (JAX backend, jit)", "#9467bd", "-", 1.6),
    I.JAX_NAIVE: ("JAX naive (optax on x @ W.T)", "#bcbd22", "-", 1.6),
    I.TORCH_CHUNKED: ("torch chunked (LinearCrossEntropyOptions)", "#8c564b", "-", 1.6),
    I.JAX_CCE: ("jax-cce (chunk_size=4096)", "#17becf", "-", 1.6),
    FLOOR: (FLOOR, "#555555", "--", 1.4),
}
ORDER = list(STYLE)
SIZE_ORDER = ("small", "medium", "large")


#: markers: multiloss large filled circles, each peer its own smaller shape, so that lines on
#: the same values stay distinguishable
MARKERS = {I.ML_JAX: ("o", 7), I.ML_TORCH: ("o", 7), I.ML_JAX_SMALL: ("o", 5),
           I.ML_TORCH_COMPILED: ("o", 5), I.TORCH_EAGER: ("s", 4), I.TORCH_COMPILE: ("D", 4),
           I.OPTAX: ("^", 5), I.KERAS: ("v", 5), I.JAX_NAIVE: ("P", 5),
           I.TORCH_CHUNKED: ("X", 5), I.JAX_CCE: ("<", 5), FLOOR: (".", 6)}


def _style(impl):
    return STYLE.get(impl, (impl, None, "-", 1.4))


def _same(xa, xb, rel=0.01):
    """Two series at the same points within ``rel``: drawn on one line."""
    return len(xa) == len(xb) and all(
        a[0] == b[0] and abs(a[1] - b[1]) <= rel * max(abs(a[1]), abs(b[1]))
        for a, b in zip(xa, xb))


def _line(ax, xy, impl):
    label, color, ls, lw = _style(impl)
    marker, ms = MARKERS.get(impl, ("o", 4))
    (h,) = ax.plot(*zip(*xy), ls, color=color, lw=lw, marker=marker, ms=ms, label=label)
    return label, h


def _sorted(impls):
    return sorted(impls, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))


def _legend(handles):
    """(handles, labels) in the order of STYLE (multiloss first, the floor after the peers)."""
    labels = {v[0]: i for i, v in enumerate(STYLE.values())}
    keys = sorted(handles, key=lambda k: (labels.get(k, len(labels)), k))
    return [handles[k] for k in keys], keys


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(v):
    return v is not None and v == v and v > 0


def times(entry, kind):
    """implementation -> median ms of ``kind`` in ``entry``, the four floor implementations
    replaced by the one FLOOR (read; read + fresh write for forward + backward)."""
    med = entry.get("median_ms", {})
    out = {}
    for impl, m in med.items():
        if impl in I.FLOORS:
            continue
        v = m.get(kind)
        if _ok(v):
            out[impl] = v
    read = [med.get(k, {}).get("fwd") for k in (I.READ_JAX, I.READ_TORCH)]
    write = [med.get(k, {}).get("fwd") for k in (I.WRITE_JAX, I.WRITE_TORCH)]
    read, write = [v for v in read if _ok(v)], [v for v in write if _ok(v)]
    if read and kind == "fwd":
        out[FLOOR] = min(read)
    elif read and write and kind == "fwd_bwd":
        out[FLOOR] = min(read) + min(write)
    return out


def _entries(results, loss):
    es = [e for e in results if e.get("loss") == loss and "median_ms" in e]
    return sorted(es, key=lambda e: e.get("input_bytes", 0))


def _lines(ax, entries, kind, handles):
    for impl in _sorted({k for e in entries for k in times(e, kind)}):
        pts = [(e["input_bytes"] / 2**20, times(e, kind).get(impl)) for e in entries]
        pts = [(a, b) for a, b in pts if b is not None]
        if not pts:
            continue
        label, h = _line(ax, pts, impl)
        handles.setdefault(label, h)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input size (MiB)")
    _log_grid(ax)


def _log_grid(ax):
    """Major grid lines; minor ticks only on an axis spanning under two decades (elsewhere
    they add nothing a reader needs, and cost most of the drawing time)."""
    import numpy as np
    from matplotlib.ticker import NullLocator

    lim = ax.dataLim
    for axis, lo, hi in ((ax.xaxis, lim.x0, lim.x1), (ax.yaxis, lim.y0, lim.y1)):
        if lo > 0 and hi > 0 and np.log10(hi / lo) > 2:
            axis.set_minor_locator(NullLocator())
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def _ms(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.3g}"


#: the labels of the bar panels' rows (the legends keep the long ones)
SHORT = {I.ML_JAX_SMALL: "multiloss-jax 2MiB budget", I.ML_TORCH_COMPILED:
         "multiloss-torch compile", I.TORCH_EAGER: "reference (torch)",
         I.TORCH_COMPILE: "torch.compile(ref.)", I.OPTAX: "optax", I.KERAS: "keras",
         I.JAX_NAIVE: "JAX naive", I.TORCH_CHUNKED: "torch chunked", I.JAX_CCE: "jax-cce"}
#: above this ratio of the slowest to the fastest time, one size is drawn as dots on a log axis
#: (a linear axis would hide the fast ones), else as bars on a linear axis from 0
BAR_SPREAD = 30.0


def _ratio_text(v):
    return f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"


def _bars(ax, entry, kind, handles):
    """One size: per implementation a bar (linear time axis from 0) or, where the times
    spread over more than BAR_SPREAD, a dot on a log axis; its median and its ratio to the
    reference written beside it; the floor a dashed line."""
    t = times(entry, kind)
    impls = [k for k in _sorted(t) if k != FLOOR]
    ref = t.get(I.TORCH_EAGER)
    ys = range(len(impls))
    vals = [t[k] for k in impls]
    dots = max(vals) / min(vals) > BAR_SPREAD
    for y, impl in zip(ys, impls):
        label, color, _, _ = _style(impl)
        if dots:
            marker, ms = MARKERS.get(impl, ("o", 5))
            ax.axhline(y, color="#e6e6e6", lw=0.8, zorder=0)
            ax.plot([t[impl]], [y], marker=marker, ms=max(ms, 6), color=color, ls="none")
        else:
            ax.barh(y, t[impl], color=color, height=0.7)
        text = f" {_ms(t[impl])} ms"
        if ref and impl != I.TORCH_EAGER:
            text += f" ({_ratio_text(t[impl] / ref)}x ref.)"
        if dots:  # a column of the times right of the panel (the ratios: the summary's)
            ax.text(1.03, y, f"{_ms(t[impl])} ms", va="center", fontsize=7.5,
                    transform=ax.get_yaxis_transform())
        else:
            ax.text(t[impl], y, text, va="center", fontsize=7.5)
    if FLOOR in t:
        label, color, ls, lw = _style(FLOOR)
        h = ax.axvline(t[FLOOR], color=color, ls=ls, lw=lw, label=label)
        handles.setdefault(label, h)
    ax.set_yticks(list(ys), [SHORT.get(k, _style(k)[0]) for k in impls], fontsize=8)
    ax.set_ylim(len(impls) - 0.5, -0.5)
    if dots:
        ax.set_xscale("log")
        lo = min([*vals, t.get(FLOOR, min(vals))])
        ax.set_xlim(lo / 2, max(vals) * 2)
        ax.set_xlabel("median time (ms, log)")
        ax.xaxis.set_minor_locator(__import__("matplotlib").ticker.NullLocator())
    else:
        ax.set_xlim(0, max(vals) * 1.45)  # room for the labels
        ax.set_xlabel("median time (ms)")
    ax.grid(True, axis="x", alpha=0.35)


def _time_panels(axes, results, loss, handles, title_prefix=""):
    """The forward and the forward + backward panel of ``loss`` on ``axes`` (two axes)."""
    entries = _entries(results, loss)
    sizes = [e["size"] for e in entries]
    single = len(entries) == 1
    for ax, (kind, what) in zip(axes, KINDS):
        if single:
            _bars(ax, entries[0], kind, handles)
            shapes = entries[0].get("shapes")
            where = f"{sizes[0]}" + (f": {shapes}" if isinstance(shapes, str) else "")
            ax.set_title(f"{title_prefix}{loss}: {what}\n{where}", fontsize=9)
        else:
            _lines(ax, entries, kind, handles)
            ax.set_ylabel("median time (ms)")
            ax.set_title(f"{title_prefix}{loss}: {what}\n({', '.join(sizes)})", fontsize=9)


def _summary_rows(results):
    """[(loss, size, {impl: ratio})] of multiloss-torch and multiloss-jax to the reference,
    forward + backward (forward where a loss has no backward), at the size most losses ran at
    (each loss: that size, else its largest)."""
    by_loss = {}
    for e in results:
        if "median_ms" in e:
            by_loss.setdefault(e["loss"], []).append(e)
    if not by_loss:
        return None, []
    common = Counter(e["size"] for es in by_loss.values() for e in es).most_common(1)[0][0]
    rows = []
    for loss in sorted(by_loss):
        es = by_loss[loss]
        pick = [e for e in es if e["size"] == common] or sorted(
            es, key=lambda e: e.get("input_bytes", 0))[-1:]
        e = pick[0]
        r, kind = {}, "fwd_bwd"
        for impl in (I.ML_TORCH, I.ML_JAX):
            rat = e.get("ratios", {}).get(impl, {})
            v = rat.get("fwd_bwd_vs_torch")
            if v is None:
                v, kind = rat.get("fwd_vs_torch"), "fwd"
            if _ok(v):
                r[impl] = v
        if r:
            rows.append((loss, e["size"] + ("" if kind == "fwd_bwd" else ", fwd"), r))
    return common, rows


def _reference_on_jax(loss):
    """Whether the spec's reference is a library on JAX (optax, Keras 3) called through the
    registry's torch protocol (eagerly, its inputs converted from torch tensors): a check of
    numbers, not a speed peer. None where multiloss cannot tell (not importable, unknown)."""
    try:
        import multiloss

        ref = multiloss.resolve(loss).reference
    except Exception:  # noqa: BLE001 - a figure of an old run: drawn without the split
        return None
    return getattr(ref, "__qualname__", "").startswith("jax_reference")


def _columns(rows):
    """[(title, rows)]: the losses whose reference runs on torch, and those whose reference
    is a library on JAX, in a column each; else one or two columns of the rows in turn."""
    where = [_reference_on_jax(loss) for loss, _, _ in rows]
    on_torch = [r for r, w in zip(rows, where) if w is False]
    on_jax = [r for r, w in zip(rows, where) if w is True]
    if len(on_torch) + len(on_jax) == len(rows) and on_torch and on_jax:
        return [(f"{len(on_torch)} losses whose reference runs on torch (torch.nn.functional, "
                 "torchvision, kornia, pytorch-metric-learning, smp, transcriptions)", on_torch),
                (f"{len(on_jax)} losses whose reference is optax or Keras on JAX: called "
                 "eagerly on\ntensors converted from torch (a check of numbers, not a speed "
                 "peer)", on_jax)]
    if len(rows) <= 24:
        return [("", rows)]
    per = -(-len(rows) // 2)
    return [("", rows[:per]), ("", rows[per:])]


def _summary(sub, columns, common):
    import numpy as np

    per = max(len(part) for _, part in columns)
    axes = sub.subplots(1, len(columns), squeeze=False)[0]
    handles = {}
    for ax, (title, part) in zip(axes, columns):
        vals = [v for _, _, r in part for v in r.values()]
        lo, hi = min(0.25, *vals) / 1.3, max(4.0, *vals) * 1.3
        ticks = [t for t in (0.001, 0.003, 0.01, 0.03, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 100)
                 if lo <= t <= hi]
        ys = np.arange(len(part))
        for y in ys[::2]:
            ax.axhspan(y - 0.5, y + 0.5, color="#f0f0f0", zorder=0)
        ax.axvline(1.0, color="black", lw=1.2, zorder=1)
        for impl, marker, dy in ((I.ML_TORCH, "o", -0.14), (I.ML_JAX, "s", 0.14)):
            label, color, _, _ = _style(impl)
            pts = [(r[impl], y + dy) for y, (_, _, r) in zip(ys, part) if impl in r]
            if pts:
                h = ax.scatter(*zip(*pts), marker=marker, color=color, s=26, zorder=3)
                handles.setdefault(label, h)
        labels = [loss if size == common else f"{loss} ({size})" for loss, size, _ in part]
        ax.set_yticks(ys, labels, fontsize=7.5)
        ax.set_ylim(per - 0.5, -0.5)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xticks(ticks, [f"{t:g}x" for t in ticks], fontsize=8)
        ax.minorticks_off()
        ax.grid(True, axis="x", alpha=0.35)
        ax.set_xlabel("time ÷ the reference's (log; < 1: faster than the reference)",
                      fontsize=8.5)
        ax.tick_params(axis="y", length=0)
        if title:
            ax.set_title(title, fontsize=9, loc="left")
    sub.legend(list(handles.values()), [f"{k} ÷ reference" for k in handles],
               loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    return axes


def _save(fig, path, dpi):
    if fig is None:
        return None
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    return path


def plot(results, path):
    """The default one-page figure of ``results`` (a run's ``"results"``) at ``path``; None
    where nothing was measured."""
    return _save(figure(results), path, 100)


def plot_per_loss(results, path):
    """Every loss's forward and forward + backward panels, one row per loss."""
    return _save(figure_per_loss(results), path, 80)


def plot_scaling(entries, path):
    """The scaling sweeps (``figure_scaling``) at ``path``."""
    return _save(figure_scaling(entries), path, 90)


def figure(results, headline=HEADLINE):
    """The default one-page figure (a matplotlib Figure; None where nothing was measured)."""
    plt = _plt()
    losses = list(dict.fromkeys(e["loss"] for e in results if "median_ms" in e))
    if not losses:
        return None
    detail = [n for n in headline if n in losses]
    if not detail and len(losses) <= 4:
        detail = losses
    common, rows = _summary_rows(results)
    show_summary = len(losses) > len(detail) or len(detail) > 1
    columns = _columns(rows) if show_summary else []
    per = max((len(part) for _, part in columns), default=0)
    h_detail = 6.2 if detail else 0.0
    h_summary = (1.9 + 0.17 * per) if show_summary else 0.0
    single = all(len(_entries(results, n)) == 1 for n in detail)
    width = max(12.0, (3.6 if single else 3.3) * len(detail) + 3.2)
    fig = plt.figure(figsize=(width, h_detail + h_summary), layout="constrained")
    subs = fig.subfigures(2 if detail and show_summary else 1, 1, squeeze=False,
                          height_ratios=[h for h in (h_detail, h_summary) if h])[:, 0]
    k = 0
    if detail:
        sub = subs[k]
        k += 1
        axes = sub.subplots(2, len(detail), squeeze=False)
        handles = {}
        for col, loss in enumerate(detail):
            _time_panels(axes[:, col], results, loss, handles)
        sub.legend(*_legend(handles), loc="outside right center",
                   fontsize=8, title=None if single else "implementation", title_fontsize=8.5,
                   frameon=False)
        what = "the headline losses: " if detail != losses else ""
        sub.suptitle(f"{what}median time per call, float32"
                     + ("" if single else " (log scales)"), fontsize=11, fontweight="bold")
    if show_summary:
        sub = subs[k]
        _summary(sub, columns, common)
        sub.suptitle(f"every loss: forward + backward time of multiloss ÷ that of the loss's "
                     f"reference (the library that defines it), size {common}\n"
                     f"orange \u25cf multiloss-torch, blue \u25a0 multiloss-jax; "
                     f"left of the black line: faster than the reference",
                     fontsize=11, fontweight="bold")
    return fig


def figure_per_loss(results):
    """Every loss's forward and forward + backward panels, one row per loss."""
    plt = _plt()
    losses = list(dict.fromkeys(e["loss"] for e in results if "median_ms" in e))
    if not losses:
        return None
    fig, axes = plt.subplots(len(losses), 2, figsize=(13, 2.9 * len(losses)), squeeze=False,
                             layout="constrained")
    handles = {}
    for row, loss in enumerate(losses):
        _time_panels(axes[row], results, loss, handles)
    fig.legend(*_legend(handles), loc="outside right upper", fontsize=8,
               title="implementation", title_fontsize=8.5, frameon=False)
    return fig


def figure_scaling(entries):
    """The scaling sweeps: one row per (loss, axis), forward, forward + backward and XLA's
    memory of the JAX implementations against the swept dimension; one legend per row,
    outside the panels."""
    plt = _plt()
    keys = list(dict.fromkeys((e["loss"], e["axis"]) for e in entries if "median_ms" in e))
    if not keys:
        return None
    fig = plt.figure(figsize=(16, 3.3 * len(keys)), layout="constrained")
    subs = fig.subfigures(len(keys), 1, squeeze=False)[:, 0]
    for sub, (loss, axis) in zip(subs, keys):
        pts = [e for e in entries if e["loss"] == loss and e["axis"] == axis
               and "median_ms" in e]
        pts.sort(key=lambda e: e["value"])
        fixed = ", ".join(f"{k}={v}" for k, v in pts[0]["dims"].items() if k != axis)
        axes = sub.subplots(1, 3)
        handles = {}
        for ax, (kind, what) in zip(axes, KINDS):
            for impl in _sorted({k for e in pts for k in times(e, kind)}):
                xy = [(e["value"], times(e, kind).get(impl)) for e in pts]
                xy = [(a, b) for a, b in xy if b is not None]
                if xy:
                    label, h = _line(ax, xy, impl)
                    handles.setdefault(label, h)
            ax.set_title(f"{what}: median time", fontsize=9.5)
            ax.set_ylabel("ms")
        ax = axes[2]
        series = {}
        for impl in _sorted({k for e in pts for k in (e.get("jax_memory") or {})}):
            xy = [(e["value"], (e.get("jax_memory") or {}).get(impl, {}).get("fwd_bwd"))
                  for e in pts]
            xy = [(a, (b["temp_bytes"] + b["output_bytes"]) / 2**20) for a, b in xy if b]
            if xy:
                label, h = _line(ax, xy, impl)
                handles.setdefault(label, h)
                series[impl] = xy
        same = [f"{_style(b)[0]} = {_style(a)[0]}" for i, (a, xa) in enumerate(series.items())
                for b, xb in list(series.items())[i + 1:] if _same(xa, xb)]
        ax.set_title("XLA memory of forward + backward (JAX implementations)"
                     + "".join(f"\n{t} (one line)" for t in same), fontsize=9.5)
        ax.set_ylabel("MiB (temporaries + outputs)")
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks([e["value"] for e in pts], [str(e["value"]) for e in pts])
            ax.set_xlabel(axis)
            _log_grid(ax)
        sub.legend(*_legend(handles), loc="outside right center", fontsize=8,
                   frameon=False)
        sub.suptitle(f"{loss} against {axis} ({fixed})", fontsize=11, fontweight="bold")
    return fig


def plot_report(report, out, stem, per_loss=False):
    """Every figure of a run's JSON ``report`` into ``out``: the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [plot(report.get("results", []), out / f"{stem}.png")]
    if per_loss:
        written.append(plot_per_loss(report.get("results", []), out / f"{stem}_per_loss.png"))
    if report.get("scaling"):
        written.append(plot_scaling(report["scaling"], out / f"{stem}_scaling.png"))
    return [p for p in written if p]


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.plot",
        description="Draw the figures of benchmark runs again from their JSON files: "
                    "STEM.png (one page), STEM_scaling.png where the run has scaling sweeps, "
                    "STEM_per_loss.png with --per-loss.")
    p.add_argument("json", nargs="+", type=Path, help="JSON files written by python -m "
                   "benchmarks (e.g. benchmarks/results/benchmark.json)")
    p.add_argument("--out", type=Path, default=Path("."),
                   help="directory of the PNGs (default: the current directory)")
    p.add_argument("--per-loss", action="store_true",
                   help="also STEM_per_loss.png, every loss's panels, one row each "
                        "(default: off)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("benchmarks.plot: needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 2
    for path in args.json:
        report = json.loads(path.read_text())
        for w in plot_report(report, args.out, path.stem, args.per_loss):
            print(f"wrote {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
