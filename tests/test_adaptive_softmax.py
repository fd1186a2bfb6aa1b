"""The adaptive softmax (multiloss.nn.AdaptiveLogSoftmaxWithLoss / TorchAdaptiveLogSoftmaxWithLoss)
against torch's own torch.nn.AdaptiveLogSoftmaxWithLoss: outputs, loss, log_prob, predict and
gradients w.r.t. the input and every parameter (float64 1e-12, float32 within the registry's
tolerance), the parameter conversion both ways, multiloss.from_torch of a live module, the
argument checks; and the rule of issue 18: every torch.nn class named "...Loss" has a twin."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import multiloss
import multiloss.nn as mnn
from multiloss.testing import SCALE_FLOOR, TOLERANCE

jax.config.update("jax_enable_x64", True)

# torch's nn.Linear warns on a zero-size layer (a tail without hidden units, as torch makes it)
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")

# (id, in_features, n_classes, cutoffs, div_value, head_bias, targets; None: unbatched)
CASES = [
    ("mixed-bias", 8, 10, [3, 6], 2.0, True, [0, 1, 2, 3, 5, 6, 9, 4]),
    ("default-div", 16, 12, [2, 5, 9], 4.0, False, [11, 0, 7, 3, 3, 10]),
    # float div_value (torch's float floor division), every target in one cluster
    ("float-div-one-cluster", 7, 9, [4], 1.7, True, [5, 8, 4, 6]),
    # in_features // div**2 = 0: the second tail has no hidden units (a zero-size layer)
    ("zero-hidden-shortlist-only", 4, 8, [2, 5], 3.0, False, [0, 1, 1]),
    ("single-row", 6, 7, [3], 2.0, True, [6]),
    ("unbatched", 6, 7, [3], 2.0, False, None),
    ("empty", 5, 6, [2, 4], 2.0, True, []),
]


def _pair(in_f, n, cut, div, bias, dtype, seed=0):
    head = mnn.AdaptiveLogSoftmaxWithLoss(in_f, n, cut, div, bias, dtype=dtype,
                                          rngs=nnx.Rngs(seed))
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(in_f, n, cut, div_value=div, head_bias=bias,
                                              dtype=getattr(torch, dtype))
    mnn.to_torch(head, into=ref)  # torch's own module holds our parameters
    return head, ref


def _jax_side(head, x, y, ct, ct_lp):
    """Outputs and gradients of the nnx module, in one jitted function (one compilation per
    case instead of one per operation)."""
    graphdef, params = nnx.split(head)

    def objective(params, x):
        module = nnx.merge(graphdef, params)
        out, loss = module(x, y)
        total = loss + jnp.sum(out * ct)
        extra = {}
        if x.ndim == 2:
            lp = module.log_prob(x)
            total = total + jnp.sum(lp * ct_lp)
            extra = {"log_prob": lp, "predict": module.predict(x)}
        return total, {"out": out, "loss": loss, **extra}

    (val, aux), (g_params, g_x) = jax.jit(jax.value_and_grad(objective, argnums=(0, 1),
                                                              has_aux=True))(params, x)
    grads = nnx.merge(graphdef, g_params)
    return {**aux, "value": val, "input.grad": g_x,
            **{f"{k}.grad": v[...] for k, v in mnn._nnx_params(grads).items()}}


def _run(case, dtype):
    _, in_f, n, cut, div, bias, targets = case
    head, ref = _pair(in_f, n, cut, div, bias, dtype)
    rng = np.random.default_rng(1)
    if targets is None:
        x = rng.normal(size=(in_f,)).astype(dtype)
        y = np.asarray(n - 1)
    else:
        x = rng.normal(size=(len(targets), in_f)).astype(dtype)
        y = np.asarray(targets, dtype=np.int64)
    ct = rng.uniform(0.5, 1.5, size=y.shape).astype(dtype)
    ct_lp = rng.uniform(-1, 1, size=(len(y) if y.ndim else 1, n)).astype(dtype)
    jx = _jax_side(head, jnp.asarray(x), y, ct, ct_lp)

    xt = torch.tensor(x, requires_grad=True)
    out_t, loss_t = ref(xt, torch.from_numpy(y))
    total = loss_t + (out_t * torch.from_numpy(ct)).sum()
    if x.ndim == 2:
        total = total + (ref.log_prob(xt) * torch.from_numpy(ct_lp)).sum()
    total.backward()
    tr = {"out": out_t, "loss": loss_t, "value": total, "input.grad": xt.grad}
    tr.update({f"{k}.grad": p.grad for k, p in ref.named_parameters()})
    if x.ndim == 2:
        with torch.no_grad():
            tr["log_prob"] = ref.log_prob(xt)
            tr["predict"] = ref.predict(xt)
    return ({k: np.asarray(v) for k, v in jx.items()},
            {k: v.detach().numpy() for k, v in tr.items()})


# float32: the first case (the tolerance of the registry's float32 parity)
GRID = [pytest.param(c, "float64", id=f"{c[0]}-float64") for c in CASES] + [
    pytest.param(c, "float32", id=f"{c[0]}-float32") for c in CASES[:1]]


@pytest.mark.parametrize("case,dtype", GRID)
def test_matches_torch(case, dtype):
    jx, tr = _run(case, dtype)
    assert set(jx) == set(tr)
    for k in tr:
        a, b = jx[k], tr[k]
        assert a.shape == b.shape, (k, a.shape, b.shape)
        if k == "predict":
            np.testing.assert_array_equal(a, b)
            continue
        if not b.size:
            continue
        if np.isnan(b).all():  # the mean of an empty batch (and its sums)
            assert np.isnan(a).all(), k
            continue
        scale = max(float(np.max(np.abs(b))), SCALE_FLOOR[dtype])
        if scale == 0:  # the zero gradients of an empty batch
            np.testing.assert_array_equal(a, b)
            continue
        err = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / scale
        assert err <= TOLERANCE[dtype], (k, err)


def test_twin_and_plain_module_agree_and_convert():
    head = mnn.AdaptiveLogSoftmaxWithLoss(6, 9, [2, 5], head_bias=True, dtype="float64",
                                          rngs=nnx.Rngs(3))
    twin = mnn.to_torch(head)
    assert isinstance(twin, mnn.TorchAdaptiveLogSoftmaxWithLoss)
    assert isinstance(twin, torch.nn.AdaptiveLogSoftmaxWithLoss)
    plain = torch.nn.AdaptiveLogSoftmaxWithLoss(6, 9, [2, 5], head_bias=True,
                                                dtype=torch.float64)
    plain.load_state_dict(twin.state_dict())  # torch's names and layout
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.tensor([0, 8, 2, 4, 5])
    torch.testing.assert_close(twin(x, y).output, plain(x, y).output, rtol=0, atol=0)
    # a live plain module: multiloss.nn.from_torch and multiloss.from_torch (both backends)
    for jax_twin in (mnn.from_torch(plain), multiloss.from_torch(plain)):
        assert isinstance(jax_twin, mnn.AdaptiveLogSoftmaxWithLoss)
        assert jax_twin.config() == head.config()
        out, loss = jax_twin(x.numpy(), y.numpy())
        np.testing.assert_allclose(out, plain(x, y).output.detach().numpy(), rtol=1e-13)
    torch_twin = multiloss.from_torch(plain, backend="torch")
    assert isinstance(torch_twin, mnn.TorchAdaptiveLogSoftmaxWithLoss)
    assert torch_twin is not plain
    torch.testing.assert_close(torch_twin(x, y).loss, plain(x, y).loss, rtol=0, atol=0)
    # and back into an existing nnx module / a plain torch module
    other = mnn.AdaptiveLogSoftmaxWithLoss(6, 9, [2, 5], head_bias=True, dtype="float32",
                                           rngs=nnx.Rngs(0))
    mnn.from_torch(plain, into=other)
    np.testing.assert_allclose(other.tail[1][0].weight[...],
                               plain.tail[1][0].weight.detach().numpy(), rtol=1e-7)
    # both modules pickle
    import pickle

    again = pickle.loads(pickle.dumps(head))
    np.testing.assert_array_equal(again.log_prob(x.numpy()), head.log_prob(x.numpy()))
    torch.testing.assert_close(pickle.loads(pickle.dumps(twin))(x, y).loss, twin(x, y).loss)
    with pytest.raises(ValueError, match=r"into: the parameter trees differ"):
        mnn.from_torch(plain, into=mnn.AdaptiveLogSoftmaxWithLoss(6, 9, [2, 5],
                                                                  rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"into: parameter shapes differ"):
        mnn.to_torch(head, into=torch.nn.AdaptiveLogSoftmaxWithLoss(6, 9, [3, 5],
                                                                    head_bias=True))

    class Custom(torch.nn.AdaptiveLogSoftmaxWithLoss):
        def forward(self, input, target):
            return super().forward(2 * input, target)

    with pytest.raises(TypeError, match=r"^criterion: .*Custom subclasses torch.nn.AdaptiveLogSoftmaxWithLoss"):
        multiloss.from_torch(Custom(6, 9, [2, 5]))


def test_jit_and_initialisation():
    head = mnn.AdaptiveLogSoftmaxWithLoss(64, 20, [5, 10], rngs=nnx.Rngs(0))
    assert head.head.weight[...].dtype == jnp.float32
    # torch's nn.Linear draw: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = np.asarray(head.tail[0][1].weight[...])  # fan_in 64 // 4 = 16
    assert w.shape == (5, 16) and 0.2 < np.abs(w).max() <= 0.25
    x = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    y = np.array([0, 7, 19, 4])
    loss, lp = nnx.jit(lambda m, x, y: (m(x, y).loss, m.log_prob(x)))(head, x, y)
    ref = mnn.to_torch(head)
    np.testing.assert_allclose(loss, ref(torch.from_numpy(x), torch.from_numpy(y)).loss.item(),
                               rtol=1e-6)
    np.testing.assert_allclose(np.exp(np.asarray(lp, np.float64)).sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bad_arguments_name_the_argument(backend):
    def make(*a, **k):
        if backend == "jax":
            return mnn.AdaptiveLogSoftmaxWithLoss(*a, **k, rngs=nnx.Rngs(0))
        return mnn.TorchAdaptiveLogSoftmaxWithLoss(*a, **k)

    for cut in ([], [3, 2], [0, 2], [2, 9], [2, 2]):
        with pytest.raises(ValueError, match=r"^cutoffs: expected"):
            make(4, 9, cut)
    with pytest.raises(TypeError, match=r"^cutoffs\[1\]: expected an int"):
        make(4, 9, [2, "5"])
    with pytest.raises(ValueError, match=r"^n_classes: expected an int >= 2"):
        make(4, 1, [1])
    with pytest.raises(ValueError, match=r"^div_value: expected a positive"):
        make(4, 9, [2], div_value=0.0)
    m = make(4, 9, [2, 5], dtype="float64")
    arr = np.asarray if backend == "jax" else torch.tensor
    x = arr(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"^target: expected class indices in \[0, 8\] "
                                         r"\(n_classes=9\), got values in \[-1, 9\]"):
        m(x, arr(np.array([0, -1, 9])))
    with pytest.raises(ValueError, match=r"^input: expected shape \(N=2, in_features=4\)"):
        m(x, arr(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"^target: expected a 0-D or 1-D"):
        m(x, arr(np.zeros((3, 1), np.int64)))
    with pytest.raises(TypeError, match=r"^target: expected integer class indices"):
        m(x, arr(np.zeros(3)))
    with pytest.raises(ValueError, match=r"^input: expected shape \(N, in_features=4\)"):
        m.log_prob(arr(np.zeros((3, 5))))


def test_every_torch_nn_loss_class_has_a_twin():
    """Issue 18's rule: every torch.nn class whose name ends in "Loss" (enumerated from
    torch.nn, so a class torch adds later fails here) is a registry loss
    (multiloss.available()) that multiloss.from_torch converts, or, for the modules with
    parameters, a multiloss.nn module pair that multiloss.from_torch returns."""
    modules = {"AdaptiveLogSoftmaxWithLoss": mnn.AdaptiveLogSoftmaxWithLoss}
    names = sorted(n for n in dir(torch.nn) if n.endswith("Loss")
                   and inspect.isclass(getattr(torch.nn, n)))
    assert len(names) >= 23 and "AdaptiveLogSoftmaxWithLoss" in names
    available = set(multiloss.available())
    assert "adaptive_log_softmax" in set(multiloss.available(modules=True)) - available
    missing = []
    for name in names:
        if name in modules:
            with pytest.raises(ValueError, match=r"module with parameters.*multiloss\.nn\."):
                multiloss.get(name)  # the pointer to the module pair
            continue
        try:
            spec = multiloss.resolve(name)
        except ValueError:
            missing.append(name)
            continue
        assert spec.name in available
    assert not missing, f"torch.nn loss classes without a multiloss twin: {missing}"
    # from_torch of a live module of every class (defaults; the parity of each is in
    # tests/test_from_torch.py and above)
    required = {"AdaptiveLogSoftmaxWithLoss": (4, 6, [2]),
                "LinearCrossEntropyLoss": (4, 3)}
    for name in names:
        cls = getattr(torch.nn, name)
        crit = cls(*required.get(name, ()))
        if name == "LinearCrossEntropyLoss":
            with pytest.raises(ValueError, match=r"linear_cross_entropy"):
                multiloss.from_torch(crit)  # the documented pointer to the functional form
            continue
        got = multiloss.from_torch(crit)
        if name in modules:
            assert isinstance(got, modules[name])
        else:
            assert callable(got)

