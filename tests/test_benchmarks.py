"""The benchmark harness (benchmarks/, docs/benchmarks.md) runs and writes its outputs: a
quick run on one loss prints the table and writes the JSON (machine, versions, allocator
settings, every round's times) and the PNG; the scaling report's slopes, table and plot; the
default plan of worker processes. The commands write into the current directory by default
and never into the source tree: they run here from a temporary directory, and every file of
the checkout is the same after them. Nothing here asserts a timing: benchmarks are never timed
assertions of the test suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("matplotlib")


def _run(*args, timeout=600, module="benchmarks", cwd=ROOT):
    env = dict(os.environ, KERAS_BACKEND="jax")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _tree():
    """(size, mtime) of every file of the checkout but the caches of Python and the tools
    (__pycache__, dot-directories: .git, .venv*, .pytest_cache, .hypothesis, ...)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"
                       and not d.endswith(".egg-info")]
        for f in filenames:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), ROOT)] = (st.st_size, st.st_mtime_ns)
    return out


def test_quick_runs_write_to_the_current_directory_not_the_source_tree(tmp_path):
    """The quick paths of python -m benchmarks, python -m benchmarks.ctc and python -m
    benchmarks.plot, run from a temporary directory without --out: their outputs land there
    under the default names, and no file of the checkout is created, changed or removed. The
    quick run prints the table and writes the JSON (machine, versions, allocator settings,
    every round's times) and the PNG."""
    before = _tree()
    proc = _run("--quick", "--loss", "mse", "--no-scaling", "--peers", "optax",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "mse [small]" in out
    assert "implementation" in out and "fwd/optax" in out and "f+b/floor" in out
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["config"]["quick"] is True
    assert report["failures"] == []
    machine = report["machine"]
    assert {"cpu_count", "allocator", "loadavg"} <= set(machine)
    assert "transparent_hugepage" in machine["allocator"]
    assert {"jax", "torch", "optax", "numpy"} <= set(report["versions"])
    (entry,) = report["results"]
    assert entry["loss"] == "mse" and entry["size"] == "small"
    impls = set(entry["median_ms"])
    assert {"multiloss-jax", "multiloss-torch", "optax (jit)", "floor: read (jax)",
            "floor: fresh write (torch)"} <= impls
    assert set(entry["median_ms"]["multiloss-jax"]) >= {"fwd", "fwd_bwd"}
    rounds = entry["times_s"]["multiloss-jax | fwd_bwd"]
    assert isinstance(rounds, list) and len(rounds) == 5  # medians of >= 5 rounds
    assert "fwd_bwd_vs_optax" in entry["ratios"]["multiloss-jax"]
    assert "multiloss-jax" in entry["jax_memory"]
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "benchmark_scaling.png").exists()  # --no-scaling
    ctc = _run("-T", "12", "-N", "2", "-C", "5", "-S", "3", "--repeats", "5", "--warmup", "1",
               "--memory-T", "12", module="benchmarks.ctc", cwd=tmp_path)
    assert ctc.returncode == 0, ctc.stderr[-3000:]
    result = json.loads((tmp_path / "ctc.json").read_text())
    assert result["config"]["T"] == 12 and result["agreement_with_torch"]
    replot = tmp_path / "replot"
    replot.mkdir()
    proc = _run(str(tmp_path / "benchmark.json"), "--per-loss", module="benchmarks.plot",
                cwd=replot)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in replot.iterdir()) == ["benchmark.png",
                                                        "benchmark_per_loss.png"]
    after = _tree()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"written into the source tree: {changed[:20]}"


@pytest.mark.parametrize("module", ["benchmarks.harness", "benchmarks.ctc", "benchmarks.plot"])
def test_help_shows_every_default(module):
    """Every option of the benchmark commands has a help text, and the options with a value
    say their default (flags are off unless their text says otherwise)."""
    import importlib

    sys.path.insert(0, str(ROOT))
    parser = importlib.import_module(module).build_parser()
    for action in parser._actions:
        if action.help == "==SUPPRESS==" or action.dest == "help":
            continue
        assert action.help, f"{module}: {action.option_strings or action.dest} has no help"
        takes_value = action.nargs != 0 and action.option_strings
        if takes_value:
            assert "default" in action.help, f"{module} {action.option_strings}: no default"


