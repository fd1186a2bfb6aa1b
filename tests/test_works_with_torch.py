"""Every registered loss on the torch backend inside the tools a training script applies to
it (issue 15, docs "Works with"): torch.compile (cold, fullgraph, no graph break, our errors),
torch.func (grad, vmap, per-sample gradients), autocast, and keyword calling.

Numbers are asserted against the plain (eager) call or the reference. torch.compile is
expensive: CI compiles a subset that covers every code path of the wrapper (the direct op,
Terms + the contract's reduce, values checked in the graph, a custom autograd Function, a
sample weight); ``MULTILOSS_LONG=1`` compiles every loss's cases.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing

LONG = os.environ.get("MULTILOSS_LONG") == "1"
TOL = testing.TOLERANCE["float64"]

#: linear_cross_entropy's torch.func and autocast support belong to its own module (another
#: change of issue 15); it is compiled here like every loss.
OWN_FUNCTION = ("linear_cross_entropy",
                #: the fused-linear losses: the default path (an autograd function computing
                #: the gradient in the forward) raises under torch.func, naming the option;
                #: grad_in_forward=False under torch.func: tests/test_fused_linear_modes.py
                "linear_dpo", "linear_cpo", "linear_simpo", "linear_orpo", "linear_kto",
                "linear_grpo", "linear_generalized_jsd", "linear_forward_kl",
                "linear_reverse_kl", "linear_symmetric_kl", "linear_tvd")

#: The CI subset of torch.compile, one loss per code path: the direct op (mse, nll), a
#: value-checked loss (cross_entropy, ctc with three checked inputs, gaussian_nll whose checked
#: input is differentiated), Terms + reduce (focal, a class-weighted cross_entropy in the grid),
#: a custom autograd Function (keras.log_cosh), a loss from another library (giou, supcon).
COMPILE_SUBSET = ("mse", "nll", "cross_entropy", "ctc", "gaussian_nll", "focal",
                  "keras.log_cosh", "giou", "supcon")


def _nonempty(spec, dtype="float64", seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [s for s in testing.samples_for(spec, dtype, seed)
                if "empty" not in s.id and all(np.asarray(x).size for x in s.inputs)]


def _cases(spec, dtype="float64"):
    """Two samples of a loss: one without a sample weight (the direct path where the loss has
    one), one with (Terms and the contract's reduce)."""
    grid = _nonempty(spec, dtype)
    without = [s for s in grid if s.sample_weight is None]
    with_sw = [s for s in grid if s.sample_weight is not None]
    return ([without[0]] if without else []) + ([with_sw[len(with_sw) // 2]] if with_sw else [])


def _params(names=None, long_only=False):
    out = []
    for spec in testing.all_specs():
        if names is not None and spec.name not in names and not LONG:
            continue
        for s in _cases(spec):
            out.append(pytest.param(spec, s, id=s.id))
    return out


def _tensors(spec, sample, grad=True):
    pos = testing._diff_positions(spec, sample) if grad else []
    xs = [torch.from_numpy(np.array(x)).requires_grad_(i in pos)
          for i, x in enumerate(sample.inputs)]
    sw = None if sample.sample_weight is None else torch.from_numpy(np.array(sample.sample_weight))
    return xs, sw, pos


def _loss(spec, sample):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return multiloss.get(spec.name, backend="torch", **sample.options)


def _close(ours, ref, tol=TOL):
    err = testing.rel_error(ours.detach().numpy(), ref.detach().numpy())
    assert err <= tol, err


# ---------------------------------------------------------------------------------------------
# torch.compile

#: CI compiles with AOT autograd's eager backend (Dynamo's trace, the joint forward-backward
#: graph, no code generation: seconds instead of minutes); the long run with inductor.
BACKEND = "inductor" if LONG else "aot_eager"

#: Where torch's own op graph-breaks: ctc's aten._ctc_loss has an output shape that depends on
#: the data (Dynamo compiles nothing of torch's own F.ctc_loss call); compiled without
#: fullgraph, the break at the op is the only one.
TORCH_BREAKS = {"ctc": "aten._ctc_loss"}


@pytest.mark.parametrize("spec,sample", [p for p in _params(COMPILE_SUBSET)
                                         if p.values[0].name not in OWN_FUNCTION])
def test_compile_cold_fullgraph_matches_eager(spec, sample):
    """Compiled before any plain call (a fresh module), with fullgraph=True: the value and
    the gradients of the eager call."""
    torch._dynamo.reset()
    loss = _loss(spec, sample)
    xs, sw, pos = _tensors(spec, sample)

    def f(*xs):
        return loss(*xs, sample_weight=sw)

    full = spec.name not in TORCH_BREAKS
    out = torch.compile(f, fullgraph=full, backend=BACKEND)(*xs)
    wrt = [xs[i] for i in pos]
    grads = torch.autograd.grad(out.sum(), wrt) if wrt else ()
    ref = _loss(spec, sample)(*xs, sample_weight=sw)
    ref_grads = torch.autograd.grad(ref.sum(), wrt) if wrt else ()
    assert out.dtype == ref.dtype and out.shape == ref.shape
    tol = max(1e-12, 4 * _inductor_slack(spec, sample)) if BACKEND == "inductor" else 1e-12
    _close(out, ref, tol)
    for g, rg in zip(grads, ref_grads):
        _close(g, rg, tol)


def _inductor_slack(spec, sample):
    """How far inductor's code moves torch's own reference from its eager value and gradients
    on this sample (its decompositions: binary_cross_entropy's log1p(-x) for eager's
    log(1 - x) is 4e-9 relative in float64 near 1); 0 where the reference is not torch's."""
    if getattr(spec.reference, "jax_reference", None) is not None:
        return 0.0
    bound = spec.bind(sample.options)
    for o in spec.options:
        if o.kind == "array" and bound[o.name] is not None:
            bound[o.name] = torch.from_numpy(np.array(bound[o.name]))
    red = bound["reduction"]
    if red not in ("none", "sum", "mean", "batchmean"):
        red = "none"
    xs, _, pos = _tensors(spec, sample)

    def f(*xs):
        return spec.reference(torch, list(xs), bound, red)

    outs = []
    for fn in (f, torch.compile(f, backend="inductor")):
        out = fn(*xs)
        wrt = [xs[i] for i in pos]
        outs.append([out] + list(torch.autograd.grad(out.sum(), wrt) if wrt else ()))
    return max(testing.rel_error(a.detach().numpy(), b.detach().numpy())
               for a, b in zip(*outs))


def _explain_params():
    out = []
    for spec in testing.all_specs():
        if spec.name in OWN_FUNCTION or not (LONG or spec.name in (
                "mse", "cross_entropy", "keras.log_cosh", "ctc", "dice")):
            continue
        cases = _cases(spec)
        out += [pytest.param(spec, s, id=s.id) for s in (cases if LONG else cases[:1])]
    return out


@pytest.mark.parametrize("spec,sample", _explain_params())
def test_no_graph_break(spec, sample):
    """torch._dynamo.explain of a training step that calls the loss: one graph, no break
    (ctc: the one break at torch's own op, as Dynamo breaks on torch's F.ctc_loss)."""
    torch._dynamo.reset()
    loss = _loss(spec, sample)
    xs, sw, _ = _tensors(spec, sample, grad=False)
    model = torch.nn.Linear(xs[0].shape[-1], xs[0].shape[-1]).to(xs[0].dtype) \
        if xs[0].is_floating_point() and xs[0].ndim else None

    def step(*xs):
        xs = (model(xs[0]) if model is not None else xs[0],) + xs[1:]
        return loss(*xs, sample_weight=sw) * 2.0

    e = torch._dynamo.explain(step)(*xs)
    if spec.name in TORCH_BREAKS:
        assert e.graph_break_count >= 1
        assert all(TORCH_BREAKS[spec.name] in str(r.reason) for r in e.break_reasons), \
            e.break_reasons
        return
    assert (e.graph_count, e.graph_break_count) == (1, 0), e.break_reasons


def test_compiled_module_and_step_bad_indices_raise_our_error():
    """A compiled cross_entropy (the module, and a step that calls it) raises multiloss'
    message for a class index out of range, not the kernel's bounds assertion; so do nll and
    gaussian_nll's negative variance (values checked in the graph, before the kernel)."""
    torch._dynamo.reset()
    ce = multiloss.get("cross_entropy", backend="torch")
    x = torch.randn(8, 4, requires_grad=True)
    t = torch.randint(0, 4, (8,))
    cm = torch.compile(ce, fullgraph=True)  # inductor: the check runs before its kernel
    _close(cm(x, t), torch.nn.functional.cross_entropy(x, t), 1e-6)
    bad = t.clone()
    bad[2] = 7
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 4\).* got 7"):
        cm(x, bad)

    model = torch.nn.Linear(3, 4)
    nll = multiloss.get("nll", backend="torch")  # made outside the step, as a criterion is

    @torch.compile(fullgraph=True, backend=BACKEND)
    def step(z, t):
        return nll(torch.log_softmax(model(z), -1), t)

    z = torch.randn(8, 3)
    step(z, t).backward()
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 4\).* got -3"):
        step(z, torch.where(torch.arange(8) == 5, -3, t))

    g = torch.compile(multiloss.get("gaussian_nll", backend="torch"), fullgraph=True,
                      backend=BACKEND)
    y = torch.randn(8, 2)
    assert torch.isfinite(g(y, y + 1, torch.ones(8, 2)))
    with pytest.raises(ValueError, match="var"):
        g(y, y + 1, -torch.ones(8, 2))


def test_compile_warm_dynamic_shapes_validate_false_and_keywords():
    """Compiled after eager calls (the eager fast path's plans exist), over batch sizes that
    make Dynamo trace symbolic shapes, with a sample weight and keyword inputs: the eager
    values, and still our error for a bad index; validate=False: no check in the graph."""
    torch._dynamo.reset()
    ce = multiloss.get("cross_entropy", backend="torch", label_smoothing=0.1)
    x = torch.randn(6, 5, dtype=torch.float64)
    t = torch.randint(0, 5, (6,))
    ce(x, t)  # warm: the eager plan of this signature is made
    f = torch.compile(lambda x, t, w: ce(input=x, target=t, sample_weight=w), backend=BACKEND)
    for n in (6, 7, 9, 12):
        x, t, w = torch.randn(n, 5, dtype=torch.float64), torch.randint(0, 5, (n,)), \
            torch.rand(n, dtype=torch.float64)
        _close(f(x, t, w), ce(x, t, sample_weight=w))
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 5\).* got 5"):
        f(x, torch.where(torch.arange(12) == 3, 5, t), w)
    off = multiloss.get("cross_entropy", backend="torch", validate=False)
    e = torch._dynamo.explain(lambda x, t: off(input=x, target=t))(x, t)
    assert (e.graph_count, e.graph_break_count) == (1, 0)
    assert "check_values" not in str(e.graphs[0].graph)
    assert "check_values" in str(torch._dynamo.explain(lambda x, t: ce(x, t))(x, t)
                                 .graphs[0].graph)


def test_fake_tensors_and_export():
    """Under FakeTensorMode (shapes only) a value-checked loss gives a fake result of its
    shape; torch.export of a model with a loss holds the value check as the op
    multiloss::check_values, and the exported program raises our message for a bad index."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    ce = multiloss.get("cross_entropy", backend="torch")
    with FakeTensorMode():
        out = ce(torch.randn(8, 4), torch.randint(0, 4, (8,)))
    assert isinstance(out, FakeTensor) and out.shape == ()

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)
            self.ce = ce

        def forward(self, z, t):
            return self.ce(self.lin(z), t)

    model = Model()
    z, t = torch.randn(8, 3), torch.randint(0, 4, (8,))
    ep = torch.export.export(model, (z, t))
    ops = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert "multiloss.check_values.default" in ops, ops
    _close(ep.module()(z, t), model(z, t), 0.0)
    with pytest.raises(ValueError, match=r"expected class indices in \[0, 4\).* got 9"):
        ep.module()(z, torch.where(torch.arange(8) == 1, 9, t))


# ---------------------------------------------------------------------------------------------
# torch.func


def _func_params():
    return [p for p in _params(names=None) if p.values[0].name not in OWN_FUNCTION]


def _stacked(spec, sample):
    """Two samples of the same structure (this one and the same grid case of another seed
    where its shapes match, else this one twice), stacked on a new leading axis for vmap."""
    others = [s for s in _nonempty(spec, seed=1) if s.id == sample.id]
    other = others[0] if others else sample
    if any(np.shape(a) != np.shape(b) for a, b in zip(sample.inputs, other.inputs)) or (
            np.shape(sample.sample_weight) != np.shape(other.sample_weight)):
        other = sample
    return [sample, other]


@pytest.mark.parametrize("spec,sample", _func_params())
def test_func_grad_and_per_sample_vmap_grad(spec, sample):
    """torch.func.grad of the summed loss equals autograd's; vmap of the loss and
    vmap(grad) (per-sample gradients) over two stacked samples equal a loop of eager calls
    (value checks skip vmap's batched tensors, as the JAX backend skips tracers)."""
    loss = _loss(spec, sample)
    pos = testing._diff_positions(spec, sample)
    pair = _stacked(spec, sample)
    per = [_tensors(spec, s, grad=False) for s in pair]
    sw_batched = per[0][1] is not None

    def f(diff, xs, sw):
        xs = list(xs)
        for i, v in zip(pos, diff):
            xs[i] = v
        return loss(*xs, sample_weight=sw).sum()

    # the loop: eager calls, autograd's gradients
    ref_values, ref_grads = [], []
    for xs, sw, _ in per:
        leaves = [xs[i].clone().requires_grad_(True) for i in pos]
        out = f(leaves, xs, sw)
        ref_values.append(out.detach())
        ref_grads.append(torch.autograd.grad(out, leaves) if pos else ())
    xs, sw, _ = per[0]
    if pos:
        g = torch.func.grad(f)([xs[i] for i in pos], xs, sw)
        for a, b in zip(g, ref_grads[0]):
            _close(a, b)
    stacked = [torch.stack([p[0][k] for p in per]) for k in range(len(xs))]
    sws = torch.stack([p[1] for p in per]) if sw_batched else None
    diff = [stacked[i] for i in pos]
    values = torch.func.vmap(f, in_dims=(0, 0, 0 if sw_batched else None))(diff, stacked, sws)
    for k in range(2):
        _close(values[k], ref_values[k])
    if pos:
        grads = torch.func.vmap(torch.func.grad(f), in_dims=(0, 0, 0 if sw_batched else None))(
            diff, stacked, sws)
        for k in range(2):
            for a, b in zip(grads, ref_grads[k]):
                _close(a[k], b)


def test_per_sample_gradients_of_a_model():
    """The canonical use: per-example gradients of a model's parameters with
    torch.func.functional_call + vmap(grad), against a loop of backward calls, with a
    class-weighted, label-smoothed cross_entropy (values checked per call, skipped under vmap)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    ce = multiloss.get("cross_entropy", backend="torch", weight=np.array([1.0, 2.0, 0.5]),
                       label_smoothing=0.1)
    x = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0, 2, 1, 1, 0, 2])

    def f(p, xi, ti):
        return ce(torch.func.functional_call(model, p, (xi[None],)), ti[None])

    grads = torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0))(params, x, t)
    for i in range(6):
        model.zero_grad()
        ce(model(x[i:i + 1]), t[i:i + 1]).backward()
        for k, p in model.named_parameters():
            _close(grads[k][i], p.grad)


def test_func_grad_checks_values_vmap_leaves_them_to_the_kernel():
    """Under torch.func.grad the values are the call's own: our message. Under vmap (a batch
    of calls) only shapes are checked, and torch's kernel raises its own error."""
    ce = multiloss.get("cross_entropy", backend="torch")
    x = torch.randn(8, 4)
    t = torch.randint(0, 4, (8,))
    t[2] = 7
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 4\)"):
        torch.func.grad(lambda x: ce(x, t))(x)
    with pytest.raises((IndexError, RuntimeError), match="out of bounds"):
        torch.func.vmap(ce)(x[:, None], t[:, None])


