"""multiloss.optim's state: from_torch on every torch optimizer, fresh (as constructed, whatever
the constructor put in the state: Adagrad's accumulator) and mid-training (torch's state
converted, compared entry by entry with torch's; the trajectories that continue from it are the
``from_torch_mid/*`` cases of multiloss/optim/testing.py, run by test_optim.py, 1e-12 relative
in float64); misuse of ``tx.update`` (gradients, has_grad or a state whose structure or shapes
are not the parameters': a ValueError naming the leaf, expected and actual shape; empty
parameter trees); pickling of every transform's state and of the transforms."""

from __future__ import annotations

import os
import pickle

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

LONG = os.environ.get("MULTILOSS_LONG") == "1"  # every optimizer with every schedule state

#: every optimizer, with options that make it keep every buffer it has
FULL = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "dampening": 0.2},
    "adam": {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1},
    "adamw": {"lr": 0.05, "amsgrad": True},
    "rmsprop": {"lr": 0.01, "momentum": 0.5, "centered": True},
    "adagrad": {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.3},
    "adadelta": {"weight_decay": 0.1},
    "adamax": {"lr": 0.05},
    "nadam": {"lr": 0.05, "decoupled_weight_decay": True, "weight_decay": 0.1},
    "radam": {"lr": 0.05},
    "lbfgs": {"lr": 0.1, "max_iter": 1, "history_size": 3},
    "asgd": {"lr": 0.05, "t0": 3.0, "weight_decay": 0.1},
    "rprop": {"lr": 0.05, "etas": (0.4, 1.3)},
    "sparse_adam": {"lr": 0.05},
    "adafactor": {"lr": 0.05, "weight_decay": 0.1},
    # Muon takes 2-D parameters only: its recipe, AdamW for "b" (torch: two optimizers, _torch_opt)
    "muon": {"lr": 0.02, "nesterov": False, "labels": mo.muon_labels,
             "param_groups": {"muon": {}, "adamw": {"optimizer": "adamw", "lr": 0.01,
                                                    "amsgrad": True}}},
}


def test_every_optimizer_is_covered():
    assert set(FULL) == set(mo.available())
    # each optimizer has a mid-training from_torch trajectory case
    assert {c.optimizer for c in T.CASES if c.convert_at} == set(mo.available())


def _torch_opt(name, steps=0, seed=0):
    """torch's optimizer of ``name`` on the harness problem after ``steps`` steps."""
    p0, grad, loss = T.problem("float64", seed)
    named = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    if name == "muon":  # a list of optimizers stepped together (from_torch takes the list)
        opt = [torch.optim.Muon([named["w"]], lr=0.02, nesterov=False),
               torch.optim.AdamW([named["b"]], lr=0.01, amsgrad=True)]
    else:
        opt = getattr(torch.optim, mo.resolve(name).torch_class)(list(named.values()),
                                                                 **FULL[name])

    def closure():
        g = grad({k: v.detach().numpy() for k, v in named.items()})
        for k, v in named.items():
            v.grad = T.torch_grad(name, torch.from_numpy(g[k]))  # SparseAdam: sparse
        return loss({k: v.detach().numpy() for k, v in named.items()})

    for _ in range(steps):
        _step(opt, closure)
    return opt, named, closure


def _step(opt, closure):
    if isinstance(opt, torch.optim.LBFGS):
        opt.step(closure)
    else:
        closure()
        for o in opt if isinstance(opt, list) else [opt]:
            o.step()


def _torch_state(opt, p):
    for o in opt if isinstance(opt, list) else [opt]:
        if p in o.state:
            return o.state[p]
    return {}


def _jparams(named):
    return {k: jnp.asarray(v.detach().numpy()) for k, v in named.items()}


