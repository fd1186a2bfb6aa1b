"""The reference bridge for references written on JAX (``multiloss.losses._common.
jax_reference``) and the per-spec reduction defaults and aliases of the registry."""

import dataclasses

import numpy as np
import pytest
import torch

import multiloss
from multiloss import _registry
from multiloss.losses._common import jax_reference
from multiloss.testing import enable_x64


def test_jax_reference_gives_jax_values_and_vjp_gradients_as_torch():
    import optax

    enable_x64()
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(5, 3)), rng.uniform(size=(5, 3))
    ref = jax_reference(lambda x, t, opts, reduction: optax.sigmoid_binary_cross_entropy(x, t))
    xt = torch.from_numpy(x).requires_grad_(True)
    tt = torch.from_numpy(t).requires_grad_(True)
    out = ref(torch, [xt, tt], {}, "none")
    expect = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(x).requires_grad_(True), torch.from_numpy(t), reduction="none")
    np.testing.assert_allclose(out.detach().numpy(), expect.detach().numpy(), rtol=1e-13)
    ct = torch.from_numpy(rng.uniform(size=(5, 3)))
    gx, gt = torch.autograd.grad(out, [xt, tt], ct)
    sig = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(gx.numpy(), (sig - t) * ct.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gt.numpy(), -x * ct.numpy(), rtol=1e-12)
    assert out.dtype == torch.float64


def test_jax_reference_without_differentiable_inputs_and_with_array_options():
    enable_x64()
    ref = jax_reference(lambda x, opts, reduction: x.sum() * opts["w"].sum())
    out = ref(torch, [torch.ones(3, dtype=torch.float64)],
              {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}, "sum")
    assert float(out) == 9.0 and not out.requires_grad


def test_a_spec_may_change_the_reduction_defaults_and_name_aliases():
    spec = dataclasses.replace(
        multiloss.resolve("mse") if hasattr(multiloss, "resolve") else _registry.resolve("mse"),
        default_reduction="sum_over_batch_size", default_empty_reduction="zero",
        reduction_aliases={"mean_with_sample_weight": "mean"}, _option_map={})
    bound = spec.bind({})
    assert bound["reduction"] == "sum_over_batch_size"
    assert bound["empty_reduction"] == "zero"
    assert spec.bind({"reduction": "mean_with_sample_weight"})["reduction"] == "mean"
    with pytest.raises(ValueError, match=r"reduction: expected one of .*"
                       r"'mean_with_sample_weight'\], got 'avg'"):
        spec.bind({"reduction": "avg"})
    assert "'mean_with_sample_weight' is 'mean'" in spec.doc()


@pytest.mark.parametrize("name,opts,coupled", [
    ("ntxent", {}, True), ("supcon", {}, True), ("contrastive", {}, True), ("dice", {}, True),
    ("keras.circle", {}, True), ("lovasz", {}, True), ("lovasz", {"per_image": True}, False),
    ("generalized_dice", {"batch": True}, True), ("generalized_dice", {}, False),
    ("keras.dice", {}, True), ("keras.dice", {"axis": (1, 2)}, False),
    ("cross_entropy", {}, False),
])
def test_batch_coupled_losses_refuse_data_parallel_options(name, opts, coupled):
    """A loss whose rows depend on each other (for some options) cannot psum per-shard terms
    into the whole batch's loss: axis_name / process_group raise, naming the option and the
    way out; with options that keep the rows apart they are accepted."""
    spec = _registry.resolve(name)
    assert spec.coupled(spec.bind(opts)) == coupled
    for backend, opt, value in (("jax", "axis_name", "batch"), ("torch", "process_group", "world")):
        if coupled:
            with pytest.raises(ValueError, match=rf"{opt}: .*couples the rows.*all_gather"):
                multiloss.get(name, backend=backend, **opts, **{opt: value})
        else:
            multiloss.get(name, backend=backend, **opts, **{opt: value})
