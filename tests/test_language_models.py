"""The language-model losses against their libraries' own calls (docs/language-models.md).

- Distillation (issue 17 item 1): the default reduction of generalized_jsd is TRL's default
  'batchmean', 'sum' TRL's 'sum', TRL's 'mean' ours / V, ``num_items_in_batch`` TRL's; without
  labels on (N, V) logits TRL's 'batchmean'; torchtune's normalize=True and its 0 for an
  all-masked batch; torchtune's NaN gradient at -inf logits (reverse KL) matched.
  The registry-wide parity grid (tests/test_parity.py) compares every reduction and edge case.
- Causal-LM cross-entropy (item 2): ``shift=True`` on cross_entropy and linear_cross_entropy
  against transformers' ``ForCausalLMLoss`` (its shift, its mean over valid targets, its
  division by ``num_items_in_batch``), values and gradients in float64 (its float32 upcast
  neutralised: ``_Keep64``) and float32. Gradient accumulation, ``process_group`` and
  ``axis_name`` with the global count: the heterogeneous cases ``causal-lm-shift`` of
  ``multiloss.testing`` in tests/test_accumulation.py, test_distributed.py, test_sharding.py.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import multiloss
from multiloss import testing
from multiloss.losses.distillation import _trl_gkd, torchtune_kd_losses

testing.enable_x64()

TOL = {"float64": 1e-12, "float32": 64 * float(np.finfo(np.float32).eps)}


def _close(ours, ref, dtype):
    err = testing.rel_error(np.asarray(ours), np.asarray(ref), testing.SCALE_FLOOR[dtype])
    assert err <= TOL[dtype], err


def _ours(name, backend, s, t, y=None, wrt=(0, 1), call=None, **options):
    """(value, grads w.r.t. student and teacher) of a multiloss loss on one backend."""
    loss = multiloss.get(name, backend=backend, **options)
    call = call or {}
    if backend == "jax":
        def f(a, b):
            return loss(a, b, y, **call) if y is not None else loss(a, b, **call)

        v, g = jax.value_and_grad(f, argnums=wrt)(jnp.asarray(s), jnp.asarray(t))
        return np.asarray(v), [np.asarray(x) for x in g]
    a = torch.tensor(s, requires_grad=True)
    b = torch.tensor(t, requires_grad=True)
    out = loss(a, b, torch.tensor(y), **call) if y is not None else loss(a, b, **call)
    g = torch.autograd.grad(out, [a, b])
    return out.detach().numpy(), [x.numpy() for x in g]


def _ref(fn, s, t):
    a = torch.tensor(s, requires_grad=True)
    b = torch.tensor(t, requires_grad=True)
    out = fn(a, b)
    grads = torch.autograd.grad(out, [a, b], allow_unused=True)
    return out.detach().numpy(), [np.zeros(a.shape) if x is None else x.numpy() for x in grads]


def _logits(seed, shape, dtype="float64"):
    rng = np.random.default_rng(seed)
    s = (rng.normal(size=shape) * 2).astype(dtype)
    t = (rng.normal(size=shape) * 2).astype(dtype)
    y = rng.integers(0, shape[-1], size=shape[:-1])
    y.flat[::3] = -100
    return s, t, y


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("beta,temperature", [(0.0, 1.0), (0.5, 2.0), (1.0, 0.5)])
def test_generalized_jsd_is_trls(backend, beta, temperature):
    gkd = _trl_gkd()
    s, t, y = _logits(0, (2, 4, 6))
    kw = dict(beta=beta, temperature=temperature)
    # TRL's default 'batchmean' with labels: our default 'mean' (and the alias 'batchmean')
    ref = _ref(lambda a, b: gkd.generalized_jsd_loss(a, b, torch.tensor(y), **kw), s, t)
    for red in ("mean", "batchmean"):
        got = _ours("generalized_jsd", backend, s, t, y, reduction=red, **kw)
        _close(got[0], ref[0], "float64")
        for g, r in zip(got[1], ref[1]):  # student and teacher
            _close(g, r, "float64")
    if beta != 0.5:
        return
    # 'sum', TRL's 'mean' (/ tokens / V), num_items_in_batch (TRL's gradient-accumulation
    # normaliser), and no labels on (N, V) logits
    v = s.shape[-1]
    lab = torch.tensor(y)
    for red, scale in (("sum", 1.0), ("mean", v)):
        ref = _ref(lambda a, b, r=red: gkd.generalized_jsd_loss(a, b, lab, reduction=r, **kw),
                   s, t)
        got = _ours("generalized_jsd", backend, s, t, y, reduction="sum" if red == "sum"
                    else "mean", **kw)
        _close(got[0] / scale, ref[0], "float64")
        _close(got[1][1] / scale, ref[1][1], "float64")
    ref = _ref(lambda a, b: gkd.generalized_jsd_loss(a, b, lab, num_items_in_batch=11, **kw),
               s, t)
    got = _ours("generalized_jsd", backend, s, t, y, call={"num_items_in_batch": 11}, **kw)
    _close(got[0], ref[0], "float64")
    _close(got[1][0], ref[1][0], "float64")
    s2, t2 = s.reshape(-1, v), t.reshape(-1, v)
    ref = _ref(lambda a, b: gkd.generalized_jsd_loss(a, b, None, **kw), s2, t2)
    got = _ours("generalized_jsd", backend, s2, t2, **kw)
    _close(got[0], ref[0], "float64")
    _close(got[1][1], ref[1][1], "float64")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_torchtune_defaults_and_the_all_masked_batch(backend):
    """Our default is torchtune's normalize=True, on torchtune's own float32 path (the module
    as torchtune ships it computes float32 logits in float32); a batch with every label
    ignored gives 0 and a zero gradient, as torchtune's."""
    mod = torchtune_kd_losses()
    s, t, y = _logits(1, (3, 4, 5), "float32")
    cases = (("forward_kl", mod.ForwardKLLoss(), {}),
             ("reverse_kl", mod.ReverseKLLoss(), {}),
             ("symmetric_kl", mod.SymmetricKLLoss(sym_kd_ratio=0.3), {"sym_kd_ratio": 0.3}))
    for name, ref_loss, opts in cases:
        ref = _ref(lambda a, b, f=ref_loss: f(a.reshape(-1, 5), b.reshape(-1, 5),
                                               torch.tensor(y).reshape(-1)), s, t)
        got = _ours(name, backend, s, t, y, **opts)
        _close(got[0], ref[0], "float32")
        for g, r in zip(got[1], ref[1]):
            _close(g, r, "float32")
        nothing = np.full_like(y, -100)
        v, grads = _ours(name, backend, s, t, nothing, **opts)
        assert float(v) == 0.0
        assert all(not np.any(g) for g in grads)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_reverse_kl_nan_gradient_at_minus_inf_is_torchtunes(backend):
    """torchtune's reverse KL has a finite value but a NaN gradient where a student logit is
    -inf (its masked product backpropagates 0 * -inf); ours is the same (documented, and the
    reason the docs say to mask with a large negative number instead)."""
    mod = torchtune_kd_losses()
    s, t, y = _logits(2, (2, 5))
    s[0, 1] = -np.inf
    ref = _ref(lambda a, b: mod.ReverseKLLoss()(a, b, torch.tensor(y)), s, t)
    got = _ours("reverse_kl", backend, s, t, y)
    assert np.isfinite(ref[0]) and np.isnan(ref[1][0][0]).all()
    _close(got[0], ref[0], "float64")
    np.testing.assert_array_equal(np.isnan(got[1][0]), np.isnan(ref[1][0]))
    s[0, 1] = -1e4  # the workaround: finite gradients, the same value to rounding
    v, g = _ours("reverse_kl", backend, s, t, y)
    _close(v, ref[0], "float64")
    assert np.isfinite(g[0]).all()