def _tree_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert jnp.result_type(x) == jnp.result_type(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------------------------
# from_torch


@pytest.mark.parametrize("name", sorted(FULL))
def test_from_torch_fresh_optimizer_as_constructed(name):
    """A torch optimizer that took no step converts (Adagrad's constructor fills its state with
    step 0 and the accumulator: still fresh) to the fresh state, and its first step is torch's."""
    opt, named, closure = _torch_opt(name)
    if name == "adagrad":
        assert len(opt.state) == 2  # torch's constructor state; issue 14 refused it
    tx, labels = mo.from_torch(opt, params=list(named.items()))
    assert labels == ({"w": 0, "b": 1} if name == "muon" else {"w": 0, "b": 0})
    params = _jparams(named)
    _tree_equal(tx.init(params), mo.get(name, **FULL[name]).init(params))
    g = T.problem("float64")[1]({k: np.asarray(v) for k, v in params.items()})
    u, _ = tx.update(g, tx.init(params), params)
    _step(opt, closure)
    for k, v in named.items():
        np.testing.assert_allclose(np.asarray(params[k] + u[k]), v.detach().numpy(),
                                   rtol=1e-14, atol=0)


def _torch_entry(name, st, key):
    return np.asarray(st[key].detach().numpy() if isinstance(st[key], torch.Tensor) else st[key])


@pytest.mark.parametrize("name", sorted(FULL))
def test_from_torch_mid_training_state_is_torchs(name):
    """After 7 torch steps the converted state holds torch's numbers, entry by entry."""
    opt, named, _ = _torch_opt(name, steps=7)
    tx = mo.from_torch(opt, params=list(named.items())).transform
    params = _jparams(named)
    state = tx.init(params)
    if name == "lbfgs":
        st = opt.state[named["w"]]
        # torch flattens [w, b] (param_groups order), the JAX state follows the leaves (b, w)
        perm = np.concatenate([np.arange(12, 16), np.arange(12)])
        k = len(st["old_dirs"])
        assert int(state.num_old) == k == 3 and int(state.n_iter) == st["n_iter"] == 7
        for ours, key in ((state.d, "d"), (state.prev_flat_grad, "prev_flat_grad")):
            np.testing.assert_array_equal(np.asarray(ours), st[key].numpy()[perm])
        for i in range(k):
            np.testing.assert_array_equal(np.asarray(state.old_dirs[i]),
                                          st["old_dirs"][i].numpy()[perm])
            np.testing.assert_array_equal(np.asarray(state.old_stps[i]),
                                          st["old_stps"][i].numpy()[perm])
            assert float(state.ro[i]) == float(st["ro"][i])
        assert float(state.t) == float(st["t"]) and float(state.H_diag) == float(st["H_diag"])
        assert float(state.prev_loss) == st["prev_loss"]
        return
    for pname, p in named.items():
        st = _torch_state(opt, p)
        no_step = name == "sgd" or (name == "muon" and pname == "w")  # torch counts none
        assert int(state.step[pname]) == (1 if no_step else 7)
        for key in st:
            if key == "step":
                continue
            ours = state.buffers[key][pname]
            np.testing.assert_array_equal(np.asarray(ours, np.float64),
                                          _torch_entry(name, st, key).astype(np.float64))
        # the rest: another optimizer's buffers in a mixed transform, placeholders of shape (0,)
        # (Adafactor's variance of a matrix, row_var / col_var of a vector, AdamW's buffers of
        # a Muon parameter ...: placeholders of shape (0,); otherwise exactly torch's buffers)
        assert all(state.buffers[k][pname].shape == (0,) for k in set(state.buffers) - set(st))


def test_from_torch_state_is_read_when_called():
    opt, named, closure = _torch_opt("adam", steps=3)
    tx = mo.from_torch(opt, params=list(named.items())).transform
    before = np.asarray(tx.init(_jparams(named)).buffers["exp_avg"]["w"])
    closure()
    opt.step()  # torch moves on; the transform keeps what it read
    np.testing.assert_array_equal(np.asarray(tx.init(_jparams(named)).buffers["exp_avg"]["w"]),
                                  before)


def test_from_torch_stepped_scheduler_continues_at_its_step_count():
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)
    for _ in range(4):
        w.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
        sched.step()
    tx = mo.from_torch(opt, sched).transform
    state = tx.init([jnp.ones(3)])
    assert int(state.count) == sched.last_epoch == 4
    assert tx.schedule.step_size == 3


