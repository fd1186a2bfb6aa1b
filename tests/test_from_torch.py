"""multiloss.from_torch: a live torch criterion to the multiloss JAX loss with the same numbers.

Every torch.nn loss class, with every option combination of the parity grid that a torch
module can express (torch's reductions, no sample weight): the criterion itself is the
reference, values and gradients with respect to every differentiable input. A test is up to
``BATCH`` cases of one class (``MSELoss[0:32]``), their JAX side compiled as one program."""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest
import torch
import torch.nn.modules.loss as torch_losses

import multiloss
from multiloss import testing

jax.config.update("jax_enable_x64", True)

# NLLLoss2d is converted on purpose (a torch.nn loss class, deprecated in torch): its
# FutureWarning is expected here
pytestmark = pytest.mark.filterwarnings("ignore:`NLLLoss2d` has been deprecated:FutureWarning")

TORCH_CLASSES = {
    name: cls for name, cls in vars(torch_losses).items()
    if inspect.isclass(cls) and issubclass(cls, torch_losses._Loss) and not name.startswith("_")
    and name != "LinearCrossEntropyLoss"
}


def _criterion(cls, spec, sample):
    """The torch module for a sample, or None if a module cannot express its options."""
    params = inspect.signature(cls.__init__).parameters
    opts = sample.options
    if sample.sample_weight is not None or opts.get("empty_reduction", "nan") != "nan":
        return None
    if opts.get("reduction", "mean") not in ("mean", "sum", "none", "batchmean"):
        return None
    if sample.contract_reference:
        return None
    kwargs = {}
    for k, v in opts.items():
        if k in ("validate", "empty_reduction"):
            continue
        if k not in params:
            return None  # e.g. torch 2.13's functional weight of mse, which MSELoss lacks
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v.copy())
        elif k == "distance_function":
            if v not in (None, "pairwise"):
                return None  # "cosine" is a torch callable here: no JAX twin to convert to
            v = None  # torch's default, PairwiseDistance()
        kwargs[k] = v
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # made at collection too, where the module's pytestmark does not reach
        warnings.filterwarnings("ignore", "`NLLLoss2d` has been deprecated", FutureWarning)
        return cls(**kwargs)


def _cases():
    out = []
    for name, cls in sorted(TORCH_CLASSES.items()):
        spec = multiloss.resolve(name)
        for sample in testing.samples_for(spec, "float64"):
            if _criterion(cls, spec, sample) is not None:
                out.append((name, spec, sample))
    return out


CASES = _cases()

#: cases of one class whose JAX values and gradients one XLA program computes (the cost of a
#: small case on CPU is its compilation, as in tests/test_parity.py)
BATCH = 32


def _batches():
    by_class = {}
    for name, spec, sample in CASES:
        by_class.setdefault(name, []).append((spec, sample))
    for name, cases in by_class.items():
        for start in range(0, len(cases), BATCH):
            part = cases[start:start + BATCH]
            yield pytest.param(name, part, id=f"{name}[{start}:{start + len(part)}]")


