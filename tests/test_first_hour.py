"""A newcomer's first hour (issue 19): each backend alone, the parity report's default run and
its exit codes, the defaults of the defining libraries, and the traps of a port (a weight of
shape (N,) on an (N, D) loss, probabilities outside [0, 1])."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import multiloss
from multiloss import cli, testing

BACKENDS = ("jax", "torch")


def _python(code: str, timeout: int = 600):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# one framework is enough

@pytest.mark.skipif(os.environ.get("MULTILOSS_LONG") != "1",
                    reason="~60 s; CI runs tests/single_backend.py in environments with one "
                           "framework installed (.ci/run); MULTILOSS_LONG=1 runs it here")
@pytest.mark.parametrize("backend,blocked", [("torch", "jax"), ("jax", "torch")])
def test_each_backend_works_without_the_other_framework(backend, blocked):
    """Every loss (value and gradients on its representative cases) and, on JAX, every
    optimizer runs on one backend with the other framework unimportable: no module of a
    backend imports the other framework, at import or at call time. CI runs the same script
    in environments that have only one framework installed (.ci/run), which is stronger: this
    test is the check for a checkout with both installed (MULTILOSS_LONG=1)."""
    script = Path(__file__).with_name("single_backend.py")
    out = subprocess.run([sys.executable, str(script), backend, "--block", blocked,
                          "--cases", "first"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"{backend} alone: {len(testing.all_specs())} losses" in out.stdout
    assert "0 failures" in out.stdout


def test_a_missing_backend_is_named_with_its_install_command():
    out = _python("""
        import sys
        sys.modules["torch"] = None
        import multiloss
        try:
            multiloss.get("mse", backend="torch")
        except ImportError as e:
            print(e)
    """)
    assert "pip install 'multiloss[torch]'" in out.stdout, out.stdout + out.stderr
    out = _python("""
        import sys
        sys.modules["jax"] = None
        from multiloss import cli
        sys.exit(cli.main(["demo"]))
    """)
    assert out.returncode == 2
    assert "needs jax, which is not installed" in out.stderr
    assert "pip install 'multiloss[jax]'" in out.stderr


# ---------------------------------------------------------------------------------------------
# the parity report


def test_parity_default_runs_representative_cases(capsys):
    """The default run is the spec grid's first case and one edge case per loss and dtype;
    --full runs the whole grid."""
    spec = multiloss.resolve("cross_entropy")
    grid = testing.samples_for(spec, "float64")
    quick = testing.quick_samples(grid)
    assert len(quick) == 2 and quick[0] is grid[0]
    assert sum(testing.is_edge(s) for s in quick) >= 1
    units = cli._units(["cross_entropy"], ("float64",), 0, False, ("jax", "torch"))
    assert sum(len(u[2]) for u in units) == 2
    units = cli._units(["cross_entropy"], ("float64",), 0, True, ("jax", "torch"))
    assert sum(len(u[2]) for u in units) == len(grid)
    rc = cli.main(["parity", "--loss", "mse", "--jobs", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out
    assert "mse" in captured.out and " ok" in captured.out
    # off a terminal: a few progress lines with an ETA, not one per case
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("parity ")]
    assert 1 <= len(lines) <= 11 and "ETA" in lines[-1]


def test_parity_without_a_reference_library_is_incomplete_not_a_crash():
    """kornia missing: charbonnier still runs on both backends, is reported as not compared,
    and the exit status is 3 (incomplete); mse, whose reference is torch, is compared."""
    out = _python("""
        import sys
        sys.modules["kornia"] = None
        from multiloss import cli
        sys.exit(cli.main(["parity", "--loss", "charbonnier", "--loss", "mse",
                           "--dtype", "float64", "--jobs", "1"]))
    """)
    assert out.returncode == cli.EXIT_INCOMPLETE, out.stdout + out.stderr
    rows = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln[:1].isalpha()}
    assert "not compared (no kornia)" in rows["charbonnier"]
    assert rows["mse"].rstrip().endswith("ok")
    assert "INCOMPLETE: reference libraries not installed: kornia" in out.stdout


def test_parity_without_a_backend_runs_the_other():
    out = _python("""
        import sys
        sys.modules["jax"] = None
        from multiloss import cli
        sys.exit(cli.main(["parity", "--loss", "mse", "--dtype", "float64", "--jobs", "1"]))
    """)
    assert out.returncode == cli.EXIT_INCOMPLETE, out.stdout + out.stderr
    assert "jax skipped (not installed: pip install 'multiloss[jax]')" in out.stderr
    assert "INCOMPLETE: backend(s) jax not installed" in out.stdout
    row = next(ln for ln in out.stdout.splitlines() if ln.startswith("mse"))
    assert row.rstrip().endswith("ok")  # compared on torch against torch


def test_cli_help_and_unknown_names():
    assert "``" not in cli.DESCRIPTION and cli.DESCRIPTION.endswith(".")
    with pytest.raises(ValueError, match="`multiloss list`"):
        multiloss.resolve("cross_entropi")


# ---------------------------------------------------------------------------------------------
# defaults follow the defining library

#: The default reduction of each loss's reference where it cannot be read from the library's
#: signature here: torchvision does not import beside torch 2.13 (its source, ops/focal_loss.py
#: and ops/*_box_iou_loss.py: ``reduction: str = "none"``); the in-batch pair losses
#: (pytorch-metric-learning: MeanReducer), smp's and MONAI's losses return the mean.
_NOT_INSPECTED = {
    "focal": "none", "iou": "none", "giou": "none", "diou": "none", "ciou": "none",
}

#: Deliberate exceptions: the reference has no reduction argument and returns the unreduced
#: loss, which its users reduce (optax); multiloss defaults to torch's "mean" (documented in
#: each loss's notes and docs/classification-extra.md).
_UNREDUCED_REFERENCES = {
    "multiclass_hinge", "perceptron", "multiclass_perceptron", "sparsemax",
    "multiclass_sparsemax", "poly1_cross_entropy", "generalized_kl", "log_cosh",
}


def _reference_default(spec):
    import torch.nn.functional as F

    ref = spec.reference_name
    if spec.name in _NOT_INSPECTED:
        return _NOT_INSPECTED[spec.name]
    if ref.startswith("torch.nn.functional."):
        fn = getattr(F, ref.split()[0].rsplit(".", 1)[1])
        return inspect.signature(fn).parameters["reduction"].default
    if ref.startswith("kornia.losses."):
        import kornia.losses

        fn = getattr(kornia.losses, ref.split()[0].rsplit(".", 1)[1])
        return inspect.signature(fn).parameters["reduction"].default
    return None


def test_default_reduction_is_the_references():
    checked = 0
    for spec in testing.all_specs():
        want = _reference_default(spec)
        if want is None:
            continue
        checked += 1
        assert spec.default_reduction == want, (spec.name, spec.reference_name)
    assert checked >= 30
    for name in _UNREDUCED_REFERENCES:
        spec = multiloss.resolve(name)
        assert spec.default_reduction == "mean"
        text = spec.notes + spec.reference_name
        assert "optax" in text


# ---------------------------------------------------------------------------------------------
# porting traps


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_of_one_per_sample_gets_the_hint(backend):
    """The tutorials' nn.MSELoss(weight=w), w (N,) on (N, D): the w[:, None] hint, and the two
    spellings of the intent give torch's number."""
    import torch

    x = np.arange(15.0).reshape(3, 5) / 7
    t = np.zeros((3, 5))
    w = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"weight: .*got \(3,\).*w\[:, None\] \(shape \(3, 1\)\)"):
        multiloss.get("MSELoss", backend=backend, weight=w)(x, t)
    want = torch.nn.functional.mse_loss(
        torch.tensor(x), torch.tensor(t), weight=torch.tensor(w)[:, None].expand(3, 5)).item()
    a = float(multiloss.get("mse", backend=backend, weight=w[:, None])(x, t))
    b = float(multiloss.get("mse", backend=backend)(x, t, sample_weight=w[:, None]))
    assert a == pytest.approx(want, rel=1e-14) and b == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad,where", [
    (([1.5, 0.2], [1.0, 0.0]), "input"),
    (([0.5, float("nan")], [1.0, 0.0]), "input"),
    (([0.5, 0.2], [1.0, -0.5]), "target"),
])
def test_binary_cross_entropy_checks_probabilities_as_torch(backend, bad, where):
    import torch

    x, t = (np.array(v) for v in bad)
    with pytest.raises(RuntimeError, match=f"all elements of {where} should be between 0 and 1"):
        torch.nn.functional.binary_cross_entropy(torch.tensor(x), torch.tensor(t))
    loss = multiloss.get("binary_cross_entropy", backend=backend)
    ok = loss(np.array([0.5, 0.2]), np.array([1.0, 0.0]))  # the signature's hot path first
    assert np.isfinite(float(ok))
    for _ in range(2):  # the first call, and the cached signature's
        with pytest.raises(ValueError, match=f"{where}: expected values in \\[0, 1\\]"):
            loss(x, t)


def test_binary_cross_entropy_under_jit_is_nan_not_a_number():
    import jax

    loss = multiloss.get("binary_cross_entropy", backend="jax")
    out = jax.jit(lambda x: loss(x, np.array([1.0, 0.0])))(np.array([1.5, 0.2]))
    assert np.isnan(float(out))