def test_from_torch_state_errors():
    opt, named, _ = _torch_opt("adam", steps=2)
    tx = mo.from_torch(opt, params=list(named.items())).transform
    with pytest.raises(ValueError, match=r"^params: from_torch's state is keyed by torch's "
                       r"parameter names \['b', 'w'\]; expected a flat dict with exactly those"):
        tx.init({"weight": jnp.zeros((3, 4)), "b": jnp.zeros(4)})
    with pytest.raises(ValueError, match=r"^params\['w'\]: expected shape \(3, 4\) \(torch "
                       r"parameter w\), got \(4, 3\)"):
        tx.init({"w": jnp.zeros((4, 3)), "b": jnp.zeros(4)})
    tx = mo.from_torch(opt).transform  # no names: by position
    with pytest.raises(ValueError, match=r"^params: expected 2 parameter leaves in the order of "
                       r"the torch optimizer's param_groups, got 1"):
        tx.init([jnp.zeros((3, 4))])


# ---------------------------------------------------------------------------------------------
# misuse of tx.update


def _tx(name):
    return mo.get(name, **FULL[name])


@pytest.mark.parametrize("name", sorted(FULL))
def test_update_names_the_leaf_whose_shape_or_structure_differs(name):
    tx = _tx(name)
    p = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
    s = tx.init(p)
    g = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    cases = [
        ({"w": jnp.ones((4, 3)), "b": jnp.ones(4)},
         rf"^{name}: updates\['w'\]: expected shape \(3, 4\) \(the parameter's\), got shape "
         r"\(4, 3\)$"),
        ({"w": jnp.ones(4), "b": jnp.ones(4)},  # broadcastable: must not pass silently
         rf"^{name}: updates\['w'\]: expected shape \(3, 4\) \(the parameter's\), got shape "
         r"\(4,\)$"),
        ({"w": jnp.ones((3, 4))},
         rf"^{name}: updates: expected a pytree with the parameters' structure; missing "
         r"updates\['b'\]$"),
        ({**g, "c": jnp.ones(2)},
         rf"^{name}: updates: expected a pytree with the parameters' structure; unexpected "
         r"updates\['c'\]$"),
        ({"w": {"x": jnp.ones((3, 4))}, "b": jnp.ones(4)},
         rf"^{name}: updates: .* missing updates\['w'\]; unexpected updates\['w'\]\['x'\]$"),
    ]
    for grads, msg in cases:
        with pytest.raises(ValueError, match=msg):
            tx.update(grads, s, p)
        with pytest.raises(ValueError, match=msg.rstrip("$")):  # jit appends a note
            jax.jit(tx.update)(grads, s, p)
    with pytest.raises(ValueError, match=rf"^{name}: has_grad\['w'\]: expected a boolean scalar "
                       r".*, got shape \(3, 4\)$"):
        tx.update(g, s, p, has_grad={"w": jnp.ones((3, 4), bool), "b": True})
    other = tx.init({"w": jnp.ones((4, 3)), "b": jnp.zeros(4)})
    if name == "lbfgs":
        other = tx.init({"w": jnp.ones(3)})
        msg = (r"^lbfgs: state: built by tx.init for parameters of 3 elements in all, these "
               r"have 16: call tx.init\(params\)")
    else:
        msg = (rf"^{name}: state.buffers\[.*\]\['w'\]: shape \(4, 3\) was built by tx.init for "
               r"another parameter; params\['w'\] has shape \(3, 4\)")
    if name == "adafactor":  # factored: the buffers have their own shapes
        msg = (r"^adafactor: state.buffers\['row_var'\]\['w'\]: shape \(4, 1\) was built by "
               r"tx.init for another parameter; params\['w'\] has shape \(3, 4\) \(its "
               r"buffer's shape is \(3, 1\)\)")
    with pytest.raises(ValueError, match=msg):
        tx.update(g, other, p)
    if name != "lbfgs":
        with pytest.raises(ValueError, match=rf"^{name}: state.step: built by tx.init for "
                           r"parameters of another structure"):
            tx.update(g, tx.init({"w": jnp.ones((3, 4))}), p)


@pytest.mark.parametrize("name", sorted(FULL))
@pytest.mark.parametrize("params", [{}, (), {"a": {}, "b": []}, {"e": jnp.zeros((0, 3))}],
                         ids=["dict", "tuple", "nested", "zero_size"])