def test_per_token_terms_of_chunks_add_up():
    """The interface of the fused-linear forms: a backend function on chunks of rows gives
    per-token terms and the count of tokens that count; their sums over the chunks divided by
    the summed count are the loss of the whole batch (the default 'mean')."""
    from multiloss.losses.distillation import _jax, _torch

    s, t, y = _logits(3, (10, 7))
    for name in ("generalized_jsd", "forward_kl", "reverse_kl", "symmetric_kl", "tvd"):
        want = multiloss.get(name, backend="jax")(s, t, y)
        for mod, conv in ((_jax, jnp.asarray), (_torch, torch.tensor)):
            fn = getattr(mod, name)
            num = den = 0.0
            for rows in (slice(0, 4), slice(4, 7), slice(7, 10)):
                terms = fn(conv(s[rows]), conv(t[rows]), conv(y[rows]))
                num += float(terms.loss.sum())
                den += float(terms.count.sum())
            _close(num / den, want, "float64")


# ---------------------------------------------------------------------------------------------
# causal-LM cross-entropy: transformers' ForCausalLMLoss


class _Keep64(torch.Tensor):
    """A tensor whose ``.float()`` keeps float64: ForCausalLMLoss upcasts with
    ``logits.float()``, which would round float64 logits to float32; with this, the float64
    comparison is against transformers' own shift and normalisation at float64 precision."""

    def float(self):  # noqa: A003
        return self