@pytest.mark.parametrize("name", ["keras.circle", "keras.log_cosh", "keras.categorical_hinge"])
def test_custom_functions_support_functorch(name):
    """keras.circle and keras.log_cosh (a custom autograd Function with JAX's logaddexp
    gradient), keras.categorical_hinge (Functions with JAX's max and maximum gradients):
    jacrev (vmap over its backward) equals autograd's rows. (No forward mode: a custom ``jvp``
    would make Dynamo break the graph at the Function.)"""
    loss = multiloss.get(name, backend="torch", reduction="none")
    spec = [s for s in testing.all_specs() if s.name == name][0]
    xs, _, _ = _tensors(spec, _cases(spec)[0], grad=False)
    y_true, y_pred = xs  # Keras' order
    jac = torch.func.jacrev(lambda p: loss(y_true, p))(y_pred)
    p = y_pred.clone().requires_grad_(True)
    flat = loss(y_true, p).reshape(-1)
    jac = jac.reshape(flat.numel(), *p.shape)
    for j in range(flat.numel()):
        (row,) = torch.autograd.grad(flat[j], p, retain_graph=True)
        _close(jac[j], row)


# ---------------------------------------------------------------------------------------------
# autocast


def _autocast_params():
    out = []
    for spec in testing.all_specs():
        if spec.name in OWN_FUNCTION:
            continue
        grid = _nonempty(spec, "float32")
        s = next((s for s in grid if s.sample_weight is None), grid[0])
        out.append(pytest.param(spec, s, id=s.id))
    return out


