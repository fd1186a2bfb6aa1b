"""Data-parallel torch: with ``torch.distributed`` initialised (gloo, CPU, 2 and 4 processes on
127.0.0.1), ``process_group="world"`` makes every reduction the whole batch's on every rank,
and DDP's averaged gradients the single-process full-batch gradients, with shards of
different sizes, different numbers of ignored targets and different weights
(docs/distributed.md). float64, to 1e-12 relative.

The ranks run in a subprocess (this file as a script, which spawns them with
``torch.multiprocessing``), bounded in time: its process group is killed on a timeout. Each
case's measured errors are asserted here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from multiloss import testing

TOL = 1e-12
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 240
WORLDS = (2, 4)


def cases():
    return testing.data_parallel_cases(8)


def _cuts(n, world, seed):
    """Uneven contiguous shards of n rows: every rank at least one row, sizes differ."""
    rng = np.random.default_rng(seed)
    while True:
        cuts = np.sort(rng.choice(np.arange(1, n), size=world - 1, replace=False))
        sizes = np.diff(np.concatenate([[0], cuts, [n]]))
        if world == 1 or len(set(sizes.tolist())) > 1:
            return np.concatenate([[0], cuts, [n]])


# ---------------------------------------------------------------------------------------------
# the ranks (run in the subprocess)


def _grads(torch, out, wrt, ct):
    if not wrt:
        return []
    if out.dim():
        out = (out * ct).sum()
    gs = torch.autograd.grad(out, wrt, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(gs, wrt)]


def _run_case(torch, dist, multiloss, spec, sample, layout, rank, world, group="world"):
    """One case on this rank: the errors of its value and of DDP's average of its gradients
    (all-reduced and divided by world size) against the single-process full batch."""
    axes, sw_axis = layout
    n = testing.batch_size(spec, sample)
    sub_world = world if group == "world" else dist.get_world_size(group)
    sub_rank = rank if group == "world" else dist.get_rank(group)
    cuts = _cuts(n, sub_world, seed=n + sub_world)
    mine = np.arange(cuts[sub_rank], cuts[sub_rank + 1])
    pos = testing._diff_positions(spec, sample)
    red = sample.options.get("reduction", "mean")
    # the sample weight is differentiated too: its gradient goes through the denominator
    with_sw = testing._sw_differentiable(spec, sample)
    # the full batch (the same on every rank), and the shard of this rank
    ct_full = testing._cotangent(sample, (n,), np.float64)

    def tensors(s):
        xs = [torch.from_numpy(np.array(x)) for x in s.inputs]
        for i in pos:
            xs[i].requires_grad_(True)
        sw = None if s.sample_weight is None else torch.from_numpy(np.array(s.sample_weight))
        if with_sw:
            sw.requires_grad_(True)
        return xs, sw

    full = multiloss.get(spec.name, "torch", **sample.options)
    xs, sw = tensors(sample)
    out = full(*xs, sample_weight=sw)
    ct = torch.from_numpy(ct_full.reshape((n,) + (1,) * (out.dim() - 1))) if out.dim() else None
    ref_g = _grads(torch, out, [xs[i] for i in pos] + ([sw] if with_sw else []), ct)
    ref_v = out.detach()

    shard = testing.take_rows(spec, sample, layout, mine)
    dloss = multiloss.get(spec.name, "torch", process_group=group, **sample.options)
    xs, sw = tensors(shard)
    out = dloss(*xs, sample_weight=sw)
    ct_local = ct[mine[0]:mine[-1] + 1] if ct is not None else None
    g = _grads(torch, out, [xs[i] for i in pos] + ([sw] if with_sw else []), ct_local)
    res = {"rows": int(len(mine))}
    if red == "none":  # local: the rank's rows of the full batch's output and gradient
        res["value"] = testing.rel_error(out.detach().numpy(), ref_v[mine[0]:mine[-1] + 1].numpy())
    else:
        res["value"] = testing.rel_error(out.detach().numpy(), ref_v.numpy())
        res["full_value"] = float(ref_v)
    # DDP's average: every rank's gradient in its rows of a full-size buffer, summed, / world
    names = [spec.inputs[i].name for i in pos] + (["sample_weight"] if with_sw else [])
    grad_axes = [axes[i] for i in pos] + ([sw_axis] if with_sw else [])
    for name, axis, gi, ri in zip(names, grad_axes, g, ref_g, strict=True):
        buf = torch.zeros_like(ri)
        if axis is None:
            buf += gi
        else:
            idx = [slice(None)] * ri.dim()
            idx[axis] = slice(int(mine[0]), int(mine[-1]) + 1)
            buf[tuple(idx)] = gi
        dist.all_reduce(buf, group=None if group == "world" else group)
        averaged = buf if red == "none" else buf / sub_world
        res[f"d_{name}"] = testing.rel_error(averaged.numpy(), ri.numpy())
    if red in ("mean", "sum_over_batch_size", "batchmean"):
        d = dloss.denominator(*[x.detach() for x in xs],
                              sample_weight=None if sw is None else sw.detach())
        d_ref = full.denominator(*[torch.from_numpy(np.array(x)) for x in sample.inputs],
                                 sample_weight=None if sample.sample_weight is None
                                 else torch.from_numpy(np.array(sample.sample_weight)))
        res["denominator"] = testing.rel_error(d.numpy(), d_ref.numpy())
    return res


def _pair_case(torch, dist, multiloss, name, inputs, opts, rank, world):
    """A fused pair form whose NLL term divides by the batch's chosen tokens (linear_cpo,
    linear_orpo) with process_group: each rank holds an uneven share of the pairs ([its
    chosen; its rejected] rows); its value is the whole batch's, and DDP's average of the
    gradients (the hidden states' rows, the shared head) the whole batch's gradients."""
    x, w, t = (torch.from_numpy(np.array(a)) for a in inputs)
    n = x.shape[0] // 2
    opts = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in opts.items()}
    full = multiloss.get(name, "torch", **opts)
    xf, wf = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    ref = full(xf, wf, t)
    ref_dx, ref_dw = torch.autograd.grad(ref, (xf, wf))
    cuts = _cuts(n, world, seed=n + world)
    rows = torch.from_numpy(testing.pair_rows(np.arange(cuts[rank], cuts[rank + 1]), n))
    dloss = multiloss.get(name, "torch", process_group="world", **opts)
    xl, wl = x[rows].clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = dloss(xl, wl, t[rows])
    dx, dw = torch.autograd.grad(out, (xl, wl))
    buf = torch.zeros_like(ref_dx)
    buf[rows] = dx
    for g in (buf, dw):
        dist.all_reduce(g)
    return {"value": testing.rel_error(out.detach().numpy(), ref.detach().numpy()),
            "d_input": testing.rel_error((buf / world).numpy(), ref_dx.numpy()),
            "d_linear_weight": testing.rel_error((dw / world).numpy(), ref_dw.numpy())}


def _ddp_case(torch, dist, multiloss, rank, world):
    """A model under DDP: token-level cross-entropy with class weights and label smoothing,
    each rank with a batch of its own size, its own ignored targets and sample weights; the
    DDP-averaged parameter gradients against one process on the whole batch. Also with
    gradient accumulation (no_sync, a normalizer counted over every micro-batch and rank)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    rng = np.random.default_rng(11)
    n, d, c, length = 20, 6, 5, 4
    feats = torch.from_numpy(rng.normal(size=(n, length, d)))
    t = rng.integers(0, c, size=(n, length))
    t[rng.random((n, length)) < 0.3] = -100
    t[:3] = -100
    targets = torch.from_numpy(t)
    sw = torch.from_numpy(rng.uniform(0, 2, size=(n, length)))
    opts = {"weight": rng.uniform(0.5, 2, size=c), "label_smoothing": 0.05}

    def model_fn():
        torch.manual_seed(0)
        return torch.nn.Linear(d, c).double()

    def logits(model, x):
        return model(x).permute(0, 2, 1)  # (N, C, L)

    # one process, the whole batch
    ref_model = model_fn()
    loss = multiloss.get("cross_entropy", "torch", **opts)
    ref = loss(logits(ref_model, feats), targets, sample_weight=sw)
    ref_grads = torch.autograd.grad(ref, list(ref_model.parameters()))

    cuts = _cuts(n, world, seed=world)
    rows = slice(int(cuts[rank]), int(cuts[rank + 1]))
    dloss = multiloss.get("cross_entropy", "torch", process_group="world", **opts)
    model = DDP(model_fn())
    out = dloss(logits(model, feats[rows]), targets[rows], sample_weight=sw[rows])
    out.backward()
    res = {"value": testing.rel_error(out.detach().numpy(), ref.detach().numpy())}
    for (name, p), rg in zip(model.module.named_parameters(), ref_grads):
        res[f"d_{name}"] = testing.rel_error(p.grad.numpy(), rg.numpy())

    # DDP with 3 micro-batches per rank: no_sync for all but the last, one normalizer
    model = DDP(model_fn())
    idx = np.arange(rows.start, rows.stop)
    micro = np.array_split(idx, 3)
    norm = sum(dloss.denominator(logits(model.module, feats[m]).detach(), targets[m],
                                 sample_weight=sw[m]) for m in micro)
    total = 0.0
    for k, m in enumerate(micro):
        ctx = model.no_sync() if k < len(micro) - 1 else _nullcontext()
        with ctx:
            part = dloss(logits(model, feats[m]), targets[m], sample_weight=sw[m],
                         normalizer=norm)
            part.backward()
        total = total + part.detach()
    res["accumulated_value"] = testing.rel_error(total.numpy(), ref.detach().numpy())
    for (name, p), rg in zip(model.module.named_parameters(), ref_grads):
        res[f"accumulated_d_{name}"] = testing.rel_error(p.grad.numpy(), rg.numpy())
    return res


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _rank_main(rank, world, port, out_dir):  # pragma: no cover - runs in the ranks
    import torch
    import torch.distributed as dist

    import multiloss

    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=TIMEOUT_S // 2))
    results = {}
    for cid, spec, sample, layout in cases():
        try:
            results[cid] = _run_case(torch, dist, multiloss, spec, sample, layout, rank, world)
        except Exception as e:  # noqa: BLE001 - reported per case
            results[cid] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    for cid, name, inputs, opts in testing.fused_pair_cases():
        try:
            results[f"__pairs__:{cid}"] = _pair_case(torch, dist, multiloss, name, inputs, opts,
                                                      rank, world)
        except Exception as e:  # noqa: BLE001 - reported per case
            results[f"__pairs__:{cid}"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    try:
        results["__ddp__"] = _ddp_case(torch, dist, multiloss, rank, world)
    except Exception as e:  # noqa: BLE001
        results["__ddp__"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    if world == 4:  # two subgroups of 2 ranks: each reduces over its own group
        groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        mine = groups[rank // 2]
        cid, spec, sample, layout = next(c for c in cases()
                                         if c[0] == "cross_entropy:tokens-weighted-mean")
        try:
            results["__subgroup__"] = _run_case(torch, dist, multiloss, spec, sample, layout,
                                                rank, world, group=mine)
        except Exception as e:  # noqa: BLE001
            results["__subgroup__"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    dist.barrier()
    dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))


def _main(world, out_dir):  # pragma: no cover - runs in the subprocess
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(world, port, out_dir), nprocs=world,
                       start_method="spawn")


# ---------------------------------------------------------------------------------------------
# the tests


def _run_world(world, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp(f"world{world}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, __file__, "--world", str(world), str(out_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the subprocess and the ranks it spawned
        proc.communicate()
        pytest.fail(f"{world} gloo ranks did not finish within {TIMEOUT_S} s")
    assert proc.returncode == 0, err[-5000:]
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]


def _run_worlds(tmp_path_factory):
    return {str(w): _run_world(w, tmp_path_factory) for w in WORLDS}


#: started early under pytest-xdist (conftest.pytest_runtestloop)
SHARED_ONCE = {"distributed": _run_worlds}


@pytest.fixture(scope="session")
def worlds(shared_once, tmp_path_factory):
    data = shared_once("distributed", lambda: _run_worlds(tmp_path_factory))
    return {int(w): ranks for w, ranks in data.items()}


CASE_IDS = [cid for cid, *_ in cases()]


def _check(res, what):
    assert "error" not in res, f"{what}: {res['error']}"
    errs = {k: v for k, v in res.items()
            if k not in ("rows", "full_value") and not v <= TOL}
    assert not errs, f"{what}: errors above {TOL:.0e}: {errs}"


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("cid", CASE_IDS)
def test_process_group_equals_full_batch(worlds, world, cid):
    ranks = [r[cid] for r in worlds[world]]
    for rank, res in enumerate(ranks):
        _check(res, f"rank {rank} of {world}")
    # the shards were uneven
    assert len({res["rows"] for res in ranks}) > 1


@pytest.mark.parametrize("world", WORLDS)
def test_ddp_gradients_equal_full_batch(worlds, world):
    for rank, r in enumerate(worlds[world]):
        _check(r["__ddp__"], f"DDP, rank {rank} of {world}")


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("cid", [c for c, *_ in testing.fused_pair_cases()])
def test_fused_pair_nll_counts_the_whole_batch(worlds, world, cid):
    """linear_cpo's and linear_orpo's NLL term (the chosen tokens' mean over the batch) with
    process_group: the whole batch's count of chosen tokens and pairs, not the rank's."""
    for rank, r in enumerate(worlds[world]):
        _check(r[f"__pairs__:{cid}"], f"fused pair form, rank {rank} of {world}")


def test_subgroups_reduce_over_their_own_ranks(worlds):
    for rank, r in enumerate(worlds[4]):
        _check(r["__subgroup__"], f"subgroup, rank {rank}")


def test_all_ignored_batch_is_nan_or_zero_on_every_rank(worlds):
    for world in WORLDS:
        for r in worlds[world]:
            assert np.isnan(r["cross_entropy:all-ignored-nan"]["full_value"])
            assert r["cross_entropy:all-ignored-zero"]["full_value"] == 0.0


def test_process_group_needs_an_initialised_group():
    import torch

    import multiloss

    loss = multiloss.get("cross_entropy", "torch", process_group="world")
    with pytest.raises(RuntimeError, match=r"^process_group: torch.distributed is not "
                       r"initialised; call torch.distributed.init_process_group first"):
        loss(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    # "none" reduces nothing, so it needs no group... but the option is still checked
    with pytest.raises(TypeError, match=r"^process_group: expected None, 'world' or a "
                       r"torch.distributed ProcessGroup, got int"):
        multiloss.get("cross_entropy", "torch", process_group=3)
    with pytest.raises(ValueError, match=r"^process_group: expected None, 'world' or a "
                       r"torch.distributed ProcessGroup, got 'word'"):
        multiloss.get("cross_entropy", "torch", process_group="word")
    with pytest.raises(TypeError, match=r"^process_group: expected None, 'world' or a "
                       r"torch.distributed ProcessGroup, got object"):
        multiloss.get("cross_entropy", "torch", process_group=object())


def test_options_of_the_other_backend_raise():
    import multiloss

    with pytest.raises(ValueError, match=r"^process_group: a torch.distributed option"):
        multiloss.get("mse", "jax", process_group="world")
    with pytest.raises(ValueError, match=r"^axis_name: a JAX option"):
        multiloss.get("mse", "torch", axis_name="batch")
    with pytest.raises(TypeError, match=r"^axis_name: expected None, the name of a mapped "
                       r"axis"):
        multiloss.get("mse", "jax", axis_name=3)


if __name__ == "__main__" and "--world" in sys.argv:
    i = sys.argv.index("--world")
    _main(int(sys.argv[i + 1]), sys.argv[i + 2])
