"""Weight averaging (multiloss.optim.swa) against torch.optim.swa_utils: SWALR's lrs on the
optimizer trajectory harness (alone, as a SequentialLR stage, from_torch mid-annealing), and
AveragedModel's averaged parameters and buffers step for step (float64 1e-12), every
averaging function; from_torch of a live AveragedModel; argument checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import swa_utils

import multiloss.optim as mo
from multiloss.optim import schedules as S
from multiloss.optim import swa
from multiloss.optim import testing as T

jax.config.update("jax_enable_x64", True)

SGD = {"lr": 0.05, "momentum": 0.9}


def _seq(opt):
    L = torch.optim.lr_scheduler
    return L.SequentialLR(opt, [L.CosineAnnealingLR(opt, T_max=20),
                                swa_utils.SWALR(opt, swa_lr=0.01, anneal_epochs=5,
                                                anneal_strategy="linear")], milestones=[12])


# SWALR's trajectories (alone, per group, anneal_epochs=0, a SequentialLR stage, from_torch in
# the middle of the annealing) are cases "swa/..." of multiloss/optim/testing.py, run by
# tests/test_optim.py in float64 and float32


def test_swalr_cases_are_in_the_harness():
    ids = [c.id for c in T.CASES if c.id.startswith("swa/")]
    assert len(ids) == 5
    assert T.case("swa/SWALR_from_torch_mid").convert_at == 6


def test_swalr_lrs_and_sequential_semantics():
    """The lrs themselves, torch's recursion against the closed form, for both strategies and
    a SequentialLR stage (which repeats the first stage's last lr at the milestone)."""
    for strategy in ("cos", "linear"):
        p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        opt = torch.optim.SGD([p], lr=0.3)
        sch = swa_utils.SWALR(opt, swa_lr=0.02, anneal_epochs=7, anneal_strategy=strategy)
        want = []
        for _ in range(12):
            want.append(opt.param_groups[0]["lr"])
            sch.step()
        bound = swa.SWALR(0.02, 7, strategy).bind([0.3])
        got = [float(bound.lrs((), jnp.asarray(float(t)))[0]) for t in range(12)]
        np.testing.assert_allclose(got, want, rtol=1e-14)
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=1.0)
    seq = _seq(opt)
    want = []
    for _ in range(20):
        want.append(opt.param_groups[0]["lr"])
        seq.step()
    assert want[12] == want[11]  # torch's SequentialLR: SWALR's step 0 at the milestone
    bound = S.SequentialLR([S.CosineAnnealingLR(20), swa.SWALR(0.01, 5, "linear")],
                           [12]).bind([1.0])
    got = [float(bound.lrs((), jnp.asarray(float(t)))[0]) for t in range(20)]
    np.testing.assert_allclose(got, want, rtol=1e-14)


# --------------------------------------------------------------------------------------------
# AveragedModel


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4, dtype=torch.float64)
        self.bn = torch.nn.BatchNorm1d(4, dtype=torch.float64)  # float and long buffers


def _snapshots(n, seed=0):
    """A parameter trajectory: the harness's SGD run (its w (3, 4) and b (4,) as the linear
    layer's weight and bias), BatchNorm's weight and bias drifting, and buffers that change."""
    traj = T.run_torch(T.Case("avg", "sgd", SGD, steps=n), "float64")
    rng = np.random.default_rng(seed)
    out = []
    for k, p in enumerate(traj):
        params = {"lin.weight": p["w"].T.copy(), "lin.bias": p["b"],
                  "bn.weight": 1 + 0.1 * rng.normal(size=4), "bn.bias": rng.normal(size=4)}
        buffers = {"bn.running_mean": rng.normal(size=4),
                   "bn.running_var": rng.uniform(0.5, 2, size=4),
                   "bn.num_batches_tracked": np.asarray(7 * k + int(rng.integers(0, 5)))}
        out.append((params, buffers))
    return out


def _load(net, params, buffers):
    with torch.no_grad():
        for k, v in {**params, **buffers}.items():
            net.get_parameter(k).copy_(torch.from_numpy(v)) if k in params else \
                net.get_buffer(k).copy_(torch.from_numpy(np.asarray(v)))


AVERAGING = [  # id, torch kwargs, multiloss kwargs
    ("swa-default", {}, {}),
    ("swa-default-use_buffers", {"use_buffers": True}, {"use_buffers": True}),
    ("ema-multi-use_buffers", {"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(0.9),
                               "use_buffers": True},
     {"multi_avg_fn": swa.get_ema_multi_avg_fn(0.9), "use_buffers": True}),
    ("ema-avg_fn", {"avg_fn": swa_utils.get_ema_avg_fn(0.75)},
     {"avg_fn": swa.get_ema_avg_fn(0.75)}),
    ("swa-multi", {"multi_avg_fn": swa_utils.get_swa_multi_avg_fn()},
     {"multi_avg_fn": swa.get_swa_multi_avg_fn()}),
]


