"""The worked example (multiloss/demo.py, run by ``multiloss demo``): one short float64 epoch
through the CLI, the parameters of the torch recipe and of its Flax/optax port agreeing to
1e-9 relative, and the PNG written."""

from __future__ import annotations

import pytest

from multiloss import cli, demo


def test_demo_one_epoch_agrees_and_plots(tmp_path, capsys):
    out = tmp_path / "curves.png"
    rc = cli.main(["demo", "--epochs", "1", "--dtype", "float64", "--out", str(out),
                   "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "float64: torch recipe vs Flax/optax port (1 epochs, 23 steps" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("largest parameter difference"))
    diff = float(line.split(":")[1].split()[0])
    assert diff <= demo.TOLERANCE and line.endswith("OK (tolerance 1e-09)")
    row = next(ln for ln in text.splitlines() if ln.split()[:1] == ["1"]).split()
    torch_loss, jax_loss, _, torch_acc, jax_acc = map(float, row[1:])
    assert abs(torch_loss - jax_loss) <= 1e-12 * torch_loss and torch_acc == jax_acc > 0.5
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_demo_plot_and_bad_arguments(tmp_path):
    run = demo.Run("float64", 1, torch_steps=[2.0, 1.0], jax_steps=[2.0, 1.0 + 1e-16],
                   torch_loss=[1.5], jax_loss=[1.5], torch_acc=[0.5], jax_acc=[0.5],
                   param_diff=1e-15, param_diff_abs=1e-16)
    assert run.ok and not demo.Run("float64", 1, param_diff=1e-6).ok
    path = demo.plot([run, run], str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 10_000 and path.endswith("p.png")
    with pytest.raises(ValueError, match=r"dtype: expected 'float64' or 'float32', got 'float16'"):
        demo.train(1, "float16")
    with pytest.raises(ValueError, match=r"epochs: expected an int >= 1, got 0"):
        demo.train(0)
    with pytest.raises(ValueError, match=r"batch_size: expected an int >= 1"):
        demo.train(1, batch_size=0)
    assert cli.main(["demo", "--epochs", "0"]) == 2  # the CLI's error exit


def test_batch_order_is_shared_and_covers_the_data():
    a = demo.batch_order(100, 64, epoch=0)
    assert [len(b) for b in a] == [64, 36]
    assert sorted(int(i) for b in a for i in b) == list(range(100))
    b = demo.batch_order(100, 64, epoch=1)
    assert any((x != y).any() for x, y in zip(a, b))
    assert all((x == y).all() for x, y in zip(a, demo.batch_order(100, 64, epoch=0)))
