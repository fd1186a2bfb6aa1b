"""Every loss (and on JAX every optimizer and schedule) on one backend, with only that
framework: ``python tests/single_backend.py BACKEND [--block OTHER]``.

CI runs it in virtual environments that have one framework installed
(``pip install -e '.[torch]'`` alone, ``'.[jax]'`` alone; .ci/run); the test suite runs it with
the other framework made unimportable (``--block``, tests/test_first_hour.py). It imports every
module of the backend (the loss families', multiloss.nn's and the optimizers'), runs each loss
on the representative cases of its grid (value and gradients, ``multiloss.testing``'s
runners) and steps each optimizer, then checks that the other framework was never imported.
Needs only multiloss, NumPy and the one framework (not pytest). Prints one summary line;
exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("backend", choices=("jax", "torch"))
    p.add_argument("--block", choices=("jax", "torch"), default=None,
                   help="make this framework unimportable first (default: none)")
    p.add_argument("--cases", choices=("quick", "first"), default="quick",
                   help="per loss: the representative cases of its grid in float64 and float32 "
                        "(quick), or its grid's first float64 case (first)")
    args = p.parse_args(argv)
    other = "torch" if args.backend == "jax" else "jax"
    if args.block:
        sys.modules[args.block] = None  # 'import <block>' raises ImportError
    warnings.filterwarnings("ignore")

    import numpy as np

    import multiloss.losses as families
    from multiloss import testing

    modules = [f"multiloss.backends._{args.backend}", f"multiloss.nn._{args.backend}"] + [
        f"multiloss.losses.{m.name}._{args.backend}"
        for m in pkgutil.iter_modules(families.__path__) if m.ispkg]
    if args.backend == "jax":
        testing.enable_x64()
        modules.append("multiloss.optim._jax")
    for name in modules:
        importlib.import_module(name)

    failures, cases = [], 0
    for spec in testing.all_specs():
        for dtype in ("float64", "float32") if args.cases == "quick" else ("float64",):
            grid = testing.samples_for(spec, dtype)
            for sample in testing.quick_samples(grid) if args.cases == "quick" else grid[:1]:
                cases += 1
                try:
                    value, grads, _, _ = testing.RUNNERS[args.backend](spec, sample)
                    assert np.shape(value) is not None and all(
                        np.shape(g) is not None for g in grads)
                except Exception as e:  # noqa: BLE001 - reported
                    failures.append(f"{spec.name} {dtype} {sample.id}: {type(e).__name__}: {e}")

    steps = 0
    if args.backend == "jax":
        import jax.numpy as jnp
        import optax

        import multiloss.optim as mo

        params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
        grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.ones(2)}
        schedule = mo.schedules.OneCycleLR(0.1, total_steps=10, cycle_momentum=False)
        for name in mo.available():
            extra = {"max_iter": 1} if name == "lbfgs" else {}
            if name == "muon":  # 2-D parameters only: its recipe, AdamW for "b"
                extra = {"labels": mo.muon_labels,
                         "param_groups": {"muon": {}, "adamw": {"optimizer": "adamw"}}}
            for kw in ({}, {"schedule": schedule, "clip_grad_norm": 1.0}):
                try:
                    tx = mo.get(name, lr=0.01, **extra, **kw)
                    p, state = params, tx.init(params)
                    for _ in range(3):
                        u, state = tx.update(grads, state, p)
                        p = optax.apply_updates(p, u)
                        steps += 1
                    assert all(bool(jnp.isfinite(v).all()) for v in p.values())
                except Exception as e:  # noqa: BLE001 - reported
                    failures.append(f"optimizer {name} {kw}: {type(e).__name__}: {e}")

    loaded = [m for m in (other,) if sys.modules.get(m) is not None]
    if loaded:
        failures.append(f"{other} was imported by the {args.backend} backend")
    print(f"{args.backend} alone: {len(testing.all_specs())} losses, {cases} cases, "
          f"{steps} optimizer steps, {len(failures)} failures")
    for f in failures[:30]:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
