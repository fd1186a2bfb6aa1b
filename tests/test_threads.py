"""Thread safety: one loss object called from several threads at once gives the results of
serial calls, on both backends (docs/robustness.md).

What is shared between calls: the signature cache of ``InputChecks`` (a dict: single get and
set operations are atomic in CPython, and an entry is only ever a complete, checked
signature; a full cache is cleared, never iterated), JAX's jit cache (thread-safe), torch's
module buffers (read only in ``forward``). Nothing else is mutable.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss.backends import InputChecks

N_THREADS = 8
W = np.array([0.5, 2.0, 1.0, 1.5])


def _cases(n_cases, seed=0):
    """Cross-entropy cases of a few shapes, with ignored targets and sample weights."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_cases):
        n = 2 + k % 4
        x = rng.normal(size=(n, 4))
        t = rng.integers(0, 4, size=n)
        t[0] = -100 if k % 3 == 0 else t[0]
        out.append((x, t, rng.uniform(0, 2, size=n)))
    return out


def _hammer(fn, cases, repeats):
    """Every thread calls fn on every case, in a different order, all starting together;
    returns the results per thread, in case order."""
    barrier = threading.Barrier(N_THREADS)

    def work(seed):
        order = np.random.default_rng(seed).permutation(len(cases) * repeats) % len(cases)
        barrier.wait()
        got = {}
        for i in order:
            got[int(i)] = fn(*cases[i])
        return [got[i] for i in range(len(cases))]

    with ThreadPoolExecutor(N_THREADS) as pool:
        return list(pool.map(work, range(N_THREADS)))


def test_jax_loss_from_threads():
    loss = multiloss.get("cross_entropy", "jax", weight=W, label_smoothing=0.1)
    grad = jax.jit(jax.value_and_grad(lambda x, t, s: loss(x, t, sample_weight=s)))

    def call(x, t, s):
        v, g = grad(x, t, s)
        return float(loss(x, t, sample_weight=s)), float(v), np.asarray(g), \
            float(loss.denominator(x, t, sample_weight=s))

    cases = _cases(16)
    serial = [call(*c) for c in cases]
    for per_thread in _hammer(call, cases, repeats=3):
        for got, want in zip(per_thread, serial):
            assert got[0] == want[0] and got[1] == want[1] and got[3] == want[3]
            np.testing.assert_array_equal(got[2], want[2])


def test_torch_loss_from_threads():
    loss = multiloss.get("cross_entropy", "torch", weight=W, label_smoothing=0.1)

    def call(x, t, s):
        xt = torch.tensor(x, requires_grad=True)
        v = loss(xt, torch.as_tensor(t), sample_weight=torch.as_tensor(s))
        (g,) = torch.autograd.grad(v, xt)
        d = loss.denominator(torch.as_tensor(x), torch.as_tensor(t),
                             sample_weight=torch.as_tensor(s))
        return v.item(), g.numpy(), d.item()

    cases = _cases(16)
    serial = [call(*c) for c in cases]
    for per_thread in _hammer(call, cases, repeats=3):
        for got, want in zip(per_thread, serial):
            assert got[0] == want[0] and got[2] == want[2]
            np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bad_inputs_from_threads_raise_the_right_error(backend):
    """Valid and invalid calls interleaved from threads: each gets its own outcome (the
    signature cache never hands one call's checked shapes to another)."""
    loss = multiloss.get("cross_entropy", backend)
    wrap = jnp.asarray if backend == "jax" else torch.as_tensor
    good = [(np.ones((n, 3)), np.zeros(n, np.int64), True) for n in (2, 3)]
    bad = [(np.ones((n, 3)), np.zeros(n + 1, np.int64), False) for n in (2, 3)]
    out_of_range = [(np.ones((2, 3)), np.array([0, 3]), False)]
    cases = good + bad + out_of_range

    def call(x, t, ok):
        try:
            loss(wrap(x), wrap(t))
            return ok
        except ValueError:
            return not ok

    for per_thread in _hammer(call, cases, repeats=20):
        assert all(per_thread)


def test_signature_cache_under_eviction_from_threads():
    """More signatures than the cache holds (it is cleared when full), from 8 threads at
    once: every call's shape check is still its own."""
    spec = multiloss.resolve("mse")
    checks = InputChecks(spec, spec.bind({}))
    n_shapes = 3 * InputChecks._MAX_SIGNATURES
    shapes = [(1 + i % 37, 1 + i // 37) for i in range(n_shapes)]
    cases = []
    for i, shp in enumerate(shapes):
        other = shp if i % 2 else (shp[0], shp[1] + 1)  # every other one: a target too wide
        cases.append((np.empty(shp), np.empty(other), bool(i % 2)))

    def call(x, t, ok):
        try:
            checks((x, t), None, lambda a: None)
            return ok
        except ValueError as e:
            return not ok and str(e).startswith("target: expected the shape of input")

    for per_thread in _hammer(call, cases, repeats=1):
        assert all(per_thread)
    assert len(checks._signatures) <= InputChecks._MAX_SIGNATURES
