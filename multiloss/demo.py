"""The worked example: a PyTorch training recipe and its Flax/optax port, trained side by side.

The recipe is an MLP classifier (64-64-64-10) on the handwritten digits that scikit-learn ships
(``sklearn.datasets.load_digits``: 1797 images of 8x8 pixels, no download), trained with a
class-weighted cross-entropy with label smoothing, ``torch.optim.AdamW``, ``OneCycleLR`` and
``clip_grad_norm_``. The port is built from the live torch objects with
``multiloss.from_torch(criterion)`` and ``multiloss.optim.from_torch(optimizer, scheduler,
clip_grad_norm=...)``. Both start from the same float64 initial weights and see the same batches;
in float64 their parameters agree to 1e-9 relative after 3 epochs.

Run it with ``multiloss demo`` or ``python -m multiloss.demo`` (options: ``--epochs``,
``--dtype float64|float32|both``, ``--out PNG``, ``--seed``). It exits 0 when the float64 run
agrees, 1 when it does not. This file is the porting tutorial of the docs (docs/porting.md),
which shows it section by section.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

TOLERANCE = 1e-9  # float64: largest relative parameter difference after training
DEFAULT_OUT = "multiloss_demo.png"


# --8<-- [start:data]
def load_data(seed: int = 0):
    """The digits, scaled to [0, 1], split 1437 train / 360 test with a seeded permutation, and
    "balanced" class weights n / (C * count_c) of the training labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the demo needs scikit-learn (its digits data set): "
                          "pip install -e '.[dev]' or pip install scikit-learn") from e
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.RandomState(seed).permutation(len(X))
    test, train = perm[:360], perm[360:]
    counts = np.bincount(y[train], minlength=10)
    class_weight = len(train) / (10 * counts)
    return X[train], y[train], X[test], y[test], class_weight


def batch_order(n: int, batch_size: int, epoch: int, seed: int = 0) -> list[np.ndarray]:
    """The indices of each batch of one epoch: a seeded permutation cut into batches (the last
    one smaller), drawn with NumPy so that torch and JAX see the same batches."""
    perm = np.random.RandomState([seed, epoch]).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
# --8<-- [end:data]


# --8<-- [start:torch]
def torch_recipe(class_weight, steps: int, dtype: str = "float64", seed: int = 0):
    """The PyTorch recipe: model, criterion, optimizer and scheduler."""
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    torch.manual_seed(seed)
    model = MLP().double()  # torch's default initialisation, drawn in float64
    model.to(getattr(torch, dtype))
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(class_weight, dtype=getattr(torch, dtype)),
                                    label_smoothing=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps)
    return model, criterion, optimizer, scheduler


def torch_step(model, criterion, optimizer, scheduler, x, y) -> float:
    """One training step of the recipe: forward, backward, clip, step, schedule."""
    import torch

    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    scheduler.step()
    return loss.item()
# --8<-- [end:torch]


# --8<-- [start:port]
def flax_port(torch_model, criterion, optimizer, scheduler):
    """The Flax/optax port, built from the live torch objects (before torch takes a step):
    the same weights, the same loss, the same optimizer, schedule and clipping."""
    import jax
    from flax import nnx

    import multiloss
    import multiloss.optim as mo

    class MLP(nnx.Module):
        def __init__(self, dtype, rngs):
            kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
            self.fc1, self.fc2, self.fc3 = (nnx.Linear(64, 64, **kw), nnx.Linear(64, 64, **kw),
                                            nnx.Linear(64, 10, **kw))

        def __call__(self, x):
            return self.fc3(jax.nn.relu(self.fc2(jax.nn.relu(self.fc1(x)))))

    dtype = str(torch_model.fc1.weight.dtype).replace("torch.", "")
    model = MLP(dtype, nnx.Rngs(0))
    for name in ("fc1", "fc2", "fc3"):  # torch's Linear is x @ W.T + b; nnx's is x @ kernel + b
        t, f = getattr(torch_model, name), getattr(model, name)
        f.kernel[...] = jax.numpy.asarray(t.weight.detach().numpy().T)
        f.bias[...] = jax.numpy.asarray(t.bias.detach().numpy())

    loss_fn = multiloss.from_torch(criterion)  # class weights and label smoothing included
    # clip_grad_norm_ is not part of torch's optimizer: add it to the optax transform
    tx, _ = mo.from_torch(optimizer, scheduler, clip_grad_norm=1.0)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        loss, grads = nnx.value_and_grad(lambda m: loss_fn(m(x), y))(model)
        opt.update(model, grads)
        return loss

    return model, opt, step
