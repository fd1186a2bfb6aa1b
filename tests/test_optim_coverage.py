"""Every optimizer and LR scheduler class of torch.optim, enumerated from torch itself: each is
provided by multiloss.optim with at least one 100-step trajectory case against torch, or listed
in ``multiloss.optim.testing.NOT_PROVIDED`` with a reason (a new torch class fails here). Plus
the state and sparse-gradient specifics of ASGD and SparseAdam against torch (issue 18)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import multiloss.optim as mo
from multiloss.optim import schedules as S
from multiloss.optim import testing as T

jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------------------------------------
# coverage of torch.optim


def test_every_torch_optimizer_and_scheduler_is_provided_or_listed():
    classes = T.torch_classes()
    # the enumeration sees torch's classes (a broken enumeration would pass everything)
    assert {"SGD", "Adam", "LBFGS", "SparseAdam", "ASGD", "Rprop"} <= set(classes["optimizer"])
    assert {"StepLR", "ReduceLROnPlateau", "CyclicLR", "SWALR"} <= set(classes["scheduler"])
    missing = []
    for kind, names in classes.items():
        for name in names:
            ours = T.provided(kind, name)
            if ours is None:
                if name not in T.NOT_PROVIDED:
                    missing.append(f"{kind} {name}")
                continue
            assert name not in T.NOT_PROVIDED, (
                f"{name} is provided ({ours}): remove it from testing.NOT_PROVIDED")
            assert T.cases_of(kind, name), f"{name} ({ours}) has no trajectory case"
    assert not missing, f"torch classes neither provided nor listed in NOT_PROVIDED: {missing}"
    every = {n for names in classes.values() for n in names}
    assert set(T.NOT_PROVIDED) <= every, "NOT_PROVIDED names a class torch does not have"
    assert all(T.NOT_PROVIDED.values())  # each with its reason
    # and every multiloss optimizer is a torch optimizer class
    assert {mo.resolve(n).torch_class for n in mo.available()} <= set(classes["optimizer"])


def test_coverage_table_lists_every_torch_class():
    fake = {c.id: {d: T.Result(c.id, d, [1e-16 if d == "float64" else 1e-8])
                   for d in ("float64", "float32")} for c in T.CASES}
    table = T.coverage_table(fake)
    for names in T.torch_classes().values():
        for name in names:
            assert f".{name}` |" in table, name
    assert "| `torch.optim.Rprop` | `rprop` |" in table
    assert "| `torch.optim.lr_scheduler.CyclicLR` | `schedules.CyclicLR` |" in table
    for name, why in T.NOT_PROVIDED.items():
        assert f".{name}` | missing: {why} |" in table


# ---------------------------------------------------------------------------------------------
# ASGD: eta, mu and the averaged parameters ax are torch's


def test_asgd_state_is_torchs_after_many_steps():
    """Not only the parameters (the trajectory cases): torch's state['ax'] (the averaged
    parameters), eta and mu (float32, torch's scalar dtype) after 60 steps, with averaging
    under way and a schedule driving eta."""
    hyper = {"lr": 0.05, "lambd": 1e-2, "alpha": 0.6, "t0": 20.0, "weight_decay": 0.1}
    case = T.Case("asgd/state", "asgd", hyper, {"schedule": S.ExponentialLR(0.99)},
                  torch_schedule=T._sched("ExponentialLR", gamma=0.99), steps=60)
    opt, sched, named = T.run_torch(case, "float64", build_only=True)
    _, grad, loss = T.problem("float64")
    T._torch_loop(case, opt, sched, named, grad, loss)
    tx = T.build_jax(case)
    params = {k: jnp.asarray(v) for k, v in T.problem("float64")[0].items()}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(60):
        g = grad({k: np.asarray(v) for k, v in params.items()})
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
    for k, p in named.items():
        st = opt.state[p]
        ax = st["ax"].numpy()
        np.testing.assert_allclose(np.asarray(state.buffers["ax"][k]), ax, rtol=0,
                                   atol=1e-12 * np.abs(ax).max())
        for key in ("eta", "mu"):
            assert state.buffers[key][k].dtype == jnp.float32 == np.dtype(str(st[key].dtype)[6:])
            assert float(state.buffers[key][k]) == float(st[key]), key
        assert int(state.step[k]) == int(st["step"]) == 60
    assert float(opt.state[named["w"]]["mu"]) == pytest.approx(1 / 40)  # averaging since t0


# ---------------------------------------------------------------------------------------------
# SparseAdam


def _embedding_runs(steps=15, seed=0):
    """torch: nn.Embedding(sparse=True) stepped by SparseAdam through multiloss's torch backend;
    JAX: the same table, dense gradients of the same loss (zero on rows not looked up)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(10, 4))
    batches = [rng.integers(0, 10, size=6) for _ in range(steps)]
    targets = [rng.normal(size=(6, 4)) for _ in range(steps)]
    emb = torch.nn.Embedding(10, 4, sparse=True, dtype=torch.float64)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(table))
    opt = mo.get("sparse_adam", backend="torch", params=emb.parameters(), lr=0.05,
                 betas=(0.8, 0.99))
    assert type(opt) is torch.optim.SparseAdam

    def loss_fn(w, idx, y):
        return jnp.sum(jnp.sin(w[idx]) * y)

    tx = mo.get("sparse_adam", lr=0.05, betas=(0.8, 0.99))
    params = {"weight": jnp.asarray(table)}
    state = tx.init(params)
    step = jax.jit(lambda p, s, idx, y: tx.update({"weight": jax.grad(loss_fn)(p["weight"], idx,
                                                                               y)}, s, p))
    for idx, y in zip(batches, targets):
        opt.zero_grad()
        torch.sum(torch.sin(emb(torch.from_numpy(idx))) * torch.from_numpy(y)).backward()
        assert emb.weight.grad.is_sparse
        opt.step()
        u, state = step(params, state, jnp.asarray(idx), jnp.asarray(y))
        params = optax.apply_updates(params, u)
    return emb, opt, params, state, batches


