"""Every registered loss through the JAX tools a training script applies to every step
(issue 15; docs "Works with"):

- float16 / bfloat16: values *and gradients* computed in float32 and rounded once to the
  inputs' dtype (docs/distributed.md §4), against torch's float32 reference function on the
  same rounded inputs;
- keyword calls ``loss(input=x, target=t)``: the spec's input names (torch's), torch's own
  names where they differ (``log_input``), mixed with positions, under ``jax.jit`` and
  ``jax.grad``; clear errors for unknown, repeated and missing inputs;
- sharding: ``jax.jit`` of a loss and of its gradient on inputs placed with a
  ``NamedSharding`` over ``jax.make_mesh`` with Explicit and with Auto axes, with and
  without ``jax.set_mesh``, gives the single-device numbers (float64, 1e-12 relative); an
  8-device subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=8``, as
  tests/test_sharding.py);
- ``axis_name`` outside ``shard_map``: our ValueError saying where ``axis_name`` belongs;
- JAX's default 32-bit mode: an integer option beyond int32 (``ignore_index=2**40``) raises
  when the loss is made, naming the option.

CI runs one case per loss for each tool (the representative sample of
``multiloss.testing.data_parallel_cases`` for sharding, Explicit axes without ``set_mesh``
for every loss and every mesh kind for a subset). ``MULTILOSS_LONG=1`` runs the exhaustive
variants: every sample of every loss in both low-precision dtypes, every mesh kind with and
without ``set_mesh`` for every loss and every reduction::

    MULTILOSS_LONG=1 python -m pytest -q -n 2 tests/test_works_with_jax.py tests/test_pickle.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
import pytest

import multiloss
from multiloss import testing
from multiloss.backends._jax import INDEX_OPTIONS as INDEX_OPTION_NAMES

jax.config.update("jax_enable_x64", True)

LONG = os.environ.get("MULTILOSS_LONG") == "1"
ROOT = Path(__file__).resolve().parent.parent
LOW = ("bfloat16", "float16")


def _grid(spec, dtype="float64"):
    """The sample grid without empty batches (nothing to round or to shard)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [s for s in testing.samples_for(spec, dtype)
                if "empty" not in s.id and all(np.asarray(x).size for x in s.inputs)]


# ---------------------------------------------------------------------------------------------
# 1. float16 / bfloat16: values and gradients in float32, rounded once


def _half_head(spec, sample):
    """A fused-linear form of the language-model head whose float16/bfloat16 head is not
    converted to float32: its logits and their gradient are rounded to the head's dtype, as
    TRL 1.16's fused head and a half matrix product do (docs/fused-linear.md), so it is not
    "computed in float32 and rounded once"; tests/test_fused_linear.py checks it against
    TRL's fused head (both paths, both backends) and tests/test_mixed_precision.py against the
    reference's half computation."""
    fused = spec.name != "linear_cross_entropy" and any(
        a.startswith("fused_linear_") for a in spec.aliases)
    return fused and not spec.conversion_rules(spec.bind(sample.options))


