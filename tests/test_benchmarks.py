"""The benchmark harness (benchmarks/, docs/benchmarks.md) runs and writes its outputs: a
quick run on one loss prints the table and writes the JSON (machine, versions, allocator
settings, every round's times) and the PNG; the scaling report's slopes, table and plot; the
default plan of worker processes. Nothing here asserts a timing: benchmarks are never timed
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


def _run(*args, timeout=600):
    env = dict(os.environ, KERAS_BACKEND="jax")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_quick_run_writes_table_json_and_png(tmp_path):
    proc = _run("--quick", "--loss", "mse", "--no-scaling", "--peers", "optax",
                "--out", str(tmp_path), "--name", "smoke")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "mse [small]" in out
    assert "implementation" in out and "fwd/optax" in out and "f+b/floor" in out
    report = json.loads((tmp_path / "smoke.json").read_text())
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
    assert (tmp_path / "smoke.png").read_bytes()[:8] == PNG


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