def _for_causal_lm(logits, labels, v, **kw):
    from transformers.loss.loss_utils import ForCausalLMLoss

    if logits.dtype == torch.float64:
        logits = logits.as_subclass(_Keep64)
    return ForCausalLMLoss(logits, labels, v, **kw).as_subclass(torch.Tensor)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_causal_lm_cross_entropy_is_transformers(backend, dtype):
    rng = np.random.default_rng(4)
    b, steps, d, v = 2, 6, 4, 9
    h = rng.normal(size=(b, steps, d)).astype(dtype)
    w = rng.normal(size=(v, d)).astype(dtype)
    labels = rng.integers(0, v, size=(b, steps))
    labels[0, :2] = -100  # a prompt
    labels[1, 4] = -100
    lab = torch.tensor(labels)
    for call in ({}, {"num_items_in_batch": 13}):
        # the reference on transformers' (B, T, V) logits of the hidden states
        ref = _ref(lambda x, wt, c=call: _for_causal_lm(x @ wt.T, lab, v, **c), h, w)
        got_lin = _ours("linear_cross_entropy", backend, h, w, labels, call=call, shift=True,
                        chunk_size=3)
        logits = h @ w.T
        ref_ce = _ref(lambda x, _, c=call: _for_causal_lm(x, lab, v, **c), logits, w)
        if backend == "jax":
            ce = multiloss.get("cross_entropy", backend="jax", shift=True)
            val, g = jax.value_and_grad(lambda x, f=ce, c=call: f(jnp.swapaxes(x, 1, 2), labels,
                                                                   **c))(
                jnp.asarray(logits))
        else:
            ce = multiloss.get("cross_entropy", backend="torch", shift=True)
            x = torch.tensor(logits, requires_grad=True)
            val = ce(x.transpose(1, 2), lab, **call)
            (g,) = torch.autograd.grad(val, [x])
            val = val.detach()
        _close(np.asarray(val), ref_ce[0], dtype)
        _close(np.asarray(g), ref_ce[1][0], dtype)
        _close(got_lin[0], ref[0], dtype)
        for a, r in zip(got_lin[1], ref[1]):  # hidden states and head weight
            _close(a, r, dtype)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_num_items_in_batch_is_the_normalizer(backend):
    x = np.random.default_rng(5).normal(size=(2, 5, 4))
    y = np.array([[0, 1, -100, 3], [4, 0, 1, -100]])
    loss = multiloss.get("cross_entropy", backend=backend, shift=True)
    conv = torch.tensor if backend == "torch" else np.asarray
    a = loss(conv(x), conv(y), num_items_in_batch=9)
    b = loss(conv(x), conv(y), normalizer=9)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # None (transformers without accumulation): the mean over the valid shifted targets
    np.testing.assert_array_equal(np.asarray(loss(conv(x), conv(y), num_items_in_batch=None)),
                                  np.asarray(loss(conv(x), conv(y))))
    with pytest.raises(TypeError, match="num_items_in_batch: transformers' name for normalizer"):
        loss(conv(x), conv(y), normalizer=9, num_items_in_batch=9)
    with pytest.raises(ValueError, match=r"shift: needs logits \(N, C, \.\.\., T\)"):
        loss(conv(x[:, :, 0]), conv(y[:, 0]))


@pytest.mark.skipif(os.environ.get("MULTILOSS_LONG") != "1", reason="MULTILOSS_LONG=1")
@pytest.mark.parametrize("name", ["generalized_jsd", "forward_kl", "reverse_kl",
                                  "symmetric_kl", "tvd"])
def test_distillation_full_grid_long(name):
    """Every sample of the grid in both dtypes (the registry-wide parity runs a subset)."""
    for dtype in ("float64", "float32"):
        bad = [r for r in testing.check_loss(name, dtype) if not r.ok]
        assert not bad, bad


def _doc_blocks():
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "language-models.md"
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(4))
def test_docs_examples_run(index):
    """The examples of docs/language-models.md run as written (a tiny causal LM on torch and
    flax, the accumulation convention, distillation)."""
    blocks = _doc_blocks()
    assert len(blocks) == 4
    exec(compile(blocks[index], f"language-models.md[{index}]", "exec"), {})
