"""grpo beyond the registry-wide tests (which run its grid against TRL 1.16's
``GRPOTrainer._compute_loss`` in every reduction): every TRL loss type at both importance
sampling levels against TRL's own whole-batch normalisation, all-masked batches; TRL's
gradient accumulation (its ``num_items_in_batch`` for dapo/cispo/vespo, its division by the
accumulation steps for the others) against ours with ``normalizer``; the optional
``ref_logps``; option and shape errors; Liger-Kernel's GRPO loss function where it agrees.
float64, values and gradients w.r.t. every log-prob input and the advantages."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing
from multiloss.losses.policy import LOSS_TYPES, _data, trl_grpo_loss

TOL = 1e-12
testing.enable_x64()
#: TRL's (and our) warning on luspo at the token level, a combination tested on purpose
pytestmark = pytest.mark.filterwarnings("ignore:grpo. loss_type=:UserWarning")
OPTS = multiloss.resolve("grpo").bind({})


def _ours(backend, inputs, options, normalizer=None):
    """(value, grads w.r.t. logps, old_logps, advantages and ref_logps where given)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # luspo at the token level, vespo at the sequence one
        loss = multiloss.get("grpo", backend, **options)
    diff = [0, 1, 2] + ([4] if len(inputs) > 4 else [])
    if backend == "jax":
        def f(*d):
            args = list(inputs)
            for i, v in zip(diff, d):
                args[i] = v
            return loss(*args, normalizer=normalizer)

        value, grads = jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(diff)))))(
            *[inputs[i] for i in diff])
        return float(value), [np.asarray(g) for g in grads]
    ts = [torch.tensor(x, requires_grad=i in diff) for i, x in enumerate(inputs)]
    out = loss(*ts, normalizer=normalizer)
    grads = torch.autograd.grad(out, [ts[i] for i in diff], allow_unused=True)
    return float(out), [np.zeros(ts[i].shape) if g is None else g.numpy()
                        for g, i in zip(grads, diff)]


def _trl(inputs_list, options, **kw):
    """TRL's loss summed over ``inputs_list`` (micro-batches), and its gradients w.r.t. each
    micro-batch's differentiable inputs, concatenated over the micro-batches."""
    opts = {**OPTS, **options}
    total, per = 0.0, []
    for inputs in inputs_list:
        diff = [0, 1, 2] + ([4] if len(inputs) > 4 else [])
        ts = [torch.tensor(x, requires_grad=i in diff) for i, x in enumerate(inputs)]
        ref = ts[4] if len(ts) > 4 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = trl_grpo_loss(torch, *ts[:4], ref, opts, **kw)
        grads = torch.autograd.grad(out, [ts[i] for i in diff], allow_unused=True)
        total += float(out.detach())
        per.append([np.zeros(ts[i].shape) if g is None else g.numpy()
                    for g, i in zip(grads, diff)])
    return total, [np.concatenate(gs) for gs in zip(*per)]


def _close(ours, ref, what):
    value, grads = ours
    rv, rgrads = ref
    assert testing.rel_error(value, rv) <= TOL, (what, value, rv)
    for k, (g, rg) in enumerate(zip(grads, rgrads, strict=True)):
        assert testing.rel_error(g, rg) <= TOL, (what, k, testing.rel_error(g, rg))


def _batch(seed, n=6, t=5, lengths=None, spread=0.5):
    rng = np.random.default_rng(seed)
    if lengths is None:
        lengths = rng.integers(0, t + 1, size=n)
        lengths[0] = t
    return _data(rng, n, t, np.float64, lengths, spread=spread)


LEVELS = [(lt, level) for lt in LOSS_TYPES for level in ("token", "sequence")]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_loss_type_and_level_is_trls_whole_batch_loss(backend):
    """Each TRL loss type at both levels (GSPO), with the KL term and the default reduction:
    TRL's own normalisation of the batch (a masked row, ratios clipped on both sides); and a
    batch of all-masked completions, where TRL's clamp(count, 1) gives 0. JAX (a compilation
    per case) runs three types at the sequence level here; the grid runs every type at the
    token level on both backends."""
    inputs = _batch(0)
    for lt, level in LEVELS:
        if backend == "jax" and (level == "token" or lt not in ("grpo", "dapo", "sapo")):
            continue
        opts = {"loss_type": lt, "importance_sampling_level": level, "beta": 0.04,
                "epsilon_high": 0.28 if lt != "cispo" else 1.2, "max_completion_length": 7}
        _close(_ours(backend, inputs, opts), _trl([inputs], opts), f"{lt}/{level}")
    empty = _batch(1, n=3, lengths=(0, 0, 0))
    for lt in LOSS_TYPES if backend == "torch" else ("dapo",):
        opts = {"loss_type": lt, "beta": 0.04}
        ours, ref = _ours(backend, empty, opts), _trl([empty], opts)
        assert ours[0] == ref[0] == 0.0, lt
        _close(ours, ref, f"{lt}/all-masked")