# --8<-- [end:port]


@dataclass
class Run:
    """What :func:`train` returns: per-step and per-epoch losses, test accuracies, the largest
    relative parameter difference between the two sides, and the wall time."""

    dtype: str
    epochs: int
    torch_steps: list = field(default_factory=list)
    jax_steps: list = field(default_factory=list)
    torch_loss: list = field(default_factory=list)
    jax_loss: list = field(default_factory=list)
    torch_acc: list = field(default_factory=list)
    jax_acc: list = field(default_factory=list)
    param_diff: float = math.nan  # max over tensors of max|torch - jax| / max|torch|
    param_diff_abs: float = math.nan
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The parameters agree to :data:`TOLERANCE` relative (the float64 criterion)."""
        return self.param_diff <= TOLERANCE


def _param_diff(torch_model, model) -> tuple[float, float]:
    rel, absolute = 0.0, 0.0
    for name in ("fc1", "fc2", "fc3"):
        t, f = getattr(torch_model, name), getattr(model, name)
        for a, b in ((t.weight.detach().numpy().T, f.kernel[...]),
                     (t.bias.detach().numpy(), f.bias[...])):
            d = float(np.max(np.abs(a.astype(np.float64) - np.asarray(b, np.float64))))
            rel = max(rel, d / max(float(np.max(np.abs(a))), 1e-300))
            absolute = max(absolute, d)
    return rel, absolute


class _Bar:
    """A progress bar on stderr: tqdm where installed, else a plain one."""

    def __init__(self, total, desc, enabled=True):
        self.enabled, self.total, self.desc, self.n = enabled, total, desc, 0
        self._tqdm = None
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)
        except ImportError:
            pass

    def update(self, postfix: str):
        self.n += 1
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(postfix, refresh=False)
            self._tqdm.update(1)
        else:
            done = int(30 * self.n / self.total)
            sys.stderr.write(f"\r{self.desc} [{'#' * done}{'.' * (30 - done)}] "
                             f"{self.n}/{self.total} {postfix}")
            sys.stderr.flush()

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# --8<-- [start:train]
def train(epochs: int = 3, dtype: str = "float64", seed: int = 0, batch_size: int = 64,
          progress: bool = True) -> Run:
    """Train the torch recipe and its Flax port side by side for ``epochs`` epochs in
    ``dtype`` ("float64" or "float32") from the same float64 initial weights and batches."""
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    import jax
    import torch

    jax.config.update("jax_enable_x64", True)  # float64 on the JAX side (float32 stays float32)
    t0 = time.perf_counter()
    X, y, X_test, y_test, class_weight = load_data(seed)
    X, X_test = X.astype(dtype), X_test.astype(dtype)
    n_batches = math.ceil(len(X) / batch_size)
    tm, criterion, optimizer, scheduler = torch_recipe(class_weight, epochs * n_batches, dtype, seed)
    model, opt, jax_step = flax_port(tm, criterion, optimizer, scheduler)

    run = Run(dtype, epochs)
    for epoch in range(epochs):
        bar = _Bar(n_batches, f"{dtype} epoch {epoch + 1}/{epochs}", progress)
        for idx in batch_order(len(X), batch_size, epoch, seed):
            lt = torch_step(tm, criterion, optimizer, scheduler,
                            torch.from_numpy(X[idx]), torch.from_numpy(y[idx]))
            lj = float(jax_step(model, opt, X[idx], y[idx]))
            run.torch_steps.append(lt)
            run.jax_steps.append(lj)
            bar.update(f"torch {lt:.4f} jax {lj:.4f}")
        bar.close()
        run.torch_loss.append(float(np.mean(run.torch_steps[-n_batches:])))
        run.jax_loss.append(float(np.mean(run.jax_steps[-n_batches:])))
        with torch.no_grad():
            pred_t = tm(torch.from_numpy(X_test)).argmax(1).numpy()
        pred_j = np.asarray(model(X_test)).argmax(1)
        run.torch_acc.append(float(np.mean(pred_t == y_test)))
        run.jax_acc.append(float(np.mean(pred_j == y_test)))
    run.param_diff, run.param_diff_abs = _param_diff(tm, model)
    run.seconds = time.perf_counter() - t0
    return run
# --8<-- [end:train]


def report(run: Run, file=None) -> None:
    """Print one run: per-epoch loss and test accuracy of both sides, and the parameters'
    largest difference."""
    file = file or sys.stdout
    print(f"\n{run.dtype}: torch recipe vs Flax/optax port ({run.epochs} epochs, "
          f"{len(run.torch_steps)} steps, {run.seconds:.1f} s)", file=file)
    print(f"{'epoch':>5}  {'torch loss':>18}  {'jax loss':>18}  {'|diff|':>8}  "
          f"{'torch acc':>9}  {'jax acc':>7}", file=file)
    for e in range(run.epochs):
        a, b = run.torch_loss[e], run.jax_loss[e]
        print(f"{e + 1:>5}  {a:18.15f}  {b:18.15f}  {abs(a - b):8.1e}  "
              f"{run.torch_acc[e]:9.4f}  {run.jax_acc[e]:7.4f}", file=file)
    verdict = ""
    if run.dtype == "float64":
        verdict = (f"  -> {'OK' if run.ok else 'FAIL'} (tolerance {TOLERANCE:.0e})")
    print(f"largest parameter difference: {run.param_diff:.2e} relative "
          f"({run.param_diff_abs:.2e} absolute){verdict}", file=file)


def plot(runs: list[Run], out: str) -> str:
    """Write a PNG of the per-step training loss of both sides (top, one panel per run) and of
    their absolute difference (bottom, log scale). Returns the path."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("the demo's plot needs matplotlib: pip install -e '.[dev]' or "
                          "pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs), figsize=(6 * len(runs), 6.5), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": [2, 1]})
    for col, run in enumerate(runs):
        steps = np.arange(1, len(run.torch_steps) + 1)
        top, bottom = axes[0][col], axes[1][col]
        top.plot(steps, run.torch_steps, "-", color="tab:orange", lw=3, alpha=0.6,
                 label="torch recipe")
        top.plot(steps, run.jax_steps, "--", color="tab:blue", lw=1.2, marker="o", ms=3,
                 label="Flax/optax port (multiloss)")
        top.set_title(f"{run.dtype}: training loss per step")
        top.set_ylabel("class-weighted CE, label smoothing 0.1")
        top.legend()
        top.grid(alpha=0.3)
        diff = np.abs(np.asarray(run.torch_steps) - np.asarray(run.jax_steps))
        bottom.semilogy(steps, np.maximum(diff, 1e-17), ".-", color="tab:green", lw=0.8)
        bottom.set_ylabel("|torch - jax| (0 drawn at 1e-17)")
        bottom.set_xlabel("step")
        bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    """``multiloss demo`` / ``python -m multiloss.demo``: train both sides, print the
    comparison, write the plot. Exit code 0 when the float64 parameters agree to 1e-9
    relative (or only float32 was run), 1 when they do not."""
    parser = argparse.ArgumentParser(
        prog="multiloss demo",
        description="a torch recipe (MLP on sklearn's digits, class-weighted CE with label "
                    "smoothing, AdamW, OneCycleLR, clip_grad_norm_) and its Flax/optax port "
                    "built with multiloss.from_torch, trained side by side")
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's command-line options (shared by ``multiloss demo``)."""
    parser.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    parser.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                        help="run float64, float32 or both (default)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="PNG",
                        help=f"the loss-curve plot (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="data split, initial weights and "
                        "batch order (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args) -> int:
    """Run the demo for parsed ``args`` (see :func:`add_arguments`); returns the exit code."""
    if args.epochs < 1:
        raise ValueError(f"--epochs: expected an int >= 1, got {args.epochs}")
    t0 = time.perf_counter()
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    runs = []
    for dtype in dtypes:
        run = train(args.epochs, dtype, args.seed, progress=not args.no_progress)
        report(run)
        runs.append(run)
    path = plot(runs, args.out)
    print(f"\nwrote {path} (loss curves of both sides; they overlap)")
    print(f"total wall time {time.perf_counter() - t0:.1f} s")
    failed = [r for r in runs if r.dtype == "float64" and not r.ok]
    if failed:
        print(f"FAIL: float64 parameters differ by {failed[0].param_diff:.2e} relative "
              f"(> {TOLERANCE:.0e})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