@pytest.mark.parametrize("in_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("spec,sample", _autocast_params())
def test_autocast_follows_torch_policy(spec, sample, in_dtype):
    """Inside torch.autocast("cpu", dtype=torch.bfloat16) a loss does what autocast does to
    its reference, asked of torch itself: the reference (torch.nn.functional, torchvision,
    kornia, pytorch-metric-learning, segmentation_models_pytorch: torch code) runs inside and
    outside autocast. Where autocast changes it (torch's losses are on autocast's float32
    list: bfloat16 inputs computed and returned in float32; a matmul inside runs in bfloat16),
    the loss gives the reference's dtype and value inside autocast; where it does not (and for
    references written on JAX, optax and Keras, which no autocast reaches), the loss gives
    inside autocast exactly what it gives outside."""
    loss = _loss(spec, sample)
    dt = getattr(torch, in_dtype)

    def tensors():
        return [torch.from_numpy(np.array(x)).to(dt)
                if np.issubdtype(np.asarray(x).dtype, np.floating)
                else torch.from_numpy(np.array(x)) for x in sample.inputs]

    bound = spec.bind(sample.options)
    for o in spec.options:
        if o.kind == "array" and bound[o.name] is not None:
            bound[o.name] = torch.from_numpy(np.array(bound[o.name])).to(dt)
    red = bound["reduction"]
    torch_ref = getattr(spec.reference, "jax_reference", None) is None and red in (
        "none", "sum", "mean", "batchmean")

    def run(fn):
        try:
            return fn()
        except NotImplementedError:  # no bfloat16 CPU kernel in torch (ctc, multi_margin)
            return None

    def reference():
        return spec.reference(torch, tensors(), bound, red) if torch_ref else None

    plain, ref_plain = run(lambda: loss(*tensors())), run(reference)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = run(lambda: loss(*tensors())), run(reference)
    if ref is not None and (ref_plain is None or ref.dtype != ref_plain.dtype
                            or not torch.equal(ref, ref_plain)):
        # autocast changes the reference: the loss follows it
        assert ours is not None, "torch's reference computes under autocast, the loss raised"
        assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
        err = testing.rel_error(ours.detach().float().numpy(), ref.detach().float().numpy(), 1.0)
        changed = 0.0 if ref_plain is None else testing.rel_error(
            ref.detach().float().numpy(), ref_plain.detach().float().numpy(), 1.0)
        # the reference rounded inside (a bfloat16 matmul): within bfloat16's rounding of it
        tol = 4 * testing.low_precision_eps("bfloat16") if changed > 1e-5 else 1e-5
        assert err <= tol, (err, changed)
    else:  # autocast leaves the reference as it is: the loss too
        if plain is None:
            assert ours is None
            return
        assert ours is not None and ours.dtype == plain.dtype, (ours, plain)
        assert torch.equal(ours, plain) or testing.rel_error(
            ours.detach().float().numpy(), plain.detach().float().numpy()) == 0.0


# ---------------------------------------------------------------------------------------------
# calling conventions


def torch_input_names(spec) -> dict:
    """The keywords torch itself takes for a loss's inputs, with their positions: the spec's
    input names and those of the ``forward`` of its torch.nn class and of its
    torch.nn.functional function (where one is among the loss's names and takes the same
    inputs), read from torch."""
    import inspect

    names = {i.name: k for k, i in enumerate(spec.inputs)}
    n = len(spec.inputs)
    if spec.family == "keras":  # Keras' names (y_true, y_pred), not torch's
        return names
    for alias in (spec.name, *spec.aliases):
        found = []
        cls = getattr(torch.nn, alias, None)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            found.append(list(inspect.signature(cls.forward).parameters.values())[1:])
        fn = getattr(torch.nn.functional, alias, None)
        if callable(fn) and not isinstance(fn, type):
            try:
                found.append(list(inspect.signature(fn).parameters.values()))
            except ValueError:  # a builtin without a signature
                pass
        for params in found:
            pos = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD
                   and p.default is p.empty]
            if len(pos) == n:  # the same inputs (nn.LinearCrossEntropyLoss holds one)
                for k, name in enumerate(pos):
                    names.setdefault(name, k)
    return names