def test_sparse_adam_matches_torch_with_embedding_sparse_gradients():
    emb, opt, params, state, batches = _embedding_runs()
    ref = emb.weight.detach().numpy()
    np.testing.assert_allclose(np.asarray(params["weight"]), ref, rtol=0,
                               atol=1e-12 * np.abs(ref).max())
    st = opt.state[emb.weight]
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(np.asarray(state.buffers[key]["weight"]), st[key].numpy(),
                                   rtol=1e-12, atol=1e-300)
    assert int(state.step["weight"]) == st["step"] == len(batches)
    # rows never looked up: parameter and moments untouched (dense Adam would move them)
    never = sorted(set(range(10)) - {int(i) for b in batches for i in b})
    for r in never:
        assert np.all(st["exp_avg"][r].numpy() == 0) and np.all(
            np.asarray(state.buffers["exp_avg"]["weight"][r]) == 0)


def test_sparse_adam_explicit_zero_in_a_sparse_gradient_is_the_one_difference():
    """torch updates every entry its sparse gradient materializes, also one whose value is
    exactly 0 (its moments decay, the parameter moves with the old m); the JAX transform sees a
    dense gradient and treats exact zeros as absent (documented)."""
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SparseAdam([w], lr=0.1)
    tx = mo.get("sparse_adam", lr=0.1)
    p = {"w": jnp.ones(3)}
    s = tx.init(p)
    for g in ([1.0, 2.0, 0.5], [0.0, 1.0, 0.0]):
        # step 2 materializes entry 0 with value 0 (indices [0, 1]), not entry 2
        idx = [0, 1, 2] if g[2] else [0, 1]
        w.grad = torch.sparse_coo_tensor([idx], torch.tensor([g[i] for i in idx],
                                                             dtype=torch.float64), (3,),
                                         check_invariants=True)
        opt.step()
        u, s = tx.update({"w": jnp.asarray(g)}, s, p)
        p = optax.apply_updates(p, u)
    ours, ref = np.asarray(p["w"]), w.detach().numpy()
    np.testing.assert_allclose(ours[1:], ref[1:], rtol=1e-15)  # entries 1 (present), 2 (absent)
    assert ref[0] != ours[0]  # entry 0: torch moved it with its old m, JAX left it


def test_sparse_adam_torch_backend_raises_on_dense_gradients_as_torch():
    w = torch.zeros(3, requires_grad=True)
    opt = mo.get("sparse_adam", backend="torch", params=[w])
    w.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        opt.step()


def test_asgd_scalar_dtype_follows_torch_default_dtype():
    """torch keeps ASGD's eta and mu in its scalar dtype, float32 unless the default dtype is
    float64, even for float64 parameters: scalar_dtype="float64" mirrors
    torch.set_default_dtype(torch.float64), and from_torch reads it."""
    case = T.case("asgd/lambd_alpha_t0")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ref = T.run_torch(case, "float64")
        opt, _, named = T.run_torch(case, "float64", build_only=True)
        assert mo.from_torch(opt).transform.param_groups[0]["scalar_dtype"] == "float64"
    finally:
        torch.set_default_dtype(old)
    err = {}
    for dt in ("float32", "float64"):
        ours = T._jax_loop(case, mo.get("asgd", scalar_dtype=dt, **case.hyper), "float64")
        err[dt] = max(T._error(a, b) for a, b in zip(ours, ref))
    assert err["float64"] <= 1e-12
    assert err["float32"] > 1e-10  # float32 eta is visible in a float64 run


def test_new_schedules_pickle_with_the_transform():
    import pickle

    for sched in (S.CyclicLR(0.01, 0.1, step_size_up=3, scale_fn=T._cyclic_scale),
                  S.ChainedScheduler([S.ConstantLR(0.5, 4), S.MultiplicativeLR(T._lambda_b)]),
                  S.ChainedScheduler([S.CosineAnnealingLR(4), S.LambdaLR(T._lambda_b),
                                      S.CyclicLR(0.01, 0.1, step_size_up=3)])):  # replayed
        tx = mo.get("sgd", lr=0.1, momentum=0.9, schedule=sched)
        tx2 = pickle.loads(pickle.dumps(tx))
        p = {"w": jnp.arange(3.0)}
        s, s2 = tx.init(p), tx2.init(p)
        for _ in range(5):
            u, s = tx.update(p, s, p)
            u2, s2 = tx2.update(p, s2, p)
            np.testing.assert_array_equal(np.asarray(u["w"]), np.asarray(u2["w"]))
