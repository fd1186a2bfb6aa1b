"""Pickling and processes (issue 15, item 5): every loss object on both backends, a torch
loss module through ``torch.save`` / ``torch.load(weights_only=False)``, every
``multiloss.combine`` result and ``multiloss.nn`` module (flax.nnx and torch) and every
optimizer transform's state of ``multiloss.optim`` pickle and unpickle to an equal, working
object that gives the same numbers; in a fresh process too (DataLoader workers,
multiprocessing, checkpoints that store the criterion).

"Equal": a JAX loss compares equal (``==``, same hash) to its copy: the same spec and
options, array options equal in dtype, shape and values. A torch module keeps torch's
identity equality (``nn.Module`` containers rely on it): its copy has the same spec, options
and ``state_dict``. A loss is pickled without its compiled functions and per-signature
caches, which are made again (so a copy computes with its own buffers).

CI computes the numbers of every torch loss and of a subset of the JAX losses (a JAX copy
compiles again); ``MULTILOSS_LONG=1`` every JAX loss too.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
import multiloss.nn as mnn
import multiloss.optim as mo
from multiloss import testing

jax.config.update("jax_enable_x64", True)

LONG = os.environ.get("MULTILOSS_LONG") == "1"
ROOT = Path(__file__).resolve().parent.parent
#: the JAX losses whose copies are also called in CI (every loss with MULTILOSS_LONG=1)
JAX_SUBSET = ("cross_entropy", "ctc", "linear_cross_entropy", "binary_cross_entropy_with_logits",
              "mse", "dice", "arcface", "keras.categorical_crossentropy",
              "triplet_margin_with_distance")


def _sample(spec):
    """A sample with array options where the grid has one (they travel in the pickle), else
    the one with the most options; not an empty batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        grid = [s for s in testing.samples_for(spec, "float64")
                if "empty" not in s.id and all(np.asarray(x).size for x in s.inputs)]
    arrays = {o.name for o in spec.options if o.kind == "array"}
    with_arrays = [s for s in grid if any(s.options.get(a) is not None for a in arrays)]
    return max(with_arrays or grid, key=lambda s: (len(s.options), s.sample_weight is not None))


CASES = [pytest.param(spec, _sample(spec), id=spec.name) for spec in testing.all_specs()]