def test_repeats_below_five_are_refused(tmp_path):
    proc = _run("--quick", "--loss", "mse", "--repeats", "3", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "at least 5" in proc.stderr


def _fake_sweep(loss, axis, values):
    out = []
    for v in values:
        out.append({
            "loss": loss, "axis": axis, "value": v, "dims": {"N": 64, "C": 128, axis: v},
            "median_ms": {"multiloss-jax": {"fwd": 0.01 * v, "fwd_bwd": 0.03 * v},
                          "floor: read (jax)": {"fwd": 0.005 * v}},
            "jax_memory": {"multiloss-jax": {"fwd_bwd": {"temp_bytes": 100 * v,
                                                         "output_bytes": 4 * v}}},
        })
    return out


def test_scaling_slopes_table_and_plot(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    from benchmarks import scaling

    entries = _fake_sweep("cross_entropy", "N", (64, 128, 256)) + _fake_sweep(
        "linear_cross_entropy", "C", (128, 256, 512))
    slopes = {(s["loss"], s["impl"], s["kind"]): s["slope"] for s in scaling.slopes(entries)}
    assert slopes[("cross_entropy", "multiloss-jax", "fwd_bwd")] == pytest.approx(1.0)
    assert slopes[("linear_cross_entropy", "multiloss-jax", "memory")] == pytest.approx(1.0)
    scaling.print_scaling(entries)
    text = capsys.readouterr().out
    assert "cross_entropy, N = 64, 128, 256" in text and "time slope" in text
    path = scaling.plot(entries, tmp_path / "s.png")
    assert Path(path).read_bytes()[:8] == PNG
    assert scaling.sweeps(["cross_entropy"]) == [("cross_entropy", "N"), ("cross_entropy", "C")]


def test_default_plan():
    sys.path.insert(0, str(ROOT))
    from benchmarks import harness

    names = ["cross_entropy", "linear_cross_entropy", "mse", "huber", "l1"]
    jobs = harness.plan(names, harness.build_parser().parse_args([]))
    by_loss = {n: (sizes, peers) for losses, sizes, peers in jobs for n in losses}
    assert by_loss["cross_entropy"][0] == ("small", "medium", "large")
    assert "compile" in by_loss["cross_entropy"][1]
    assert by_loss["mse"][0] == ("medium",) and "compile" not in by_loss["mse"][1]
    assert [losses for losses, *_ in jobs if "mse" in losses] == [["mse", "huber", "l1"]]
    quick = harness.plan(names, harness.build_parser().parse_args(["--quick"]))
    assert all(sizes == ("small",) and "compile" not in peers for _, sizes, peers in quick)


def test_multiloss_bench_help():
    from multiloss import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0


def _fake_results(names, headline):
    """A run's "results" of every loss in ``names``: the headline losses at three sizes, the
    others at the medium one, with the implementations and floors the harness records."""
    out = []
    for i, name in enumerate(names):
        sizes = ("small", "medium", "large") if name in headline else ("medium",)
        for k, size in enumerate(sizes):
            scale = 10.0 ** (2 * k) * (1 + i % 7)
            med = {"multiloss-jax": {"fwd": 0.5 * scale, "fwd_bwd": 1.5 * scale},
                   "multiloss-torch": {"fwd": 0.9 * scale, "fwd_bwd": 2.0 * scale},
                   "torch F (eager)": {"fwd": scale, "fwd_bwd": 2.2 * scale},
                   "optax (jit)": {"fwd": 0.6 * scale, "fwd_bwd": 1.4 * scale},
                   "floor: read (jax)": {"fwd": 0.1 * scale},
                   "floor: read (torch)": {"fwd": 0.12 * scale},
                   "floor: fresh write (jax)": {"fwd": 0.3 * scale},
                   "floor: fresh write (torch)": {"fwd": 0.25 * scale}}
            ratios = {"multiloss-jax": {"fwd_vs_torch": 0.5, "fwd_bwd_vs_torch": 1.5 / 2.2},
                      "multiloss-torch": {"fwd_vs_torch": 0.9, "fwd_bwd_vs_torch": 2.0 / 2.2}}
            out.append({"loss": name, "size": size, "shapes": "32x10 32", "dtype": "float32",
                        "input_bytes": 1024 * 100 ** k, "median_ms": med, "ratios": ratios})
    return out


def _legends_outside(fig):
    """No legend of ``fig`` overlaps the data area of any of its axes (``fig`` drawn)."""
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends)
    for sub in getattr(fig, "subfigs", []):
        legends += sub.legends
    axes = fig.get_axes()
    legends += [ax.get_legend() for ax in axes if ax.get_legend() is not None]
    assert legends
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for ax in axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (
                f"a legend covers the panel {ax.get_title()!r}")


def _drawn_png(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # draws it: the extents are the PNG's
    return buf.getvalue()


def test_default_figure_is_one_page_with_legends_outside():
    """The default figure of a run of the whole registry (synthetic times) is one page (at most
    2200 x 2000 px at its 100 dpi: the headline losses' time panels and a summary row for every
    loss), and no legend covers a panel, there (drawn on a smaller run: drawing the registry's
    figure costs seconds) and in the scaling figure."""
    import multiloss

    sys.path.insert(0, str(ROOT))
    from benchmarks import harness
    from benchmarks import plot as P

    names = multiloss.available()
    fig = P.figure(_fake_results(names, harness.HEADLINE))
    w, h = (fig.get_size_inches() * 100).round()
    assert w <= 2200 and h <= 2000, (w, h)
    summary = [ax for ax in fig.get_axes() if ax.get_xlabel().startswith("time ÷")]
    labels = [t.get_text() for ax in summary for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(names)  # every loss has a row of the summary
    P._plt().close(fig)
    few = [*harness.HEADLINE, "mse", "huber", "keras.hinge", "poisson"]
    fig = P.figure(_fake_results(few, harness.HEADLINE))
    assert _drawn_png(fig)[:8] == PNG
    _legends_outside(fig)
    fig = P.figure_scaling(_fake_sweep("cross_entropy", "N", (64, 128, 256)))
    _drawn_png(fig)
    _legends_outside(fig)