def _low_precision_cases():
    out = []
    for k, spec in enumerate(testing.all_specs()):
        grid = [s for s in _grid(spec, "float32") if not _half_head(spec, s)]
        if not grid:
            continue
        if LONG:
            out += [(spec, s, d) for s in grid for d in LOW]
            continue
        # one case per loss, the dtypes alternating; a sample with a sample weight (its
        # gradient is compared too) and options where the grid has one
        rich = [s for s in grid if s.sample_weight is not None and s.options] or \
            [s for s in grid if s.sample_weight is not None or s.options] or grid
        out.append((spec, rich[len(rich) // 2], LOW[k % 2]))
    return [pytest.param(spec, s, d, id=f"{d}-{s.id}", marks=[pytest.mark.xfail(
        strict=True, reason=KNOWN_TIES)] if f"{d}-{s.id}" in TIED else []) for spec, s, d in out]


#: Rounded to bfloat16, this sample has tied errors, where lovasz's gradient (a kink: the
#: order of the sorted errors) differs from segmentation_models_pytorch's on both backends,
#: in float64 too (0.024 relative): not a matter of precision (reported; MULTILOSS_LONG only)
KNOWN_TIES = "lovasz's subgradient at tied errors differs from smp's sort order"
TIED = ("bfloat16-lovasz,mode=multilabel,per_image=False,reduction=mean,sw=False",)


def _round_to(dtype, a):
    import torch

    t = torch.from_numpy(np.array(a))
    return t.to(getattr(torch, dtype)).float().numpy() if t.is_floating_point() else t.numpy()


@pytest.mark.parametrize("spec,sample,dtype", _low_precision_cases())
def test_low_precision_values_and_gradients_are_float32_rounded_once(spec, sample, dtype):
    """The JAX value and the gradient w.r.t. every differentiable input (and the sample
    weight) have the inputs' dtype and are within half an ulp of that dtype (plus float32's
    parity tolerance) of torch's float32 reference on the same rounded inputs, relative to
    the reference's scale; where the float32 result is beyond the dtype's range it is the
    same infinity (the rounding of an overflow)."""
    import torch

    eps = testing.low_precision_eps(dtype)
    # the rounded sample in float32: the reference's inputs; the JAX inputs are these, cast
    opts = {k: (_round_to(dtype, v) if isinstance(v, np.ndarray) else v)
            for k, v in sample.options.items()}
    ref_sample = sample._replace(
        inputs=tuple(_round_to(dtype, x) for x in sample.inputs), options=opts,
        sample_weight=None if sample.sample_weight is None else _round_to(dtype,
                                                                           sample.sample_weight))
    pos = testing._diff_positions(spec, ref_sample)
    with_sw = testing._sw_differentiable(spec, ref_sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tensors, tsw, wrt = testing._torch_inputs(torch, spec, ref_sample)
        ref = testing.reference_value(torch, spec, ref_sample, tensors, tsw)
        ref_g = torch.autograd.grad(ref.sum(), wrt, allow_unused=True) if wrt else ()
    ref_g = [np.zeros(w.shape) if g is None else g.double().numpy() for g, w in zip(ref_g, wrt)]
    ref = ref.detach().double().numpy()

    def low(a):
        a = np.asarray(a)
        return jnp.asarray(a).astype(dtype) if a.dtype.kind == "f" else a

    loss = multiloss.get(spec.name, "jax", **{k: (low(v) if isinstance(v, np.ndarray) else v)
                                              for k, v in opts.items()})
    inputs = [low(x) for x in ref_sample.inputs]
    sw = None if ref_sample.sample_weight is None else low(ref_sample.sample_weight)

    def f(*diff):
        args = list(inputs)
        for i, v in zip(pos, diff):
            args[i] = v
        return loss(*args, sample_weight=diff[-1] if with_sw else sw)

    primals = [inputs[i] for i in pos] + ([sw] if with_sw else [])

    @jax.jit
    def value_and_grads(primals):
        out, vjp = jax.vjp(f, *primals)
        return out, vjp(jnp.ones_like(out))

    out, grads = value_and_grads(primals)
    # the inputs' dtype, or float32 where the reference upcasts (LossSpec.converts: the box
    # losses as torchvision's _upcast_non_float, lovasz as smp)
    from multiloss._registry import array_info, common_float

    floats = [i.dtype for i in spec.converted([array_info(x) for x in inputs], loss.options)
              if i.kind == "f"]
    assert out.dtype == jnp.dtype(common_float(floats)), out.dtype
    assert [str(g.dtype) for g in grads] == [str(p.dtype) for p in primals]
    tol = eps / 2 + testing.TOLERANCE["float32"]
    for what, ours, r, floor in [("value", out, ref, 1.0),
                                 *[(f"d{k}", g, rg, 0.0) for k, g, rg in zip(
                                     [spec.inputs[i].name for i in pos] + ["sample_weight"],
                                     grads, ref_g)]]:
        ours = np.asarray(jnp.asarray(ours, jnp.float64))
        # the float32 reference rounded to the dtype: which entries overflow to infinity
        expected = np.asarray(r, np.float32).astype(jnp.dtype(dtype)).astype(np.float64)
        finite = np.isfinite(expected)
        assert np.array_equal(np.isfinite(ours), finite), (what, ours, r)
        assert np.array_equal(ours[~finite], expected[~finite], equal_nan=True), (what, ours, r)
        if finite.any():
            scale = max(np.abs(r[finite]).max(), floor)
            err = np.abs(ours[finite] - r[finite]).max() / scale if scale else 0.0
            assert err <= tol, f"{what}: {err / eps:.2f} ulp of {dtype} (tolerance {tol / eps:.2f})"


# ---------------------------------------------------------------------------------------------
# 2. keyword calls


def _keyword_cases():
    out = []
    for spec in testing.all_specs():
        grid = _grid(spec)
        out.append(pytest.param(spec, next((s for s in grid if s.sample_weight is not None),
                                           grid[0]), id=spec.name))
    return out


@pytest.mark.parametrize("spec,sample", _keyword_cases())
def test_inputs_by_keyword_trace_the_positional_call(spec, sample):
    """Every loss: a call by keyword (in reverse order) traces to the same computation as the
    positional call (the jaxprs are equal: the inputs reach the same places), and the
    errors for an input given twice, an unknown keyword and a missing input."""
    loss = multiloss.get(spec.name, "jax", **sample.options)
    names = [i.name for i in spec.inputs]
    inputs = [np.asarray(x) for x in sample.inputs]
    sw = sample.sample_weight
    by_name = dict(zip(names, inputs))

    def reverse(a):  # the keywords in reverse order
        return dict(reversed(list(zip(names, a))))

    want = str(jax.make_jaxpr(lambda a: loss(*a, sample_weight=sw))(inputs))
    assert str(jax.make_jaxpr(lambda a: loss(**reverse(a), sample_weight=sw))(inputs)) == want
    # the first input by position, the others by keyword
    assert str(jax.make_jaxpr(lambda a: loss(a[0], **dict(list(reverse(a).items())[:-1]),
                                             sample_weight=sw))(inputs)) == want
    with pytest.raises(TypeError, match=rf"input '{names[0]}' given by position and by keyword"):
        loss(inputs[0], **by_name)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'targets_typo'.*takes "
                                        + ", ".join(names)):
        loss(*inputs, targets_typo=inputs[-1])
    _missing_input_raises(spec, loss, by_name)


def _missing_input_raises(spec, loss, by_name):
    """A call without the last required input raises, naming it; an optional input
    (``InputSpec.optional``: GRPO's ref_logps, the distillation losses' labels) left out gives
    the same as passing None."""
    required = [i.name for i in spec.inputs if not i.optional]
    if len(required) > 1:
        with pytest.raises(TypeError, match=rf"missing input\(s\) '{required[-1]}'"):
            loss(**{k: v for k, v in by_name.items() if k != required[-1]})
    for i in spec.inputs:
        if i.optional and i.name in by_name:
            given = {k: v for k, v in by_name.items() if k != i.name}
            out = []
            for call in (given, {**given, i.name: None}):
                try:
                    out.append(np.asarray(loss(**call)))
                except ValueError as e:  # needed with these options (grpo's ref_logps, beta)
                    assert e.args[0].startswith(f"{i.name}: "), e
                    out.append(e.args[0])
            if isinstance(out[0], str):
                assert out[0] == out[1]
            else:
                np.testing.assert_array_equal(out[0], out[1])


KEYWORD_SUBSET = ("cross_entropy", "ctc", "linear_cross_entropy", "gaussian_nll",
                  "triplet_margin", "keras.categorical_crossentropy", "ntxent", "giou")


@pytest.mark.parametrize("spec,sample", [c for c in _keyword_cases()
                                         if LONG or c.id in KEYWORD_SUBSET])
def test_inputs_by_keyword(spec, sample):
    """``loss(**{name: x})`` with the spec's input names (torch's), in any order, mixed with
    positions, with and without a sample weight, under jit and grad: the positional call's
    numbers exactly."""
    loss = multiloss.get(spec.name, "jax", **sample.options)
    names = [i.name for i in spec.inputs]
    inputs = [np.asarray(x) for x in sample.inputs]
    sw = sample.sample_weight
    want = np.asarray(loss(*inputs, sample_weight=sw))
    by_name = dict(zip(names, inputs))
    reverse = dict(reversed(list(by_name.items())))
    np.testing.assert_array_equal(np.asarray(loss(**reverse, sample_weight=sw)), want)
    np.testing.assert_array_equal(np.asarray(loss(inputs[0], **dict(list(by_name.items())[1:]),
                                                  sample_weight=sw)), want)
    # under the user's jit (XLA may fuse the two differently: to rounding)
    assert testing.rel_error(np.asarray(jax.jit(lambda kw: loss(**kw, sample_weight=sw))(
        by_name)), want) <= 1e-12
    pos = testing._diff_positions(spec, sample)
    if pos:
        i = pos[0]

        def by_keyword(x):
            return jnp.sum(loss(**{**by_name, names[i]: x}, sample_weight=sw))

        def by_position(x):
            args = list(inputs)
            args[i] = x
            return jnp.sum(loss(*args, sample_weight=sw))

        assert testing.rel_error(np.asarray(jax.grad(by_keyword)(inputs[i])),
                                 np.asarray(jax.grad(by_position)(inputs[i]))) <= 1e-12
    # the same input twice, an unknown keyword, a missing input
    with pytest.raises(TypeError, match=rf"input '{names[0]}' given by position and by keyword"):
        loss(inputs[0], **by_name)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'targets_typo'.*takes "
                                        + ", ".join(names)):
        loss(*inputs, targets_typo=inputs[-1])
    _missing_input_raises(spec, loss, by_name)


def test_torch_argument_names_where_they_differ():
    """torch's PoissonNLLLoss.forward(log_input, target): ``log_input=`` names the input, as
    torch's own module takes it."""
    import torch

    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(4, 3)), rng.poisson(2.0, size=(4, 3)).astype(np.float64)
    loss = multiloss.get("poisson_nll", "jax")
    ref = torch.nn.PoissonNLLLoss()(log_input=torch.from_numpy(x), target=torch.from_numpy(t))
    got = loss(log_input=x, target=t)
    assert testing.rel_error(np.asarray(got), ref.numpy()) <= 1e-12
    with pytest.raises(TypeError, match="given twice"):
        loss(input=x, log_input=x, target=t)


def test_a_loss_option_at_the_call_says_where_it_belongs():
    loss = multiloss.get("cross_entropy", "jax")
    with pytest.raises(TypeError, match=r"'reduction' is an option of the loss, given when it "
                                        r"is made: multiloss.get\('cross_entropy', reduction"):
        loss(np.zeros((2, 3)), np.array([0, 1]), reduction="sum")


def test_keras_names_in_keras_order():
    """Keras calls ``loss(y_true, y_pred)``; by keyword the order does not matter."""
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    loss = multiloss.get("keras.huber", "jax")
    import keras

    ref = keras.losses.Huber()(y_true, y_pred)
    assert testing.rel_error(np.asarray(loss(y_true=y_true, y_pred=y_pred)),
                             np.asarray(ref, np.float64)) <= 1e-6  # Keras computes in float32


# ---------------------------------------------------------------------------------------------
# 3. axis_name outside shard_map; integer options in 32-bit mode


def _uncoupled():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [n for n in multiloss.available()
                if not multiloss.resolve(n).coupled(multiloss.resolve(n).bind({}))]


@pytest.mark.parametrize("name", _uncoupled())
def test_axis_name_outside_shard_map_says_where_it_belongs(name):
    spec = multiloss.resolve(name)
    sample = _grid(spec)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            loss = multiloss.get(name, "jax", axis_name="batch", **sample.options)
        except ValueError as e:  # options that couple the batch: refused when made
            assert str(e).startswith("axis_name:"), e
            return
    inputs = [np.asarray(x) for x in sample.inputs]
    want = r"^axis_name='batch': .* bound only inside jax.shard_map"
    red = loss.options["reduction"]
    if red == "none":  # nothing is summed: no axis needed, the local loss
        np.testing.assert_array_equal(np.asarray(loss(*inputs)), np.asarray(
            multiloss.get(name, "jax", **sample.options)(*inputs)))
        return
    with pytest.raises(ValueError, match=want):
        loss(*inputs)
    # under the user's jit and grad too (w.r.t. the first floating input: keras.* losses take
    # their integer labels first)
    i = next(k for k, x in enumerate(inputs) if np.issubdtype(x.dtype, np.floating))

    def f(x):
        return loss(*inputs[:i], x, *inputs[i + 1:])

    with pytest.raises(ValueError, match=want):
        jax.jit(jax.grad(f))(inputs[i])


def _int_options():
    """(loss, option) for every scalar option of the registry that binds an integer beyond
    int32: the class indices (``INDEX_OPTIONS``: checked in 32-bit mode) and the host-side
    sizes and axes."""
    out = []
    for spec in testing.all_specs():
        for o in spec.options:
            if o.kind == "array":
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    v = spec.bind({o.name: 2 ** 40})[o.name]
            except (TypeError, ValueError):
                continue
            if isinstance(v, int) and not isinstance(v, bool):
                out.append((spec.name, o.name))
    return out


INT_OPTIONS = _int_options()
INDEX_OPTIONS = [(n, o) for n, o in INT_OPTIONS if o in INDEX_OPTION_NAMES]


def test_integer_options_are_found():
    assert {("cross_entropy", "ignore_index"), ("nll", "ignore_index"), ("ctc", "blank"),
            ("linear_cross_entropy", "ignore_index"),
            ("keras.sparse_categorical_crossentropy", "ignore_class")} <= set(INDEX_OPTIONS)


def test_host_side_integer_options_are_not_limited_to_int32():
    """Sizes never enter the computation as arrays: a 1 TiB memory budget is a budget."""
    jax.config.update("jax_enable_x64", False)
    try:
        loss = multiloss.get("linear_cross_entropy", "jax", memory_budget=2 ** 40,
                             chunk_size=2 ** 33)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert loss.options["memory_budget"] == 2 ** 40


@pytest.mark.parametrize("name,option", INDEX_OPTIONS)
def test_index_option_beyond_int32_in_32_bit_mode_raises_when_made(name, option):
    spec = multiloss.resolve(name)
    jax.config.update("jax_enable_x64", False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for big in (2 ** 31, -(2 ** 31) - 1, 2 ** 40):
                try:
                    spec.bind({option: big})
                except ValueError:  # the option's own range already refuses it
                    continue
                with pytest.raises(ValueError, match=rf"^{option}: expected an integer in the "
                                                     r"int32 range .* got " + str(big)):
                    multiloss.get(name, "jax", **{option: big})
            multiloss.get(name, "jax", **{option: 2 ** 31 - 1})  # in range: made
    finally:
        jax.config.update("jax_enable_x64", True)
    with warnings.catch_warnings():  # 64-bit mode: int64 targets, any int64 index
        warnings.simplefilter("ignore", UserWarning)
        multiloss.get(name, "jax", **{option: 2 ** 40})


def test_ignore_index_at_the_int32_limit_works_in_32_bit_mode():
    """The largest int32 ignore_index is a working loss in 32-bit mode: torch's number (no
    target equals it)."""
    import torch

    jax.config.update("jax_enable_x64", False)
    try:
        rng = np.random.default_rng(2)
        x = rng.normal(size=(6, 4)).astype(np.float32)
        t = rng.integers(0, 4, size=6).astype(np.int32)
        got = multiloss.get("cross_entropy", "jax", ignore_index=2 ** 31 - 1)(x, t)
    finally:
        jax.config.update("jax_enable_x64", True)
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(t).long(),
                                            ignore_index=2 ** 31 - 1)
    assert testing.rel_error(np.asarray(got), ref.numpy(), 1.0) <= testing.TOLERANCE["float32"]


# ---------------------------------------------------------------------------------------------
# 4. sharding: Explicit and Auto meshes, with and without jax.set_mesh (8-device subprocess)

N_DEVICES = 8
CONFIGS = ("explicit", "explicit+set_mesh", "auto", "auto+set_mesh")
#: the losses that run under every mesh configuration in CI (all of them with MULTILOSS_LONG)
SUBSET = ("cross_entropy", "ctc", "linear_cross_entropy", "kl_div", "arcface", "ntxent",
          "dice", "keras.sparse_categorical_crossentropy")


def _coupled_case(spec):
    """A batch-coupled loss (in-batch pairs, counts over the batch): its first sample with a
    batch, rows tiled to a multiple of the devices along every input of the batch's length
    but a head weight (V, D) whose V happens to be that length.

    A fused-linear pair form's rows [chosen (n); rejected (n)] are tiled half by half, so
    that every pair stays a pair: tiling the whole batch 4 times (6 rows to 24) made each
    chosen row's rejected row a copy of itself, whose gradients with respect to the head
    cancel (exactly 0, computed as rounding noise ~1e-19: issue 17's "wrong head gradient"
    of linear_dpo and linear_simpo under sharding, a relative error of noise to noise)."""
    from multiloss.losses._lm._forms import FORMS

    paired = spec.name in FORMS and FORMS[spec.name].paired
    heads = {i for i, inp in enumerate(spec.inputs) if inp.name.endswith("linear_weight")}
    for s in _grid(spec):
        n = np.shape(s.inputs[0])[0] if np.ndim(s.inputs[0]) else 0
        if n < 2:
            continue
        reps = 1
        while (n * reps) % N_DEVICES:
            reps += 1
        pairs = np.tile(np.arange(n // 2), reps)
        rows = np.concatenate([pairs, pairs + n // 2]) if paired else np.tile(np.arange(n), reps)

        def tile(x, k=None, n=n, rows=rows, pairs=pairs):
            x = np.asarray(x)
            if not x.ndim or k in heads:
                return x
            if paired and k is None and x.shape[0] == n // 2:  # a weight per pair
                return x[pairs]
            return x[rows] if x.shape[0] == n else x

        sw = s.sample_weight
        return s._replace(inputs=tuple(tile(x, k) for k, x in enumerate(s.inputs)),
                          sample_weight=None if sw is None else tile(sw))
    return None


def sharding_cases():
    """[(case id, spec, sample, configs)] (NumPy only: built identically in the subprocess)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cases = testing.data_parallel_cases(N_DEVICES, LONG)
        seen = set()
        for cid, spec, sample, _ in cases:
            if cid.split(":", 1)[1] in _HETEROGENEOUS:
                # class weights gathered by target: the ShardingTypeError without
                # jax.set_mesh (the other hand-made batches: tests/test_sharding.py)
                if LONG or cid in CLASS_WEIGHTED:
                    out.append((cid, spec, sample, CONFIGS if LONG else ("explicit", "auto")))
                continue
            every = LONG or (spec.name in SUBSET and spec.name not in seen)
            seen.add(spec.name)
            out.append((cid, spec, sample, CONFIGS if every else ("explicit",)))
        for spec in testing.all_specs():
            if spec.name not in seen:
                sample = _coupled_case(spec)
                if sample is not None:
                    every = LONG or spec.name in SUBSET
                    out.append((f"{spec.name}:{sample.id}", spec, sample,
                                CONFIGS if every else ("explicit",)))
    return out


_HETEROGENEOUS = {cid for _, cid, *_ in testing._heterogeneous_cases()}
CLASS_WEIGHTED = ("cross_entropy:tokens-weighted-mean", "nll:weighted-ignored")


def _shard_input(x):
    from jax.sharding import PartitionSpec as P

    x = np.asarray(x)
    if x.ndim and x.shape[0] % N_DEVICES == 0:
        return P("b", *([None] * (x.ndim - 1)))
    return P()


def _run_sharding_case(spec, sample, configs, meshes):  # pragma: no cover - subprocess
    from jax.sharding import NamedSharding

    res = {}
    pos = testing._diff_positions(spec, sample)
    with_sw = testing._sw_differentiable(spec, sample)
    inputs = [np.asarray(x) for x in sample.inputs]
    sw = sample.sample_weight
    loss = multiloss.get(spec.name, "jax", **sample.options)
    out_shape = jax.eval_shape(lambda *a: loss(*a, sample_weight=sw), *inputs).shape
    ct = testing._cotangent(sample, out_shape, np.float64)

    def objective(diff, rest, sw, ct):
        args = list(rest)
        if with_sw:
            *diff, sw = diff
        for i, v in zip(pos, diff):
            args[i] = v
        out = loss(*args, sample_weight=sw)
        return jnp.sum(out * ct) if out.ndim else out

    vg = jax.jit(jax.value_and_grad(objective))
    primals = [inputs[i] for i in pos] + ([sw] if with_sw else [])
    ref_v, ref_g = vg(primals, inputs, sw, ct)
    ref_v, ref_g = np.asarray(ref_v), [np.asarray(g) for g in ref_g]
    res["scales"] = [float(np.max(np.abs(g), initial=0.0)) for g in ref_g]
    # the unreduced loss itself ("none"), or the value: the single-device call
    ref_out = np.asarray(loss(*inputs, sample_weight=sw)) if out_shape else ref_v
    for config in configs:
        mesh = meshes[config.split("+")[0]]

        def put(x, mesh=mesh):
            return None if x is None else jax.device_put(np.asarray(x), NamedSharding(
                mesh, _shard_input(x)))

        s_in, s_sw, s_ct = [put(x) for x in inputs], put(sw), put(ct)
        s_primals = [s_in[i] for i in pos] + ([s_sw] if with_sw else [])
        res["split"] = any("'b'" in str(x.sharding.spec) for x in s_in)

        # the loss called as it is (its own jit, none of the user's): once per loss in CI
        direct = LONG or config == configs[0]

        def run(s_in=s_in, s_sw=s_sw, s_ct=s_ct, s_primals=s_primals, direct=direct):
            v, g = vg(s_primals, s_in, s_sw, s_ct)
            out = loss(*s_in, sample_weight=s_sw) if direct else None
            return v, g, out

        try:
            if config.endswith("+set_mesh"):
                with jax.set_mesh(mesh):
                    v, g, out = run()
            else:
                v, g, out = run()
            e = {"value": testing.rel_error(np.asarray(v), ref_v)}
            if out is not None:
                e["call"] = testing.rel_error(np.asarray(out), ref_out)
            for k, (gi, ri) in enumerate(zip(g, ref_g, strict=True)):
                e[f"grad{k}"] = testing.rel_error(np.asarray(gi), ri)
            res[config] = e
        except Exception as e:  # noqa: BLE001 - reported per case
            res[config] = f"{type(e).__name__}: {e}"[:1500]
    return res


def _sharding_worker():  # pragma: no cover - runs in the subprocess
    from jax.sharding import AxisType

    assert len(jax.devices()) == N_DEVICES, jax.devices()
    warnings.simplefilter("ignore", UserWarning)
    meshes = {
        "explicit": jax.make_mesh((N_DEVICES,), ("b",), axis_types=(AxisType.Explicit,)),
        "auto": jax.make_mesh((N_DEVICES,), ("b",), axis_types=(AxisType.Auto,)),
    }
    # jax.make_mesh's default axis type is Explicit: the case the docs call "nothing to do"
    default = jax.make_mesh((N_DEVICES,), ("b",))
    results = {"__default_axis_types__": [str(t) for t in default.axis_types]}
    for cid, spec, sample, configs in sharding_cases():
        try:
            results[cid] = _run_sharding_case(spec, sample, configs, meshes)
        except Exception as e:  # noqa: BLE001 - reported per case
            results[cid] = {"error": f"{type(e).__name__}: {e}"[:1500]}
    print("RESULTS " + json.dumps(results))


def _run_sharding_worker():
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={N_DEVICES}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, __file__, "--sharding-worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800 if LONG else 600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-5000:]
    return json.loads(lines[-1][len("RESULTS "):])


_SHARDING_NAME = "works-with-sharding" + ("-long" if LONG else "")
#: started early under pytest-xdist (conftest.pytest_runtestloop)
SHARED_ONCE = {_SHARDING_NAME: lambda tmp_path_factory: _run_sharding_worker()}


@pytest.fixture(scope="session")
def sharding_results(shared_once):
    return shared_once(_SHARDING_NAME, _run_sharding_worker)


SHARDING_CASES = [(cid, configs) for cid, _, _, configs in sharding_cases()]


def test_every_loss_has_a_sharding_case():
    names = {cid.split(":", 1)[0] for cid, _ in SHARDING_CASES}
    assert names == set(multiloss.available())
    every = {cid.split(":", 1)[0] for cid, configs in SHARDING_CASES if configs == CONFIGS}
    assert set(SUBSET) <= every
    assert set(CLASS_WEIGHTED) <= {cid for cid, _ in SHARDING_CASES}


def test_make_mesh_defaults_to_explicit_axes(sharding_results):
    assert sharding_results["__default_axis_types__"] == ["AxisType.Explicit"]


@pytest.mark.parametrize("cid,configs", [pytest.param(c, k, id=c) for c, k in SHARDING_CASES])
def test_sharded_jit_gives_the_single_device_numbers(sharding_results, cid, configs):
    res = sharding_results[cid]
    assert "error" not in res, res["error"]
    assert res["split"], "no input was split over the devices"
    # a reference gradient that cancels to rounding noise makes every relative error noise
    # over noise (issue 17: chosen rows paired with copies of themselves)
    top = max(res["scales"])
    noise = [k for k, v in enumerate(res["scales"]) if 0.0 < v < 1e-8 * top]
    assert not noise, f"degenerate sample: gradients {noise} are rounding noise {res['scales']}"
    for config in configs:
        errors = res[config]
        assert isinstance(errors, dict), f"{config}: {errors}"
        bad = {k: v for k, v in errors.items() if not v <= 1e-12}
        assert not bad, f"{config}: errors above 1e-12: {bad}"


if __name__ == "__main__" and "--sharding-worker" in sys.argv:
    _sharding_worker()
