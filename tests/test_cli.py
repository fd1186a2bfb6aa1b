"""The ``multiloss`` command: list, info, and the parity report's table, JSON and exit code."""

import json
import subprocess
import sys

from multiloss import cli, testing


def _run(*args):
    return subprocess.run([sys.executable, "-m", "multiloss", *args], capture_output=True,
                          text=True, timeout=600)


def test_list_prints_every_loss():
    out = _run("list")
    assert out.returncode == 0
    for spec in testing.all_specs():
        assert spec.name in out.stdout


def test_info_prints_formula_and_reference():
    out = _run("info", "CrossEntropyLoss")
    assert out.returncode == 0
    assert "cross_entropy" in out.stdout and "torch.nn.functional.cross_entropy" in out.stdout
    assert "label_smoothing=0.0" in out.stdout


def test_unknown_loss_is_a_clear_error():
    out = _run("info", "cross_entropi")
    assert out.returncode == 2 and "cross_entropy" in out.stderr


def test_parity_report_table_json_and_progress(tmp_path):
    path = tmp_path / "parity.json"
    out = _run("parity", "--loss", "mse", "--dtype", "float64", "--json", str(path), "--jobs", "1",
               "--full")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "max value err" in out.stdout and "mse" in out.stdout and "ok" in out.stdout
    assert "cases" in out.stderr  # the progress bar
    data = json.loads(path.read_text())
    (row,) = data["summary"]
    assert row["loss"] == "mse" and row["cases"] == len(data["cases"]) > 10
    assert row["max_value_error"] <= 1e-12 and row["max_grad_error"] <= 1e-12


def test_parity_exits_1_on_a_mismatch(monkeypatch, capsys):
    # an impossible tolerance makes every case with any rounding difference a mismatch
    monkeypatch.setitem(testing.TOLERANCE, "float32", 0.0)
    # (mse's representative float32 mean differs from torch's by rounding: 7e-08)
    rc = cli.main(["parity", "--loss", "mse", "--dtype", "float32", "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAIL" in out