def test_empty_parameter_trees_step_nothing(name, params):
    """No parameters (torch refuses an empty parameter list at construction; an optax
    transform sees empty subtrees under optax.multi_transform / masked): a no-op, jitted or
    not, on every optimizer (lbfgs crashed)."""
    tx = _tx(name)
    s = tx.init(params)
    for update in (tx.update, jax.jit(tx.update)):
        u, s = update(params, s, params)
        assert jax.tree_util.tree_structure(u) == jax.tree_util.tree_structure(params)
        for leaf in jax.tree_util.tree_leaves(u):
            assert leaf.size == 0
    assert int(s.count) == 2


# ---------------------------------------------------------------------------------------------
# pickling


def _three_steps(tx, state, params, seed, metrics=None):
    grad = T.problem("float64", seed)[1]
    extra = {} if metrics is None else {"metrics": metrics}
    update = jax.jit(tx.update)
    for _ in range(3):
        g = grad({k: np.asarray(v) for k, v in params.items()})
        u, state = update(g, state, params, **extra)
        params = optax.apply_updates(params, u)
    return params, state


PICKLE_CASES = [(n, None) for n in sorted(FULL)] + [
    (n, "plateau") for n in (sorted(FULL) if LONG else ("sgd", "lbfgs"))]


@pytest.mark.parametrize("name,schedule", PICKLE_CASES)
def test_state_pickles_and_continues_the_same_trajectory(name, schedule):
    """Every transform's state, mid-training (every buffer in use; ReduceLROnPlateau's counters
    in the schedule state), pickles to an equal state (values, dtypes, structure) from which
    the run continues bit for bit; the transform pickles too (rebuilt from its recipe)."""
    sched = S.ReduceLROnPlateau(factor=0.5, patience=0) if schedule else None
    metrics = 1.0 if schedule else None
    tx = mo.get(name, schedule=sched, **FULL[name])
    params = {k: jnp.asarray(v) for k, v in T.problem("float64")[0].items()}
    params, state = _three_steps(tx, tx.init(params), params, 0, metrics)
    back = pickle.loads(pickle.dumps(state))
    assert type(back) is type(state)
    _tree_equal(back, state)
    tx2 = pickle.loads(pickle.dumps(tx))
    assert tx2.spec is tx.spec and tx2.param_groups == tx.param_groups
    a = _three_steps(tx, state, params, 1, metrics)
    b = _three_steps(tx2, back, params, 1, metrics)
    _tree_equal(a, b)


def test_from_torch_and_clip_transforms_pickle():
    opt, named, _ = _torch_opt("rmsprop", steps=4)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    tx = mo.from_torch(opt, sched, params=list(named.items()), clip_grad_norm=1.0).transform
    tx2 = pickle.loads(pickle.dumps(tx))
    params = _jparams(named)
    _tree_equal(tx2.init(params), tx.init(params))
    _tree_equal(_three_steps(tx2, tx2.init(params), params, 1),
                _three_steps(tx, tx.init(params), params, 1))
    for clip in (mo.clip_grad_norm(0.5, "inf"), mo.clip_grad_value(0.1)):
        g = {"w": jnp.arange(4.0)}
        back = pickle.loads(pickle.dumps(clip))
        _tree_equal(back.update(g, back.init(g))[0], clip.update(g, clip.init(g))[0])
    factory = pickle.loads(pickle.dumps(mo.get("adam", backend="torch", lr=0.1)))
    assert factory([torch.zeros(2, requires_grad=True)]).defaults["lr"] == 0.1


def test_from_torch_lbfgs_that_converged_at_once_is_fresh():
    """torch's LBFGS returns before setting its state when the first gradient is already
    below tolerance_grad (only the counters exist): the conversion is the fresh state."""
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=1)

    def closure():
        w.grad = torch.zeros(3, dtype=torch.float64)
        return 0.0

    opt.step(closure)
    assert set(opt.state[w]) == {"func_evals", "n_iter"}
    tx = mo.from_torch(opt).transform
    _tree_equal(tx.init([jnp.ones(3)]), mo.get("lbfgs", max_iter=1).init([jnp.ones(3)]))