@pytest.mark.parametrize("backend,lt", [("jax", "dr_grpo"),
                                        *[("torch", lt) for lt in ("dapo", "dr_grpo", "grpo",
                                                                   "cispo")]])
def test_accumulation_equals_trls(backend, lt):
    """Three micro-batches of different token counts (one all masked): TRL's per-micro-batch
    losses, normalised as its trainer does over an accumulation window (dapo, cispo: the
    window's num_items_in_batch and steps; dr_grpo, grpo: / the number of steps), summed,
    equal ours with normalizer = the sum of the micro-batches' denominators, and so do the
    gradients."""
    rng = np.random.default_rng(3)
    lengths = [(5, 2, 0), (0, 0, 0), (1, 4, 3)]
    micro = [_data(rng, 3, 5, np.float64, ln, spread=0.5) for ln in lengths]
    opts = {"loss_type": lt, "beta": 0.02, "max_completion_length": 6}
    steps = len(micro)
    tokens = sum(int(m[3].sum()) for m in micro)
    ref = _trl(micro, opts, num_items=tokens, steps=steps)
    loss = multiloss.get("grpo", backend, **opts)
    if backend == "torch":
        norm = sum(loss.denominator(*[torch.tensor(x) for x in m]) for m in micro)
    else:
        norm = sum(loss.denominator(*m) for m in micro)
    parts = [_ours(backend, m, opts, normalizer=norm) for m in micro]
    value = sum(p[0] for p in parts)
    grads = [np.concatenate(gs) for gs in zip(*[p[1] for p in parts])]
    _close((value, grads), ref, lt)


def test_bnpo_accumulates_local_means_as_trl():
    """bnpo: TRL averages the micro-batches' own token means (its documented local
    normalisation): ours without a normalizer, divided by the steps, gives that number, and
    the global token mean (our normalizer) differs from it."""
    rng = np.random.default_rng(4)
    micro = [_data(rng, 2, 5, np.float64, ln, spread=0.5) for ln in ((5, 1), (2, 2))]
    opts = {"loss_type": "bnpo"}
    ref = _trl(micro, opts, steps=2)
    parts = [_ours("torch", m, opts) for m in micro]
    _close((sum(p[0] for p in parts) / 2, [np.concatenate(g) / 2 for g in zip(
        *[p[1] for p in parts])]), ref, "bnpo")
    loss = multiloss.get("grpo", "torch", **opts)
    norm = sum(loss.denominator(*[torch.tensor(x) for x in m]) for m in micro)
    global_mean = sum(_ours("torch", m, opts, normalizer=norm)[0] for m in micro)
    assert abs(global_mean - ref[0]) > 1e-3


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_ref_logps_is_optional(backend):
    """ref_logps left out, given as None, or given with beta = 0 (unused): the same loss;
    with beta != 0 and none given, a ValueError naming it; TRL's numbers without it."""
    lp, old, adv, mask, ref = _batch(5)
    conv = torch.tensor if backend == "torch" else jnp.asarray
    lp, old, adv, mask, ref = (conv(x) for x in (lp, old, adv, mask, ref))
    loss = multiloss.get("grpo", backend, loss_type="grpo")
    want = float(loss(lp, old, adv, mask))
    assert float(loss(lp, old, adv, mask, None)) == want
    assert float(loss(lp, old, adv, mask, ref)) == want
    assert float(loss(logps=lp, old_logps=old, advantages=adv, completion_mask=mask)) == want
    assert float(loss(lp, old, adv, mask, ref_logps=None)) == want
    trl = _trl([tuple(np.asarray(x) for x in (lp, old, adv, mask))], {"loss_type": "grpo"})
    assert testing.rel_error(want, trl[0]) <= TOL
    kl = multiloss.get("grpo", backend, beta=0.1)
    with pytest.raises(ValueError, match=r"ref_logps: needed where beta != 0.*beta=0.1"):
        kl(lp, old, adv, mask)
    with pytest.raises(TypeError, match=r"expected 4 to 5 inputs .* got 3"):
        kl(lp, old, adv)
    assert float(kl(lp, old, adv, mask, ref)) != want