def _torch_case(name, spec, sample):
    """(the converted JAX loss, the differentiated positions, the criterion's value and
    gradients for the sample's cotangent) of one case."""
    import warnings

    criterion = _criterion(TORCH_CLASSES[name], spec, sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = multiloss.from_torch(criterion)
    pos = testing._diff_positions(spec, sample)
    tensors = [torch.from_numpy(np.array(x)) for x in sample.inputs]
    for i in pos:
        tensors[i].requires_grad_(True)
    args = list(tensors)
    if name == "GaussianNLLLoss" and args[2].ndim == 0:
        args[2] = args[2].expand_as(args[0])  # torch takes a Python float here, not a 0-d tensor
    if name == "PoissonNLLLoss" and not args[1].is_floating_point():
        args[1] = args[1].to(args[0].dtype)  # documented: integer counts in the input's dtype
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = criterion(*args)
    ref_grads = testing._torch_grads(torch, ref, [tensors[i] for i in pos], sample)
    return loss, pos, ref.detach().numpy(), ref_grads


@pytest.mark.parametrize("name,cases", list(_batches()))
def test_from_torch_matches_the_criterion(name, cases):
    """Each case's converted loss against its criterion, values and gradients (1e-12). The
    JAX side of the batch is one jitted program (each case's own vjp and cotangent); if it
    fails to compile, each case runs alone and a failing one is reported by its id."""
    prepared = [_torch_case(name, spec, sample) for spec, sample in cases]
    fns = [testing._value_and_grads(spec, sample, pos, loss=loss)
           for (loss, pos, _, _), (spec, sample) in zip(prepared, cases)]
    primals = [[sample.inputs[i] for i in p[1]] for p, (_, sample) in zip(prepared, cases)]
    try:
        outs = testing.jit_together(fns, primals)
    except Exception:  # noqa: BLE001 - each case alone reports its own error
        outs = []
        for f, p in zip(fns, primals):
            try:
                outs.append(jax.jit(f)(p))
            except Exception as e:  # noqa: BLE001 - reported below by the case's id
                outs.append(e)
    failures = []
    for (spec, sample), (_, pos, ref, ref_grads), res in zip(cases, prepared, outs):
        if isinstance(res, Exception):
            failures.append(f"{sample.id}: {type(res).__name__}: {res}")
            continue
        out, grads = res
        errors = {"value": testing.rel_error(out, ref)}
        for g, rg, i in zip(grads, ref_grads, pos, strict=True):
            errors[spec.inputs[i].name] = testing.rel_error(g, rg)
        bad = {k: v for k, v in errors.items() if not v <= 1e-12}
        if bad:
            failures.append(f"{sample.id}: {bad}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


def test_every_torch_loss_class_is_exercised():
    seen = {name for name, _, _ in CASES}
    assert seen == set(TORCH_CLASSES), set(TORCH_CLASSES) - seen


def test_options_and_buffers_are_copied():
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    ce = torch.nn.CrossEntropyLoss(weight=w, ignore_index=0, label_smoothing=0.1,
                                   reduction="sum")
    loss = multiloss.from_torch(ce)
    assert loss.options["ignore_index"] == 0
    assert loss.options["label_smoothing"] == 0.1
    assert loss.options["reduction"] == "sum"
    np.testing.assert_array_equal(np.asarray(loss.options["weight"]), w.numpy())
    w[0] = 100.0  # later changes to the criterion's buffer do not reach the loss
    assert float(np.asarray(loss.options["weight"])[0]) == 1.0
    x = np.random.default_rng(0).normal(size=(4, 3))
    t = np.array([0, 1, 2, 1])
    ce.weight[0] = 1.0
    want = ce(torch.from_numpy(x), torch.from_numpy(t)).item()
    assert abs(float(loss(x, t)) - want) <= 1e-12 * abs(want)


def test_to_the_torch_backend():
    crit = torch.nn.HuberLoss(delta=0.5, reduction="none")
    loss = multiloss.from_torch(crit, backend="torch")
    assert isinstance(loss, torch.nn.Module)
    x, t = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(loss(x, t), crit(x, t), rtol=0, atol=0)


def test_subclass_without_forward_is_its_base():
    class Mine(torch.nn.MSELoss):
        pass

    loss = multiloss.from_torch(Mine(reduction="sum"))
    assert loss.spec.name == "mse" and loss.options["reduction"] == "sum"


def test_subclass_with_custom_forward_is_an_error():
    class Scaled(torch.nn.MSELoss):
        def forward(self, input, target):
            return 2 * super().forward(input, target)

    with pytest.raises(TypeError, match=r"^criterion: .*Scaled subclasses torch.nn.MSELoss but "
                       r"overrides forward"):
        multiloss.from_torch(Scaled())


@pytest.mark.parametrize("bad", [torch.nn.Linear(2, 2), object(), "mse", None])
def test_not_a_torch_loss(bad):
    with pytest.raises(TypeError, match=r"^criterion: expected a torch.nn loss module"):
        multiloss.from_torch(bad)


def test_deprecated_reduction_name():
    crit = torch.nn.L1Loss()
    crit.reduction = "elementwise_mean"
    with pytest.raises(ValueError, match=r"^criterion.reduction: expected 'mean', 'sum' or 'none', "
                       r"got 'elementwise_mean' \(deprecated in torch: use 'mean'\)"):
        multiloss.from_torch(crit)


def test_legacy_size_average_is_read_as_the_reduction_torch_made_of_it():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        crit = torch.nn.MSELoss(size_average=False)  # torch turns this into reduction="sum"
    assert multiloss.from_torch(crit).options["reduction"] == "sum"


def test_linear_cross_entropy_criterion_says_how_to_port_its_parameters():
    """LinearCrossEntropyLoss holds a linear layer; multiloss' linear_cross_entropy takes its
    weight as an input: the conversion refuses and says how, rather than return a loss of
    another call signature."""
    crit = torch_losses.LinearCrossEntropyLoss(4, 3)
    with pytest.raises(ValueError, match=r"^criterion: torch.nn.LinearCrossEntropyLoss holds a "
                       r"linear layer.*multiloss.get\('linear_cross_entropy'"):
        multiloss.from_torch(crit)


def test_a_torch_distance_callable_cannot_be_converted():
    crit = torch.nn.TripletMarginWithDistanceLoss(distance_function=lambda a, b: (a - b).abs().sum(-1))
    with pytest.raises(ValueError, match=r"^distance_function: the torch callable .* cannot be "
                       r"converted to JAX"):
        multiloss.from_torch(crit)


@pytest.mark.parametrize("attr,value", [("size_average", False), ("reduce", False)])
def test_deprecated_size_average_or_reduce_attributes(attr, value):
    crit = torch.nn.MSELoss()
    setattr(crit, attr, value)  # what old code did; torch 2.13 keeps only `reduction`
    with pytest.raises(ValueError, match=rf"^criterion: carries torch's deprecated {attr}=False; "
                       r"set criterion.reduction"):
        multiloss.from_torch(crit)