@pytest.mark.parametrize("spec", testing.all_specs(), ids=lambda s: s.name)
def test_keyword_inputs(spec):
    """loss(input=x, target=t): the spec's input names, and torch's (its module's forward and
    its functional's, read from torch), in any order, mixed with positional ones; the
    positional call's value."""
    input_names = torch_input_names

    sample = _cases(spec)[0]
    loss = _loss(spec, sample)
    xs, sw, _ = _tensors(spec, sample, grad=False)
    ref = loss(*xs, sample_weight=sw)
    names = [i.name for i in spec.inputs]
    out = loss(**dict(reversed(list(zip(names, xs)))), sample_weight=sw)
    _close(out, ref, 0.0)
    out = loss(*xs[:1], **dict(zip(names[1:], xs[1:])), sample_weight=sw)
    _close(out, ref, 0.0)
    for key, k in input_names(spec).items():
        if key not in names:  # a torch name
            args = list(xs)
            value = args.pop(k)
            _close(loss(*args[:k], **{key: value},
                        **dict(zip(names[k + 1:], args[k:])), sample_weight=sw), ref, 0.0)


def test_keyword_names_from_torch_and_errors():
    import torch.nn.functional as F

    p = multiloss.get("PoissonNLLLoss", backend="torch")
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, 3, dtype=torch.float64)
    _close(p(log_input=x, target=y), torch.nn.PoissonNLLLoss()(log_input=x, target=y), 0.0)
    _close(p(input=x, target=y), F.poisson_nll_loss(input=x, target=y), 0.0)
    ce = multiloss.get("cross_entropy", backend="torch")
    t = torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(TypeError, match="unexpected keyword argument 'inputs'.*input, target"):
        ce(inputs=x, target=t)
    with pytest.raises(TypeError, match="input 'input' given by position and by keyword"):
        ce(x, input=x)
    with pytest.raises(TypeError, match="missing input\\(s\\) 'target'"):
        ce(input=x)