def test_option_and_shape_errors():
    lp, old, adv, mask, ref = _batch(6)
    for opts, match in (
        ({"loss_type": "ppo"}, r"loss_type: expected one of \['dapo'.*got 'ppo'"),
        ({"loss_agg_mode": "token-sum"}, r"loss_agg_mode: expected one of \['token-mean'"),
        ({"importance_sampling_level": "seq"}, r"importance_sampling_level: expected one of"),
        ({"max_completion_length": 0}, r"max_completion_length: expected None or an int >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            multiloss.get("grpo", "torch", **opts)
    loss = multiloss.get("grpo", "jax")
    for args, match in (
        ((lp[0], old[0], adv, mask[0]), r"logps: expected shape \(N, T\)"),
        ((lp, old[:, :3], adv, mask), r"old_logps: expected the shape of logps, \(6, 5\)"),
        ((lp, old, adv[:3], mask), r"advantages: expected shape \(6,\) .* or \(6, 5\)"),
        ((lp, old, adv, mask[:, :2]), r"completion_mask: expected the shape of logps"),
        ((lp, old, adv, mask, ref[:2]), r"ref_logps: expected the shape of logps"),
        ((lp, old, adv, mask.astype(np.complex64)), r"completion_mask: expected a bool"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            loss(*args)


def test_liger_grpo_loss_function_agrees_where_documented():
    """Liger-Kernel 0.8.5's plain-torch GRPO loss function (``ppo_loss_fn`` of
    LigerFusedLinearGRPOFunction, the per-chunk math of LigerFusedLinearGRPOLoss) equals
    grpo on one chunk for the loss types it has, with TRL's options set explicitly (Liger's
    defaults differ: beta 0.04, use_bias_correction_kl False); luspo at the token level
    differs (Liger weights the unmasked per-token loss by the completion length)."""
    pytest.importorskip("liger_kernel")
    from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOFunction as F

    lp, old, adv, mask, ref = _batch(7)
    ts = [torch.tensor(x) for x in (lp, old, adv, mask, ref)]
    for lt in LOSS_TYPES:
        opts = {"loss_type": lt, "beta": 0.04, "epsilon_high": 0.28 if lt != "cispo" else 1.2,
                "max_completion_length": 7}
        liger, _ = F.ppo_loss_fn(ts[0], ts[3], ts[2], ts[3], ref_per_token_logps=ts[4],
                                 old_per_token_logps=ts[1], epsilon_low=0.2,
                                 epsilon_high=opts["epsilon_high"], beta=0.04, loss_type=lt,
                                 max_completion_length=7, use_bias_correction_kl=True)
        ours = float(multiloss.get("grpo", "torch", **opts)(*ts))
        err = testing.rel_error(float(liger), ours)
        if lt == "luspo":
            assert err > 1e-3, lt
        else:
            assert err <= TOL, (lt, err)


def test_vllm_importance_sampling_correction_is_per_token_advantages():
    """TRL's vLLM correction (the sampler's per-token ratio s >= 0 times the policy term,
    before the KL term) equals (N, T) advantages A_i * s_it, for every type but vespo."""
    lp, old, adv, mask, ref = _batch(8)
    s = np.random.default_rng(8).uniform(0.0, 2.0, size=lp.shape)
    s[0, :2] = 0.0
    for lt in LOSS_TYPES:
        if lt == "vespo":
            continue
        opts = {**OPTS, "loss_type": lt, "beta": 0.04, "epsilon_high": 0.28}
        ts = [torch.tensor(x) for x in (lp, old, adv, mask, ref)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = float(trl_grpo_loss(torch, *ts[:4], ts[4], opts,
                                       is_ratio=torch.tensor(s)))
        ours = multiloss.get("grpo", "torch", loss_type=lt, beta=0.04, epsilon_high=0.28)(
            ts[0], ts[1], torch.tensor(adv[:, None] * s), ts[3], ts[4])
        assert testing.rel_error(float(ours), want) <= TOL, lt
