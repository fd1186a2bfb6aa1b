"""Data-parallel JAX: every loss under ``jax.jit`` with inputs sharded over an 8-device
``Mesh`` (``NamedSharding``, Auto and Explicit axes) gives the single-device value and
gradients; inside ``shard_map`` (and ``pmap``) the option ``axis_name`` makes every reduction
the whole batch's on every device (docs/distributed.md).

The 8 host devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before JAX
starts its backend, which this test session has already done: the cases run in one
subprocess (this file, run as a script), and each case's measured errors are asserted here.
Every comparison is float64, to 1e-12 relative (``multiloss.testing.rel_error``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from multiloss import testing

N_DEVICES = 8
TOL = 1e-12
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# cases (built identically here and in the subprocess: NumPy only)


#: MULTILOSS_SHARDING_ALL=1: every reduction of every loss (about 110 cases, minutes);
#: by default one case per loss (its "mean" with a batched sample weight where it has one).
ALL_REDUCTIONS = os.environ.get("MULTILOSS_SHARDING_ALL") == "1"


def cases():
    """[(case id, spec, sample, layout)]: every registered loss and the heterogeneous
    batches of ``multiloss.testing.data_parallel_cases`` (built identically here and in the
    subprocess: NumPy only)."""
    return testing.data_parallel_cases(N_DEVICES, ALL_REDUCTIONS)


# ---------------------------------------------------------------------------------------------
# the subprocess


def _pspec(axis, ndim, name="b"):
    from jax.sharding import PartitionSpec as P

    if axis is None or axis == testing.CONCAT:
        return P()
    return P(*([None] * axis + [name] + [None] * (ndim - axis - 1)))


def _run_case(jax, multiloss, meshes, spec, sample, axes, sw_axis):  # pragma: no cover
    import jax.numpy as jnp
    from jax.sharding import NamedSharding

    res = {}
    pos = testing._diff_positions(spec, sample)
    sw = sample.sample_weight
    inputs = [np.asarray(x) for x in sample.inputs]
    red = sample.options.get("reduction", "mean")
    # the sample weight is differentiated too: its gradient goes through the denominator
    with_sw = testing._sw_differentiable(spec, sample)
    names = [spec.inputs[i].name for i in pos] + (["sample_weight"] if with_sw else [])

    def objective(loss, diff, rest, sw, ct):
        args = list(rest)
        if with_sw:
            *diff, sw = diff
        for i, v in zip(pos, diff):
            args[i] = v
        out = loss(*args, sample_weight=sw)
        return jnp.sum(out * ct) if out.ndim else out

    loss = multiloss.get(spec.name, "jax", **sample.options)
    out_shape = jax.eval_shape(lambda *a: loss(*a, sample_weight=sw), *inputs).shape
    ct = testing._cotangent(sample, out_shape, np.float64)
    vg = jax.jit(jax.value_and_grad(
        lambda diff, rest, sw, ct: objective(loss, diff, rest, sw, ct)))
    ref_v, ref_g = vg([inputs[i] for i in pos] + ([sw] if with_sw else []), inputs, sw, ct)
    ref_v, ref_g = np.asarray(ref_v), [np.asarray(g) for g in ref_g]
    res["value"] = float(ref_v) if ref_v.ndim == 0 else None

    def errors(v, g):
        e = {"value": testing.rel_error(np.asarray(v), ref_v)}
        for name, gi, ri in zip(names, g, ref_g, strict=True):
            e[f"d_{name}"] = testing.rel_error(np.asarray(gi), ri)
        return e

    # 1. jax.jit on NamedSharding-ed inputs: the single-device numbers. Explicit mesh axes
    # for every case (jax.make_mesh's default; the loss then runs with the axes Auto inside);
    # Auto axes too for the heterogeneous batches (one compilation less per loss)
    kinds = meshes if spec_is_heterogeneous(sample) else {"explicit": meshes["explicit"]}
    for kind, mesh in kinds.items():
        def put(x, axis, mesh=mesh):
            x = np.asarray(x)
            if axis is not None and axis != testing.CONCAT and x.shape[axis] % N_DEVICES:
                axis = None
            return jax.device_put(x, NamedSharding(mesh, _pspec(axis, x.ndim)))

        s_in = [put(x, a) for x, a in zip(inputs, axes)]
        s_sw = None if sw is None else put(sw, sw_axis)
        s_ct = put(ct, 0 if ct.ndim else None)
        res["shardings"] = [str(x.sharding.spec) for x in s_in]
        try:
            with jax.set_mesh(mesh):
                v, g = vg([s_in[i] for i in pos] + ([s_sw] if with_sw else []), s_in, s_sw, s_ct)
            res[f"jit-{kind}"] = errors(v, g)
        except Exception as e:  # noqa: BLE001 - reported
            res[f"jit-{kind}"] = f"{type(e).__name__}: {e}"[:2000]

    # 2. shard_map with axis_name: the whole batch's value on every device
    if testing.CONCAT in axes:
        res["shard_map"] = "concatenated ctc targets are not split by rows"
        return res
    try:
        _shard_map_phase(jax, multiloss, meshes["auto"], spec, sample, axes, sw_axis, inputs,
                         sw, ct, pos, with_sw, objective, loss, errors, res, red)
    except Exception as e:  # noqa: BLE001 - reported
        res["shard_map"] = f"{type(e).__name__}: {e}"[:2000]
    return res


def spec_is_heterogeneous(sample) -> bool:
    return sample.id in HETEROGENEOUS


def _shard_map_phase(jax, multiloss, mesh, spec, sample, axes, sw_axis, inputs, sw, ct, pos,
                     with_sw, objective, loss, errors, res, red):  # pragma: no cover
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    dloss = multiloss.get(spec.name, "jax", axis_name="b", **sample.options)
    in_specs = (
        [_pspec(a, x.ndim) for x, a in zip(inputs, axes)],
        None if sw is None else _pspec(sw_axis, np.ndim(sw)),
        _pspec(0 if ct.ndim else None, ct.ndim),
    )
    grad_specs = [_pspec(axes[i], inputs[i].ndim) for i in pos] + (
        [in_specs[1]] if with_sw else [])
    out_spec = P() if ct.ndim == 0 else _pspec(0, ct.ndim)

    dividing = red in ("mean", "sum_over_batch_size", "batchmean")

    def local(inputs, sw, ct):
        out = dloss(*inputs, sample_weight=sw)
        g = jax.grad(lambda diff: objective(dloss, diff, inputs, sw, ct))(
            [inputs[i] for i in pos] + ([sw] if with_sw else []))
        # the denominator, psum-ed: the whole batch's on every device
        den = dloss.denominator(*inputs, sample_weight=sw) if dividing else jax.numpy.zeros(())
        return out, g, den

    fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=in_specs,
                               out_specs=(out_spec, grad_specs, P())))
    with jax.set_mesh(mesh):
        s_in = [jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(inputs, in_specs[0])]
        s_sw = None if sw is None else jax.device_put(sw, NamedSharding(mesh, in_specs[1]))
        s_ct = jax.device_put(ct, NamedSharding(mesh, in_specs[2]))
        out, g, den = fn(s_in, s_sw, s_ct)
    res["shard_map"] = errors(out, g)
    if ct.ndim:  # "none": the shards of the whole batch's unreduced loss
        out_ref = np.asarray(loss(*inputs, sample_weight=sw))
        res["shard_map"]["value"] = testing.rel_error(np.asarray(out), out_ref)
    if dividing:  # against the spec's documented normaliser, in NumPy
        res["denominator"] = testing.rel_error(np.asarray(den), _denominator(spec, sample, red))


def _denominator(spec, sample, red):
    opts = {**{o.name: o.default for o in spec.all_options}, **sample.options}
    d, c, *_ = spec.normalizer(sample.inputs, opts)
    d, c = np.asarray(d, np.float64), np.asarray(c, np.float64)
    sw = 1.0 if sample.sample_weight is None else np.asarray(sample.sample_weight)
    if red == "mean":
        return np.sum(np.broadcast_to(d * sw, np.broadcast_shapes(d.shape, np.shape(sw))))
    if red == "sum_over_batch_size":
        return np.sum(c)
    return np.float64(testing.batch_size(spec, sample))


def _worker():  # pragma: no cover - runs in the subprocess
    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType

    import multiloss

    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == N_DEVICES, jax.devices()
    warnings.simplefilter("ignore", UserWarning)
    meshes = {
        "auto": jax.make_mesh((N_DEVICES,), ("b",), axis_types=(AxisType.Auto,)),
        "explicit": jax.make_mesh((N_DEVICES,), ("b",), axis_types=(AxisType.Explicit,)),
    }
    results = {}
    for cid, spec, sample, (axes, sw_axis) in cases():
        try:
            results[cid] = _run_case(jax, multiloss, meshes, spec, sample, axes, sw_axis)
        except Exception as e:  # noqa: BLE001 - reported per case
            results[cid] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    results["__pmap__"] = _pmap_cases(jax, jnp, multiloss)
    for cid, name, inputs, opts in testing.fused_pair_cases():
        try:
            results[f"__pairs__:{cid}"] = _pair_case(jax, multiloss, meshes["auto"], name,
                                                      inputs, opts)
        except Exception as e:  # noqa: BLE001 - reported per case
            results[f"__pairs__:{cid}"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    results["__devices__"] = _device_mismatch(jax, multiloss)
    print("RESULTS " + json.dumps(results))


def _pmap_cases(jax, jnp, multiloss):  # pragma: no cover - runs in the subprocess
    """pmap with axis_name: every device's value is the whole batch's; psum's transpose under
    pmap is a psum, so a device's gradient w.r.t. its own inputs is N_DEVICES times its block
    of the whole batch's gradient, and pmean of a shared parameter's gradient is the whole
    batch's gradient (the usual data-parallel step)."""
    rng = np.random.default_rng(3)
    n, c = 16, 5
    x = rng.normal(size=(n, c))
    t = rng.integers(0, c, size=n)
    t[:2] = -100
    t[5] = -100
    sw = rng.uniform(0, 2, size=n)
    w = rng.uniform(0.5, 2, size=c)
    full = multiloss.get("cross_entropy", "jax", weight=w)
    dist = multiloss.get("cross_entropy", "jax", weight=w, axis_name="d")
    ref_v, ref_g = jax.value_and_grad(lambda x: full(x, t, sample_weight=sw))(x)
    theta = 1.3
    ref_pg = jax.grad(lambda th: full(x * th, t, sample_weight=sw))(theta)
    sh = lambda a: a.reshape(N_DEVICES, n // N_DEVICES, *a.shape[1:])  # noqa: E731
    v, g = jax.pmap(jax.value_and_grad(lambda x, t, s: dist(x, t, sample_weight=s)),
                    axis_name="d")(sh(x), sh(t), sh(sw))
    pg = jax.pmap(
        lambda th, x, t, s: jax.lax.pmean(
            jax.grad(lambda th: dist(x * th, t, sample_weight=s))(th), "d"),
        axis_name="d", in_axes=(None, 0, 0, 0))(theta, sh(x), sh(t), sh(sw))
    return {
        "value": testing.rel_error(np.asarray(v), np.full(N_DEVICES, float(ref_v))),
        "grad_times_devices": testing.rel_error(np.asarray(g).reshape(x.shape) / N_DEVICES,
                                                np.asarray(ref_g)),
        "param_grad_pmean": testing.rel_error(np.asarray(pg), np.full(N_DEVICES, float(ref_pg))),
    }


def _pair_case(jax, multiloss, mesh, name, inputs, opts):  # pragma: no cover - subprocess
    """A fused pair form whose NLL term divides by the batch's chosen tokens (linear_cpo,
    linear_orpo) inside shard_map with axis_name: each device holds [its chosen; its rejected]
    rows, and its value and gradients (the hidden states' block, the replicated head's sum)
    are the whole batch's on one device."""
    from jax.sharding import PartitionSpec as P

    x, w, t = inputs
    n = x.shape[0] // 2
    k = n // N_DEVICES
    # the device-major row order: device d's pairs d*k .. (d+1)*k-1, chosen then rejected
    perm = np.concatenate([testing.pair_rows(np.arange(d * k, (d + 1) * k), n)
                           for d in range(N_DEVICES)])
    full = multiloss.get(name, "jax", **opts)
    ref_v, (ref_dx, ref_dw) = jax.value_and_grad(full, (0, 1))(x, w, t)
    dloss = multiloss.get(name, "jax", axis_name="b", **opts)
    fn = jax.jit(jax.shard_map(jax.value_and_grad(dloss, (0, 1)), mesh=mesh,
                               in_specs=(P("b"), P(), P("b")), out_specs=(P(), (P("b"), P()))))
    v, (dx, dw) = fn(x[perm], w, t[perm])
    dx_full = np.empty_like(np.asarray(ref_dx))
    dx_full[perm] = np.asarray(dx)
    # the device-local count (the bug this case guards against) differs from the global one
    local = [float(np.sum(t[perm][i * 2 * k:i * 2 * k + k] != -100)) for i in range(N_DEVICES)]
    assert len(set(local)) > 1, local
    return {"value": testing.rel_error(np.asarray(v), np.asarray(ref_v)),
            "d_input": testing.rel_error(dx_full, np.asarray(ref_dx)),
            "d_linear_weight": testing.rel_error(np.asarray(dw), np.asarray(ref_dw))}


def _device_mismatch(jax, multiloss):  # pragma: no cover - runs in the subprocess
    """Inputs committed to different devices: ValueError naming the argument."""
    d = jax.devices()
    x = jax.device_put(np.ones((3, 5)), d[0])
    t = jax.device_put(np.array([0, 1, 2]), d[1])
    try:
        multiloss.get("cross_entropy", "jax")(x, t)
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return "no error"


# ---------------------------------------------------------------------------------------------
# the tests


def _run_worker():
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={N_DEVICES}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, __file__, "--worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-5000:]
    return json.loads(lines[-1][len("RESULTS "):])


#: started early under pytest-xdist (conftest.pytest_runtestloop)
SHARED_ONCE = {"sharding": lambda tmp_path_factory: _run_worker()}


@pytest.fixture(scope="session")
def results(shared_once):
    return shared_once("sharding", _run_worker)


CASE_IDS = [cid for cid, *_ in cases()]
HETEROGENEOUS = {cid for _, cid, *_ in testing._heterogeneous_cases()}


def _check(res, what):
    assert isinstance(res, dict), f"{what}: {res}"
    bad = {k: v for k, v in res.items() if not v <= TOL}
    assert not bad, f"{what}: errors above {TOL:.0e}: {bad}"


@pytest.mark.parametrize("cid", CASE_IDS)
def test_sharded_jit_equals_single_device(results, cid):
    res = results[cid]
    assert "error" not in res, res["error"]
    # at least one input really was split over the 8 devices
    assert any("'b'" in s for s in res["shardings"]), res["shardings"]
    _check(res["jit-explicit"], "jit, Explicit mesh axes")
    if cid.split(":", 1)[1] in HETEROGENEOUS:
        _check(res["jit-auto"], "jit, Auto mesh axes")


@pytest.mark.parametrize("cid", [c for c in CASE_IDS if not c.startswith("ctc:ctc[concat")])
def test_shard_map_axis_name_equals_full_batch(results, cid):
    res = results[cid]
    assert "error" not in res, res["error"]
    _check(res["shard_map"], "shard_map with axis_name")
    if "denominator" in res:
        assert res["denominator"] <= TOL


def test_the_custom_cases_are_heterogeneous():
    """The hand-made shards differ: one has every target ignored, one every weight 0, the
    numbers of ignored targets differ."""
    _, _, (x, t), _, sw = next(c for c in testing._heterogeneous_cases()
                               if c[1] == "tokens-plain-mean")
    ignored = (t == -100).reshape(N_DEVICES, -1).sum(axis=1)
    assert ignored[0] == t[:2].size and len(set(ignored.tolist())) >= 4
    assert not sw.reshape(N_DEVICES, -1)[3].any()


def test_all_ignored_batch_gives_nan_or_zero_with_zero_gradient(results):
    for empty in ("nan", "zero"):
        assert results[f"cross_entropy:all-ignored-{empty}"]["value"] is not None
    assert np.isnan(results["cross_entropy:all-ignored-nan"]["value"])
    assert results["cross_entropy:all-ignored-zero"]["value"] == 0.0


def test_pmap_axis_name(results):
    _check(results["__pmap__"], "pmap")


@pytest.mark.parametrize("cid", [c for c, *_ in testing.fused_pair_cases()])
def test_shard_map_fused_pair_nll_counts_the_whole_batch(results, cid):
    """linear_cpo's and linear_orpo's NLL term (the chosen tokens' mean over the batch) under
    shard_map with axis_name: the whole batch's count, not each device's."""
    _check(results[f"__pairs__:{cid}"], "shard_map with axis_name, fused pair form")


def test_inputs_on_different_devices(results):
    assert results["__devices__"].startswith("ValueError: target: expected an array on"), \
        results["__devices__"]


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker()