def _same_options(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if hasattr(a[k], "shape"):
            x = np.asarray(a[k].detach() if hasattr(a[k], "detach") else a[k])
            assert np.array_equal(x, np.asarray(b[k].detach() if hasattr(b[k], "detach")
                                                else b[k])), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("spec,sample", CASES)
def test_jax_loss_pickles_to_an_equal_working_loss(spec, sample):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = multiloss.get(spec.name, "jax", **sample.options)
    call = LONG or spec.name in JAX_SUBSET
    if call:  # populate the caches first: they must not travel
        want = np.asarray(loss(*sample.inputs, sample_weight=sample.sample_weight))
    clone = pickle.loads(pickle.dumps(loss))
    assert type(clone) is type(loss) and clone.spec is loss.spec
    assert clone == loss and hash(clone) == hash(loss)
    _same_options(clone.options, loss.options)
    assert repr(clone) == repr(loss)
    if call:
        got = np.asarray(clone(*sample.inputs, sample_weight=sample.sample_weight))
        np.testing.assert_array_equal(got, want)
        deep = copy.deepcopy(loss)
        assert deep == loss
        np.testing.assert_array_equal(np.asarray(deep(*sample.inputs,
                                                      sample_weight=sample.sample_weight)), want)


def test_jax_losses_differ_by_options():
    w = np.array([1.0, 2.0, 3.0])
    ce = multiloss.get("cross_entropy", "jax", weight=w)
    assert ce == multiloss.get("cross_entropy", "jax", weight=w.copy())
    assert ce != multiloss.get("cross_entropy", "jax", weight=w * 2)
    assert ce != multiloss.get("cross_entropy", "jax", weight=w.astype(np.float32))
    assert ce != multiloss.get("cross_entropy", "jax")
    assert ce != multiloss.get("cross_entropy", "jax", weight=w, label_smoothing=0.1)
    assert ce != multiloss.get("nll", "jax", weight=w)
    assert len({ce, pickle.loads(pickle.dumps(ce))}) == 1  # usable as a dict key / static arg


def _torch_inputs(sample):
    return [torch.from_numpy(np.array(x)) for x in sample.inputs], (
        None if sample.sample_weight is None else torch.from_numpy(np.array(sample.sample_weight)))


def _same_module(a, b):
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
        assert sa[k].data_ptr() != sb[k].data_ptr() or sa[k].numel() == 0, k


@pytest.mark.parametrize("spec,sample", CASES)
def test_torch_loss_pickles_and_saves(spec, sample):
    """pickle, copy.deepcopy and torch.save / torch.load(weights_only=False): the same
    spec, options and buffers (copies), the same numbers, the per-signature caches made
    again for the copy's own buffers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = multiloss.get(spec.name, "torch", **sample.options)
        inputs, sw = _torch_inputs(sample)
        want = loss(*inputs, sample_weight=sw)
        loss(*inputs)  # the hot path's plan of this signature: not pickled
        buf = io.BytesIO()
        torch.save(loss, buf)
        buf.seek(0)
        copies = [pickle.loads(pickle.dumps(loss)), copy.deepcopy(loss),
                  torch.load(buf, weights_only=False)]
        for clone in copies:
            _same_module(clone, loss)
            assert clone.spec is loss.spec
            _same_options(clone.options, loss.options)
            assert not clone._plans
            torch.testing.assert_close(clone(*inputs, sample_weight=sw), want, rtol=0, atol=0,
                                       equal_nan=True)
            torch.testing.assert_close(clone(*inputs), loss(*inputs), rtol=0, atol=0,
                                       equal_nan=True)


def test_a_copied_torch_loss_computes_with_its_own_buffers():
    """Before: a deep copy kept the original's cached plan, whose closure holds the
    original's buffers; changing the copy's class weights changed nothing."""
    w = np.array([1.0, 2.0, 3.0])
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 1, 0, 2])
    loss = multiloss.get("cross_entropy", "torch", weight=w)
    loss(x, t)
    for clone in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        with torch.no_grad():
            clone.weight.mul_(torch.tensor([5.0, 1.0, 1.0], dtype=torch.float64))
        ref = torch.nn.functional.cross_entropy(x, t, weight=torch.tensor(w * [5, 1, 1]))
        assert testing.rel_error(clone(x, t).numpy(), ref.numpy()) <= 1e-12
        assert testing.rel_error(loss(x, t).numpy(), torch.nn.functional.cross_entropy(
            x, t, weight=torch.tensor(w)).numpy()) <= 1e-12


# ---------------------------------------------------------------------------------------------
# combine and multiloss.nn


def _combine_inputs(rng):
    logits, labels = rng.normal(size=(6, 3)), rng.integers(0, 3, size=6)
    pred, target = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    return {"ce": (logits, labels), "mse": (pred, target)}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_combine_pickles(backend):
    rng = np.random.default_rng(0)
    parts = {"ce": multiloss.get("cross_entropy", backend, weight=np.array([1.0, 2.0, 0.5]),
                                 label_smoothing=0.1), "mse": "mse"}
    loss = multiloss.combine(parts, {"ce": 0.7, "mse": -0.3}, backend=backend)
    inputs = _combine_inputs(rng)
    sw = {"mse": rng.uniform(size=(6, 1))}
    if backend == "torch":
        inputs = {k: tuple(torch.from_numpy(np.array(a)) for a in v) for k, v in inputs.items()}
        sw = {k: torch.from_numpy(v) for k, v in sw.items()}
    want = loss(inputs, sample_weight=sw)
    clones = [pickle.loads(pickle.dumps(loss)), copy.deepcopy(loss)]
    if backend == "torch":
        buf = io.BytesIO()
        torch.save(loss, buf)
        buf.seek(0)
        clones.append(torch.load(buf, weights_only=False))
    for clone in clones:
        if backend == "jax":
            assert clone == loss and hash(clone) == hash(loss)
        else:
            _same_module(clone, loss)
            assert clone.weights == loss.weights and clone.order == loss.order
        got = clone(inputs, sample_weight=sw)
        assert list(got.parts) == list(want.parts)
        for a, b in zip([got.total, *got.parts.values()], [want.total, *want.parts.values()]):
            np.testing.assert_array_equal(np.asarray(a.detach() if backend == "torch" else a),
                                          np.asarray(b.detach() if backend == "torch" else b))


def test_jax_combine_equality():
    a = multiloss.combine({"ce": "cross_entropy", "mse": "mse"}, {"ce": 0.5, "mse": 0.5})
    assert a == multiloss.combine({"ce": "cross_entropy", "mse": "mse"}, {"ce": 0.5, "mse": 0.5})
    assert a != multiloss.combine({"ce": "cross_entropy", "mse": "mse"}, {"ce": 0.4, "mse": 0.5})
    assert a != multiloss.combine({"ce": "cross_entropy", "mse": "l1"}, {"ce": 0.5, "mse": 0.5})
    assert a != multiloss.combine({"mse": "mse", "ce": "cross_entropy"}, {"ce": 0.5, "mse": 0.5})


def _nn_modules():
    from flax import nnx

    uw = dict(init={"seg": 0.3, "depth": -0.2}, kinds={"seg": "classification",
                                                       "depth": "regression"})
    return [
        ("uncertainty", mnn.UncertaintyWeighting(["seg", "depth"], dtype="float64", **uw),
         mnn.TorchUncertaintyWeighting(["seg", "depth"], dtype="float64", **uw)),
        ("arcface", mnn.ArcFace(4, 5, reduction="sum", dtype="float64", rngs=nnx.Rngs(0)),
         mnn.TorchArcFace(4, 5, reduction="sum", dtype="float64")),
        ("cosface", mnn.CosFace(4, 5, margin=0.2, dtype="float64", rngs=nnx.Rngs(1)),
         mnn.TorchCosFace(4, 5, margin=0.2, dtype="float64")),
    ]


def test_nn_modules_pickle_on_both_backends():
    from flax import nnx

    rng = np.random.default_rng(3)
    emb, labels = rng.normal(size=(6, 4)), rng.integers(0, 5, size=6)
    losses = {"seg": 1.3, "depth": 0.4}
    for name, jm, tm in _nn_modules():
        if name == "uncertainty":
            def call_j(m):
                return m({k: jnp.asarray(v) for k, v in losses.items()}).total

            def call_t(m):
                return m({k: torch.tensor(v, dtype=torch.float64) for k, v in losses.items()}
                         ).total
        else:
            def call_j(m):
                return m(emb, labels)

            def call_t(m):
                return m(torch.from_numpy(emb), torch.from_numpy(labels))
        want_j, want_t = np.asarray(call_j(jm)), call_t(tm).detach().numpy()
        jc = pickle.loads(pickle.dumps(jm))
        assert type(jc) is type(jm) and jc.config() == jm.config()
        sa, sb = nnx.to_flat_state(nnx.state(jm)), nnx.to_flat_state(nnx.state(jc))
        assert [p for p, _ in sa] == [p for p, _ in sb]
        for (_, a), (_, b) in zip(sa, sb):
            assert np.array_equal(np.asarray(a[...]), np.asarray(b[...]))
        np.testing.assert_array_equal(np.asarray(call_j(jc)), want_j)
        buf = io.BytesIO()
        torch.save(tm, buf)
        buf.seek(0)
        for tc in (pickle.loads(pickle.dumps(tm)), torch.load(buf, weights_only=False)):
            _same_module(tc, tm)
            assert tc.config() == tm.config()
            np.testing.assert_array_equal(call_t(tc).detach().numpy(), want_t)


# ---------------------------------------------------------------------------------------------
# optimizer states


def _quadratic(params):
    return sum(jnp.sum((p - 0.5) ** 2 * (1 + i)) for i, p in
               enumerate(jax.tree_util.tree_leaves(params)))


def _transforms():
    out = []
    for name in mo.available():
        if name == "lbfgs":
            out.append((name, mo.get(name, lr=0.5,
                                     schedule=mo.schedules.StepLR(step_size=2))))
            continue
        # Muon takes 2-D parameters only: "b" goes to AdamW (its recipe)
        other = {"optimizer": "adamw"} if name == "muon" else {}
        plain = ({"param_groups": {"muon": {}, "adamw": other}, "labels": mo.muon_labels}
                 if name == "muon" else {})
        out.append((f"{name}-plain", mo.get(name, **plain)))
        out.append((f"{name}-groups-onecycle-clip", mo.get(
            name, param_groups=[{"lr": 0.01}, {"lr": 0.02, **other}], labels={"w": 0, "b": 1},
            schedule=mo.schedules.OneCycleLR([0.05, 0.1], total_steps=10,
                                             cycle_momentum=mo.resolve(name).momentum_key
                                             is not None),
            clip_grad_norm=0.5)))
    out.append(("sgd-plateau", mo.get("sgd", lr=0.1, momentum=0.9,
                                      schedule=mo.schedules.ReduceLROnPlateau(patience=0))))
    return out


@pytest.mark.parametrize("name,tx", _transforms(), ids=[n for n, _ in _transforms()])
def test_optimizer_state_pickles(name, tx):
    """After two steps, the state pickles to an equal pytree (same structure, dtypes and
    values), and the next update from the copy is the original's, bit for bit."""
    params = {"w": jnp.asarray([[0.1, -0.3], [0.7, 2.0]]), "b": jnp.asarray([0.2, -1.0])}
    vg = jax.value_and_grad(_quadratic)
    extra = {"metrics": None}

    def step(params, state):
        value, grads = vg(params)
        kw = {"value": value, "value_and_grad_fn": vg} if name == "lbfgs" else {}
        if name.endswith("plateau"):
            kw["metrics"] = value
        updates, state = tx.update(grads, state, params, **kw)
        return jax.tree_util.tree_map(lambda p, u: p + u, params, updates), state

    del extra
    state = tx.init(params)
    for _ in range(2):
        params, state = step(params, state)
    clone = pickle.loads(pickle.dumps(state))
    assert type(clone) is type(state)
    a, ta = jax.tree_util.tree_flatten(state)
    b, tb = jax.tree_util.tree_flatten(clone)
    assert ta == tb
    for x, y in zip(a, b):
        assert jnp.result_type(x) == jnp.result_type(y) and np.array_equal(np.asarray(x),
                                                                           np.asarray(y))
    p1, s1 = step(params, state)
    p2, s2 = step(params, clone)
    for x, y in zip(jax.tree_util.tree_leaves((p1, s1)), jax.tree_util.tree_leaves((p2, s2))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------------------------
# across a process boundary

_CHILD = r"""
import pickle, sys
import numpy as np, jax, torch
jax.config.update("jax_enable_x64", True)
objs = pickle.load(open(sys.argv[1], "rb"))
x, t = objs["x"], objs["t"]
out = {
    "jax": np.asarray(objs["jax"](x, t)),
    "torch": objs["torch"](torch.from_numpy(x), torch.from_numpy(t)).numpy(),
    "combine": np.asarray(objs["combine"]({"ce": (x, t), "mse": (x, x * 0.5)}).total),
    "state": [np.asarray(v) for v in jax.tree_util.tree_leaves(objs["state"])],
}
pickle.dump(out, open(sys.argv[2], "wb"))
"""


def test_across_a_process_boundary(tmp_path):
    """A fresh interpreter (nothing of multiloss imported yet) unpickles the objects: the
    specs resolve by name, the losses are made again and give this process's numbers."""
    rng = np.random.default_rng(5)
    x, t = rng.normal(size=(5, 3)), rng.integers(0, 3, size=5)
    w = np.array([0.5, 1.0, 2.0])
    tx = mo.get("adamw", lr=0.1)
    params = {"w": jnp.ones((2, 2))}
    state = tx.update({"w": jnp.full((2, 2), 0.3)}, tx.init(params), params)[1]
    objs = {"x": x, "t": t, "state": state,
            "jax": multiloss.get("cross_entropy", "jax", weight=w, label_smoothing=0.1),
            "torch": multiloss.get("cross_entropy", "torch", weight=w, ignore_index=1),
            "combine": multiloss.combine({"ce": "cross_entropy", "mse": "mse"},
                                         {"ce": 0.25, "mse": 2.0})}
    want = {"jax": np.asarray(objs["jax"](x, t)),
            "torch": objs["torch"](torch.from_numpy(x), torch.from_numpy(t)).numpy(),
            "combine": np.asarray(objs["combine"]({"ce": (x, t), "mse": (x, x * 0.5)}).total),
            "state": [np.asarray(v) for v in jax.tree_util.tree_leaves(state)]}
    src, dst = tmp_path / "objs.pkl", tmp_path / "out.pkl"
    src.write_bytes(pickle.dumps(objs))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dst)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = pickle.loads(dst.read_bytes())
    for k in ("jax", "torch", "combine"):
        np.testing.assert_array_equal(got[k], want[k])
    for a, b in zip(got["state"], want["state"]):
        np.testing.assert_array_equal(a, b)