@pytest.mark.parametrize("tkw,jkw", [a[1:] for a in AVERAGING], ids=[a[0] for a in AVERAGING])
def test_averaged_model_matches_torch(tkw, jkw):
    snaps = _snapshots(12)
    net = _Net()
    _load(net, *snaps[0])
    ref = swa_utils.AveragedModel(net, **tkw)
    avg = swa.AveragedModel(**jkw)
    state = avg.init(*[{k: jnp.asarray(v) for k, v in d.items()} for d in snaps[0]])
    update = jax.jit(avg.update)
    worst = 0.0
    for k, (params, buffers) in enumerate(snaps):
        if k % 3 == 2:
            continue  # torch averages when told (here: not every step)
        _load(net, params, buffers)
        ref.update_parameters(net)
        state = update(state, params, buffers)
        assert int(state.n_averaged) == int(ref.n_averaged)
        for name, v in ref.module.named_parameters():
            want = v.detach().numpy()
            worst = max(worst, float(np.max(np.abs(state.params[name] - want))
                                     / np.max(np.abs(want))))
        for name, v in ref.module.named_buffers():
            want = v.numpy()
            got = np.asarray(state.buffers[name])
            assert got.dtype == want.dtype, name
            if want.dtype.kind == "i":
                np.testing.assert_array_equal(got, want, err_msg=name)
            else:
                worst = max(worst, float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    assert worst <= 1e-12, worst


def test_averaged_model_from_torch_continues():
    snaps = _snapshots(10, seed=1)
    net = _Net()
    ref = swa_utils.AveragedModel(net, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.8),
                                  use_buffers=True)
    for params, buffers in snaps[:5]:
        _load(net, params, buffers)
        ref.update_parameters(net)
    avg, state = swa.from_torch(ref)
    assert avg.use_buffers and avg.multi_avg_fn.decay == 0.8
    assert int(state.n_averaged) == 5
    for params, buffers in snaps[5:]:
        _load(net, params, buffers)
        ref.update_parameters(net)
        state = avg.update(state, params, buffers)
    for name, v in ref.module.named_parameters():
        np.testing.assert_allclose(state.params[name], v.detach().numpy(), rtol=1e-13)
    # a pytree of any structure, a plain optax loop: the two-line use
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    ema = swa.AveragedModel(multi_avg_fn=swa.get_ema_multi_avg_fn(0.5))
    s = ema.init(params)
    s = ema.update(s, params)
    s = ema.update(s, jax.tree_util.tree_map(lambda x: x + 2.0, params))
    np.testing.assert_allclose(s.params["w"], 2.0)
    # pickles (the averaging functions are small classes, not closures), as a SWALR transform
    import pickle

    again = pickle.loads(pickle.dumps(avg))
    assert again.multi_avg_fn == avg.multi_avg_fn and again.use_buffers
    tx = mo.get("sgd", lr=0.1, schedule=swa.SWALR(0.01, 3, "linear"))
    st = tx.init(params)
    tx2 = pickle.loads(pickle.dumps(tx))
    u1, _ = tx.update(params, st, params)
    u2, _ = tx2.update(params, tx2.init(params), params)
    np.testing.assert_array_equal(u1["w"], u2["w"])
    with pytest.raises(ValueError, match=r"^multi_avg_fn: the torch callable"):
        swa.from_torch(swa_utils.AveragedModel(net, multi_avg_fn=lambda a, b, n: None))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^anneal_strategy: expected one of"):
        swa.SWALR(0.1, anneal_strategy="exp")
    with pytest.raises(ValueError, match=r"^anneal_epochs: expected an int >= 0"):
        swa.SWALR(0.1, anneal_epochs=-1)
    with pytest.raises(TypeError, match=r"^anneal_epochs: expected an int"):
        swa.SWALR(0.1, anneal_epochs=2.5)
    with pytest.raises(ValueError, match=r"^swa_lr: expected 2 values"):
        mo.get("sgd", lr=0.1, schedule=swa.SWALR([0.1, 0.2, 0.3]),
               param_groups=[{}, {}], labels=[0, 1]).init({"a": jnp.zeros(1), "b": jnp.zeros(1)})
    with pytest.raises(ValueError, match=r"^decay: expected a value in \[0, 1\]"):
        swa.get_ema_multi_avg_fn(1.5)
    with pytest.raises(ValueError, match=r"^avg_fn, multi_avg_fn: give one"):
        swa.AveragedModel(avg_fn=swa.get_swa_avg_fn(), multi_avg_fn=swa.get_swa_multi_avg_fn())
    with pytest.raises(TypeError, match=r"^averaged_model: expected"):
        swa.from_torch(torch.nn.Linear(2, 2))
